"""The topology a client reads is bounded by design (issue 15, item 4):
300 fake gateways with 64 KiB client lists each (the attack that made a
19.5 MB topology and stopped every client) leave the compact document
about 1 KB a gateway, and a client refreshes over real sockets with a
1 MiB answer limit, holding at most its bound of listed clients; the
seed's full document (and getClients) are still there; one gateway's
list comes from GET /api/presence/gateway."""

import json
import os

from hypothesis import given, settings, strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.directory.client import DirectoryClient, DirectoryError
from nymtx.directory.registry import Registry
from nymtx.directory.resource import make_site
from nymtx.directory.signed import SignedRegistry
from nymtx.trust.agreement import TrustedDirectories
from nymtx.trust.client import TrustedDirectoryClient
from nymtx.trust.identity import IdentityKey, encode_b58

from tests.trustnet import NS, T0, gateway, mixnode, sphinx

#: what a 64 KiB gateway announce holds: 44 characters and the JSON around
#: each key
CLIENTS_PER_LIST = 1100
FAKES = 300
#: the compact document's bound per node, bytes (about 500 with no list)
PER_NODE = 1024


def fake_clients(n):
    # any 32 bytes are a client key to the directory: random, not derived,
    # so that building 330,000 of them costs nothing
    return tuple(sorted(os.urandom(32) for _ in range(n)))


class Network:
    def __init__(self, registry, clock, fakes=FAKES, per_list=CLIENTS_PER_LIST):
        t = int(clock.seconds() * NS)
        self.real = [mixnode(10 * layer + 1, layer) for layer in (1, 2, 3)]
        self.bob = sphinx(901)
        self.gateway = gateway(41, [self.bob])
        for node in self.real + [self.gateway]:
            signed = node.presence(t)
            (registry.add_mixnode if node.role == 1 else registry.add_gateway)(signed)
        self.fakes = [gateway(1000 + i, fake_clients(per_list), port=20000 + i)
                      for i in range(fakes)]
        for fake in self.fakes:
            registry.add_gateway(fake.presence(t))


class BoundTests(SynchronousTestCase):

    def test_300_fake_gateways_do_not_push_the_compact_document_past_its_bound(self):
        clock = Clock()
        clock.advance(T0 / NS)
        registry = SignedRegistry(clock, IdentityKey.generate())
        Network(registry, clock)
        compact = json.dumps(registry.compact_topology()).encode()
        full = json.dumps(registry.topology()).encode()
        nodes = 4 + FAKES
        self.assertLess(len(compact), PER_NODE * nodes, len(compact))
        # the seed's full form still lists everyone (seed readers, getClients)
        self.assertGreater(len(full), FAKES * CLIENTS_PER_LIST * 44)
        # and the bound does not depend on the lists: the same network with
        # empty lists is the same size within the digits of the counts
        other = SignedRegistry(clock, IdentityKey.generate())
        Network(other, clock, per_list=0)
        empty = json.dumps(other.compact_topology()).encode()
        self.assertLess(abs(len(compact) - len(empty)), 5 * nodes)


class GatewayEndpointTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(T0 / NS)
        self.registry = SignedRegistry(self.clock, IdentityKey.generate())
        self.network = Network(self.registry, self.clock, fakes=1, per_list=3)

    def test_one_gateways_signed_presence_with_its_list(self):
        from nymtx.trust.presence import parse_signed_gateway
        found = self.registry.gateway_presence(self.network.gateway.identity.public_text)
        signed = parse_signed_gateway(found)
        self.assertEqual(signed.clients, (self.network.bob,))

    def test_a_mixnode_or_an_unknown_identity_is_none(self):
        self.assertIsNone(self.registry.gateway_presence(
            self.network.real[0].identity.public_text))
        self.assertIsNone(self.registry.gateway_presence(IdentityKey.generate().public_text))

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=100))
    def test_any_text_is_none_or_a_value_error(self, text):
        try:
            self.assertIsNone(self.registry.gateway_presence(text))
        except ValueError:
            pass


class SocketTests(TestCase):
    timeout = 120

    async def listen(self, registry):
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            make_site(registry))
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def client(self, url, limit=1 << 20):
        directory = DirectoryClient(url, reactor=reactor, max_response_size=limit)
        self.addCleanup(directory.close)
        return directory

    def test_a_client_refreshes_with_a_1_mib_limit_and_bounded_lists(self):
        return Deferred.fromCoroutine(self._refresh())

    async def _refresh(self):
        key = IdentityKey.generate()
        # (a long expiry: these nodes announce once, on the real clock)
        registry = SignedRegistry(reactor, key, expiry=600)
        per_list = 200  # 300 of them: 3 MB in full, over the 1 MiB limit
        network = Network(registry, reactor, per_list=per_list)
        url = await self.listen(registry)
        directory = self.client(url)
        # the full form is over the limit, as it was over the 16 MiB one
        with self.assertRaises(DirectoryError) as caught:
            await directory.get_topology_json()
        self.assertIn("exceeds", str(caught.exception))
        trusted = TrustedDirectoryClient([directory], TrustedDirectories([key.public_key], 1),
                                         reactor, max_list_fetches=8,
                                         max_listed_clients=5 * per_list)
        held = []
        for _ in range(6):
            topology = await trusted.get_topology()
            held.append(sum(len(g.registered_clients) for g in topology.gateways))
        self.assertEqual(len(topology.gateways), FAKES + 1)
        self.assertEqual(len(topology.mixnodes), 3)
        self.assertLessEqual(max(held), 5 * per_list)
        self.assertGreater(max(held), 0)
        # every list comes in turn (8 a refresh, 301 gateways): with room
        # for all of them, Bob's is among them within 301 / 8 refreshes
        roomy = TrustedDirectoryClient([directory], TrustedDirectories([key.public_key], 1),
                                       reactor, max_list_fetches=8)
        for refresh in range(FAKES // 8 + 2):
            topology = await roomy.get_topology()
            if network.bob in topology.clients():
                break
        self.assertTrue(network.bob in topology.clients(), refresh)

    def test_the_gateway_endpoint_over_http(self):
        return Deferred.fromCoroutine(self._endpoint())

    async def _endpoint(self):
        registry = SignedRegistry(reactor, IdentityKey.generate(), expiry=600)
        network = Network(registry, reactor, fakes=0)
        directory = self.client(await self.listen(registry))
        found = await directory.get_gateway_presence(network.gateway.identity.public_text)
        self.assertEqual(found["registeredClients"], [{"pubKey": encode_b58(network.bob)}])
        for text, code in (("", "400"), ("not base58!", "400"),
                           (IdentityKey.generate().public_text, "404")):
            with self.assertRaises(DirectoryError) as caught:
                await directory.get_gateway_presence(text)
            self.assertIn(f"failed with {code}", str(caught.exception))
        # a seed directory has no such endpoint, and says where the lists are
        plain = self.client(await self.listen(Registry(reactor)))
        with self.assertRaises(DirectoryError) as caught:
            await plain.get_gateway_presence(network.gateway.identity.public_text)
        self.assertIn("/api/presence/topology", str(caught.exception))
