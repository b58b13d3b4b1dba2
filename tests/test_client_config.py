"""config.toml, flags, init, the twistd plugin, the inbox file, and one run over real sockets."""

import json
import os
import stat

from hypothesis import given, strategies as st
from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.plugin import getPlugins
from twisted.protocols.basic import LineReceiver
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.client import tap
from nymtx.client.cli import main as cli_main
from nymtx.client.config import ClientConfig, ConfigError, DEBUG_DEFAULTS, MESSAGE_DEFAULTS
from nymtx.client.embed import InitError, init_client
from nymtx.client.inbox import Inbox, InboxError
from nymtx.client.service import ClientLauncher
from nymtx.keys import KeyPair, encode_key
from nymtx.message import KIND_TEXT, Message

from nymtx.testing import FakeDirectory, FakeGatewayLink, FakeLinks, FakeNetwork as Network


class ConfigFileTests(SynchronousTestCase):
    def test_round_trip(self):
        config = ClientConfig.new(
            self.mktemp(), "Alice", directory_server="http://10.0.0.1:8080",
            provider_id=KeyPair.generate().public_text, provider_authtoken=encode_key(b"t" * 32),
            socket_type="TCP", listening_port=1234, average_packet_delay=5,
            fetch_message_delay=7, allowed_origins=["https://chat.example", "http://x.example:81"])
        config.save()
        self.assertEqual(stat.S_IMODE(os.stat(config.config_path).st_mode), 0o600)
        self.assertEqual(ClientConfig.load(config.root, "Alice"), config)
        text = config.config_path.read_text()
        for section in ("[client]", "[socket]", "[debug]"):
            self.assertIn(section, text)
        self.assertIn("# allowed values are 'TCP', 'WebSocket' or 'None'", text)

    def test_defaults(self):
        config = ClientConfig.new(self.mktemp(), "Alice")
        for name, value in DEBUG_DEFAULTS.items():
            self.assertEqual(getattr(config, name), value)
        self.assertEqual((config.socket_type, config.listening_port), ("WebSocket", 9001))

    def test_errors_name_the_key(self):
        base = ClientConfig.new(self.mktemp(), "Alice").to_toml()
        cases = [
            (base.replace("[debug]", "[debug]\nspeed = 3"), "unknown key 'speed' in [debug]"),
            (base + "\n[extra]\n", "unknown section [extra]"),
            (base.replace('socket_type = "WebSocket"', 'socket_type = "UDP"'),
             "[socket] socket_type must be one of 'WebSocket', 'TCP', 'None', not 'UDP'"),
            (base.replace("listening_port = 9001", "listening_port = 70000"),
             "[socket] listening_port must be a port number from 0 to 65535, not 70000"),
            (base.replace("fetch_message_delay = 1000", "fetch_message_delay = -1"),
             "[debug] fetch_message_delay must be a positive whole number of milliseconds"),
            (base.replace("fetch_message_delay = 1000", 'fetch_message_delay = "soon"'),
             "[debug] fetch_message_delay must be a positive whole number of milliseconds"),
            (base.replace('provider_id = ""', 'provider_id = "zz"'), "provider_id"),
            (base.replace('directory_server = "http://127.0.0.1:8080"',
                          'directory_server = "ftp://x"'), "directory_server"),
            ("[client\n", "not valid TOML"),
            (base.replace("allowed_origins = []", 'allowed_origins = "https://a.example"'),
             "allowed_origins must be a list"),
            (base.replace("allowed_origins = []", 'allowed_origins = ["https://a.example/path"]'),
             "allowed_origins: 'https://a.example/path' is not an origin"),
            (base.replace("allowed_origins = []", "allowed_origins = [3]"),
             "allowed_origins: 3 is not an origin"),
            (base.replace('id = "Alice"', "id = 5"), "invalid id 5: an id is text, not int"),
        ]
        for text, fragment in cases:
            with self.assertRaises(ConfigError) as cm:
                ClientConfig.from_toml(text, "/x/config.toml")
            self.assertIn(fragment, str(cm.exception))
            # the file is named too, so a bad value is not taken for a bad flag
            self.assertTrue(str(cm.exception).startswith("/x/config.toml"), str(cm.exception))

    def test_save_replaces_a_leftover_tmp_file_instead_of_writing_through_it(self):
        config = ClientConfig.new(self.mktemp(), "Alice",
                                  provider_authtoken=encode_key(b"t" * 32))
        config.config_path.parent.mkdir(parents=True)
        tmp = str(config.config_path) + ".tmp"
        # a crash left a world-readable .tmp ...
        with open(tmp, "w") as f:
            f.write("old")
        os.chmod(tmp, 0o644)
        config.save()
        self.assertEqual(stat.S_IMODE(os.stat(config.config_path).st_mode), 0o600)
        # ... or a symlink: the token must not go where it points
        elsewhere = self.mktemp()
        os.symlink(elsewhere, tmp)
        config.save()
        self.assertFalse(os.path.exists(elsewhere))
        self.assertEqual(ClientConfig.load(config.root, "Alice"), config)

    def test_token_not_in_repr(self):
        token = "9XgGfNnRPtmwcAPXXiyUWBQsxHMqfF7vTGbo3RRpvse8"
        config = ClientConfig.new(self.mktemp(), "Alice", provider_authtoken=token)
        self.assertNotIn(token, repr(config))

    def test_socket_type_spellings(self):
        root = self.mktemp()
        base = ClientConfig.new(root, "Alice").to_toml()
        for spelling, canonical in [("ws", "WebSocket"), ("websocket", "WebSocket"),
                                    ("TCP", "TCP"), ("none", "None")]:
            text = base.replace('socket_type = "WebSocket"', f'socket_type = "{spelling}"')
            self.assertEqual(ClientConfig.from_toml(text).socket_type, canonical)

    @given(st.text(max_size=300))
    def test_any_text_is_a_config_or_a_config_error(self, text):
        try:
            config = ClientConfig.from_toml(text)
        except ConfigError:
            return
        # whatever was accepted is written back and read as the same config
        self.assertEqual(ClientConfig.from_toml(config.to_toml()), config)

    @given(st.sampled_from([("client", k) for k in (
               "id", "directory_server", "provider_id", "provider_authtoken",
               "nym_root_directory")] + [("socket", k) for k in (
               "socket_type", "listening_port", "allowed_origins")]
               + [("debug", k) for k in DEBUG_DEFAULTS]
               + [("message", k) for k in MESSAGE_DEFAULTS]),
           st.one_of(st.integers(-10, 100000), st.booleans(), st.text(max_size=30),
                     st.lists(st.text(max_size=12), max_size=3)))
    def test_any_value_of_any_key(self, where, value):
        import tomlkit
        doc = tomlkit.parse(ClientConfig.new(self.mktemp(), "Alice").to_toml())
        section, key = where
        doc[section][key] = value
        try:
            config = ClientConfig.from_toml(tomlkit.dumps(doc))
        except ConfigError:
            return
        self.assertEqual(ClientConfig.from_toml(config.to_toml()), config)


