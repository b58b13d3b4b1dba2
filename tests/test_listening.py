"""nymtx.listening: the connection limit on a Clock, the listening service
on real loopback ports, and the directory's header deadline."""

import socket

import treq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from nymtx.directory.registry import Registry
from nymtx.directory.resource import make_site
from nymtx.directory.service import DirectoryService
from nymtx.gateway.service import GatewayService
from nymtx.keys import KeyPair
from nymtx.listening import ConnectionLimit, ListenError, ListeningService, activity, \
    handshake_done
from nymtx.observer import OneShot

LOCAL = "tcp:0:interface=127.0.0.1"
PEER = IPv4Address("TCP", "127.0.0.1", 4321)


class Recorder(Protocol):
    def __init__(self):
        self.data = []
        self.lost = []

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason):
        self.lost.append(reason)


@implementer(IHalfCloseableProtocol)
class HalfCloser(Recorder):
    def __init__(self):
        super().__init__()
        self.read_closed = False

    def readConnectionLost(self):
        self.read_closed = True

    def writeConnectionLost(self):
        pass


class Counting(Recorder):
    """Judges activity itself: only b"!" counts."""

    reports_activity = True

    def dataReceived(self, data):
        super().dataReceived(data)
        if b"!" in data:
            activity(self.transport)


def limit(protocol=Recorder, **kwargs):
    clock = Clock()
    kwargs.setdefault("max_connections", 10)
    return clock, ConnectionLimit(Factory.forProtocol(protocol), clock, **kwargs)


def connect(factory):
    proto = factory.buildProtocol(PEER)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


class ConnectionLimitTests(SynchronousTestCase):
    def test_past_the_maximum_a_connection_is_refused_and_logged_once(self):
        clock, factory = limit(max_connections=2)
        opened = [connect(factory) for _ in range(2)]
        self.assertIsNone(factory.buildProtocol(PEER))
        self.assertIsNone(factory.buildProtocol(PEER))
        self.assertEqual(factory.refused, 2)
        self.assertEqual(len(factory.connections), 2)
        opened[0][0].connectionLost(None)
        self.assertIsNotNone(factory.buildProtocol(PEER))

    def test_a_refusing_wrapped_factory_is_a_refusal(self):
        class Refusing(Factory):
            def buildProtocol(self, addr):
                return None  # as the API refuses a peer not on loopback
        clock = Clock()
        factory = ConnectionLimit(Refusing(), clock, 2, idle_timeout=5)
        self.assertIsNone(factory.buildProtocol(PEER))
        self.assertEqual((len(factory.connections), clock.getDelayedCalls()), (0, []))

    def test_the_handshake_deadline_is_absolute(self):
        clock, factory = limit(handshake_timeout=10, idle_timeout=100)
        proto, transport = connect(factory)
        for _ in range(9):
            clock.advance(1)
            proto.dataReceived(b"x")  # dribbled bytes do not extend it
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.timed_out, 1)

    def test_after_the_handshake_the_idle_timeout_restarts_on_data(self):
        clock, factory = limit(handshake_timeout=10, idle_timeout=100)
        proto, transport = connect(factory)
        clock.advance(5)
        handshake_done(proto.wrappedProtocol.transport)
        for _ in range(5):
            clock.advance(99)
            proto.dataReceived(b"x")
        self.assertFalse(transport.disconnecting)
        clock.advance(100)
        self.assertTrue(transport.disconnecting)

    def test_a_protocol_that_reports_activity_decides_what_counts(self):
        clock, factory = limit(Counting, idle_timeout=100)
        proto, transport = connect(factory)
        clock.advance(99)
        proto.dataReceived(b"!")
        clock.advance(99)
        proto.dataReceived(b"x")  # not progress
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_the_byte_budget_cuts_a_connection_that_sends_too_much(self):
        clock, factory = limit(byte_budget=10)
        proto, transport = connect(factory)
        proto.dataReceived(b"x" * 10)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"x")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(proto.wrappedProtocol.data, [b"x" * 10])

    def test_a_lost_connection_leaves_no_timer(self):
        clock, factory = limit(handshake_timeout=10, idle_timeout=100)
        proto, _ = connect(factory)
        proto.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(factory.connections), 0)

    def test_close_all_fires_once_every_connection_is_lost(self):
        clock, factory = limit()
        opened = [connect(factory) for _ in range(3)]
        d = factory.close_all()
        self.assertTrue(all(t.disconnecting for _, t in opened))
        self.assertNoResult(d)
        for proto, _ in opened:
            proto.connectionLost(None)
        self.successResultOf(d)

    def test_a_half_close_reaches_a_protocol_that_can_answer(self):
        clock, factory = limit(HalfCloser)
        proto, transport = connect(factory)
        proto.readConnectionLost()
        self.assertTrue(proto.wrappedProtocol.read_closed)
        self.assertFalse(transport.disconnecting)

    def test_a_half_close_closes_once_written_for_any_other(self):
        clock, factory = limit()
        proto, transport = connect(factory)
        proto.readConnectionLost()
        self.assertTrue(transport.disconnecting)

    def test_bad_bounds_are_refused(self):
        for kwargs in ({"max_connections": 0}, {"idle_timeout": 0},
                       {"handshake_timeout": -1}, {"byte_budget": 0}):
            kwargs.setdefault("max_connections", 1)
            self.assertRaises(ValueError, ConnectionLimit, Factory(), Clock(), **kwargs)


