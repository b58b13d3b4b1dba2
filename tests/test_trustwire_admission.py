"""The gateway's mix port admits only the last layer's mixnodes of the
signed topology, by the key each proves on its mix link (docs/mix-link.md):
single-hop packets from anyone else, even from the last layer's own host,
no longer fill Bob's quota (issue 15: 0 of 20 of Alice's messages got
through). The address-based admission is tested on its own first."""

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.addressing import NodeAddress
from nymtx.client.connect import connect
from nymtx.client.core import IDENTIFIER
from nymtx.client.embed import init_client
from nymtx.directory.resource import make_site
from nymtx.directory.signed import SignedRegistry
from nymtx.gateway import cli as gateway_cli, config as G, tap as gateway_tap
from nymtx.keys import KeyPair
from nymtx.links import CONNECT_TIMEOUT, PacketLinks
from nymtx.mixnode.service import MixnodeService
from nymtx.sphinx import build_packet
from nymtx.topology import Hop, MixNodeInfo, Topology
from nymtx.trust.admission import (
    AdmittingFactory, LastLayerAdmission, LinkAuthority, guard_mixnode)
from nymtx.trust.client import TopologyExpired
from nymtx.trust.identity import IdentityKey
from nymtx.trust.mixlink import LinkKeys
from nymtx.trust.wiring import hand_over, node_directory

from tests.test_trustwire_nodes import run
from tests.ports import free_ports

FAST = dict(average_packet_delay=5, loop_cover_traffic_average_delay=100,
            message_sending_average_delay=10, fetch_message_delay=50,
            topology_refresh_rate=200)


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


def topology(*hosts):
    mixnodes = [MixNodeInfo(NodeAddress.parse(f"[{h}]:1789" if ":" in h else f"{h}:1789"),
                            KeyPair.generate().public_key, layer)
                for layer, h in hosts]
    return Topology(mixnodes, [])


class _Directory:
    def __init__(self):
        self.answer = None

    def get_topology(self):
        return self.answer


class _Addr:
    def __init__(self, host):
        self.host = host


class _Inner:
    def __init__(self):
        self.built = []

    def buildProtocol(self, addr):
        self.built.append(addr.host)
        return object()


class AdmissionTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.directory = _Directory()
        self.admission = LastLayerAdmission(self.clock, self.directory, interval=10)
        self.inner = _Inner()
        self.factory = AdmittingFactory(self.inner, self.admission)

    def test_nobody_before_the_first_topology(self):
        self.assertIsNone(self.factory.buildProtocol(_Addr("127.0.0.3")))

    def test_only_the_last_layer(self):
        from twisted.internet.defer import succeed
        self.directory.answer = succeed(topology((1, "10.0.0.1"), (2, "10.0.0.2"),
                                                 (3, "10.0.0.3"), (3, "::ffff:10.0.0.4")))
        self.admission.startService()
        self.assertIsNotNone(self.factory.buildProtocol(_Addr("10.0.0.3")))
        self.assertIsNotNone(self.factory.buildProtocol(_Addr("::ffff:10.0.0.3")))
        self.assertIsNotNone(self.factory.buildProtocol(_Addr("10.0.0.4")))
        for host in ("10.0.0.1", "10.0.0.2", "10.0.0.9", "", "garbage"):
            self.assertIsNone(self.factory.buildProtocol(_Addr(host)), host)
        self.assertEqual(self.admission.refused, 5)
        self.assertEqual(self.inner.built, ["10.0.0.3", "::ffff:10.0.0.3", "10.0.0.4"])
        self.admission.stopService()

    def test_retries_every_second_until_the_first_topology(self):
        from twisted.internet.defer import fail
        from nymtx.directory.client import DirectoryError
        calls = []

        def answer():
            calls.append(self.clock.seconds())
            return (fail(DirectoryError("down")) if len(calls) < 3
                    else succeed(topology((3, "10.0.0.3"))))
        self.directory.get_topology = answer
        self.admission.startService()
        self.clock.pump([1] * 30)
        self.assertEqual(calls, [0, 1, 2, 12, 22])
        self.admission.stopService()

    def test_a_failure_keeps_the_last_layer_an_expiry_drops_it(self):
        from twisted.internet.defer import fail
        from nymtx.directory.client import DirectoryError
        self.directory.answer = succeed(topology((3, "10.0.0.3")))
        self.admission.startService()
        self.directory.answer = fail(DirectoryError("down"))
        self.clock.advance(10)
        self.assertTrue(self.admission.admits("10.0.0.3"))
        self.directory.answer = fail(TopologyExpired("0 of 2 current; 2 needed"))
        self.clock.advance(10)
        self.assertFalse(self.admission.admits("10.0.0.3"))
        self.directory.answer = succeed(topology((3, "10.0.0.3")))
        self.clock.advance(10)
        self.assertTrue(self.admission.admits("10.0.0.3"))
        self.admission.stopService()

    def test_the_inner_factorys_attributes_show_through(self):
        self.inner.noisy = False
        self.assertIs(self.factory.noisy, False)