class FlagTests(SynchronousTestCase):
    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_flags_override_the_file(self):
        root = self.mktemp()
        ClientConfig.new(root, "Alice", provider_id=KeyPair.generate().public_text).save()
        options = self.parse("--id", "Alice", "--home", root, "--socket-type", "tcp",
                             "--port", "0", "--fetch-message-delay", "20")
        self.assertEqual(options["overrides"], {"socket_type": "TCP", "listening_port": 0,
                                                "fetch_message_delay": 20})
        config = ClientConfig.load(root, "Alice").evolve(**options["overrides"])
        self.assertEqual((config.socket_type, config.listening_port, config.fetch_message_delay,
                          config.topology_refresh_rate), ("TCP", 0, 20, 10000))

    def test_bad_flags(self):
        for argv, fragment in [([], "--id is required"),
                               (["--id", "../x"], "invalid id"),
                               (["--id", "A", "--port", "x"], "--port must be a port number from 0 to 65535, not 'x'"),
                               (["--id", "A", "--socket-type", "udp"], "--socket-type must be one of 'WebSocket', 'TCP', 'None', not 'udp'"),
                               (["--id", "A", "--average-packet-delay", "0"],
                                "--average-packet-delay must be a positive"),
                               (["--id", "A", "--directory", "nope"], "--directory must be an http:// or https:// URL such as http://127.0.0.1:8080, not 'nope'"),
                               (["--id", "A", "--gateway", "!!"], "--gateway")]:
            with self.assertRaises(usage.UsageError) as cm:
                self.parse(*argv)
            self.assertIn(fragment, str(cm.exception))

    def test_bad_config_file_is_a_usage_error(self):
        root = self.mktemp()
        config = ClientConfig.new(root, "Alice")
        config.save()
        text = config.config_path.read_text().replace("[debug]", "[debug]\nbogus = 1")
        config.config_path.write_text(text)
        with self.assertRaises(usage.UsageError) as cm:
            self.parse("--id", "Alice", "--home", root)
        self.assertIn("bogus", str(cm.exception))

    def test_cli_bad_flag_exits_2(self):
        import io
        import sys
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(cli_main(["run", "--id", "A", "--port", "-4"]), 2)
        self.assertIn("--port must be a port number from 0 to 65535, not -4", err.getvalue())
        self.assertNotIn("Traceback", err.getvalue())
        self.assertEqual(cli_main(["fly"]), 2)

    def test_plugin(self):
        # every tapname is checked in test_plugins; this is the client's own
        found = {p.tapname: p for p in getPlugins(IServiceMaker)}
        # the tap's Options, with twistd's exit statuses mixed in (nymtx.cli.twistd_options)
        self.assertTrue(issubclass(found["nym"].options, tap.Options))


