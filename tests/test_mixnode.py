"""The mixnode: its packet path on a Clock, and three real nodes on loopback."""

import random

from hypothesis import given, strategies as st
from twisted.internet import defer, reactor as global_reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair
from nymtx.links import PacketLinks
from nymtx.mixnode.node import Mixnode, MixnodeFactory, listener_factory
from nymtx.listening import ListeningService
from nymtx.mixnode.service import (
    MixnodeError, MixnodeParts, MixnodeServer, MixnodeService, build_parts)
from nymtx.sphinx import (
    PACKET_SIZE, FinalHop, Hop, ReplayCache, build_packet, process_packet)
from nymtx.testing import FakeDirectory, FakeLinks
from nymtx.wire import PacketReceiver, connection_budget, raise_fd_limit

KEYS = [KeyPair.from_private(bytes([i + 1]) * 32) for i in range(4)]
ADDRS = [NodeAddress.parse(f"127.0.0.{i + 1}:{1789 + i}") for i in range(4)]
DEST = bytes(range(32))
IDENT = bytes(16)


def route(n=4):
    return [Hop(ADDRS[i].to_bytes(), KEYS[i].public_key) for i in range(n)]


def make_packet(message=b"hello", delays=None, hops=None, seed=0):
    hops = hops or route()
    rng = random.Random(seed)
    return build_packet(hops, DEST, IDENT, message,
                        delays if delays is not None else [0] * len(hops),
                        randbytes=rng.randbytes)


class NodeTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.links = FakeLinks()
        self.node = Mixnode(self.clock, KEYS[0].private_key, self.links,
                            ReplayCache(1000), max_in_flight=3, max_delay=10.0)

    def test_forwards_after_its_delay_and_not_before(self):
        packet = make_packet(delays=[250_000_000, 0, 0, 0])
        self.node.handle_packet(packet)
        self.assertEqual(self.links.packets, [])
        self.assertEqual(self.node.in_flight, 1)
        self.clock.advance(0.249)
        self.assertEqual(self.links.packets, [])
        self.clock.advance(0.001)
        [(address, forwarded)] = self.links.packets
        self.assertEqual(address, ADDRS[1])
        self.assertEqual(forwarded, process_packet(KEYS[0].private_key, packet).packet)
        self.assertEqual(self.node.in_flight, 0)
        # The next hop can unwrap what was forwarded.
        hop = process_packet(KEYS[1].private_key, forwarded)
        self.assertEqual(hop.next_address, ADDRS[2].to_bytes())

    def test_zero_delay_forwards_at_once(self):
        self.node.handle_packet(make_packet())
        self.assertEqual(len(self.links.packets), 1)

    def test_replay_is_dropped(self):
        packet = make_packet()
        self.node.handle_packet(packet)
        self.node.handle_packet(packet)
        self.assertEqual(len(self.links.packets), 1)
        self.assertEqual(self.node.dropped, {"ReplayError": 1})

    def test_tampered_header_is_dropped(self):
        packet = bytearray(make_packet())
        packet[100] ^= 1
        self.node.handle_packet(bytes(packet))
        self.assertEqual(self.node.dropped, {"HeaderMacError": 1})
        self.assertEqual(self.links.packets, [])

    def test_final_hop_at_mixnode_is_dropped(self):
        self.node.handle_packet(make_packet(hops=route(1)))
        self.assertEqual(self.node.dropped, {"final_hop_at_mixnode": 1})

    def test_bad_next_address_is_dropped(self):
        hops = [route()[0], Hop(b"\x09" + bytes(31), KEYS[1].public_key)]
        self.node.handle_packet(make_packet(hops=hops))
        self.assertEqual(self.node.dropped, {"bad_next_address": 1})

    def test_held_packets_are_bounded(self):
        for seed in range(5):
            self.node.handle_packet(make_packet(delays=[10**9, 0, 0, 0], seed=seed))
        self.assertEqual(self.node.in_flight, 3)
        self.assertEqual(self.node.dropped, {"too_many_in_flight": 2})
        self.clock.advance(1)
        self.assertEqual(len(self.links.packets), 3)
        self.assertEqual(self.node.in_flight, 0)

    def test_delay_over_maximum_is_dropped(self):
        self.node.handle_packet(make_packet(delays=[11 * 10**9, 0, 0, 0]))
        self.assertEqual(self.node.dropped, {"delay_too_long": 1})
        self.assertEqual(self.node.in_flight, 0)

    def test_metrics_are_taken_and_reset(self):
        self.node.handle_packet(make_packet(seed=1))
        self.node.handle_packet(make_packet(seed=2))
        self.node.handle_packet(b"\x00" * PACKET_SIZE)
        self.links.dropped = 4
        self.assertEqual(self.node.take_metrics(), {
            "received": 3, "sent": 2,
            "dropped": {"InvalidGroupElementError": 1, "queue_overflow": 4}})
        self.assertEqual(self.node.take_metrics(),
                         {"received": 0, "sent": 0, "dropped": {}})
        self.links.dropped = 5
        self.assertEqual(self.node.take_metrics()["dropped"], {"queue_overflow": 1})
        self.links.evicted = 3
        self.assertEqual(self.node.take_metrics()["dropped"], {"peer_evicted": 3})
        self.assertEqual(self.node.take_metrics()["dropped"], {})

    def test_stop_cancels_held_packets(self):
        self.node.handle_packet(make_packet(delays=[10**9, 0, 0, 0]))
        self.assertEqual(self.node.stop(), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.node.in_flight, 0)
        # bytes that still arrive while the connections close schedule nothing
        self.node.handle_packet(make_packet(seed=3, delays=[10**9, 0, 0, 0]))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ProtocolTests(SynchronousTestCase):
    def connect(self):
        self.links = FakeLinks()
        self.node = Mixnode(Clock(), KEYS[0].private_key, self.links, ReplayCache(1000))
        protocol = MixnodeFactory(self.node).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_garbage_is_counted_and_the_connection_stays_up(self):
        protocol, transport = self.connect()
        garbage = random.Random(5).randbytes(PACKET_SIZE * 2)
        good = make_packet()
        data = garbage + good
        # Split across reads at awkward places.
        for start in range(0, len(data), 1000):
            protocol.dataReceived(data[start:start + 1000])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.node.received, 3)
        self.assertEqual(sum(self.node.dropped.values()), 2)
        self.assertEqual(len(self.links.packets), 1)

    @given(st.binary(max_size=PACKET_SIZE * 3), st.integers(1, 2000))
    def test_any_bytes_never_break_the_node(self, data, step):
        protocol, transport = self.connect()
        for start in range(0, len(data), step):
            protocol.dataReceived(data[start:start + step])
        whole = len(data) // PACKET_SIZE
        self.assertEqual(self.node.received, whole)
        self.assertEqual(sum(self.node.dropped.values()) + len(self.links.packets), whole)
        self.assertFalse(transport.disconnecting)


