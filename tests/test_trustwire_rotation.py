"""End to end over real sockets: a gateway started from its config.toml
(as ``nym-gateway run`` does) rotates its Sphinx key while mail flows
through a signed directory, three mixnodes and two clients; packets
captured under the rotated key before a restart are refused after it."""

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from nymtx.addressing import NodeAddress
from nymtx.client.connect import connect
from nymtx.client.core import IDENTIFIER
from nymtx.directory.client import DirectoryClient
from nymtx.directory.resource import make_site
from nymtx.directory.signed import SignedRegistry
from nymtx.gateway import cli as gateway_cli, config as gateway_config, tap as gateway_tap
from nymtx.keys import KeyPair
from nymtx.links import PacketLinks
from nymtx.mixnode.service import MixnodeService
from nymtx.sphinx import Hop, build_packet
from nymtx.trust.agreement import TrustedDirectories
from nymtx.trust.client import SigningDirectoryClient, TrustedDirectoryClient
from nymtx.trust.identity import IdentityKey

from tests.ports import free_ports
from tests.test_trustwire_nodes import run

LOCAL = "tcp:0:interface=127.0.0.1"
FAST = dict(average_packet_delay=5, loop_cover_traffic_average_delay=100,
            message_sending_average_delay=10, fetch_message_delay=50,
            topology_refresh_rate=250)
#: each key is used 10 s: the switch comes while the test runs, and the
#: rotated key (retired 10 + 5 s after its start) is still held at the restart
INTERVAL_MS = 10_000


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


async def until(condition, timeout, step=0.05):
    for _ in range(int(timeout / step)):
        if condition():
            return True
        await sleep(step)
    return condition()


class GatewayRotationTests(TestCase):
    timeout = 120

    async def listen(self, site):
        port = await serverFromString(reactor, LOCAL).listen(site)
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def trusted(self):
        client = TrustedDirectoryClient([DirectoryClient(self.url, reactor=reactor)],
                                        TrustedDirectories([self.directory_key.public_key], 1),
                                        reactor)
        self.addCleanup(client.close)
        return client

    async def start_gateway(self):
        options = gateway_tap.Options()
        options.parseOptions(["--id", "G1", "--home", self.home])
        gateway = gateway_tap.makeService(options, reactor)
        gateway.startService()
        await gateway.whenListening()
        return gateway

    def test_a_gateway_switches_keys_while_mail_flows(self):
        return Deferred.fromCoroutine(self._scenario())

    async def _scenario(self):
        self.directory_key = IdentityKey.generate()
        self.url = await self.listen(make_site(SignedRegistry(reactor, self.directory_key)))
        for layer in (1, 2, 3):
            service = MixnodeService(
                reactor, KeyPair.generate(), layer, LOCAL, "127.0.0.1",
                directory=SigningDirectoryClient(DirectoryClient(self.url, reactor=reactor),
                                                 IdentityKey.generate(), reactor),
                presence_interval=0.1, metrics_interval=0.5)
            service.startService()
            self.addCleanup(service.directory.close)
            self.addCleanup(service.stopService)
            await service.whenListening()

        self.home = self.mktemp()
        port = free_ports(2)
        code, _, err = run(gateway_cli.main, "init", "--id", "G1", "--home", self.home,
                           "--mix-port", str(port), "--clients-port", str(port + 1),
                           "--host", "127.0.0.1", "--directory", self.url)
        self.assertEqual(code, 0, err)
        config = gateway_config.load("G1", self.home)
        gateway_config.save(attrs.evolve(config, sphinx_key_rotation_ms=INTERVAL_MS,
                                         presence_sending_delay_ms=100), self.home)
        gateway = await self.start_gateway()
        keyring = gateway.handler.keyring
        name = gateway.keys.public_key
        second, start = keyring.announced(keyring._now())

        # the clients register once the directory lists the gateway
        directory = self.trusted()

        async def listed():
            try:
                return bool((await directory.get_topology()).gateways)
            except Exception:
                return False
        for _ in range(100):
            if await listed():
                break
            await sleep(0.1)
        root = self.mktemp()
        alice = await connect(reactor, root, "Alice", self.url, directory=self.trusted(),
                              **FAST)
        self.addCleanup(alice.stop)
        bob = await connect(reactor, root, "Bob", self.url, directory=self.trusted(), **FAST)
        self.addCleanup(bob.stop)

        # mail flows across the switch: a message every 0.2 s until Alice
        # has routed with the new key for a second
        sent, received = [], []
        switched_at = None
        for i in range(200):
            text = f"message {i}".encode()
            await alice.send(bob.address, text)
            sent.append(text)
            await sleep(0.2)
            received.extend(bob.fetch())
            [own] = alice.core.topology.gateways
            if switched_at is None and own.route_key == second:
                switched_at = i
            if switched_at is not None and i >= switched_at + 5:
                break
        self.assertIsNotNone(switched_at, "the clients never switched to the new key")
        self.assertEqual(own.public_key, name)  # the gateway's name stays
        await until(lambda: received.extend(bob.fetch()) or len(received) >= len(sent), 30)
        self.assertEqual(sorted(received), sorted(sent))
        # packets came in under both keys, each key with its own replay log
        self.assertGreater(len(keyring.replay_cache(name)), 0)
        self.assertGreater(len(keyring.replay_cache(second)), 0)

        # captured under the key in use now, delivered once before a restart ...
        self.assertEqual(keyring.in_use(keyring._now()), second)
        address = NodeAddress.parse(f"127.0.0.1:{port}")
        hop = Hop(address=address.to_bytes(), public_key=second)
        # (for Carol, who never pulls: her mailbox counts them)
        carol = KeyPair.generate().public_key
        gateway.store.register(carol, bytes(32))
        captured = [build_packet([hop], carol, IDENTIFIER, b"captured %d" % i, [0])
                    for i in range(5)]
        links = PacketLinks(reactor)
        self.addCleanup(links.stop)
        for packet in captured:
            links.send(address, packet)
        self.assertTrue(await until(lambda: gateway.store.usage(carol)[0] == 5, 10))
        await gateway.stopService()

        # ... and refused after it, as replays under that key
        gateway = await self.start_gateway()
        self.addCleanup(gateway.stopService)
        self.assertIn(second, gateway.handler.keyring.accepted())
        # a fresh link: the first one may be backing off from the stopped gateway
        links = PacketLinks(reactor)
        self.addCleanup(links.stop)
        for packet in captured:
            links.send(address, packet)
        self.assertTrue(await until(
            lambda: gateway.handler.dropped.get("replay", 0) >= 5, 10),
            dict(gateway.handler.dropped))
        self.assertEqual(gateway.handler.dropped.get("replay"), 5)
        gateway.store.flush()
        self.assertEqual(gateway.store.usage(carol)[0], 5)
        # and mail flows again, under the key the restarted gateway read back
        ring = gateway.handler.keyring

        def rotated_tags():
            # (the second key, or the third should a slow machine reach its start)
            return sum(len(ring.replay_cache(k)) for k in ring.accepted() if k != name)
        before = rotated_tags()
        after = [f"after the restart {i}".encode() for i in range(3)]
        for text in after:
            await alice.send(bob.address, text)
        self.assertTrue(await until(
            lambda: received.extend(bob.fetch()) or set(after) <= set(received), 60),
            "the mail sent after the restart did not arrive")
        self.assertGreater(rotated_tags(), before)