class InitTests(SynchronousTestCase):
    def test_init_writes_keys_and_config(self):
        root = self.mktemp()
        network = Network()
        config = self.successResultOf(init_client(
            Clock(), root, "Alice", "http://127.0.0.1:8080", socket_type="ws", port=9100,
            directory=FakeDirectory(network.topology()), register=network.register,
            fetch_message_delay=50))
        self.assertEqual([(str(a), g) for a, g, _ in network.registrations],
                         [("127.0.0.1:3001", network.gateway_keys.public_key)])
        self.assertEqual(config.provider_id, network.gateway_keys.public_text)
        self.assertEqual(config.token, b"k" * 32)
        self.assertEqual(ClientConfig.load(root, "Alice"), config)
        self.assertEqual((config.socket_type, config.listening_port, config.fetch_message_delay),
                         ("WebSocket", 9100, 50))
        keys = config.load_keys()
        self.assertEqual(len(keys.public_key), 32)
        # A second init refuses, and --force with a failing gateway changes nothing.
        f = self.failureResultOf(init_client(
            Clock(), root, "Alice", "http://127.0.0.1:8080",
            directory=FakeDirectory(network.topology()), register=network.register), ConfigError)
        self.assertIn("already initialised", str(f.value))
        network.refuse_registrations = True
        self.failureResultOf(init_client(
            Clock(), root, "Alice", "http://127.0.0.1:8080", force=True,
            directory=FakeDirectory(network.topology()),
            register=network.register), InitError)
        self.assertEqual(ClientConfig.load(root, "Alice"), config)
        self.assertEqual(config.load_keys(), keys)

    def test_init_errors(self):
        network = Network()
        f = self.failureResultOf(init_client(
            Clock(), self.mktemp(), "Alice", "http://x", directory=FakeDirectory(None),
            register=network.register), InitError)
        self.assertIn("cannot fetch the topology", str(f.value))
        f = self.failureResultOf(init_client(
            Clock(), self.mktemp(), "Alice", "http://x", gateway=KeyPair.generate().public_text,
            directory=FakeDirectory(network.topology()), register=network.register), InitError)
        self.assertIn("not in the topology", str(f.value))
        f = self.failureResultOf(init_client(
            Clock(), self.mktemp(), "Alice", "http://x", socket_type="carrier-pigeon"), ConfigError)
        self.assertIn("socket type", str(f.value))


class StopTests(SynchronousTestCase):
    def test_stop_closes_everything_even_when_the_gateway_link_fails(self):
        from nymtx.client.embed import MixnetClient
        network = Network()
        config = ClientConfig.new(
            self.mktemp(), "Alice", provider_id=network.gateway_keys.public_text,
            provider_authtoken=encode_key(bytes(32)))
        config.save_keys(KeyPair.generate())
        link = FakeGatewayLink()
        link.stop = lambda: fail(OSError("link broke"))
        closed = []
        inbox = Inbox(":memory:", Clock())
        inbox.close = lambda: closed.append("inbox")
        links = FakeLinks()
        links.stop = lambda: closed.append("links") or succeed(None)
        client = MixnetClient(Clock(), config, directory=FakeDirectory(network.topology()),
                              gateway_link=link, inbox=inbox)
        client.links, client._owns_links = links, True
        client.start()
        self.failureResultOf(client.stop(), OSError)
        self.assertEqual(closed, ["links", "inbox"])