class Recorder(PacketReceiver):
    packet_size = 7  # small packets: the cuts fall everywhere

    def __init__(self):
        super().__init__()
        self.reads = []
        self.packets = []

    def packetsReceived(self, packets):
        self.reads.append(packets)
        PacketReceiver.packetsReceived(self, packets)

    def packetReceived(self, packet):
        self.packets.append(packet)


class FramingTests(SynchronousTestCase):
    @given(st.binary(max_size=60), st.lists(st.integers(0, 60), max_size=12))
    def test_packets_come_out_whole_however_the_stream_is_cut(self, data, cuts):
        receiver = Recorder()
        receiver.makeConnection(StringTransport())
        pos = 0
        for cut in sorted(cuts) + [len(data)]:
            receiver.dataReceived(data[pos:max(pos, cut)])
            pos = max(pos, cut)
        whole = len(data) - len(data) % 7
        self.assertEqual(receiver.packets, [data[i:i + 7] for i in range(0, whole, 7)])
        self.assertTrue(all(type(p) is bytes for p in receiver.packets))
        # each read's whole packets come in one piece, never an empty one
        self.assertEqual(b"".join(receiver.reads), data[:whole])
        self.assertTrue(all(r and len(r) % 7 == 0 for r in receiver.reads))
        self.assertEqual(bytes(receiver._buffer), data[whole:])

    def test_one_read_of_many_packets_is_one_piece(self):
        receiver = Recorder()
        receiver.makeConnection(StringTransport())
        receiver.dataReceived(b"abc")
        receiver.dataReceived(b"defghij" * 3 + b"kl")
        self.assertEqual(receiver.reads, [b"abcdefg" + b"hijdefg" + b"hijdefg"])
        self.assertEqual(receiver.packets, [b"abcdefg", b"hijdefg", b"hijdefg"])

    def test_no_packet_after_the_connection_starts_closing(self):
        receiver = Recorder()
        transport = StringTransport()
        receiver.makeConnection(transport)
        receiver.packetReceived = lambda p: (receiver.packets.append(p),
                                             transport.loseConnection())
        receiver.dataReceived(b"x" * 21)
        self.assertEqual(receiver.packets, [b"x" * 7])