def bound_endpoint(source):
    """Outgoing links from *source*: a node on a host of its own."""
    def endpoint_for(reactor, address):
        return TCP4ClientEndpoint(reactor, address.host, address.port,
                                  timeout=CONNECT_TIMEOUT, bindAddress=(source, 0))
    return endpoint_for


class MixPortTests(TestCase):
    timeout = 90

    def test_direct_packets_do_not_fill_bobs_quota(self):
        return Deferred.fromCoroutine(self._scenario())

    async def listen(self, registry):
        site = make_site(registry)
        served = []
        build = site.buildProtocol

        def recording(addr):
            protocol = build(addr)
            served.append(protocol)
            return protocol

        site.buildProtocol = recording
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        # runs before stopListening: a node's directory client may still hold
        # a kept-alive connection when the test ends (seen on a loaded
        # machine); closing the server's side ends both before the janitor looks
        self.addCleanup(self.close_served, served)
        return f"http://127.0.0.1:{port.getHost().port}"

    @staticmethod
    def close_served(served):
        waits = []
        for protocol in served:
            transport = getattr(protocol, "transport", None)
            if transport is None or not getattr(transport, "connected", False):
                continue
            lost = Deferred()
            original = protocol.connectionLost

            def on_lost(reason, original=original, lost=lost):
                original(reason)
                lost.callback(None)

            protocol.connectionLost = on_lost
            transport.abortConnection()
            waits.append(lost)
        return DeferredList(waits)

    async def _scenario(self):
        keys = [IdentityKey.generate() for _ in range(2)]
        registries = [SignedRegistry(reactor, k) for k in keys]
        urls = [await self.listen(r) for r in registries]
        pins = [k.public_text for k in keys]
        # every node pins the directories and opens mix links by key: the
        # attacker on the same host (127.0.0.1) as every node gets nowhere
        mixnodes = []
        for layer in (1, 2, 3):
            node = MixnodeService(
                reactor, KeyPair.generate(), layer, "tcp:0:interface=127.0.0.1",
                "127.0.0.1", directory=node_directory(reactor, urls, IdentityKey.generate(),
                                                      pins),
                presence_interval=0.1, metrics_interval=1)
            hand_over(node, node.directory)
            guard_mixnode(node, node.directory, reactor, interval=0.5)
            mixnodes.append(node)
            node.startService()
            self.addCleanup(node.stopService)
            await node.whenListening()
        home = self.mktemp()
        code, _, err = run(gateway_cli.main, "init", "--id", "G1", "--home", home,
                           "--mix-port", "0", "--clients-port", "0", "--host", "127.0.0.1",
                           "--directory", urls[0])
        self.assertEqual(code, 0, err)
        G.save(attrs.evolve(G.load("G1", home), more_directories=(urls[1],),
                            directory_keys=tuple(pins), presence_sending_delay_ms=100,
                            quota_messages=10), home)
        options = gateway_tap.Options()
        options.parseOptions(["--id", "G1", "--home", home])
        gateway = gateway_tap.makeService(options, reactor)
        [admission] = [s for s in gateway if isinstance(s, LinkAuthority)]
        port_factory = gateway.mix_listener.factory.wrappedFactory
        gateway.startService()
        self.addCleanup(gateway.stopService)
        await gateway.whenListening()

        for _ in range(100):
            if all(r.signed_topology().document.gateways for r in registries):
                break
            await sleep(0.05)
        root = self.mktemp()
        clients = []
        for name in ("Alice", "Bob"):
            await init_client(reactor, root, name, urls[0], more_directories=urls[1:],
                              directory_keys=pins, gateway=gateway.keys.public_text)
            # Bob's own cover traffic slow, so that it does not fill his
            # small quota itself
            settings = dict(FAST, message_sending_average_delay=2000,
                            loop_cover_traffic_average_delay=2000) if name == "Bob" else FAST
            client = await connect(reactor, root, name, **settings)
            self.addCleanup(client.stop)
            clients.append(client)
        alice, bob = clients
        for _ in range(100):
            await admission.refresh()
            if admission.allowed_keys and bob.core.topology is not None \
                    and bob.core.keys.public_key in bob.core.topology.clients():
                break
            await sleep(0.1)
        self.assertEqual(admission.allowed_keys, {LinkKeys(mixnodes[2].directory.identity)
                                                  .public_key})

        # the attack: 20 single-hop packets for Bob, straight to the mix
        # port from the last layer's own host: plainly, then over a mix
        # link proven by a key of its own (a node, but not of layer 3)
        [info] = bob.core.topology.gateways
        hop = Hop(address=info.address.to_bytes(), public_key=info.public_key)
        plain = PacketLinks(reactor)
        self.addCleanup(plain.stop)
        stranger = LinkAuthority(reactor, mixnodes[0].directory, IdentityKey.generate())
        await stranger.refresh()
        keyed = PacketLinks(reactor, secure=stranger)
        self.addCleanup(keyed.stop)
        for attacker in (plain, keyed):
            for i in range(20):
                attacker.send(info.address, build_packet(
                    [hop], bob.core.keys.public_key, IDENTIFIER, b"flood %d" % i, [0]))
        for _ in range(100):
            if len(port_factory.refused) == 2:
                break
            await sleep(0.05)
        # (each attacker retries on its backoff: refused each time)
        self.assertEqual(sorted(port_factory.refused), ["bad message 1", "not admitted"])

        sent = [f"message {i}" for i in range(5)]
        for text in sent:
            await alice.send(bob.address, text.encode())
        received = []
        for _ in range(200):
            received.extend(bob.fetch())
            if len(received) >= len(sent):
                break
            await sleep(0.05)
        self.assertEqual(sorted(m.decode() for m in received), sorted(sent),
                         (dict(gateway.handler.dropped), port_factory.refused,
                          gateway.handler.received))


