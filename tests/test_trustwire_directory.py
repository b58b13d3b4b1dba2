"""nym-directory --identity-dir / --allow-list / --allow-any: the signed
directory assembled from flags, on a real socket."""

import os

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from nymtx.cli import Unusable
from nymtx.directory import tap
from nymtx.directory.client import DirectoryClient, DirectoryError
from nymtx.directory.registry import Registry
from nymtx.directory.signed import SignedRegistry
from nymtx.keys import KeyPair
from nymtx.trust.agreement import TrustedDirectories
from nymtx.trust.allowlist import AllowList
from nymtx.trust.client import SigningDirectoryClient
from nymtx.trust.identity import IdentityKey
from nymtx.trust.presence import NS

LOCAL = "tcp:0:interface=127.0.0.1"


def parse(*argv):
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class TrustFlagTests(SynchronousTestCase):

    def test_without_a_key_the_directory_is_the_seeds(self):
        service = tap.makeService(parse("--port", LOCAL), reactor)
        self.assertIsInstance(service.registry, Registry)

    def test_a_key_needs_an_allow_list_or_allow_any_by_name(self):
        folder = self.mktemp()
        e = self.assertRaises(usage.UsageError, parse, "--identity-dir", folder)
        self.assertIn("--allow-list", str(e))
        self.assertIn("--allow-any", str(e))
        allowed = self.mktemp()
        with open(allowed, "w") as f:
            f.write(AllowList().render())
        e = self.assertRaises(usage.UsageError, parse, "--identity-dir", folder,
                              "--allow-list", allowed, "--allow-any")
        self.assertIn("not both", str(e))

    def test_allow_flags_without_a_key_are_refused(self):
        for argv in (["--allow-any"], ["--allow-list", "/nonexistent"]):
            e = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertIn("need --identity-dir", str(e))

    def test_the_key_is_created_once_and_kept(self):
        folder = self.mktemp()
        first = parse("--identity-dir", folder, "--allow-any")
        self.assertTrue(os.path.exists(os.path.join(folder, "private_identity.key")))
        second = parse("--identity-dir", folder, "--allow-any")
        self.assertEqual(first["identity"].public_key, second["identity"].public_key)
        service = tap.makeService(second, reactor)
        self.assertIsInstance(service.registry, SignedRegistry)
        self.assertIsNone(service.registry.allowed)
        self.assertEqual(service.registry.identity.public_key, first["identity"].public_key)

    def test_expiry_reaches_the_signed_registry(self):
        options = parse("--identity-dir", self.mktemp(), "--allow-any", "--expiry", "4")
        self.assertEqual(tap.makeService(options, reactor).registry.expiry, 4.0)

    def test_a_bad_allow_list_names_the_line(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# nodes\nnot-a-key mix-1\n")
        e = self.assertRaises(Unusable, parse, "--identity-dir", self.mktemp(),
                              "--allow-list", path)
        self.assertIn("line 2", str(e))
        e = self.assertRaises(Unusable, parse, "--identity-dir", self.mktemp(),
                              "--allow-list", path + ".missing")
        self.assertIn("cannot read the allow list", str(e))

    def test_a_damaged_key_file_is_a_clear_error(self):
        folder = self.mktemp()
        os.makedirs(folder)
        with open(os.path.join(folder, "private_identity.key"), "w") as f:
            f.write("garbage!!\n")
        e = self.assertRaises(Unusable, parse, "--identity-dir", folder, "--allow-any")
        self.assertIn("--identity-dir", str(e))
        self.assertIn("not base58", str(e))


class SignedDirectoryOverTCPTests(TestCase):

    def test_only_allowed_nodes_get_in_and_the_topology_is_signed(self):
        return Deferred.fromCoroutine(self._scenario())

    async def _scenario(self):
        allowed, stranger = IdentityKey.generate(), IdentityKey.generate()
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(AllowList({allowed.public_key: "mix-1"}).render())
        folder = self.mktemp()
        service = tap.makeService(
            parse("--port", LOCAL, "--identity-dir", folder, "--allow-list", path), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = await service.whenListening()
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        url = f"http://127.0.0.1:{port.getHost().port}"
        plain = DirectoryClient(url, treq.client.HTTPClient(Agent(reactor, pool=pool)),
                                reactor=reactor)

        def presence(keys):
            return {"host": "127.0.0.1:1789", "pubKey": keys.public_text, "layer": 1,
                    "version": "0.5.0"}
        keys = KeyPair.generate()
        # unsigned, as the seed's node does: refused
        with self.assertRaises(DirectoryError) as e:
            await plain.announce_mixnode(presence(keys))
        self.assertIn("not signed", str(e.exception))
        # signed by a node not on the list: refused
        with self.assertRaises(DirectoryError) as e:
            await SigningDirectoryClient(plain, stranger, reactor).announce_mixnode(
                presence(KeyPair.generate()))
        self.assertIn("allow list", str(e.exception))
        await SigningDirectoryClient(plain, allowed, reactor).announce_mixnode(presence(keys))
        data = await plain.get_topology_json()
        trust = TrustedDirectories([IdentityKey.load(folder).public_key], 1)
        trust.offer(data, int(reactor.seconds() * NS))
        topology = trust.topology(int(reactor.seconds() * NS))
        self.assertEqual([m.public_key for m in topology.mixnodes], [keys.public_key])
