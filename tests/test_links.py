"""PacketLinks: queueing, ordering, overflow, backoff, reconnect."""

from twisted.internet import defer, reactor as global_reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionRefusedError, ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.addressing import NodeAddress
from nymtx.links import LogThrottle, PacketLinks

SIZE = 1372
PEER = NodeAddress.parse("127.0.0.1:1789")
OTHER = NodeAddress.parse("127.0.0.2:1790")


def packet(n):
    return n.to_bytes(4, "big") * (SIZE // 4)


class CountingTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)


class MemoryLinksTests(SynchronousTestCase):
    """The link logic on a MemoryReactorClock: no sockets, no real time."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        # jitter=0: the exact waits of the backoff's grid (jitter has its own tests)
        self.links = PacketLinks(self.reactor, queue_size=4, initial_backoff=0.5,
                                 maximum_backoff=3.0, jitter=0)

    def connect(self, index=-1):
        """Complete the connection attempt *index*; return its transport."""
        host, port, factory, timeout, bind = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(None)
        transport = CountingTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def refuse(self, index=-1):
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(self.reactor.connectors[index],
                                       Failure(ConnectionRefusedError()))

    def test_queues_before_connect_and_delivers_in_order(self):
        for n in range(3):
            self.links.send(PEER, packet(n))
        self.assertEqual(len(self.reactor.tcpClients), 1)
        host, port = self.reactor.tcpClients[0][:2]
        self.assertEqual((host, port), ("127.0.0.1", 1789))
        self.assertEqual(self.links.queued(PEER), 3)
        self.assertFalse(self.links.connected(PEER))
        _, transport = self.connect()
        self.assertEqual(transport.value(), packet(0) + packet(1) + packet(2))
        self.assertEqual(self.links.sent, {"127.0.0.1:1789": 3})
        self.assertEqual(self.links.queued(PEER), 0)
        self.assertTrue(self.links.connected(PEER))

    def test_one_connection_per_peer(self):
        self.links.send(PEER, packet(0))
        self.links.send(OTHER, packet(1))
        self.links.send(PEER, packet(2))
        self.assertEqual([c[:2] for c in self.reactor.tcpClients],
                         [("127.0.0.1", 1789), ("127.0.0.2", 1790)])

    def test_packets_of_one_turn_leave_in_one_write(self):
        self.links.send(PEER, packet(0))
        _, transport = self.connect()
        for n in range(1, 4):
            self.links.send(PEER, packet(n))
        self.assertEqual(transport.writes, 1)
        self.reactor.advance(0)
        self.assertEqual(transport.writes, 2)
        self.assertEqual(transport.value(), b"".join(packet(n) for n in range(4)))
        self.assertEqual(self.links.sent["127.0.0.1:1789"], 4)

    def test_overflow_drops_oldest_and_counts(self):
        for n in range(7):
            self.links.send(PEER, packet(n))
        self.assertEqual(self.links.dropped, 3)
        self.assertEqual(self.links.queued(PEER), 4)
        _, transport = self.connect()
        self.assertEqual(transport.value(), b"".join(packet(n) for n in range(3, 7)))

    def test_backoff_doubles_up_to_maximum(self):
        self.links.send(PEER, packet(0))
        delays = []
        for attempt in range(6):
            self.refuse()
            (call,) = self.reactor.getDelayedCalls()
            delays.append(call.getTime() - self.reactor.seconds())
            attempts = len(self.reactor.tcpClients)
            self.reactor.advance(delays[-1] - 0.01)
            self.assertEqual(len(self.reactor.tcpClients), attempts)
            self.reactor.advance(0.01)
            self.assertEqual(len(self.reactor.tcpClients), attempts + 1)
        self.assertEqual(delays, [0.5, 1.0, 2.0, 3.0, 3.0, 3.0])
        # Sending while waiting to retry does not jump the queue of attempts.
        self.links.send(PEER, packet(1))
        self.assertEqual(len(self.reactor.tcpClients), 7)
        _, transport = self.connect()
        self.assertEqual(transport.value(), packet(0) + packet(1))

    def test_backoff_resets_after_a_connection(self):
        self.links.send(PEER, packet(0))
        self.refuse()
        self.reactor.advance(0.5)
        self.refuse()
        self.reactor.advance(1.0)
        protocol, transport = self.connect()
        self.links.send(PEER, packet(1))
        self.reactor.advance(0)
        protocol.connectionLost(Failure(ConnectionDone()))
        # Nothing is queued, so nothing calls for a reconnect yet.
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(1)
        self.links.send(PEER, packet(2))
        self.assertEqual(len(self.reactor.tcpClients), 4)
        self.refuse()
        (call,) = self.reactor.getDelayedCalls()
        # The loss took the first step (0.5) and this refusal the second; without
        # the reset the connection earned, it would be the 3.0 maximum.
        self.assertEqual(call.getTime() - self.reactor.seconds(), 1.0)

    def test_packet_unwritten_at_loss_stays_queued(self):
        self.links.send(PEER, packet(0))
        protocol, _ = self.connect()
        self.links.send(PEER, packet(1))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.links.queued(PEER), 1)
        self.reactor.advance(0.5)
        _, transport = self.connect()
        self.assertEqual(transport.value(), packet(1))

    def test_reconnects_on_demand_no_sooner_than_backoff(self):
        self.links.send(PEER, packet(0))
        protocol, _ = self.connect()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.reactor.advance(0.2)
        self.links.send(PEER, packet(1))
        # Lost 0.2 s ago: the send waits for the rest of the backoff.
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.reactor.advance(0.29)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.reactor.advance(0.01)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        _, transport = self.connect()
        self.assertEqual(transport.value(), packet(1))

    def test_paused_peer_keeps_packets_queued(self):
        self.links.send(PEER, packet(0))
        protocol, transport = self.connect()
        transport.producer.pauseProducing()
        for n in range(1, 6):
            self.links.send(PEER, packet(n))
        self.reactor.advance(0)
        self.assertEqual(transport.value(), packet(0))
        self.assertEqual(self.links.queued(PEER), 4)
        self.assertEqual(self.links.dropped, 1)
        transport.producer.resumeProducing()
        self.assertEqual(transport.value(),
                         packet(0) + b"".join(packet(n) for n in range(2, 6)))

    def test_stop_closes_and_cancels(self):
        self.links.send(PEER, packet(0))
        self.links.send(OTHER, packet(1))
        protocol, transport = self.connect(0)
        d = self.links.stop()
        self.assertNoResult(d)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.links.send(PEER, packet(2))
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_stop_during_backoff(self):
        self.links.send(PEER, packet(0))
        self.refuse()
        self.successResultOf(self.links.stop())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_peers_are_bounded_least_recently_used_goes(self):
        # Anyone can build a valid packet for a mixnode naming any next hop:
        # a flood of distinct dead addresses must not grow links (a queue, a
        # retry timer, a socket each) without bound.
        links = PacketLinks(self.reactor, queue_size=4, initial_backoff=0.5,
                            maximum_backoff=3.0, max_peers=3)
        links.send(PEER, packet(0))
        protocol, transport = self.connect(0)
        from twisted.logger import capturedLogs
        with capturedLogs() as events:
            for i in range(1, 50):
                self._flood_step(links, i)
        # nor may it flood the log: one line of each kind (within a minute)
        lines = [e for e in events if "mix link to" in e.get("log_format", "")]
        self.assertEqual(len(lines), 2, [e["log_format"] for e in lines])
        self.assertTrue(links.connected(PEER))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"".join(packet(n) for n in [0] + list(range(101, 150))))
        # each dead peer held one packet when it was pushed out
        self.assertEqual(links.evicted, 49 - 2)  # two dead peers still fit
        self.assertEqual(links.dropped, 0)
        self.assertLessEqual(len(self.reactor.getDelayedCalls()), 3)
        d = links.stop()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def _flood_step(self, links, i):
        links.send(NodeAddress.parse(f"10.9.0.{i}:1789"), packet(i))
        self.refuse()
        links.send(PEER, packet(100 + i))  # PEER stays in use: never evicted
        self.reactor.advance(0)  # this turn's write to PEER
        self.assertLessEqual(len(links._links), 3)

    def test_evicted_connected_peer_is_closed_and_awaited_on_stop(self):
        links = PacketLinks(self.reactor, queue_size=4, initial_backoff=0.5,
                            maximum_backoff=3.0, max_peers=1)
        links.send(PEER, packet(0))
        protocol, transport = self.connect(0)
        links.send(OTHER, packet(1))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(links.connected(PEER))
        self.assertEqual(links.evicted, 0)  # its queue was empty: nothing lost
        d = links.stop()
        self.assertNoResult(d)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_states_of_one_link(self):
        from nymtx.links import PeerState
        self.assertIs(self.links.state(PEER), PeerState.CLOSED)  # unknown
        self.links.send(PEER, packet(0))
        self.assertIs(self.links.state(PEER), PeerState.CONNECTING)
        self.refuse()
        self.assertIs(self.links.state(PEER), PeerState.WAITING)
        self.reactor.advance(0.5)
        self.assertIs(self.links.state(PEER), PeerState.CONNECTING)
        protocol, _ = self.connect()
        self.assertIs(self.links.state(PEER), PeerState.CONNECTED)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIs(self.links.state(PEER), PeerState.IDLE)  # nothing queued
        self.links.send(PEER, packet(1))  # within the backoff: it waits for it
        self.assertIs(self.links.state(PEER), PeerState.WAITING)
        self.successResultOf(self.links.stop())
        self.assertIs(self.links.state(PEER), PeerState.CLOSED)

    def test_no_overflow_after_thousands_of_failures(self):
        # 2 ** 1024 does not fit a float: a doubling without a cap on the
        # exponent raised OverflowError there and the link never retried again.
        links = PacketLinks(self.reactor, initial_backoff=0.5, maximum_backoff=3.0,
                            max_wait=None)  # never give the packet up
        links.send(PEER, packet(0))
        for attempt in range(1, 1101):
            self.refuse()
            (call,) = self.reactor.getDelayedCalls()
            delay = call.getTime() - self.reactor.seconds()
            self.assertLessEqual(delay, 3.0)
            self.reactor.advance(delay)
        self.assertEqual(len(self.reactor.tcpClients), 1101)
        self.assertGreater(delay, 1.5)
        self.successResultOf(links.stop())

    def test_jitter_spreads_the_retries_of_many_senders(self):
        import random
        delays = []
        for seed in range(10):
            reactor = MemoryReactorClock()
            links = PacketLinks(reactor, initial_backoff=0.5, maximum_backoff=3.0,
                                rng=random.Random(seed))
            links.send(PEER, packet(0))
            reactor.tcpClients[-1][2].clientConnectionFailed(
                None, Failure(ConnectionRefusedError()))
            (call,) = reactor.getDelayedCalls()
            delays.append(call.getTime() - reactor.seconds())
            self.successResultOf(links.stop())
        self.assertEqual(len(set(delays)), 10)
        self.assertTrue(all(0.25 < d <= 0.5 for d in delays), delays)

    def test_packets_that_waited_too_long_are_dropped_and_the_peer_left_alone(self):
        # A mixnode has no topology: a next hop that left is redialled while
        # packets wait for it, so they may not wait for ever.
        from nymtx.links import PeerState
        links = PacketLinks(self.reactor, initial_backoff=0.5, maximum_backoff=3.0,
                            jitter=0, max_wait=10.0)
        links.send(PEER, packet(0))
        self.reactor.advance(5)
        links.send(PEER, packet(1))
        while links.queued(PEER):
            self.refuse()
            for call in self.reactor.getDelayedCalls():
                self.reactor.advance(call.getTime() - self.reactor.seconds())
        self.assertEqual(links.expired, 2)
        self.assertGreaterEqual(self.reactor.seconds(), 10.0)
        self.assertLess(self.reactor.seconds(), 14.0)
        self.assertIs(links.state(PEER), PeerState.IDLE)
        attempts = len(self.reactor.tcpClients)
        self.reactor.advance(1000)
        self.assertEqual(len(self.reactor.tcpClients), attempts)  # left alone
        links.send(PEER, packet(2))  # until a packet comes for it
        self.assertEqual(len(self.reactor.tcpClients), attempts + 1)
        _, transport = self.connect()
        self.assertEqual(transport.value(), packet(2))
        self.assertEqual(links.dropped, 0)

    def test_retain_closes_the_links_of_peers_no_longer_wanted(self):
        self.links.send(PEER, packet(0))
        protocol, transport = self.connect(0)
        self.links.send(OTHER, packet(1))
        self.refuse(1)  # OTHER is down: its packet waits, a retry is due
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.links.retain([PEER])
        # OTHER's timer is gone and nothing redials it; PEER is untouched
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.links.retired, 1)
        self.assertTrue(self.links.connected(PEER))
        self.assertFalse(transport.disconnecting)
        # a connected peer that leaves is closed, and stop() waits for it
        self.links.retain([])
        self.assertTrue(transport.disconnecting)
        d = self.links.stop()
        self.assertNoResult(d)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)

    def test_bad_arguments(self):
        with self.assertRaises(ValueError) as e:
            PacketLinks(self.reactor, queue_size=0)
        self.assertIn("queue_size", str(e.exception))
        with self.assertRaises(ValueError) as e:
            PacketLinks(self.reactor, initial_backoff=5, maximum_backoff=1)
        self.assertIn("initial_backoff", str(e.exception))
        with self.assertRaises(ValueError) as e:
            PacketLinks(self.reactor, max_wait=0)
        self.assertIn("max_wait", str(e.exception))
        with self.assertRaises(ValueError) as e:
            PacketLinks(self.reactor, max_peers=0)
        self.assertIn("max_peers", str(e.exception))


class Sink(Protocol):
    def connectionMade(self):
        self.factory.connections.add(self)
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        while len(self.buffer) >= SIZE:
            self.factory.packets.append(self.buffer[:SIZE])
            self.buffer = self.buffer[SIZE:]
        waiter = self.factory.waiter
        if waiter is not None and len(self.factory.packets) >= waiter[0]:
            self.factory.waiter = None
            waiter[1].callback(None)

    def connectionLost(self, reason):
        self.factory.connections.discard(self)
        for d in self.factory.on_lost:
            if not d.called:
                d.callback(None)
        self.factory.on_lost = []


class SinkFactory(Factory):
    protocol = Sink

    def __init__(self):
        self.packets = []
        self.connections = set()
        self.on_lost = []
        self.waiter = None

    def wait_for(self, count):
        d = defer.Deferred()
        if len(self.packets) >= count:
            d.callback(None)
        else:
            self.waiter = (count, d)
        return d.addTimeout(10, global_reactor)

    def close_all(self):
        ds = []
        for c in list(self.connections):
            d = defer.Deferred()
            self.on_lost.append(d)
            ds.append(d)
            c.transport.loseConnection()
        return defer.gatherResults(ds)


class LoopbackLinksTests(TestCase):
    """Real sockets on 127.0.0.1: delivery and reconnect to a peer that returns."""

    @defer.inlineCallbacks
    def listen(self, factory, port=0):
        listener = yield serverFromString(
            global_reactor, f"tcp:{port}:interface=127.0.0.1").listen(factory)
        return listener

    @defer.inlineCallbacks
    def test_delivery_in_order_and_reconnect(self):
        sink = SinkFactory()
        listener = yield self.listen(sink)
        port = listener.getHost().port
        address = NodeAddress.parse(f"127.0.0.1:{port}")
        links = PacketLinks(global_reactor, queue_size=1000, initial_backoff=0.02,
                            maximum_backoff=0.1)
        self.addCleanup(links.stop)
        for n in range(200):
            links.send(address, packet(n))
        yield sink.wait_for(200)
        self.assertEqual(sink.packets, [packet(n) for n in range(200)])
        self.assertEqual(links.sent, {str(address): 200})

        # The peer goes down: its listener and its side of the connection.
        yield listener.stopListening()
        yield sink.close_all()
        while links.connected(address):
            yield deferLater(0.01)
        for n in range(200, 300):
            links.send(address, packet(n))
        yield deferLater(0.15)  # a few refused attempts
        self.assertEqual(len(sink.packets), 200)
        self.assertEqual(links.queued(address), 100)

        # It comes back on the same port: the queued packets arrive.
        listener = yield self.listen(sink, port)
        self.addCleanup(listener.stopListening)
        yield sink.wait_for(300)
        self.assertEqual(sink.packets[200:], [packet(n) for n in range(200, 300)])
        self.assertEqual(links.sent, {str(address): 300})
        self.assertEqual(links.dropped, 0)

        # The sender turned Nagle off: each packet leaves when it is due, not
        # when the previous one is acknowledged (up to a delayed-ACK per hop).
        import socket
        (link,) = links._links.values()
        handle = link.protocol.transport.getHandle()
        self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        stopped = links.stop()
        yield stopped
        # Every connection is closed once stop() has fired, on our side; wait
        # for the sink's side too so no socket outlives the test.
        while sink.connections:
            yield deferLater(0.01)


def deferLater(seconds):
    from twisted.internet.task import deferLater as later
    return later(global_reactor, seconds, lambda: None)


class LogThrottleTests(SynchronousTestCase):
    def test_once_per_interval_with_a_count(self):
        from twisted.internet.task import Clock
        clock = Clock()
        quiet = LogThrottle(clock, interval=60)
        self.assertEqual(quiet.allow("x"), 1)
        self.assertEqual([quiet.allow("x") for _ in range(5)], [0] * 5)
        self.assertEqual(quiet.allow("y"), 1)  # kinds are counted apart
        clock.advance(60)
        self.assertEqual(quiet.allow("x"), 6)  # the 5 held back, and this one
        self.assertEqual(quiet.allow("x"), 0)


class NoDelayTests(SynchronousTestCase):
    """nymtx.wire.no_delay on transports that are not TCP sockets."""

    def test_a_memory_transport_is_left_alone(self):
        from twisted.internet.testing import StringTransport
        from nymtx.wire import no_delay
        no_delay(StringTransport())  # no socket option to set: no error

    def test_a_socket_that_refuses_is_not_an_error(self):
        from nymtx.wire import no_delay
        calls = []

        class Refusing:
            def setTcpNoDelay(self, enabled):
                calls.append(enabled)
                raise OSError(95, "Operation not supported")
        no_delay(Refusing())
        self.assertEqual(calls, [True])
