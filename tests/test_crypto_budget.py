"""benchmarks/crypto_budget.py runs and its budget is the sum of its parts.
No speed is asserted: the figures are checked against each other only."""

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CryptoBudgetTests(SynchronousTestCase):
    def run_bench(self, *args):
        return subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", "crypto_budget.py"), *args],
            capture_output=True, text=True, timeout=120,
            env=dict(os.environ, PYTHONPATH=ROOT))

    def test_a_small_run_adds_up(self):
        out = self.run_bench("--rounds", "1", "--n", "3", "--json")
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        b = json.loads(out.stdout)
        us = b["us"]
        # nym's default rates: a packet every 500 ms on the sending stream and
        # a loop every 1000 ms
        self.assertEqual(b["packets_per_client_s"], 3)
        network = 3 * 2 * (3 * us["mix_unwrap"] + us["gateway_unwrap"])
        # the printed per-operation figures are rounded to 0.1 us
        self.assertLess(abs(b["network_us_per_client_s"] - network), 5)
        self.assertLess(abs(b["total_us_per_client_s"]
                            - b["client_us_per_client_s"] - b["network_us_per_client_s"]), 1e-6)
        self.assertEqual(b["max_clients"], int(2e6 / b["total_us_per_client_s"]))
        # a build costs more than one X25519 and a mix hop at least two
        self.assertGreater(us["sphinx_build"], us["x25519"])
        self.assertGreater(us["mix_unwrap"], us["x25519"])

    def test_bad_flags_are_refused(self):
        out = self.run_bench("--cores", "0")
        self.assertEqual(out.returncode, 2)
        self.assertIn("--cores", out.stderr)
