"""nymtx.apiclient as a command: one clear line and exit 1 when it cannot talk."""

import socket
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase


class CommandTests(SynchronousTestCase):
    def run_command(self, *args):
        return subprocess.run([sys.executable, "-m", "nymtx.apiclient", *args],
                              capture_output=True, text=True, timeout=30)

    def test_refused_connection(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nobody listens there now
        result = self.run_command(f"ws://127.0.0.1:{port}/mix", '{"type": "fetch"}')
        self.assertEqual(result.returncode, 1)
        self.assertIn("cannot connect to", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_not_a_websocket_url(self):
        result = self.run_command("http://127.0.0.1:9001/mix", "{}")
        self.assertEqual(result.returncode, 1)
        self.assertIn("is not a ws://host:port/path URL", result.stderr)

    def test_usage(self):
        result = self.run_command()
        self.assertEqual(result.returncode, 2)
        self.assertIn("usage:", result.stderr)