class FinalSink(PacketReceiver):
    """Stands in for the gateway: unwraps the final hop with its own key."""

    def packetReceived(self, packet):
        self.factory.arrived.append(process_packet(self.factory.key, packet))
        if self.factory.waiter is not None:
            self.factory.waiter.callback(None)
            self.factory.waiter = None

    def connectionMade(self):
        self.factory.connections.add(self)

    def connectionLost(self, reason):
        self.factory.connections.discard(self)


class FinalSinkFactory(Factory):
    protocol = FinalSink

    def __init__(self, key):
        self.key = key
        self.arrived = []
        self.connections = set()
        self.waiter = None


class LoopbackTests(TestCase):
    """Three real mixnodes on 127.0.0.1 and a sink standing in for the gateway."""

    @defer.inlineCallbacks
    def test_packet_crosses_three_mixnodes(self):
        sink = FinalSinkFactory(KEYS[3].private_key)
        # Cleanups run last-in first-out: this one waits for the nodes' links
        # to the sink, so it goes in before the nodes' own stops.
        self.addCleanup(self.wait_closed, sink)
        nodes = []
        ports = []
        for i in range(3):
            service = MixnodeService(global_reactor, KEYS[i], i + 1,
                                     "tcp:0:interface=127.0.0.1", "127.0.0.1",
                                     replay_cache_size=100, initial_backoff=0.05)
            service.startService()
            self.addCleanup(service.stopService)
            port = yield service.whenListening()
            ports.append(port.getHost().port)
            nodes.append(service)
        listener = yield serverFromString(
            global_reactor, "tcp:0:interface=127.0.0.1").listen(sink)
        self.addCleanup(listener.stopListening)
        ports.append(listener.getHost().port)
        self.assertEqual(str(nodes[0].announce_address), f"127.0.0.1:{ports[0]}")

        hops = [Hop(NodeAddress.parse(f"127.0.0.1:{p}").to_bytes(), k.public_key)
                for p, k in zip(ports, KEYS)]
        message = b"across the mixnet"
        packet = build_packet(hops, DEST, IDENT, message,
                              [10_000_000, 20_000_000, 0, 5_000_000])
        sender = PacketLinks(global_reactor)
        self.addCleanup(sender.stop)
        sink.waiter = defer.Deferred()
        sender.send(NodeAddress.parse(f"127.0.0.1:{ports[0]}"), packet)
        yield sink.waiter.addTimeout(10, global_reactor)
        [hop] = sink.arrived
        self.assertIsInstance(hop, FinalHop)
        self.assertEqual((hop.destination, hop.message, hop.delay_ns),
                         (DEST, message, 5_000_000))
        for i, node in enumerate(nodes):
            metrics = node.node.take_metrics()
            self.assertEqual(metrics["received"], 1)
            self.assertEqual(metrics["sent"], 1)

        # A replay into the first node goes no further.
        sender.send(NodeAddress.parse(f"127.0.0.1:{ports[0]}"), packet)
        while nodes[0].node.received == 0:
            yield deferLater(global_reactor, 0.01, lambda: None)
        self.assertEqual(nodes[0].node.dropped, {"ReplayError": 1})
        yield deferLater(global_reactor, 0.05, lambda: None)
        self.assertEqual(len(sink.arrived), 1)

    @defer.inlineCallbacks
    def wait_closed(self, factory):
        while factory.connections:
            yield deferLater(global_reactor, 0.01, lambda: None)

    @defer.inlineCallbacks
    def test_connections_past_the_maximum_are_closed_at_once(self):
        service = MixnodeService(global_reactor, KEYS[0], 1, "tcp:0:interface=127.0.0.1",
                                 "127.0.0.1", max_connections=2, fd_limit=lambda: 100_000)
        service.startService()
        self.addCleanup(service.stopService)
        port = (yield service.whenListening()).getHost().port
        endpoint = TCP4ClientEndpoint(global_reactor, "127.0.0.1", port)
        peers = []
        for _ in range(3):
            peer = Protocol()
            peer.lost = defer.Deferred()
            peer.connectionLost = lambda reason, lost=peer.lost: lost.callback(None)
            yield connectProtocol(endpoint, peer)
            peers.append(peer)
        yield peers[2].lost  # the third is closed by the node
        self.assertEqual(len(service.factory.connections), 2)
        self.assertEqual(service.factory.refused, 1)
        for peer in peers[:2]:
            peer.transport.loseConnection()
        yield defer.gatherResults([p.lost for p in peers[:2]])

    def test_the_open_files_limit_bounds_the_connections(self):
        from twisted.internet.testing import MemoryReactorClock
        service = MixnodeService(MemoryReactorClock(), KEYS[0], 1,
                                 "tcp:0:interface=127.0.0.1", "127.0.0.1",
                                 max_connections=4096, fd_limit=lambda: 1024,
                                 announce_port=1789)
        service.privilegedStartService()
        # the next hops (1024 peers) would not fit: half the descriptors
        self.assertEqual(service.factory.max_connections, 512)
        roomy = MixnodeService(MemoryReactorClock(), KEYS[0], 1,
                               "tcp:0:interface=127.0.0.1", "127.0.0.1",
                               max_connections=4096, fd_limit=lambda: 65536,
                               announce_port=1789)
        roomy.privilegedStartService()
        self.assertEqual(roomy.factory.max_connections, 4096)

    @defer.inlineCallbacks
    def _taken_port(self):
        """The port of a running mixnode, which another one cannot take."""
        first = MixnodeService(global_reactor, KEYS[0], 1, "tcp:0:interface=127.0.0.1",
                               "127.0.0.1")
        first.startService()
        self.addCleanup(first.stopService)
        return (yield first.whenListening()).getHost().port

    @defer.inlineCallbacks
    def test_port_in_use_is_a_clear_error(self):
        port = yield self._taken_port()
        second = MixnodeService(global_reactor, KEYS[1], 1,
                                f"tcp:{port}:interface=127.0.0.1", "127.0.0.1")
        second.startService()
        self.addCleanup(second.stopService)
        with self.assertRaises(MixnodeError) as e:
            yield second.whenListening()
        self.assertIn(f"cannot listen on tcp:{port}:interface=127.0.0.1",
                      str(e.exception))
        self.assertIn("in use", str(e.exception))
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_port_in_use_stops_twistd_at_start_up(self):
        # twistd binds in privilegedStartService: a failure there stops it
        # with the reason, rather than a node running without a listener.
        port = yield self._taken_port()
        second = MixnodeService(global_reactor, KEYS[1], 1,
                                f"tcp:{port}:interface=127.0.0.1", "127.0.0.1")
        with self.assertRaises(MixnodeError) as e:
            second.privilegedStartService()
        self.assertIn("in use", str(e.exception))
        self.flushLoggedErrors()

    def test_twistd_start_sequence_binds_once_and_announces(self):
        from twisted.internet.testing import MemoryReactorClock
        reactor = MemoryReactorClock()
        directory = FakeDirectory()
        service = MixnodeService(reactor, KEYS[0], 1, "tcp:0:interface=127.0.0.1",
                                 "127.0.0.1", directory=directory, announce_port=1789)
        service.privilegedStartService()
        self.assertEqual(len(reactor.tcpServers), 1)
        self.assertEqual(directory.announced_mixnodes, [])  # not running yet
        service.startService()
        self.assertEqual(len(reactor.tcpServers), 1)
        self.assertEqual(len(directory.announced_mixnodes), 1)
        reactor.advance(1.5)
        self.assertEqual(len(directory.announced_mixnodes), 2)
        self.successResultOf(service.stopService())
        self.assertEqual(reactor.getDelayedCalls(), [])
        # started again, it mixes again
        service.startService()
        service.node.handle_packet(b"\x00" * 1372)
        self.assertEqual(service.node.received, 1)
        self.successResultOf(service.stopService())

    def test_bad_endpoint_is_a_clear_error(self):
        service = MixnodeService(global_reactor, KEYS[0], 1, "tcp:notaport", "127.0.0.1")
        service.startService()
        f = self.failureResultOf(service.whenListening(), MixnodeError)
        self.assertIn("'tcp:notaport' is not valid", f.getErrorMessage())
        return service.stopService()


