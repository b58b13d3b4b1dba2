"""Mixnode config.toml, init/run commands, and the directory heartbeats."""

import io
import tempfile
from contextlib import redirect_stderr, redirect_stdout

from hypothesis import given, strategies as st
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from nymtx.keys import KeyPair
from nymtx.mixnode import cli, tap
from nymtx.mixnode.config import (
    ConfigError, config_path, init_mixnode, load_config, parse_config)
from nymtx.mixnode.service import MixnodeServer, MixnodeService
from nymtx.testing import FakeDirectory


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


class ConfigTests(SynchronousTestCase):
    def setUp(self):
        self.home = tempfile.mkdtemp()
        self.addCleanup(__import__("shutil").rmtree, self.home)

    def test_init_then_run_round_trip(self):
        code, out, err = run_cli("init", "--id", "M1", "--layer", "2", "--home", self.home,
                                 "--port", "1800", "--announce-host", "10.0.0.5",
                                 "--directory", "http://127.0.0.1:9999/")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("public key:", out)
        config = load_config("M1", self.home)
        self.assertEqual((config.layer, str(config.listening_address),
                          str(config.announce_address)),
                         (2, "127.0.0.1:1800", "10.0.0.5:1800"))
        self.assertEqual(config.debug["presence_directory_server"], "http://127.0.0.1:9999")
        keys = config.load_keys()
        self.assertIn(keys.public_text, out)

        options = tap.Options()
        options.parseOptions(["--id", "M1", "--home", self.home])
        service = tap.makeService(options, Clock())
        self.addCleanup(options.replays.close)
        self.assertIsInstance(service, MixnodeServer)
        self.assertEqual(service.listen_endpoint, "tcp:1800:interface=127.0.0.1")
        self.assertEqual(service.layer, 2)
        self.assertEqual(service.keys, keys)
        self.assertEqual(service.presence_interval, 1.5)
        # the tap assembles: config.toml's values are in the parts it built
        debug = config.debug
        self.assertIs(service.node.replay_cache, options.replays)  # kept across restarts
        self.assertEqual(service.factory.max_connections, debug["maximum_connections"])
        self.assertEqual(service.links.queue_size, debug["packet_queue_size"])
        self.assertEqual(service.node.max_in_flight, debug["maximum_packets_in_flight"])
        self.assertEqual(service.node.private_key, keys.private_key)
        # the replay log's file is closed when the node stops
        service.startService()
        self.assertIsNotNone(options.replays._fd)
        self.successResultOf(service.stopService())
        self.assertIsNone(options.replays._fd)

    def test_init_refuses_existing_id_unless_forced_and_keeps_keys(self):
        self.assertEqual(run_cli("init", "--id", "M1", "--layer", "1", "--home", self.home)[0], 0)
        before = load_config("M1", self.home).load_keys()
        code, out, err = run_cli("init", "--id", "M1", "--layer", "3", "--home", self.home)
        self.assertEqual(code, 1)
        self.assertIn("already exists", err)
        self.assertIn("--force", err)
        self.assertEqual(load_config("M1", self.home).layer, 1)
        code, _, _ = run_cli("init", "--id", "M1", "--layer", "3", "--home", self.home, "--force")
        self.assertEqual(code, 0)
        self.assertEqual(load_config("M1", self.home).layer, 3)
        self.assertEqual(load_config("M1", self.home).load_keys(), before)

    def test_bad_flags_name_the_flag(self):
        # a usage error exits 2; a missing config file is a failure (1)
        cases = [
            (["init", "--layer", "1"], "--id is required"),
            (["init", "--id", "M1"], "--layer is required"),
            (["init", "--id", "M1", "--layer", "4"], "--layer must be one of 1, 2, 3"),
            (["init", "--id", "M1", "--layer", "1", "--port", "70000"], "--port must be"),
            (["init", "--id", "M1", "--layer", "1", "--announce-port", "x"],
             "--announce-port must be"),
            (["init", "--id", "M1", "--layer", "1", "--host", "example.org"],
             "--host must be an IPv4 or IPv6 address, not 'example.org'"),
            (["init", "--id", "M1", "--layer", "1", "--host", "0.0.0.0"],
             "needs --announce-host"),
            (["init", "--id", "../x", "--layer", "1"], "--id: invalid id"),
            (["init", "--id", "M1", "--layer", "1", "--directory", "ftp://x"],
             "must be an http:// or https:// URL"),
            (["run", "--id", "Nobody"], "run 'nym-mixnode init --id Nobody", 1),
            (["run"], "--id is required"),
            (["frobnicate"], "frobnicate"),
            ([], "give a command: init or run"),
        ]
        for argv, expected, *status in cases:
            code, out, err = run_cli(*argv, "--home", self.home) if argv and argv[0] in (
                "init", "run") else run_cli(*argv)
            self.assertEqual(code, status[0] if status else 2, argv)
            self.assertIn(expected, err, argv)
            self.assertNotIn("Parameter type enforcement", err, argv)

    def write_config(self, text):
        path = config_path("M1", self.home)
        path.write_text(text)

    def test_bad_config_values_name_the_key(self):
        run_cli("init", "--id", "M1", "--layer", "1", "--home", self.home)
        good = config_path("M1", self.home).read_text()
        cases = [
            (good.replace("layer = 1", "layer = 7"), "[mixnode] layer must be one of 1, 2, 3, not 7"),
            (good.replace("layer = 1", 'layer = "1"'), "[mixnode] layer"),
            (good.replace("presence_sending_delay = 1500", "presence_sending_delay = -1"),
             "[debug] presence_sending_delay must be a positive whole number of milliseconds,"
             " at most 86400000, not -1"),
            # more than a C ssize_t: the node used to start, then fail on its first packet
            (good.replace("packet_queue_size = 1024", "packet_queue_size = " + "9" * 23),
             "[debug] packet_queue_size must be a whole number from 1 to 1048576"),
            (good.replace("maximum_packets_in_flight = 32768",
                          "maximum_packets_in_flight = 99999999999"),
             "[debug] maximum_packets_in_flight must be a whole number from 1 to"),
            (good.replace('id = "M1"', 'id = "M2"'), "id is 'M2', but this is mixnode 'M1'"),
            (good.replace("replay_cache_size = 1048576", "replay_cache_size = 1.5"),
             "[debug] replay_cache_size must be a whole number"),
            (good + "\nbogus = 1\n", "unknown key 'bogus' in [debug]"),
            (good.replace('listening_address = "127.0.0.1:1789"',
                          'listening_address = "localhost:1789"'),
             "[mixnode] listening_address"),
            (good.replace("id = ", "# id = "), "[mixnode] id is missing"),
            ("[mixnode\n", "is not valid TOML"),
            (good.replace("packet_forwarding_initial_backoff = 100",
                          "packet_forwarding_initial_backoff = 31000"),
             "cannot exceed packet_forwarding_maximum_backoff"),
        ]
        for text, expected in cases:
            self.write_config(text)
            with self.assertRaises(ConfigError) as e:
                load_config("M1", self.home)
            self.assertIn(expected, str(e.exception))
            with self.assertRaises(usage.UsageError) as e:
                tap.Options().parseOptions(["--id", "M1", "--home", self.home])
            self.assertIn(expected, str(e.exception))

    def test_corrupt_key_file_is_a_clear_error(self):
        run_cli("init", "--id", "M1", "--layer", "1", "--home", self.home)
        private = load_config("M1", self.home).private_sphinx_key_file
        with open(private, "w") as f:
            f.write("not a key!\n")
        code, _, err = run_cli("run", "--id", "M1", "--home", self.home)
        self.assertEqual(code, 1)
        self.assertIn("does not hold a base58 key", err)

    @given(st.text(max_size=300))
    def test_any_text_is_a_config_error_or_a_config(self, text):
        try:
            parse_config(text)
        except ConfigError:
            pass

    def test_init_api_refuses_bad_layer(self):
        with self.assertRaises(ConfigError):
            init_mixnode("M1", 0, root=self.home)


