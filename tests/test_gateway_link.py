"""The client's gateway link: its lifecycle over the private link.

The link's frames and the channel are tested in test_gateway_private and
test_gateway_channel; here a real private client listener (channel,
padded requests, sqlite) runs on a MemoryReactorClock, reached through iosim.
"""

from hypothesis import given, strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from nymtx.addressing import NodeAddress
from nymtx.gateway.link import GatewayLink, GatewayLinkError
from nymtx.keys import KeyPair

ADDRESS = NodeAddress.parse("127.0.0.1:9000")


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
from nymtx.gateway.private_server import PrivateClientFactory, listener_factory
from nymtx.gateway.store import MailboxStore


class Gateway:
    """A real gateway client listener on a MemoryReactorClock, reached through iosim."""

    def __init__(self, case, reactor):
        self.reactor = reactor
        self.store = MailboxStore.open(reactor, case.mktemp())
        case.addCleanup(self.store.close)
        self.keys = KeyPair.generate()
        self.inner = PrivateClientFactory(self.store, self.keys, clock=reactor)
        self.factory = listener_factory(self.inner)
        self.pumps = []

    def accept(self, index=-1, greet=True):
        """Complete the link's connection attempt *index*; return the iosim pump."""
        factory = self.reactor.tcpClients[index][2]
        address = IPv4Address("TCP", "127.0.0.1", 40000 + len(self.pumps))
        client = factory.buildProtocol(address)
        server = self.factory.buildProtocol(address)
        pump = iosim.connect(server, iosim.FakeTransport(server, True, peerAddress=address),
                             client, iosim.FakeTransport(client, False), greet=greet,
                             # the gateway's answers leave at its tick (a zero-delay call)
                             clock=self.reactor)
        self.pumps.append(pump)
        return pump

    def refuse(self, index=-1):
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))


def make_link(case, reactor, keys, gateway_key=b"g" * 32, **kwargs):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", 9000)
    link = GatewayLink(reactor, ADDRESS, keys, gateway_key,
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

    def link(self, keys=None, **kwargs):
        link = make_link(self, self.reactor, keys or self.alice,
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
        self.assertNoResult(acked)  # it rides on the next pull
        pulled = link.pull()
        pump.flush()
        self.assertEqual(self.successResultOf(pulled), [])
        self.assertEqual(self.successResultOf(acked), 1)
        self.assertEqual(self.gateway.store.usage(self.alice.public_key), (0, 0))
        self.reactor.advance(0)   # the store commits the turn's acks

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
            link = make_link(self, reactor, self.alice, rng=random.Random(seed))
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

    def test_refused_key_backs_off_like_a_refused_connection(self):
        # the gateway is full: a new key is refused inside the channel
        self.gateway.store.max_clients = 1
        link = self.link(keys=KeyPair.generate())
        link.start()
        delays = []
        for _ in range(4):
            self.gateway.accept().flush()
            self.assertIs(link.state, link_module.LinkState.WAITING)
            self.assertIn("(full)", str(link.last_error))
            delays.append(pending_delay(self.reactor))
            self.reactor.advance(delays[-1])
        # the TCP connection came up each time, yet the wait grows
        self.assertTrue(delays[3] > 1.0 > delays[0], delays)
        e = self.failureResultOf(link.pull(), GatewayLinkError).value
        self.assertIn("(full)", str(e))
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
        client.makeConnection(transport)  # TCP up, but no message 2 ever comes
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
        pump = self.gateway.accept(greet=False)  # connected, handshake not done yet
        self.assertIs(link.state, link_module.LinkState.CONNECTING)
        d = link.stop()
        pump.flush()
        self.successResultOf(d)
        self.assertIs(link.state, link_module.LinkState.STOPPED)
        self.assertEqual(self.gateway.inner.channels, set())

    def test_stop_from_callbacks_of_the_link_itself(self):
        # Deferred callbacks re-enter: a when_ready() waiter that stops the
        # link, a failed pull whose errback stops it.
        link = self.link()
        link.when_ready().addCallback(lambda _: link.stop())
        link.start()
        pump = self.gateway.accept()
        pump.flush()
        self.assertIs(link.state, link_module.LinkState.STOPPED)
        self.assertFalse(self.gateway.inner.channels)

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