class PartsTests(SynchronousTestCase):
    """The mixnode's parts are built on their own, and the server only runs them."""

    def hand_built(self, reactor):
        """Parts put together without build_parts: what an embedder or the
        trust layer may swap (here fake links, a small replay cache)."""
        links = FakeLinks()
        node = Mixnode(reactor, KEYS[0].private_key, links, ReplayCache(10))
        listener = ListeningService("tcp:0:interface=127.0.0.1", listener_factory(node),
                                    "test listener", reactor=reactor,
                                    fd_limit=lambda: 100_000)
        return MixnodeParts(links=links, node=node, listener=listener)

    def test_build_parts_builds_and_starts_nothing_else(self):
        from twisted.internet.testing import MemoryReactorClock
        reactor = MemoryReactorClock()
        parts = build_parts(reactor, KEYS[0], "tcp:0:interface=127.0.0.1",
                            replay_cache_size=7, queue_size=5, max_connections=9,
                            fd_limit=lambda: 100_000)
        self.assertIsInstance(parts.links, PacketLinks)
        self.assertEqual(parts.links.queue_size, 5)
        self.assertIs(parts.node.links, parts.links)
        self.assertEqual(parts.replay_cache.capacity, 7)
        self.assertEqual(parts.factory.max_connections, 9)
        self.assertIs(parts.factory.wrappedFactory.node, parts.node)
        # nothing bound, nothing scheduled: that is the server's job
        self.assertEqual((reactor.tcpServers, reactor.getDelayedCalls()), ([], []))
        self.assertFalse(parts.listener.running)

    def test_build_parts_takes_links_and_a_replay_cache_given(self):
        links, cache = FakeLinks(), ReplayCache(3)
        parts = build_parts(Clock(), KEYS[0], "tcp:0", links=links, replay_cache=cache)
        self.assertIs(parts.links, links)
        self.assertIs(parts.node.replay_cache, cache)
        parts.node.handle_packet(make_packet())
        self.assertEqual(len(links.packets), 1)
        self.assertEqual(len(cache), 1)

    def test_the_server_runs_parts_built_by_hand(self):
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import MemoryReactorClock
        reactor = MemoryReactorClock()
        parts = self.hand_built(reactor)
        directory = FakeDirectory()
        server = MixnodeServer(reactor, KEYS[0], 1, parts, "127.0.0.1",
                               announce_port=1789, directory=directory)
        # building the server opened nothing and scheduled nothing
        self.assertEqual((reactor.tcpServers, reactor.getDelayedCalls()), ([], []))
        server.privilegedStartService()
        server.startService()
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertIs(factory, parts.factory)
        self.assertEqual(directory.announced_mixnodes[0]["host"], "127.0.0.1:1789")
        # a packet through the listener's factory goes out on the given links
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(make_packet())
        [(address, _)] = parts.links.packets
        self.assertEqual(address, ADDRS[1])
        stopped = server.stopService()
        # stopping closes the peer's connection, and waits until it is gone
        self.assertTrue(protocol.transport.disconnecting)
        self.assertNoResult(stopped)
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.assertTrue(parts.links.stopped)
        # a directory it was given, not one it built, stays open
        self.assertFalse(directory.closed)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_a_server_that_owns_its_directory_closes_it(self):
        from twisted.internet.testing import MemoryReactorClock
        reactor = MemoryReactorClock()
        directory = FakeDirectory()
        server = MixnodeServer(reactor, KEYS[0], 2, self.hand_built(reactor), "10.0.0.1",
                               directory=directory, owns_directory=True)
        server.startService()
        self.successResultOf(server.stopService())
        self.assertTrue(directory.closed)

    def test_children_start_and_stop_with_the_server(self):
        from twisted.application.service import Service
        from twisted.internet.testing import MemoryReactorClock
        reactor = MemoryReactorClock()
        server = MixnodeServer(reactor, KEYS[0], 1, self.hand_built(reactor), "10.0.0.1")
        extra = Service()
        extra.setServiceParent(server)
        server.startService()
        self.assertTrue(extra.running)
        self.successResultOf(server.stopService())
        self.assertFalse(extra.running)

    def test_mixnode_service_builds_its_directory_client_from_a_url(self):
        from twisted.internet.testing import MemoryReactorClock
        from nymtx.directory.client import DirectoryClient
        service = MixnodeService(MemoryReactorClock(), KEYS[0], 1, "tcp:0", "10.0.0.1",
                                 "http://127.0.0.1:1")
        self.assertIsInstance(service, MixnodeServer)
        self.assertIsInstance(service.directory, DirectoryClient)
        self.assertTrue(service._owns_directory)
        self.assertIsNone(MixnodeService(MemoryReactorClock(), KEYS[0], 1, "tcp:0",
                                         "10.0.0.1").directory)