class GatewayPinsTests(SynchronousTestCase):

    def test_pins_the_directories_cannot_meet_are_refused_at_start(self):
        from nymtx.cli import Unusable
        home = self.mktemp()
        run(gateway_cli.main, "init", "--id", "G1", "--home", home, "--directory",
            "http://127.0.0.1:9")
        keys = tuple(IdentityKey.generate().public_text for _ in range(3))
        G.save(attrs.evolve(G.load("G1", home), directory_keys=keys), home)
        e = self.assertRaises(Unusable, gateway_tap.Options().parseOptions,
                              ["--id", "G1", "--home", home])
        self.assertIn("2 directories must agree, but 1", str(e))
        G.save(attrs.evolve(G.load("G1", home), directory_keys=keys[:1],
                            directory_threshold=2), home)
        e = self.assertRaises(Unusable, gateway_tap.Options().parseOptions,
                              ["--id", "G1", "--home", home])
        self.assertIn("more than the 1", str(e))
        text = G.config_path("G1", home).read_text().replace(
            "directory_keys = [", 'directory_keys = ["bad", ')
        e = self.assertRaises(G.ConfigError, G.parse, text)
        self.assertIn("[debug] directory_keys[0]", str(e))


class MixnodeLayerTests(TestCase):
    """A layer-2 mixnode from its config, with pinned directory keys:
    packets from the layer-1 node's address get in, packets from anywhere
    else do not."""

    timeout = 60

    def test_only_the_previous_layer_gets_in(self):
        return Deferred.fromCoroutine(self._scenario())

    async def _scenario(self):
        from nymtx.mixnode import tap as mixnode_tap
        from nymtx.mixnode.config import init_mixnode
        keys = [IdentityKey.generate() for _ in range(2)]
        registries = [SignedRegistry(reactor, k) for k in keys]
        urls = []
        for registry in registries:
            port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
                make_site(registry))
            self.addCleanup(port.stopListening)
            urls.append(f"http://127.0.0.1:{port.getHost().port}")
        pins = tuple(k.public_text for k in keys)
        first = MixnodeService(
            reactor, KeyPair.generate(), 1, "tcp:0:interface=127.0.0.1", "127.0.0.1",
            directory=node_directory(reactor, urls, IdentityKey.generate(), pins),
            presence_interval=0.1, metrics_interval=1)
        hand_over(first, first.directory)
        first_authority = guard_mixnode(first, first.directory, reactor, interval=0.5)
        self.assertIsNone(first_authority.layer)  # layer 1 reads clients
        first.startService()
        self.addCleanup(first.stopService)
        await first.whenListening()

        home = self.mktemp()
        port = free_ports(2)
        config = init_mixnode("M2", 2, port=port, directory=urls[0], root=home)
        debug = dict(config.debug, presence_directory_servers=(urls[1],),
                     directory_keys=tuple(k.public_text for k in keys),
                     presence_sending_delay=100)
        options = mixnode_tap.Options()
        options.config = attrs.evolve(config, debug=debug)
        options.keys = config.load_keys()
        options.identity = config.load_identity()
        options.replays = None
        second = mixnode_tap.makeService(options, reactor)
        port_factory = second.factory.wrappedFactory
        admission = port_factory.authority
        self.assertEqual(admission.layer, 1)
        second.startService()
        self.addCleanup(second.stopService)
        await second.whenListening()
        for _ in range(100):
            await admission.refresh()
            await first_authority.refresh()
            if admission.allowed_keys and len(first_authority.peers) == 2:
                break
            await sleep(0.1)
        self.assertEqual(admission.allowed_keys, {LinkKeys(first.directory.identity)
                                                  .public_key})

        second_address = NodeAddress.parse(f"127.0.0.1:{port}")
        sink = NodeAddress.parse(f"127.0.0.1:{port + 1}")
        route = [Hop(address=second_address.to_bytes(), public_key=second.keys.public_key),
                 Hop(address=sink.to_bytes(), public_key=KeyPair.generate().public_key)]
        attacker = PacketLinks(reactor)
        self.addCleanup(attacker.stop)
        for _ in range(5):
            attacker.send(second_address, build_packet(
                route, KeyPair.generate().public_key, IDENTIFIER, b"skip", [0, 0]))
        await sleep(0.5)
        self.assertEqual(second.node.received, 0)
        self.assertEqual(port_factory.refused, {"bad message 1": 1})
        # through the first layer: admitted
        first_hop = Hop(address=first.announce_address.to_bytes(),
                        public_key=first.keys.public_key)
        for _ in range(5):
            first.node.handle_packet(build_packet(
                [first_hop] + route, KeyPair.generate().public_key, IDENTIFIER, b"ok",
                [0, 0, 0]))
        for _ in range(100):
            if second.node.received == 5:
                break
            await sleep(0.05)
        self.assertEqual(second.node.received, 5)
