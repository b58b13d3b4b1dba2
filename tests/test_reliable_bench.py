"""benchmarks/reliable_bench.py runs: a real network, a few messages at 0 %
and 5 % loss, seconds. It asserts that the figures are computed and
consistent with each other, never their values (no speed is asserted)."""

import json
import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class QuickRunTests(TestCase):
    timeout = 240

    def test_a_small_run_reports_every_figure(self):
        cwd = self.mktemp()
        os.makedirs(cwd)
        out = subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", "reliable_bench.py"),
             "--messages", "6", "--rounds", "2", "--gap", "0.05", "--json"],
            capture_output=True, text=True, timeout=220, cwd=cwd,
            env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rows = {row["loss"]: row for row in result["rows"]}
        self.assertEqual(set(rows), {0.0, 0.05})
        for row in rows.values():
            self.assertEqual(row["messages"], 6)
            self.assertEqual(row["delivered"] + row["failed"], row["messages"])
            self.assertGreater(row["delivered"], 0)
            # every message went at least once, and each ack counted is for one
            self.assertGreaterEqual(row["forward_packets"], row["messages"])
            self.assertEqual(row["retransmissions"],
                             row["forward_packets"] - row["messages"])
            self.assertLessEqual(row["ack_packets"], row["forward_packets"])
            self.assertAlmostEqual(row["packets_per_delivered_fragment"],
                                   (row["forward_packets"] + row["ack_packets"])
                                   / row["delivered"])
            self.assertGreater(row["model_median_s"], 0)
            self.assertGreater(row["delivered_median_s"], 0)
            self.assertAlmostEqual(row["ratio"],
                                   row["delivered_median_s"] / row["model_median_s"])
        # the loss is injected only where asked (at 5 % of the hundreds of
        # packets, cover included, that cross layer 2 in a batch: never none)
        self.assertEqual(rows[0.0]["dropped_at_layer2"], 0)
        self.assertGreater(rows[0.05]["dropped_at_layer2"], 0)
        # each message is Bob's once however often it was sent
        self.assertEqual(result["unique_at_bob"], 12)
        self.assertEqual(result["received_at_bob"], 12)