class ListenerLimitTests(SynchronousTestCase):
    """The packet listener's bounds: connections at once, and idle peers."""

    def factory(self, **kwargs):
        self.clock = Clock()
        self.links = FakeLinks()
        self.node = Mixnode(self.clock, KEYS[0].private_key, self.links, ReplayCache(1000))
        return listener_factory(self.node, **kwargs)

    def connect(self, factory):
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_connections_past_the_maximum_are_refused(self):
        factory = self.factory(max_connections=3)
        opened = [self.connect(factory) for _ in range(3)]
        self.assertIsNone(factory.buildProtocol(None))
        self.assertEqual(factory.refused, 1)
        opened[0][0].connectionLost(None)
        self.assertIsNotNone(factory.buildProtocol(None))

    def test_a_peer_that_stops_mid_packet_is_cut_off(self):
        factory = self.factory(idle_timeout=300)
        protocol, transport = self.connect(factory)
        protocol.dataReceived(make_packet()[:-1])  # 1371 bytes, then nothing
        self.clock.advance(299)
        protocol.dataReceived(b"")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_whole_packets_keep_a_connection(self):
        factory = self.factory(idle_timeout=300)
        protocol, transport = self.connect(factory)
        for seed in range(5):
            self.clock.advance(200)
            protocol.dataReceived(make_packet(seed=seed))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.node.received, 5)
        self.clock.advance(300)
        self.assertTrue(transport.disconnecting)

    def test_a_lost_connection_leaves_no_timer(self):
        factory = self.factory()
        protocol, transport = self.connect(factory)
        protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(factory.connections, set())


