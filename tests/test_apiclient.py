"""nymtx.apiclient as a command: one clear line and exit 1 when it cannot talk."""

import socket
import subprocess
import sys

from collections import deque

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from nymtx.apiclient import ApiConnection, ApiError, _ApiProtocol


class _Factory:
    def __init__(self):
        self.opened, self.closed, self.waiting = Deferred(), Deferred(), deque()


class ConnectionTests(SynchronousTestCase):
    def test_request_on_a_closed_websocket_fails_at_once(self):
        factory = _Factory()
        factory.closed.callback(None)
        api = ApiConnection(protocol=None, factory=factory)
        self.failureResultOf(api.request({"type": "fetch"}), ApiError)
        self.failureResultOf(api.send_binary(b"x"), ApiError)
        self.assertEqual(len(factory.waiting), 0)

    def test_an_answer_that_is_not_json_fails_its_request(self):
        factory = _Factory()
        protocol = _ApiProtocol()
        protocol.factory = factory
        first, second = Deferred(), Deferred()
        factory.waiting.extend([first, second])
        protocol.onMessage(b"\xff not json", False)
        protocol.onMessage(b'{"type": "fetch"}', False)
        self.failureResultOf(first, ApiError)
        self.assertEqual(self.successResultOf(second), {"type": "fetch"})


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
        for url in ("http://127.0.0.1:9001/mix", "ws://127.0.0.1:99999/mix",
                    "ws://127.0.0.1:x/mix"):
            result = self.run_command(url, "{}")
            # a command line that cannot be right is a usage error, as in every command
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertIn("is not a ws://host:port/path URL", result.stderr)
            self.assertNotIn("Traceback", result.stderr)

    def test_usage(self):
        result = self.run_command()
        self.assertEqual(result.returncode, 2)
        self.assertIn("usage:", result.stderr)

    def test_help_is_not_an_error(self):
        for flag in ("--help", "-h"):
            result = self.run_command(flag)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("usage: python -m nymtx.apiclient", result.stdout)
            self.assertEqual(result.stderr, "")