def taken_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


class ListeningServiceTests(TestCase):
    def test_a_port_in_use_fails_privileged_start_naming_the_listener(self):
        sock, port = taken_port()
        self.addCleanup(sock.close)
        taken = f"tcp:{port}:interface=127.0.0.1"
        service = ListeningService(taken, Factory.forProtocol(Recorder), "the test listener")
        e = self.assertRaises(ListenError, service.privilegedStartService)
        self.assertIn(f"the test listener cannot listen on {taken}", str(e))
        self.assertIn("in use", str(e))
        f = self.failureResultOf(service.whenListening(), ListenError)
        self.assertEqual(str(f.value), str(e))

    def test_a_bad_endpoint_string_fails_clearly(self):
        service = ListeningService("tcp:notaport", Factory(), "the test listener")
        service.startService()
        f = self.failureResultOf(service.whenListening(), ListenError)
        self.assertIn("the test listener: listening endpoint 'tcp:notaport' is not valid",
                      str(f.value))

    def test_not_an_endpoint_at_all_is_a_type_error(self):
        self.assertRaises(TypeError, ListeningService, 1789, Factory(), "x")

    def test_the_open_files_limit_lowers_the_maximum(self):
        factory = ConnectionLimit(Factory(), Clock(), 4096)
        service = ListeningService(LOCAL, factory, "x", reactor=MemoryReactorClock(),
                                   reserved=lambda: 1024, fd_limit=lambda: 1024)
        service.privilegedStartService()
        self.assertEqual(factory.max_connections, 512)

    async def test_listens_binds_once_stops_and_listens_again(self):
        factory = ConnectionLimit(Factory.forProtocol(Recorder), reactor, 10)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        service = ListeningService(endpoint, factory, "the test listener",
                                   description="tcp:0 on loopback")
        early = service.whenListening()  # asked before it binds
        service.privilegedStartService()
        service.startService()
        port = await early
        self.assertIs(port, service.port)
        peer = Recorder()
        peer.gone = Deferred()
        peer.connectionLost = lambda reason: peer.gone.callback(None)
        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), peer)
        while not factory.connections:
            await deferLater(reactor, 0.01, lambda: None)
        await service.stopService()
        await peer.gone  # stopping closed it
        self.assertIsNone(service.port)
        service.startService()
        again = await service.whenListening()
        self.assertIsNot(again, port)
        await service.stopService()