class FakeResource:
    RLIMIT_NOFILE = 7
    RLIM_INFINITY = -1

    def __init__(self, soft, hard, refuse=False):
        self.limits = (soft, hard)
        self.refuse = refuse

    def getrlimit(self, which):
        return self.limits

    def setrlimit(self, which, limits):
        if self.refuse:
            raise ValueError("not allowed")
        self.limits = limits


class FdLimitTests(SynchronousTestCase):
    def test_the_soft_limit_is_raised_to_the_hard_one(self):
        fake = FakeResource(1024, 524288)
        self.assertEqual(raise_fd_limit(fake), 524288)
        self.assertEqual(fake.limits, (524288, 524288))

    def test_an_unlimited_hard_limit_gives_a_large_finite_one(self):
        fake = FakeResource(1024, FakeResource.RLIM_INFINITY)
        self.assertEqual(raise_fd_limit(fake), 1 << 20)

    def test_a_refused_raise_keeps_the_soft_limit(self):
        self.assertEqual(raise_fd_limit(FakeResource(1024, 4096, refuse=True)), 1024)
        self.assertEqual(raise_fd_limit(FakeResource(4096, 4096)), 4096)

    def test_connection_budget(self):
        self.assertEqual(connection_budget(4096, 1024, 65536), 4096)
        self.assertEqual(connection_budget(4096, 1024, 4096), 3008)
        self.assertEqual(connection_budget(4096, 1024, 1024), 512)
        self.assertEqual(connection_budget(10, 0, 1), 1)