class LauncherTests(SynchronousTestCase):
    def test_stopped_during_init_starts_no_client(self):
        network = Network()
        registering = Deferred()
        launcher = ClientLauncher(
            Clock(), self.mktemp(), "Dave", overrides={"socket_type": "None"},
            init_options={"directory_url": "http://127.0.0.1:1",
                          "directory": FakeDirectory(network.topology()),
                          "register": lambda *args: registering},
            directory=FakeDirectory(network.topology()), links=FakeLinks(),
            gateway_link=FakeGatewayLink())
        launcher.startService()
        launcher.stopService()
        registering.callback(b"k" * 32)
        self.assertIsNone(launcher.client_service)
        self.assertEqual(list(launcher), [])


class MessageSectionTests(SynchronousTestCase):
    def test_defaults_round_trip_and_bounds(self):
        config = ClientConfig.new(self.mktemp(), "Alice")
        self.assertEqual((config.maximum_message_size, config.send_queue_messages,
                          config.send_queue_bytes), (1 << 20, 1000, 16 << 20))
        text = config.to_toml()
        self.assertIn("[message]", text)
        self.assertIn("maximum_message_size = 1048576", text)
        bigger = ClientConfig.from_toml(text.replace(
            "maximum_message_size = 1048576", "maximum_message_size = 8388608"))
        self.assertEqual(bigger.maximum_message_size, 8 << 20)
        with self.assertRaises(ConfigError) as cm:
            ClientConfig.from_toml(text.replace("maximum_message_size = 1048576",
                                                "maximum_message_size = 33554432"))
        self.assertIn("send_queue_bytes (16777216) must be at least", str(cm.exception))
        self.assertIn("33554433", str(cm.exception))
        # version 2 carries at most 65,535 fragments of 548 bytes: one byte
        # more is refused, naming both numbers, even with the queue to hold it
        queue = "send_queue_bytes = 67108864"
        text = text.replace("send_queue_bytes = 16777216", queue)
        self.assertIn(queue, text)
        longest = ClientConfig.from_toml(text.replace(
            "maximum_message_size = 1048576", "maximum_message_size = 35913179"))
        self.assertEqual(longest.maximum_message_size, 65535 * 548 - 1)
        with self.assertRaises(ConfigError) as cm:
            ClientConfig.from_toml(text.replace("maximum_message_size = 1048576",
                                                "maximum_message_size = 35913180"))
        self.assertIn("maximum_message_size (35913180) must be at most 35913179",
                      str(cm.exception))
        for bad in ("0", "-1", '"1"', "1.5", "true"):
            with self.assertRaises(ConfigError) as cm:
                ClientConfig.from_toml(text.replace("send_queue_messages = 1000",
                                                    f"send_queue_messages = {bad}"))
            self.assertIn("[message] send_queue_messages", str(cm.exception))