class HeartbeatTests(SynchronousTestCase):
    def test_announces_and_reports_on_the_clock(self):
        from twisted.internet.testing import MemoryReactorClock
        reactor = MemoryReactorClock()
        keys = KeyPair.from_private(b"\x07" * 32)
        directory = FakeDirectory()
        service = MixnodeService(reactor, keys, 2, "tcp:0:interface=127.0.0.1", "10.1.2.3",
                                 directory=directory, announce_port=1789)
        service.startService()
        # MemoryReactor binds synchronously and gives port 0 back.
        self.successResultOf(service.whenListening())
        self.assertEqual(directory.announced_mixnodes, [{
            "host": "10.1.2.3:1789", "pubKey": keys.public_text, "layer": 2,
            "version": "0.5.0", "location": "unknown"}])
        self.assertEqual(directory.metrics, [{
            "pubKey": keys.public_text, "received": 0, "sent": 0, "dropped": {}}])
        service.node.handle_packet(b"\x00" * 1372)
        reactor.advance(1.0)
        self.assertEqual(directory.metrics[-1]["received"], 1)
        self.assertEqual(directory.metrics[-1]["dropped"], {"InvalidGroupElementError": 1})
        self.assertEqual(len(directory.announced_mixnodes), 1)
        reactor.advance(0.5)
        self.assertEqual(len(directory.announced_mixnodes), 2)
        # The directory going down does not stop the beats or the mixing.
        directory.up = False
        reactor.advance(1.5)
        reactor.advance(1.5)
        self.assertEqual(len(directory.announced_mixnodes), 4)
        self.assertEqual(directory.metrics[-1]["received"], 0)
        service.node.handle_packet(b"\x00" * 1372)
        self.assertEqual(service.node.received, 1)
        self.flushLoggedErrors()
        service.stopService()
        count = len(directory.announced_mixnodes)
        reactor.advance(10)
        self.assertEqual(len(directory.announced_mixnodes), count)

    def test_metrics_of_an_outage_are_reported_afterwards(self):
        from twisted.internet.testing import MemoryReactorClock
        reactor = MemoryReactorClock()
        keys = KeyPair.from_private(b"\x08" * 32)
        directory = FakeDirectory()
        service = MixnodeService(reactor, keys, 1, "tcp:0:interface=127.0.0.1", "10.1.2.3",
                                 directory=directory, announce_port=1789)
        service.startService()
        self.successResultOf(service.whenListening())
        directory.up = False
        service.node.handle_packet(b"\x00" * 1372)
        reactor.advance(1.0)  # this report fails
        self.assertEqual(directory.metrics[-1]["received"], 1)
        service.node.handle_packet(b"\x00" * 1372)
        directory.up = True
        reactor.advance(1.0)
        self.assertEqual(directory.metrics[-1]["received"], 2)
        self.assertEqual(directory.metrics[-1]["dropped"], {"InvalidGroupElementError": 2})
        reactor.advance(1.0)
        self.assertEqual(directory.metrics[-1]["received"], 0)
        self.flushLoggedErrors()
        service.stopService()


class ConfigFileModeTests(SynchronousTestCase):
    def test_config_is_owner_only_and_never_written_through_a_leftover(self):
        import os
        import stat
        from nymtx.mixnode.config import config_path
        home = self.mktemp()
        init_mixnode("M1", 1, root=home)
        path = config_path("M1", home)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        elsewhere = self.mktemp()
        os.symlink(elsewhere, str(path) + ".tmp")
        init_mixnode("M1", 2, root=home, force=True)
        self.assertFalse(os.path.exists(elsewhere))
        self.assertIn("layer = 2", path.read_text())
