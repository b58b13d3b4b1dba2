from hypothesis import given, strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from nymtx.addressing import NodeAddress
from nymtx.gateway import frames as F
from nymtx.gateway.link import GatewayLink, GatewayLinkError, _LinkProtocol
from nymtx.keys import KeyPair

ADDRESS = NodeAddress.parse("127.0.0.1:9000")


def connected(gateway_key=None):
    proto = _LinkProtocol(ADDRESS, gateway_key)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


class LinkProtocol(SynchronousTestCase):
    def test_answers_matched_in_order(self):
        proto, transport = connected()
        proto.dataReceived(F.encode(F.Hello(1, b"g" * 32, b"n" * 32)))
        self.assertEqual(self.successResultOf(proto.hello).nonce, b"n" * 32)
        first, second = proto.request(F.Pull(1)), proto.request(F.Ack((1,)))
        self.assertEqual(transport.value(), F.encode(F.Pull(1)) + F.encode(F.Ack((1,))))
        proto.dataReceived(F.encode(F.Messages(())) + F.encode(F.Error(F.E_BAD_TOKEN, "no")))
        self.assertEqual(self.successResultOf(first), F.Messages(()))
        e = self.failureResultOf(second, GatewayLinkError).value
        self.assertIn("bad-token", str(e))

    def test_wrong_gateway_key(self):
        proto, transport = connected(gateway_key=b"x" * 32)
        proto.dataReceived(F.encode(F.Hello(1, b"g" * 32, b"n" * 32)))
        self.assertIn("public key", str(self.failureResultOf(proto.hello).value))
        self.assertTrue(transport.disconnected)

    def test_wrong_version(self):
        proto, _ = connected()
        proto.dataReceived(F.encode(F.Hello(9, b"g" * 32, b"n" * 32)))
        self.assertIn("version 9", str(self.failureResultOf(proto.hello).value))

    def test_garbage_instead_of_hello(self):
        proto, transport = connected()
        proto.dataReceived(b"\x00\x00\x00\x01\x42")
        self.failureResultOf(proto.hello, GatewayLinkError)
        self.assertTrue(transport.disconnected)

    def test_oversized(self):
        proto, transport = connected()
        proto.dataReceived(b"\xff\xff\xff\xff")
        self.assertIn("maximum", str(self.failureResultOf(proto.hello).value))

    @given(st.binary(max_size=200))
    def test_fuzz(self, data):
        proto, _ = connected()
        pending = proto.request(F.Pull(1))
        proto.dataReceived(data)
        proto.connectionLost(_Reason())
        self.assertTrue(proto.hello.called)
        self.assertTrue(pending.called)
        pending.addErrback(lambda f: f.trap(GatewayLinkError))
        proto.hello.addErrback(lambda f: f.trap(GatewayLinkError))


class _Reason:
    def getErrorMessage(self):
        return "test"


class Link(SynchronousTestCase):
    def test_not_connected(self):
        link = GatewayLink(None, ADDRESS, KeyPair.generate(), b"t" * 32)
        e = self.failureResultOf(link.pull(), GatewayLinkError).value
        self.assertIn("not connected to gateway 127.0.0.1:9000", str(e))
        self.failureResultOf(link.ack([1]), GatewayLinkError)
        self.assertEqual(self.successResultOf(link.ack([])), 0)
        self.assertIsNone(self.successResultOf(link.stop()))


# ---- the link's lifecycle, on a Clock, against a real gateway protocol in memory

import os
import random

from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.test import iosim

from nymtx.backoff import backoff_policy
from nymtx.gateway import link as link_module
from nymtx.gateway.server import ClientServerFactory, listener_factory
from nymtx.gateway.store import MailboxStore


class Gateway:
    """A real gateway client listener on a MemoryReactorClock, reached through iosim."""

    def __init__(self, case, reactor):
        self.reactor = reactor
        self.store = MailboxStore.open(reactor, case.mktemp())
        case.addCleanup(self.store.close)
        self.keys = KeyPair.generate()
        self.factory = listener_factory(ClientServerFactory(self.store, self.keys), clock=reactor)
        self.pumps = []

    def accept(self, index=-1, greet=True):
        """Complete the link's connection attempt *index*; return the iosim pump."""
        factory = self.reactor.tcpClients[index][2]
        address = IPv4Address("TCP", "127.0.0.1", 40000 + len(self.pumps))
        client = factory.buildProtocol(address)
        server = self.factory.buildProtocol(address)
        pump = iosim.connect(server, iosim.FakeTransport(server, True, peerAddress=address),
                             client, iosim.FakeTransport(client, False), greet=greet)
        self.pumps.append(pump)
        return pump

    def refuse(self, index=-1):
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))


