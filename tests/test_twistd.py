"""twistd and the nym-* commands stop with a non-zero status when a service
cannot start: real processes, real ports, with a timeout."""

import os
import socket
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import nymtx
from nymtx.client.config import ClientConfig
from nymtx.keys import KeyPair, encode_key

SOURCE = str(Path(nymtx.__file__).resolve().parent.parent)
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
          "-n", "--pidfile="]


def taken_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


class ProcessTestCase(SynchronousTestCase):
    """Runs commands as processes, each in a scratch directory that is also its HOME."""

    def mktemp(self):
        # the processes run elsewhere: paths must not be relative
        return os.path.abspath(super().mktemp())

    def run_process(self, *argv, timeout=30):
        cwd = self.mktemp()
        os.makedirs(cwd)
        # HOME too: a command that falls back on ~/.nym writes into the scratch directory
        env = dict(os.environ, PYTHONPATH=SOURCE, HOME=cwd)
        env.pop("NYM_HOME", None)
        try:
            return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            self.fail(f"{argv[3:]} still running after {timeout} s:\n{e.stdout}{e.stderr}")


class CommandLineTests(ProcessTestCase):
    def initialised_client(self, port):
        root = self.mktemp()
        config = ClientConfig.new(
            root, "Ann", directory_server="http://127.0.0.1:1",
            provider_id=KeyPair.generate().public_text,
            provider_authtoken=encode_key(bytes(32)), socket_type="TCP", listening_port=port)
        config.save_keys(KeyPair.generate())
        config.save()
        return root

    def test_twistd_nym_stops_when_no_directory_answers_for_a_new_id(self):
        result = self.run_process(*TWISTD, "nym", "--id", "New", "--home", self.mktemp(),
                                  "--directory", "http://127.0.0.1:1")
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertIn("could not start", result.stdout)

    def test_nym_client_run_exits_1_when_no_directory_answers(self):
        result = self.run_process(sys.executable, "-m", "nymtx.client.cli", "run",
                                  "--id", "New", "--home", self.mktemp(),
                                  "--directory", "http://127.0.0.1:1")
        self.assertEqual(result.returncode, 1, result.stderr)

    def test_twistd_nym_stops_at_start_up_when_the_api_port_is_taken(self):
        sock, port = taken_port()
        self.addCleanup(sock.close)
        root = self.initialised_client(port)
        result = self.run_process(*TWISTD, "nym", "--id", "Ann", "--home", root)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        output = result.stdout + result.stderr
        self.assertIn(f"TCP API cannot listen on tcp:{port}:interface=127.0.0.1", output)
        self.assertNotIn("authenticated at gateway", output)

    def test_nym_client_run_exits_1_when_the_api_port_is_taken(self):
        sock, port = taken_port()
        self.addCleanup(sock.close)
        root = self.initialised_client(port)
        result = self.run_process(sys.executable, "-m", "nymtx.client.cli", "run",
                                  "--id", "Ann", "--home", root)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("error: could not start: TCP API cannot listen", result.stderr)

    def test_twistd_nym_gateway_exits_1_when_its_port_is_taken(self):
        sock, port = taken_port()
        self.addCleanup(sock.close)
        home = self.mktemp()
        init = self.run_process(sys.executable, "-m", "nymtx.gateway.cli", "init",
                                "--id", "G1", "--home", home, "--mix-port", str(port),
                                "--clients-port", "0", "--host", "127.0.0.1",
                                "--directory", "")
        self.assertEqual(init.returncode, 0, init.stderr)
        result = self.run_process(*TWISTD, "nym-gateway", "--id", "G1", "--home", home)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn(f"gateway mix listener cannot listen on tcp:{port}",
                      result.stdout + result.stderr)

    def test_twistd_nym_gateway_refuses_an_unreadable_store_and_says_what_to_run(self):
        home = self.mktemp()
        init = self.run_process(sys.executable, "-m", "nymtx.gateway.cli", "init",
                                "--id", "G2", "--home", home, "--mix-port", "0",
                                "--clients-port", "0", "--host", "127.0.0.1",
                                "--directory", "")
        self.assertEqual(init.returncode, 0, init.stderr)
        from nymtx.gateway.config import data_dir
        path = os.path.join(str(data_dir("G2", home)), "gateway.sqlite")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"this is no sqlite file" * 100)
        result = self.run_process(*TWISTD, "nym-gateway", "--id", "G2", "--home", home)
        out = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, out)
        self.assertIn("file is not a database", out)
        self.assertIn(f"mv {path} {path}.unreadable", out)
        self.assertNotIn("Traceback", out)
        with open(path, "rb") as f:   # and the file is left as it was
            self.assertEqual(f.read(), b"this is no sqlite file" * 100)