class GatewayStartTests(TestCase):
    def test_gateway_port_in_use_fails_privileged_start(self):
        # twistd binds in privilegedStartService: a failure there stops it
        # (before, the gateway bound in startService and ran with no listener)
        sock, port = taken_port()
        self.addCleanup(sock.close)
        gateway = GatewayService(reactor, KeyPair.generate(), self.mktemp(),
                                 f"tcp:{port}:interface=127.0.0.1", LOCAL, "127.0.0.1")
        self.addCleanup(gateway.store.close)
        e = self.assertRaises(ListenError, gateway.privilegedStartService)
        self.assertIn(f"gateway mix listener cannot listen on tcp:{port}", str(e))
        self.assertIsNone(gateway.client_listener.port)


class Slow(Protocol):
    """A slowloris: one byte of a request line now and then."""

    def __init__(self):
        self.gone = Deferred()
        self.received = b""

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.gone.callback(None)


class DirectoryDeadlineTests(TestCase):
    """Held connections cannot make the directory unreachable."""

    async def start(self, clock, **kwargs):
        service = DirectoryService(LOCAL, make_site(Registry(reactor)), LOCAL, clock=clock,
                                   fd_limit=lambda: 100_000, **kwargs)
        service.startService()
        self.addCleanup(service.stopService)
        port = await service.whenListening()
        return service, f"http://127.0.0.1:{port.getHost().port}"

    def http(self):
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        return treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def test_dribbled_headers_are_cut_at_the_deadline(self):
        clock = Clock()
        service, url = await self.start(clock, max_connections=20, header_timeout=10)
        port = int(url.rsplit(":", 1)[1])
        held = []
        for _ in range(20):
            peer = Slow()
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)
            held.append(peer)
        while len(service._factory.connections) < 20:
            await deferLater(reactor, 0.01, lambda: None)
        # the directory is full: a real request is turned away
        with self.assertRaises(Exception):
            await self.http().get(url + "/api/healthcheck")
        # twisted.web's own 60 s timeout restarts on each byte; the deadline does not
        for second in range(9):
            for peer in held:
                peer.transport.write(b"GET /api/healthcheck HTTP/1.1\r\n"[second:second + 1])
            clock.advance(1)
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(service._factory.connections), 20)
        clock.advance(1)
        await gatherResults([peer.gone for peer in held])
        self.assertEqual(service._factory.timed_out, 20)
        response = await self.http().get(url + "/api/healthcheck")
        self.assertEqual(response.code, 200)
        await response.content()

    async def test_each_request_on_a_kept_connection_gets_the_deadline(self):
        clock = Clock()
        service, url = await self.start(clock, header_timeout=10)
        port = int(url.rsplit(":", 1)[1])
        peer = Slow()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)
        clock.advance(9)
        peer.transport.write(b"GET /api/healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        while b"\r\n\r\n" not in peer.received:
            await deferLater(reactor, 0.01, lambda: None)
        self.assertIn(b"200", peer.received.split(b"\r\n")[0])
        clock.advance(9)  # a new deadline from the answer: not cut at 10 s
        await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(service._factory.connections), 1)
        clock.advance(1)
        await peer.gone

    async def test_a_request_over_the_byte_budget_is_cut(self):
        service, url = await self.start(reactor, byte_budget=4096)
        port = int(url.rsplit(":", 1)[1])
        peer = Slow()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)
        peer.transport.write(b"POST /api/presence/mixnodes HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 100000\r\n\r\n" + b" " * 8192)
        await peer.gone
        self.assertEqual(service._factory.timed_out, 1)