class InboxFileTests(SynchronousTestCase):
    def test_messages_survive_reopening(self):
        path = os.path.join(self.mktemp() + ".sqlite")
        inbox = Inbox(path, Clock())
        inbox.store([(1, b"one"), (None, b"two")])
        inbox.close()
        inbox = Inbox(path, Clock())
        self.assertEqual(inbox.unacked(), [1])
        self.assertEqual(inbox.store([(1, b"one again")]), [])
        self.assertEqual(inbox.take_all(), [Message.from_text("one"), Message.from_text("two")])
        inbox.close()
        inbox = Inbox(path, Clock())
        self.assertEqual(len(inbox), 0)
        inbox.close()

    def test_empty_version_table_is_an_inbox_error_and_the_file_is_let_go(self):
        import sqlite3
        path = self.mktemp()
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE version (version INTEGER)")
        db.commit()
        db.close()
        opened = []
        real_connect = sqlite3.connect

        def connect(*args, **kwargs):
            opened.append(real_connect(*args, **kwargs))
            return opened[-1]
        self.patch(sqlite3, "connect", connect)
        with self.assertRaises(InboxError) as cm:
            Inbox(path, Clock())
        self.assertIn("damaged version table (0 rows)", str(cm.exception))
        # closed: using the connection now is a ProgrammingError
        self.assertRaises(sqlite3.ProgrammingError, opened[0].execute, "SELECT 1")

    def test_kinds_are_kept(self):
        path = self.mktemp()
        inbox = Inbox(path, Clock())
        binary = Message.from_bytes(b"\xff\x00 not text")
        inbox.commit([5, 6], [Message.from_text("héllo"), binary])
        inbox.close()
        inbox = Inbox(path, Clock())
        self.assertEqual(inbox.seen([5, 6, 7]), {5, 6})
        self.assertEqual([m for _, m in inbox.peek()], [Message.from_text("héllo"), binary])
        inbox.close()

    def test_a_v1_inbox_is_upgraded_in_place_its_messages_as_text(self):
        # written as the seed's Inbox wrote it: v1.sql, then its version row
        import sqlite3
        from importlib import resources
        path = self.mktemp()
        v1 = resources.files("nymtx.client").joinpath("schema/v1.sql").read_text()
        db = sqlite3.connect(path)
        db.executescript(v1 + ";INSERT INTO version VALUES (1);")
        db.executemany("INSERT INTO messages (body, received_at) VALUES (?, ?)",
                       [(b"old one", 1.0), (b"old \xfe two", 2.0)])
        db.execute("INSERT INTO unacked VALUES (41)")
        db.commit()
        db.close()
        inbox = Inbox(path, Clock())
        self.assertEqual(inbox.unacked(), [41])
        self.assertEqual([m for _, m in inbox.peek()],
                         [Message(KIND_TEXT, b"old one"), Message(KIND_TEXT, b"old \xfe two")])
        inbox.commit([], [Message.from_bytes(b"new")])
        inbox.close()
        db = sqlite3.connect(path)
        self.assertEqual(db.execute("SELECT version FROM version").fetchall(), [(2,)])
        self.assertEqual(db.execute("SELECT kind, body FROM messages ORDER BY id").fetchall(),
                         [(1, b"old one"), (1, b"old \xfe two"), (2, b"new")])
        db.close()

    def test_a_newer_inbox_is_refused_and_left_alone(self):
        import sqlite3
        path = self.mktemp()
        db = sqlite3.connect(path)
        db.executescript("CREATE TABLE version (version INTEGER NOT NULL);"
                         "INSERT INTO version VALUES (3);")
        db.close()
        with self.assertRaises(InboxError) as cm:
            Inbox(path, Clock())
        self.assertIn("schema version 3", str(cm.exception))

    def test_not_an_inbox(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"this is not sqlite" * 100)
        with self.assertRaises(InboxError):
            Inbox(path, Clock())


class LineClient(LineReceiver):
    delimiter = b"\n"

    def __init__(self):
        self.lines = []
        self.waiting = []
        self.closed = Deferred()

    def lineReceived(self, line):
        self.lines.append(json.loads(line))
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)

    def ask(self, obj):
        d = Deferred()
        self.waiting.append(d)
        self.sendLine(json.dumps(obj).encode())
        return d

    def connectionLost(self, reason):
        self.closed.callback(None)


class RealSocketTests(TestCase):
    async def test_launcher_initialises_then_serves_tcp(self):
        root = self.mktemp()
        network = Network()
        directory = FakeDirectory(network.topology())
        launcher = ClientLauncher(
            reactor, root, "Carol",
            overrides={"socket_type": "TCP", "listening_port": 0, "fetch_message_delay": 20},
            init_options={"directory_url": "http://127.0.0.1:1", "directory": directory,
                          "register": network.register},
            directory=directory, links=FakeLinks(), gateway_link=FakeGatewayLink())
        from twisted.logger import formatEvent, globalLogPublisher
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        launcher.startService()
        port = await launcher.whenListening()
        text = [formatEvent(e) for e in logged]
        self.assertIn("client Carol was never initialised: initialising it now", text)
        self.assertIn(f"Starting TCP listener at 127.0.0.1:{port}", text)
        self.assertIsInstance(port, int)
        self.assertEqual(len(network.registrations), 1)
        client = LineClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        await client.ask({"type": "ownDetails"})
        config = ClientConfig.load(root, "Carol")
        self.assertEqual(client.lines[-1],
                         {"type": "ownDetails", "address": config.load_keys().public_text})
        client.transport.loseConnection()
        await client.closed
        await launcher.stopService()

        # Run again, now initialised, with --gateway: it cannot apply, and says so.
        other = encode_key(KeyPair.generate().public_key)
        again = ClientLauncher(
            reactor, root, "Carol", overrides={"socket_type": "None"},
            init_options={"gateway": other},
            directory=directory, links=FakeLinks(), gateway_link=FakeGatewayLink())
        again.startService()
        await again.whenListening()
        text = [formatEvent(e) for e in logged]
        self.assertTrue(any(f"--gateway {other} is ignored" in t for t in text), text[-3:])
        self.assertEqual(len(network.registrations), 1)
        self.assertEqual(ClientConfig.load(root, "Carol").provider_id, config.provider_id)
        await again.stopService()
