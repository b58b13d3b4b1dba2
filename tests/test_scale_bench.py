"""benchmarks/scale_bench.py --quick runs: a real network, 5 clients, a few seconds.

It asserts what the run proves (every message arrived once, the report's
fields are there and consistent), never a speed.
"""

import json
import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class QuickRunTests(TestCase):
    timeout = 240

    def test_quick_run_reports_every_field(self):
        out = subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", "scale_bench.py"), "--quick",
             "--json"], capture_output=True, text=True, timeout=220, cwd=self.mktemp_dir(),
            env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        [run] = summary["runs"]
        self.assertEqual(run["clients"], 5)
        self.assertGreater(run["sent"], 0)
        self.assertEqual(run["delivered"] + run["lost"], run["sent"])
        self.assertEqual(run["lost"], 0, run)
        self.assertEqual(run["duplicates"], 0)
        self.assertEqual(set(run["processes"]), {
            "clients-1", "directory", "mix-1-1", "mix-2-1", "mix-3-1", "gateway-1"})
        for p in run["processes"].values():
            self.assertGreater(p["rss_mb"], 1)
            self.assertGreaterEqual(p["cpu_share"], 0)
        self.assertGreater(run["model_median_s"], 1)
        self.assertEqual(set(summary["cpu_us_per_client_s"] or {"clients": 0, "network": 0}),
                         {"clients", "network"})
        self.assertIn(summary["max_clients"], (0, 5))
        if summary["max_clients"]:
            self.assertIn(summary["bottleneck"], run["processes"])

    def mktemp_dir(self):
        path = self.mktemp()
        os.makedirs(path)
        return path
