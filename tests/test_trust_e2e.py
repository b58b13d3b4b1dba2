"""End to end, signed: three directories (two honest with allow lists, one
lying), real mixnodes and a gateway announcing through
SigningDirectoryClient, and two real clients reading through
TrustedDirectoryClient; mail flows while the issue's attacks fail."""

import json

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from nymtx.client.connect import connect
from nymtx.directory.client import DirectoryClient
from nymtx.directory.resource import make_site
from nymtx.directory.signed import SignedRegistry
from nymtx.gateway.service import GatewayService
from nymtx.keys import KeyPair, encode_key
from nymtx.mixnode.service import MixnodeService
from nymtx.trust.agreement import TrustedDirectories
from nymtx.trust.allowlist import AllowList
from nymtx.trust.client import SigningDirectoryClient, TrustedDirectoryClient
from nymtx.trust.document import sign_topology
from nymtx.trust.identity import IdentityKey
from nymtx.trust.presence import NS, ROLE_GATEWAY, ROLE_MIXNODE, make_presence

LOCAL = "tcp:0:interface=127.0.0.1"
FAST = dict(average_packet_delay=5, loop_cover_traffic_average_delay=100,
            message_sending_average_delay=10, fetch_message_delay=50,
            topology_refresh_rate=250)


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


class _Liar(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.body = b"{}"

    def render_GET(self, request):
        return self.body


class SignedNetworkTests(TestCase):
    timeout = 120

    def now(self):
        return int(reactor.seconds() * NS)

    async def listen(self, site):
        port = await serverFromString(reactor, LOCAL).listen(site)
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def trusted(self):
        """A TrustedDirectoryClient over the three, threshold two."""
        clients = [DirectoryClient(url, reactor=reactor) for url in self.urls]
        trust = TrustedDirectories([k.public_key for k in self.directory_keys], 2)
        client = TrustedDirectoryClient(clients, trust, reactor)
        self.addCleanup(client.close)
        return client

    async def start_service(self, service):
        service.startService()
        self.addCleanup(service.stopService)
        await service.whenListening()

    def test_mail_flows_and_the_attacks_fail(self):
        return Deferred.fromCoroutine(self._scenario())

    async def _scenario(self):
        self.directory_keys = [IdentityKey.generate() for _ in range(3)]
        node_ids = [IdentityKey.generate() for _ in range(4)]
        allowed = AllowList({k.public_key: f"node-{i}" for i, k in enumerate(node_ids)})
        self.registries = [SignedRegistry(reactor, key, allowed)
                           for key in self.directory_keys[:2]]
        self.urls = [await self.listen(make_site(r)) for r in self.registries]
        liar = _Liar()
        self.urls.append(await self.listen(Site(liar)))

        mixnodes = []
        for layer in (1, 2, 3):
            keys = KeyPair.generate()
            service = MixnodeService(
                reactor, keys, layer, LOCAL, "127.0.0.1",
                directory=SigningDirectoryClient(self.trusted(), node_ids[layer - 1], reactor),
                presence_interval=0.1, metrics_interval=0.5)
            await self.start_service(service)
            mixnodes.append(service)
        gateway_keys = KeyPair.generate()
        gateway = GatewayService(
            reactor, gateway_keys, self.mktemp(), LOCAL, LOCAL, "127.0.0.1",
            directory=SigningDirectoryClient(self.trusted(), node_ids[3], reactor),
            presence_interval=0.1)
        await self.start_service(gateway)

        # the attacks, against the honest directories
        pool = HTTPConnectionPool(reactor, persistent=False)
        http = treq.client.HTTPClient(Agent(reactor, pool=pool))
        self.addCleanup(pool.closeCachedConnections)
        attacker = IdentityKey.generate()
        fakes = [make_presence(IdentityKey.generate(), ROLE_MIXNODE, KeyPair.generate().public_key,
                               f"127.0.0.1:{29000 + i}", self.now(), "0.5.0", layer=2)
                 for i in range(20)]
        thefts = [
            # a real mixnode's key at the attacker's host
            make_presence(attacker, ROLE_MIXNODE, mixnodes[1].keys.public_key,
                          "127.0.0.1:29100", self.now(), "0.5.0", layer=2),
            # a mixnode entry carrying the gateway's key
            make_presence(attacker, ROLE_MIXNODE, gateway_keys.public_key,
                          "127.0.0.1:29101", self.now() + 1, "0.5.0", layer=1)]
        for url in self.urls[:2]:
            for signed in fakes + thefts:
                response = await http.post(f"{url}/api/presence/mixnodes",
                                           json=signed.to_json())
                self.assertEqual(response.code, 400)
                self.assertIn("allow list", json.loads(await response.content())["error"])
            # metrics for a real node's key, from someone else
            response = await http.post(f"{url}/api/metrics/mixes", json={
                "pubKey": encode_key(mixnodes[0].keys.public_key), "received": 10 ** 9,
                "sent": 0})
            self.assertEqual(response.code, 400)

        # the liar lists the fakes, a fake gateway listing every client, and
        # drops the real layer-2 node
        async def lie():
            while True:
                now = self.now()
                # it cannot sign for the real nodes: it relays what they
                # signed (from an honest directory), all but layer 2
                held = self.registries[0].signed_topology().document
                presences = [p for p in held.mixnodes if p.presence.layer != 2]
                fake_gateway = make_presence(attacker, ROLE_GATEWAY,
                                             KeyPair.generate().public_key, "127.0.0.1:29102",
                                             now, "0.5.0", client_listener="127.0.0.1:29103",
                                             clients=self.client_keys)
                liar.body = sign_topology(self.directory_keys[2], now, now,
                                          presences + [p for p in fakes], [fake_gateway]
                                          ).to_bytes()
                if self.stop_lying:
                    return
                await sleep(0.1)
        self.client_keys, self.stop_lying = [], False
        lying = Deferred.fromCoroutine(lie())

        def stop_lying():
            self.stop_lying = True
            return lying
        self.addCleanup(stop_lying)

        root = self.mktemp()
        alice = await connect(reactor, root, "Alice", self.urls[0],
                              directory=self.trusted(), **FAST)
        self.addCleanup(alice.stop)
        bob = await connect(reactor, root, "Bob", self.urls[0],
                            directory=self.trusted(), **FAST)
        self.addCleanup(bob.stop)
        self.client_keys[:] = [alice.core.keys.public_key, bob.core.keys.public_key]
        sent = [f"message {i}" for i in range(5)]
        for text in sent:
            await alice.send(bob.address, text.encode())
        received = []
        for _ in range(200):
            received.extend(bob.fetch())
            if len(received) >= len(sent):
                break
            await sleep(0.05)
        self.assertEqual(sorted(m.decode() for m in received), sorted(sent))
        # what the clients route on: the real nodes only
        for client in (alice, bob):
            topology = client.core.topology
            self.assertEqual({n.public_key for n in topology.mixnodes},
                             {m.keys.public_key for m in mixnodes})
            self.assertEqual([g.public_key for g in topology.gateways],
                             [gateway_keys.public_key])
            self.assertEqual(set(topology.clients()), set(self.client_keys))