class UsageStatusTests(ProcessTestCase):
    """A usage error exits 2 and a runtime failure 1, under twistd as in the commands."""

    #: (plugin and flags, what the error line says)
    WRONG = [
        (["nym", "--bogus"], "option --bogus not recognized"),
        (["nym"], "--id is required"),
        (["nym-mixnode", "--id", "M", "--workers", "0"], "--workers must be a number"),
        (["nym-gateway"], "--id is required"),
        (["nym-directory", "--expiry", "abc"], "--expiry must be"),
        (["nym-localnet", "--gateways", "0"], "--gateways must be 1 to"),
    ]

    def test_a_usage_error_under_twistd_exits_2_with_the_usage(self):
        for argv, why in self.WRONG:
            with self.subTest(argv=argv):
                result = self.run_process(*TWISTD, *argv)
                self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                lines = result.stderr.splitlines()
                # the plugin's usage, not twistd's (which lists twistd's own flags)
                self.assertEqual(lines[0].split(" [options] ")[-1].split()[0], argv[0],
                                 result.stderr)
                self.assertIn("--log-level", result.stderr)
                self.assertIn(f"twistd {argv[0]}: error: ", result.stderr)
                self.assertIn(why, result.stderr)
                self.assertIn(f"Try 'twistd {argv[0]} --help'", lines[-1])
                self.assertNotIn("Traceback", result.stderr)
                self.assertEqual(result.stdout, "")

    def test_a_node_that_cannot_be_used_under_twistd_exits_1_without_the_usage(self):
        home = self.mktemp()
        for plugin, hint in [("nym-mixnode", "nym-mixnode init --id M"),
                             ("nym-gateway", "nym-gateway init --id M")]:
            with self.subTest(plugin=plugin):
                result = self.run_process(*TWISTD, plugin, "--id", "M", "--home", home)
                self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
                self.assertIn(f"twistd {plugin}: error: ", result.stderr)
                self.assertIn(hint, result.stderr)
                self.assertNotIn("Usage:", result.stderr)
                self.assertNotIn("Traceback", result.stderr)

    def test_help_under_twistd_exits_0(self):
        for plugin in ("nym", "nym-mixnode", "nym-gateway", "nym-directory", "nym-localnet"):
            with self.subTest(plugin=plugin):
                result = self.run_process(*TWISTD, plugin, "--help")
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertIn(f"[options] {plugin}", result.stdout)

    def test_the_commands_not_covered_elsewhere_exit_2_on_a_usage_error(self):
        # nym-client, nym-mixnode, nym-gateway and nym-directory: tests/test_config.py;
        # python -m nymtx.apiclient: tests/test_apiclient.py; nym-measure:
        # tests/test_measure.py
        for argv, why in [(["nymtx.localnet", "--gateways", "0"], "--gateways must be 1 to"),
                          (["nymtx.localnet", "--bogus"], "--bogus"),
                          (["nymtx.quickstart", "--base-port", "x"], "--base-port"),
                          (["nymtx.trust"], "usage:")]:
            with self.subTest(argv=argv):
                result = self.run_process(sys.executable, "-m", *argv)
                self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                self.assertIn(why, result.stderr)
                self.assertNotIn("Traceback", result.stderr)