def make_link(case, reactor, keys, token, gateway_key=None, **kwargs):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", 9000)
    link = GatewayLink(reactor, ADDRESS, keys, token, gateway_key,
                       initial_backoff=0.5, maximum_backoff=30.0, endpoint=endpoint, **kwargs)
    return link


def pending_delay(reactor):
    (call,) = reactor.getDelayedCalls()
    return call.getTime() - reactor.seconds()


class LinkLifecycle(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.gateway = Gateway(self, self.reactor)
        self.alice = KeyPair.generate()
        self.token = os.urandom(32)
        self.gateway.store.register(self.alice.public_key, self.token)

    def link(self, token=None, **kwargs):
        link = make_link(self, self.reactor, self.alice, token or self.token,
                         self.gateway.keys.public_key, rng=random.Random(1), **kwargs)
        return link

    def test_connect_pull_lose_reconnect_stop(self):
        link = self.link()
        self.assertIs(link.state, link_module.LinkState.STOPPED)
        ready = link.when_ready()
        link.start()
        self.assertIs(link.state, link_module.LinkState.CONNECTING)
        pump = self.gateway.accept()
        pump.flush()
        self.assertIs(link.state, link_module.LinkState.READY)
        self.successResultOf(ready)
        self.gateway.store.add(self.alice.public_key, b"hello")
        self.gateway.store.flush()
        pulled = link.pull()
        pump.flush()
        [(mid, body)] = self.successResultOf(pulled)
        self.assertEqual(body, b"hello")
        acked = link.ack([mid])
        pump.flush()
        self.assertEqual(self.successResultOf(acked), 1)

        # the gateway drops the connection: the link waits, then redials
        with capturedLogs() as events:
            pump.serverIO.abortConnection()
            pump.flush()
        self.assertIs(link.state, link_module.LinkState.WAITING)
        self.failureResultOf(link.pull(), GatewayLinkError)
        lines = [e for e in events if "retrying in" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertNotIn("Scheduling retry", " ".join(e.get("log_format", "") for e in events))
        delay = pending_delay(self.reactor)
        self.assertTrue(0.25 < delay <= 0.5, delay)
        self.reactor.advance(delay)
        self.assertIs(link.state, link_module.LinkState.CONNECTING)
        pump = self.gateway.accept()
        pump.flush()
        self.assertIs(link.state, link_module.LinkState.READY)

        stopped = link.stop()
        self.assertIs(link.state, link_module.LinkState.STOPPING)
        pump.flush()
        self.successResultOf(stopped)
        self.assertIs(link.state, link_module.LinkState.STOPPED)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

        # and it can be started again
        link.start()
        self.gateway.accept().flush()
        self.assertIs(link.state, link_module.LinkState.READY)
        stopped = link.stop()
        self.gateway.pumps[-1].flush()
        self.successResultOf(stopped)

    def test_no_overflow_and_still_retrying_after_thousands_of_failures(self):
        # The old link computed initial * 2 ** attempts: OverflowError at
        # attempt 1,024, after which no retry was ever scheduled again.
        link = self.link()
        link.start()
        for attempt in range(1, 1101):
            self.gateway.refuse()
            delay = pending_delay(self.reactor)
            self.assertLessEqual(delay, 30.0)
            self.reactor.advance(delay)
            self.assertEqual(len(self.reactor.tcpClients), attempt + 1)
        self.assertGreater(delay, 15.0)  # capped, less at most half for jitter
        self.gateway.accept().flush()
        self.assertTrue(link.connected)
        d = link.stop()
        self.gateway.pumps[-1].flush()
        self.successResultOf(d)

    def test_jitter_spreads_the_clients_of_one_gateway(self):
        delays = set()
        for seed in range(20):
            reactor = MemoryReactorClock()
            link = make_link(self, reactor, self.alice, self.token, rng=random.Random(seed))
            link.start()
            for _ in range(8):  # well past the cap
                reactor.tcpClients[-1][2].clientConnectionFailed(
                    None, Failure(ConnectionRefusedError()))
                (call,) = reactor.getDelayedCalls()
                delay = call.getTime() - reactor.seconds()
                reactor.advance(delay)
            delays.add(round(delay, 6))
            self.successResultOf(link.stop())
        self.assertGreater(len(delays), 15)  # not in lockstep
        self.assertTrue(all(15.0 < d <= 30.0 for d in delays), delays)

    def test_bad_token_backs_off_like_a_refused_connection(self):
        link = self.link(token=b"\x00" * 32)
        link.start()
        delays = []
        for _ in range(4):
            self.gateway.accept().flush()
            self.assertIs(link.state, link_module.LinkState.WAITING)
            self.assertIn("bad-token", str(link.last_error))
            delays.append(pending_delay(self.reactor))
            self.reactor.advance(delays[-1])
        # the TCP connection came up each time, yet the wait grows
        self.assertTrue(delays[3] > 1.0 > delays[0], delays)
        e = self.failureResultOf(link.pull(), GatewayLinkError).value
        self.assertIn("bad-token", str(e))
        d = link.stop()
        for pump in self.gateway.pumps:
            pump.flush()
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_silent_gateway_times_out_the_handshake(self):
        link = self.link(handshake_timeout=5.0)
        link.start()
        factory = self.reactor.tcpClients[-1][2]
        client = factory.buildProtocol(None)
        transport = StringTransport()
        client.makeConnection(transport)  # TCP up, but no hello ever comes
        self.assertIs(link.state, link_module.LinkState.CONNECTING)
        self.reactor.advance(5.0)
        self.assertTrue(transport.disconnecting)
        client.connectionLost(Failure(ConnectionRefusedError()))
        self.assertIs(link.state, link_module.LinkState.WAITING)
        self.assertIn("handshake", str(link.last_error))
        self.successResultOf(link.stop())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_while_connecting_and_while_waiting(self):
        link = self.link()
        link.start()
        waiter = link.when_ready()
        self.successResultOf(link.stop())  # the TCP connect is cancelled
        self.failureResultOf(waiter, GatewayLinkError)
        self.assertIs(link.state, link_module.LinkState.STOPPED)
        link.start()
        self.gateway.refuse()
        self.assertIs(link.state, link_module.LinkState.WAITING)
        self.successResultOf(link.stop())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_during_the_handshake_closes_the_connection(self):
        link = self.link()
        link.start()
        pump = self.gateway.accept(greet=False)  # connected, hello not read yet
        self.assertIs(link.state, link_module.LinkState.CONNECTING)
        d = link.stop()
        pump.flush()
        self.successResultOf(d)
        self.assertIs(link.state, link_module.LinkState.STOPPED)
        self.assertEqual(self.gateway.factory.connections, set())


    def test_stop_from_callbacks_of_the_link_itself(self):
        # Deferred callbacks re-enter: a when_ready() waiter that stops the
        # link, a failed pull whose errback stops it.
        link = self.link()
        link.when_ready().addCallback(lambda _: link.stop())
        link.start()
        pump = self.gateway.accept()
        pump.flush()
        self.assertIs(link.state, link_module.LinkState.STOPPED)
        self.assertFalse(self.gateway.factory.connections)

        link.start()
        pump = self.gateway.accept()
        pump.flush()
        stops = []
        pulled = link.pull()
        pulled.addErrback(lambda f: stops.append(link.stop()))
        pump.serverIO.abortConnection()
        pump.flush()
        (stopped,) = stops
        self.successResultOf(stopped)
        self.assertIs(link.state, link_module.LinkState.STOPPED)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class BackoffPolicy(SynchronousTestCase):
    def test_doubles_to_the_cap_and_never_overflows(self):
        policy = backoff_policy(0.1, 30.0, jitter=0)
        self.assertEqual([policy(n) for n in range(1, 5)], [0.1, 0.2, 0.4, 0.8])
        self.assertEqual(policy(10), 30.0)
        for n in (1023, 1024, 1025, 10 ** 9):
            self.assertEqual(policy(n), 30.0)

    @given(st.integers(min_value=0, max_value=10 ** 12), st.integers(0, 2 ** 32))
    def test_jittered_within_half_of_the_step(self, attempt, seed):
        policy = backoff_policy(0.1, 30.0, rng=random.Random(seed))
        plain = backoff_policy(0.1, 30.0, jitter=0)
        delay = policy(attempt)
        self.assertTrue(plain(attempt) / 2 <= delay <= plain(attempt), (attempt, delay))

    def test_bad_values(self):
        for kwargs in (dict(initial=0), dict(initial=5, maximum=1), dict(factor=0.5),
                       dict(jitter=1), dict(jitter=-0.1), dict(maximum=float("inf"))):
            with self.assertRaises(ValueError):
                backoff_policy(**kwargs)
