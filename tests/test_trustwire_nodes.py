"""Nodes sign: an identity key at init (or on the first start of an older
node), and presences and metrics signed to every directory configured."""

import io
import os
import shutil
from contextlib import redirect_stderr, redirect_stdout

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.config import ConfigError
from nymtx.directory.registry import Registry
from nymtx.directory.resource import make_site
from nymtx.directory.signed import SignedRegistry
from nymtx.gateway import cli as gateway_cli, config as G, tap as gateway_tap
from nymtx.mixnode import cli as mixnode_cli, tap as mixnode_tap
from nymtx.mixnode.config import config_path, init_mixnode, load_config, parse_config
from nymtx.trust.identity import PRIVATE_IDENTITY_FILE, IdentityKey
from nymtx.trust.wiring import directory_keys, directory_list
from tests.ports import free_ports

LOCAL = "tcp:0:interface=127.0.0.1"


def run(main, *argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


class IdentityAtInitTests(SynchronousTestCase):

    def setUp(self):
        self.home = self.mktemp()

    def test_mixnode_init_creates_an_identity_and_force_keeps_it(self):
        code, out, err = run(mixnode_cli.main, "init", "--id", "M1", "--layer", "1",
                             "--home", self.home)
        self.assertEqual((code, err), (0, ""))
        identity = load_config("M1", self.home).load_identity()
        self.assertIn(identity.public_text, out)
        run(mixnode_cli.main, "init", "--id", "M1", "--layer", "2", "--home", self.home,
            "--force")
        self.assertEqual(load_config("M1", self.home).load_identity(), identity)

    def test_gateway_init_creates_an_identity(self):
        code, out, err = run(gateway_cli.main, "init", "--id", "G1", "--home", self.home,
                             "--directory", "")
        self.assertEqual((code, err), (0, ""))
        identity = IdentityKey.load(str(G.data_dir("G1", self.home)))
        self.assertIn(identity.public_text, out)

    def test_an_older_node_gets_an_identity_on_first_start_and_says_so(self):
        init_mixnode("M1", 1, port=1789, directory="", root=self.home)
        data = os.path.dirname(load_config("M1", self.home).private_sphinx_key_file)
        os.remove(os.path.join(data, PRIVATE_IDENTITY_FILE))
        os.remove(os.path.join(data, "public_identity.key"))
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        options = mixnode_tap.Options()
        options.parseOptions(["--id", "M1", "--home", self.home])
        lines = [formatEvent(e) for e in events]
        self.assertTrue([line for line in lines if "created identity key "
                         + options.identity.public_text in line], lines)
        # and keeps it from then on, without a word
        events.clear()
        again = mixnode_tap.Options()
        again.parseOptions(["--id", "M1", "--home", self.home])
        self.assertEqual(again.identity, options.identity)
        self.assertFalse([e for e in events if "created identity" in formatEvent(e)])

    def test_a_damaged_identity_file_is_a_usage_error_naming_it(self):
        run(gateway_cli.main, "init", "--id", "G1", "--home", self.home, "--directory", "")
        with open(os.path.join(G.data_dir("G1", self.home), PRIVATE_IDENTITY_FILE), "w") as f:
            f.write("\x00\x01")
        code, out, err = run(gateway_cli.main, "run", "--id", "G1", "--home", self.home)
        self.assertEqual(code, 1)
        self.assertIn("identity key", err)
        self.assertNotIn("Traceback", err)


class PinsAtInitTests(SynchronousTestCase):
    """``--directory-keys`` at init writes the pins an operator would
    otherwise type into [debug] directory_keys (docs/deployment.md)."""

    def setUp(self):
        self.home = self.mktemp()
        self.keys = [IdentityKey.generate().public_text for _ in range(2)]

    def test_a_mixnode_pins_the_keys_given(self):
        code, out, err = run(mixnode_cli.main, "init", "--id", "M1", "--layer", "2",
                             "--home", self.home, "--directory-keys", " , ".join(self.keys))
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(load_config("M1", self.home).debug["directory_keys"], tuple(self.keys))

    def test_a_gateway_pins_the_keys_given(self):
        code, out, err = run(gateway_cli.main, "init", "--id", "G1", "--home", self.home,
                             "--directory", "", "--directory-keys", self.keys[0])
        self.assertEqual((code, err), (0, ""))
        config = G.parse(G.config_path("G1", self.home).read_text())
        self.assertEqual(config.directory_keys, (self.keys[0],))

    def test_without_the_flag_nothing_is_pinned(self):
        run(mixnode_cli.main, "init", "--id", "M1", "--layer", "2", "--home", self.home)
        self.assertEqual(load_config("M1", self.home).debug["directory_keys"], ())

    def test_a_bad_key_is_a_usage_error_and_writes_nothing(self):
        for main, argv, name in (
                (mixnode_cli.main, ["--layer", "1"], "mixnodes"),
                (gateway_cli.main, ["--directory", ""], "gateways")):
            for bad, why in (("nope", "--directory-keys[0]"),
                             (f"{self.keys[0]},{self.keys[0]}", "listed twice")):
                code, out, err = run(main, "init", "--id", "X1", "--home", self.home,
                                     *argv, "--directory-keys", bad)
                self.assertEqual(code, 2)
                self.assertIn(why, err)
                self.assertFalse(os.path.exists(os.path.join(self.home, name, "X1")))


class DirectoryListTests(SynchronousTestCase):

    def test_lists_are_checked_entry_by_entry(self):
        self.assertEqual(directory_list(["http://a:1/", "http://b:2"], "x"),
                         ("http://a:1", "http://b:2"))
        for bad, why in ((("http://a:1", "http://a:1"), "listed twice"),
                         ("http://a:1", "must be a list"), ([1], "x[0]"),
                         (["ftp://a"], "x[0]"), (["http://a"] * 40, "at most")):
            e = self.assertRaises(ConfigError, directory_list, bad, "x")
            self.assertIn(why, str(e))

    def test_pinned_keys_are_checked(self):
        key = IdentityKey.generate().public_text
        self.assertEqual(directory_keys([key], "k"), (key,))
        for bad, why in (([key, key], "listed twice"), (["nope!"], "k[0]"), (key, "a list"),
                         ([b"x"], "k[0]")):
            e = self.assertRaises(ConfigError, directory_keys, bad, "k")
            self.assertIn(why, str(e))

    def test_a_mixnode_config_reads_its_further_directories(self):
        home = self.mktemp()
        init_mixnode("M1", 1, port=1789, root=home)
        text = config_path("M1", home).read_text()
        self.assertIn("presence_directory_servers = []", text)
        text = text.replace("presence_directory_servers = []",
                            'presence_directory_servers = ["http://127.0.0.1:9", 3]')
        e = self.assertRaises(ConfigError, parse_config, text)
        self.assertIn("[debug] presence_directory_servers[1]", str(e))

    def test_a_gateway_config_reads_its_further_directories(self):
        config = G.validate(id="G1", more_directories=["http://127.0.0.1:9"])
        self.assertEqual(G.parse(config.to_toml()).more_directories, ("http://127.0.0.1:9",))
        e = self.assertRaises(ConfigError, G.validate, id="G1", more_directories="http://x")
        self.assertIn("presence_directory_servers", str(e))


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


class SignedAnnouncesTests(TestCase):
    """Real nodes from their config, three real directories on TCP: two
    signed, one the seed's; each lists the node under its identity."""

    timeout = 60

    async def directory(self, registry):
        port = await serverFromString(reactor, LOCAL).listen(make_site(registry))
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def directories(self):
        self.signed = [SignedRegistry(reactor, IdentityKey.generate()) for _ in range(2)]
        self.seed = Registry(reactor)
        return [await self.directory(r) for r in self.signed + [self.seed]]

    def test_a_mixnode_announces_and_reports_signed_to_each(self):
        return Deferred.fromCoroutine(self._mixnode())

    async def _mixnode(self):
        reports = []
        add_metrics = SignedRegistry.add_metrics

        def recording(registry, signed):
            add_metrics(registry, signed)  # raises for a report refused
            reports.append((registry, signed.metrics))
        # before the directories: their resources bind the method
        self.patch(SignedRegistry, "add_metrics", recording)
        urls = await self.directories()
        home = self.mktemp()
        config = init_mixnode("M1", 1, port=free_ports(), directory=urls[0], root=home)
        debug = dict(config.debug, presence_directory_servers=tuple(urls[1:]),
                     presence_sending_delay=100, metrics_sending_delay=100)
        config = attrs.evolve(config, debug=debug)
        identity = config.load_identity()
        service = mixnode_tap.service_from_config(config, config.load_keys(), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        await service.whenListening()
        for _ in range(100):
            if all(r.signed_topology().document.mixnodes for r in self.signed) \
                    and self.seed.topology()["MixNodes"] \
                    and {id(r) for r, _ in reports} == {id(r) for r in self.signed}:
                break
            await sleep(0.05)
        for registry in self.signed:
            [signed] = registry.signed_topology().document.mixnodes
            self.assertEqual(signed.identity_key, identity.public_key)
            self.assertEqual(signed.presence.sphinx_key, service.keys.public_key)
            # metrics only verify from the node itself
            self.assertEqual({(m.identity_key, m.sphinx_key) for r, m in reports
                              if r is registry},
                             {(identity.public_key, service.keys.public_key)})
        # the seed's directory reads the signed presence as a seed one
        [entry] = self.seed.topology()["MixNodes"]
        self.assertEqual(entry["pubKey"], service.keys.public_text)

    def test_a_gateway_announces_signed_to_each(self):
        return Deferred.fromCoroutine(self._gateway())

    async def _gateway(self):
        urls = await self.directories()
        home = self.mktemp()
        code, _, err = run(gateway_cli.main, "init", "--id", "G1", "--home", home,
                           "--mix-port", "0", "--clients-port", "0", "--host", "127.0.0.1",
                           "--directory", urls[0])
        self.assertEqual(code, 0, err)
        config = attrs.evolve(G.load("G1", home), more_directories=tuple(urls[1:]),
                              presence_sending_delay_ms=100)
        G.save(config, home)
        options = gateway_tap.Options()
        options.parseOptions(["--id", "G1", "--home", home])
        service = gateway_tap.makeService(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        await service.whenListening()
        for _ in range(100):
            if all(r.signed_topology().document.gateways for r in self.signed) \
                    and self.seed.topology()["MixProviderNodes"]:
                break
            await sleep(0.05)
        for registry in self.signed:
            [signed] = registry.signed_topology().document.gateways
            self.assertEqual(signed.identity_key, options["identity"].public_key)
        self.assertEqual(len(self.seed.topology()["MixProviderNodes"]), 1)

    def tearDown(self):
        shutil.rmtree(self.mktemp(), ignore_errors=True)
