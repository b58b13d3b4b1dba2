"""The client trusts pinned directories: directory_keys and
directory_threshold in config.toml and on the command line, a
TrustedDirectoryClient built from them, and a client core that routes on
the last good signed topology until it expires, then stops sending."""

import random

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from nymtx.client import tap
from nymtx.client.config import ClientConfig, ConfigError
from nymtx.client.core import ClientCore, SendError
from nymtx.client.embed import _default_directory
from nymtx.client.inbox import Inbox
from nymtx.directory.client import DirectoryClient, DirectoryError
from nymtx.directory.resource import DirectoryResource
from nymtx.directory.signed import SignedRegistry
from nymtx.keys import KeyPair, encode_key
from nymtx.testing import FakeGatewayLink, FakeLinks
from nymtx.trust.client import TrustedDirectoryClient
from nymtx.trust.presence import NS

from tests.trustnet import gateway, identity, mixnode

START = 1_700_000_000.0
A, B, C = identity(601), identity(602), identity(603)
URLS = ["http://d0.test:1", "http://d1.test:2", "http://d2.test:3"]


class ConfigTests(SynchronousTestCase):

    def config(self, **values):
        return ClientConfig.new(self.mktemp(), "Alice", **values)

    def test_pins_round_trip_through_the_file(self):
        keys = [k.public_text for k in (A, B, C)]
        config = self.config(directory_server=URLS[0], more_directories=URLS[1:],
                             directory_keys=keys, directory_threshold=2)
        again = ClientConfig.from_toml(config.to_toml())
        self.assertEqual(again.directory_keys, tuple(keys))
        self.assertEqual(again.more_directories, tuple(URLS[1:]))
        self.assertEqual(again.directory_threshold, 2)
        self.assertEqual(again.directory_urls, URLS)

    def test_an_older_file_trusts_its_one_directory_as_before(self):
        config = self.config()
        text = "\n".join(line for line in config.to_toml().splitlines()
                         if not line.startswith(("directory_keys", "directory_servers",
                                                 "directory_threshold")))
        again = ClientConfig.from_toml(text)
        self.assertEqual(again.directory_keys, ())
        self.assertIsInstance(_default_directory(again, Clock()), DirectoryClient)

    def test_inconsistent_pins_are_refused_clearly(self):
        keys = [k.public_text for k in (A, B, C)]
        for values, why in [
                (dict(more_directories=URLS[1:]), "need their keys pinned"),
                (dict(directory_keys=keys[:1], directory_threshold=2), "more than the 1"),
                (dict(directory_keys=keys), "2 directories must agree, but 1"),
                (dict(directory_keys=["x0"]), "[client] directory_keys[0]"),
                (dict(directory_keys=keys[:1] * 2), "listed twice"),
                (dict(directory_threshold=-1), "directory_threshold")]:
            e = self.assertRaises(ConfigError, self.config, **values)
            self.assertIn(why, str(e))

    def test_a_bad_pin_in_the_file_names_the_key(self):
        text = self.config().to_toml().replace("directory_keys = []",
                                               'directory_keys = ["nope"]')
        e = self.assertRaises(ConfigError, ClientConfig.from_toml, text, "c.toml")
        self.assertIn("c.toml", str(e))
        self.assertIn("directory_keys[0]", str(e))

    def test_pinned_keys_give_a_trusted_client_over_every_directory(self):
        keys = [k.public_text for k in (A, B, C)]
        config = self.config(directory_server=URLS[0], more_directories=URLS[1:],
                             directory_keys=keys)
        directory = _default_directory(config, Clock())
        self.assertIsInstance(directory, TrustedDirectoryClient)
        self.assertEqual([d.base_url for d in directory.directories], URLS)
        self.assertEqual(directory.trust.threshold, 2)
        self.assertEqual(directory.trust.pinned, {A.public_key, B.public_key, C.public_key})