class BackpressureTests(SynchronousTestCase):
    """ConnectionLimit(backpressure=True) on a StringTransport."""

    def setUp(self):
        self.clock, self.factory = limit(backpressure=True)
        self.proto, self.transport = connect(self.factory)
        self.watch = self.transport.producer

    def test_the_wrapper_watches_the_send_buffer(self):
        self.assertIsNotNone(self.watch)
        self.watch.pauseProducing()  # the send buffer is full
        self.assertEqual(self.transport.producerState, "paused")
        self.proto.dataReceived(b"x" * 10_000)
        self.assertEqual(self.proto.wrappedProtocol.data, [])  # waits in the wrapper
        self.watch.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(b"".join(self.proto.wrappedProtocol.data), b"x" * 10_000)
        self.assertTrue(all(len(d) <= 2048 for d in self.proto.wrappedProtocol.data))

    def test_the_wrapped_protocol_still_pauses_and_hears_the_buffer(self):
        heard = []

        @implementer(IPushProducer)
        class Producer:
            def pauseProducing(self):
                heard.append("pause")

            def resumeProducing(self):
                heard.append("resume")

            def stopProducing(self):
                heard.append("stop")

        wrapped_transport = self.proto.wrappedProtocol.transport
        wrapped_transport.registerProducer(Producer(), True)
        self.assertIsNot(self.transport.producer, None)  # still the wrapper's
        wrapped_transport.pauseProducing()  # the protocol stops reading
        self.assertEqual(self.transport.producerState, "paused")
        self.watch.pauseProducing()
        self.watch.resumeProducing()  # buffer drained: still paused by the protocol
        self.assertEqual(self.transport.producerState, "paused")
        wrapped_transport.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(heard, ["pause", "resume"])

    def test_a_half_close_waits_for_what_is_not_fed_yet(self):
        clock, factory = limit(HalfCloser, backpressure=True)
        proto, transport = connect(factory)
        transport.producer.pauseProducing()
        proto.dataReceived(b"last request")
        proto.readConnectionLost()
        self.assertFalse(proto.wrappedProtocol.read_closed)
        transport.producer.resumeProducing()
        self.assertEqual(proto.wrappedProtocol.data, [b"last request"])
        self.assertTrue(proto.wrappedProtocol.read_closed)


class ExitOnFailureTests(SynchronousTestCase):
    """twistd's way to a non-zero status when a service fails after start-up."""

    class Reactor:
        running = True

        def __init__(self):
            self.stopped = 0
            self.when_running = []

        def stop(self):
            self.stopped += 1

        def callWhenRunning(self, f):
            self.when_running.append(f)

    class Starting(ListeningService):
        """A service whose start-up result the test decides."""

        def __init__(self):
            self.outcome = OneShot()
            self.running = False

        def whenListening(self):
            return self.outcome.when_fired()

        def privilegedStartService(self):
            pass

        def startService(self):
            self.running = True

        def stopService(self):
            self.running = False

    def setUp(self):
        from nymtx.runner import ExitOnFailure
        self.reactor = self.Reactor()
        self.exits = []
        self.child = self.Starting()
        self.guard = ExitOnFailure(self.child, self.reactor, exit=self.exits.append)

    def test_a_failure_after_start_stops_the_reactor_with_status_1(self):
        self.guard.startService()
        self.assertEqual((self.exits, self.reactor.stopped), ([], 0))
        self.child.outcome.fire(Failure(ListenError("the client cannot listen")))
        self.assertEqual((self.exits, self.reactor.stopped), ([1], 1))

    def test_before_the_reactor_runs_it_stops_once_running(self):
        self.reactor.running = False
        self.guard.startService()
        self.child.outcome.fire(Failure(ListenError("no directory")))
        self.assertEqual((self.exits, self.reactor.when_running), ([1], [self.reactor.stop]))

    def test_success_leaves_everything_alone(self):
        self.guard.startService()
        self.child.outcome.fire(None)
        self.assertEqual((self.exits, self.reactor.stopped), ([], 0))

    def test_disarmed_it_leaves_the_exit_code_to_run_service(self):
        self.guard.disarm()
        self.guard.startService()
        self.child.outcome.fire(Failure(ListenError("x")))
        self.assertEqual((self.exits, self.reactor.stopped), ([], 0))