class FlagTests(SynchronousTestCase):

    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(["--id", "Alice", "--home", self.mktemp(), *argv])
        return options["overrides"]

    def test_flags(self):
        overrides = self.parse("--directories", f"{URLS[1]}, {URLS[2]}",
                               "--directory-keys", f"{A.public_text},{B.public_text}",
                               "--directory-threshold", "2")
        self.assertEqual(overrides["more_directories"], tuple(URLS[1:]))
        self.assertEqual(overrides["directory_keys"], (A.public_text, B.public_text))
        self.assertEqual(overrides["directory_threshold"], 2)

    def test_bad_flags_name_the_flag(self):
        for argv, why in [(["--directory-keys", "zz0"], "--directory-keys[0]"),
                          (["--directories", "ftp://x"], "--directories[0]"),
                          (["--directory-threshold", "two"], "--directory-threshold")]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(why, str(e))

    def test_a_new_id_is_initialised_with_the_pins(self):
        options = tap.Options()
        options.parseOptions(["--id", "Alice", "--home", self.mktemp(),
                              "--directory-keys", A.public_text])
        launcher = tap.makeService(options, Clock()).service
        self.assertEqual(launcher.init_options["directory_keys"], (A.public_text,))


class _Dead(Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(503)
        return b'{"error": "down"}'


class ExpiryTests(SynchronousTestCase):
    """The real core over the real TrustedDirectoryClient, the real signed
    directories behind StubTreq, on a Clock."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.alice, self.bob = KeyPair.generate(), KeyPair.generate()
        self.registries = [SignedRegistry(self.clock, key, expiry=10_000)
                           for key in (A, B)]
        self.directories = [DirectoryClient(f"http://d{i}.test", StubTreq(DirectoryResource(r)))
                            for i, r in enumerate(self.registries)]
        self.nodes = [mixnode(10 * layer + 1, layer) for layer in (1, 2, 3)]
        self.gateway = gateway(41, [self.alice.public_key, self.bob.public_key])
        now = int(self.clock.seconds() * NS)
        for registry in self.registries:
            for node in self.nodes:
                registry.add_mixnode(node.presence(now))
            registry.add_gateway(self.gateway.presence(now))
        config = ClientConfig.new(
            self.mktemp(), "Alice", provider_id=encode_key(self.gateway.sphinx_key),
            provider_authtoken=encode_key(bytes(32)),
            directory_keys=[A.public_text, B.public_text], directory_server="http://d0.test",
            more_directories=["http://d1.test"])
        directory = _default_directory(config, self.clock)
        directory.directories = self.directories
        inbox = Inbox(":memory:", self.clock)
        self.addCleanup(inbox.close)
        self.core = ClientCore(self.clock, config, self.alice, directory, FakeLinks(),
                               FakeGatewayLink([]), inbox, rng=random.Random(3))

    def refresh(self):
        self.core.refresh_topology().addErrback(lambda f: f.trap(DirectoryError))

    def test_routes_on_the_last_good_topology_until_it_expires_then_stops(self):
        self.refresh()
        self.assertEqual(len(self.core.topology.mixnodes), 3)
        self.core.send(self.bob.public_text, b"hello")
        # both directories go down: the held documents still count
        for d in self.directories:
            d.treq = StubTreq(_Dead())
        self.clock.advance(100)
        self.refresh()
        self.assertIsNotNone(self.core.topology)
        self.core.send(self.bob.public_text, b"still routed")
        # past the documents' 120 s: no threshold of current documents
        self.clock.advance(30)
        self.refresh()
        self.assertIsNone(self.core.topology)
        e = self.assertRaises(SendError, self.core.send, self.bob.public_text, b"no")
        self.assertIn("no current signed topology", str(e))
        self.assertIn("2 needed", str(e))
        self.core._sending_tick()  # the queued messages stay, and it says why
        self.assertIn("2 needed", self.core._blocked)
        # the directories come back: routing again
        for d, r in zip(self.directories, self.registries):
            d.treq = StubTreq(DirectoryResource(r))
            now = int(self.clock.seconds() * NS)
            for node in self.nodes:
                r.add_mixnode(node.presence(now))
            r.add_gateway(self.gateway.presence(now))
        self.refresh()
        self.assertEqual(len(self.core.topology.mixnodes), 3)
        self.core.send(self.bob.public_text, b"back")

    def test_a_directory_error_keeps_the_topology(self):
        self.refresh()
        held = self.core.topology
        self.core.directory = _Failing()
        self.refresh()
        self.assertIs(self.core.topology, held)


class _Failing:
    def get_topology(self):
        from twisted.internet.defer import fail
        return fail(DirectoryError("down"))
