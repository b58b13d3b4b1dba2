"""The private link's protocols, gateway and client, inside the channel."""

import struct

from hypothesis import given, strategies as st

from twisted.internet import reactor
from twisted.protocols import portforward
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.test.iosim import FakeTransport, connect as iosim_connect
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.gateway import channel as C
from nymtx.gateway import frames as F
from nymtx.gateway import padded as P
from nymtx.gateway.private_link import ClientChannel, PrivateLinkError, connect
from nymtx.gateway.private_server import (
    IDLE_TIMEOUT, PrivateClientFactory, RegistrationLimit, listener_factory)
from nymtx.gateway.store import MailboxStore
from nymtx.keys import KeyPair

GATEWAY = KeyPair.generate()
ALICE = KeyPair.generate()
BOB = KeyPair.generate()


class Recorder:
    """Wraps a protocol's dataReceived to keep every byte it is given."""

    def __init__(self, proto):
        self.data = []
        original = proto.dataReceived

        def record(data):
            self.data.append(data)
            original(data)
        proto.dataReceived = record

    def messages(self):
        """The channel messages (length-prefixed) in what was recorded."""
        stream, out = b"".join(self.data), []
        while stream:
            (n,) = struct.unpack_from(">H", stream)
            out.append(stream[:2 + n])
            stream = stream[2 + n:]
        return out


class Private(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = MailboxStore.open(self.clock, self.mktemp())
        self.addCleanup(self.store.close)
        self.factory = PrivateClientFactory(self.store, GATEWAY, clock=self.clock)
        self.listener = listener_factory(self.factory)

    def connect(self, keys=ALICE, gateway_key=GATEWAY.public_key):
        server = self.listener.buildProtocol(None)
        self.server = server.wrappedProtocol
        client = ClientChannel(keys, gateway_key, self.clock)
        self.client_bytes = Recorder(server)
        self.server_bytes = Recorder(client)
        st = FakeTransport(server, isServer=True)
        ct = FakeTransport(client, isServer=False)
        self.pump = iosim_connect(server, st, client, ct, clock=self.clock)
        return client

    def established(self, client):
        self.pump.flush()
        return self.successResultOf(client.established)

    def call(self, d):
        self.pump.flush()
        return self.successResultOf(d)

    def deliver(self, keys, *messages):
        for m in messages:
            self.assertIsNone(self.store.add(keys.public_key, m))
        self.store.flush()

    def test_register_pull_ack(self):
        link = self.established(self.connect())
        self.assertIsNone(self.call(link.register()))
        self.assertTrue(self.store.is_registered(ALICE.public_key))
        self.deliver(ALICE, *[b"m%d" % i for i in range(12)])
        first = self.call(link.pull())
        self.assertEqual([b for _, b in first.messages], [b"m%d" % i for i in range(10)])
        self.assertEqual(first.acked, 0)
        # once per connection: the next pull goes on from there
        second = self.call(link.pull())
        self.assertEqual([b for _, b in second.messages], [b"m10", b"m11"])
        self.assertEqual(self.call(link.pull()).messages, ())
        # acks may come later than the next pull
        answer = self.call(link.pull([i for i, _ in first.messages]))
        self.assertEqual((answer.acked, answer.messages), (10, ()))
        # what is not acked comes again on the next connection
        link.close()
        self.pump.flush()
        link = self.established(self.connect())
        again = self.call(link.pull())
        self.assertEqual(again.messages, second.messages)
        answer = self.call(link.pull([i for i, _ in again.messages]))
        self.assertEqual((answer.messages, answer.acked), ((), 2))
        self.assertEqual(self.store.usage(ALICE.public_key), (0, 0))

    def test_a_session_keeps_the_registration(self):
        link = self.established(self.connect())
        self.call(link.register())
        self.clock.advance(1000)
        link.close()
        self.pump.flush()
        link = self.established(self.connect())
        self.call(link.pull())
        self.assertEqual(self.store.last_seen(ALICE.public_key), 1000)
        self.clock.advance(10)
        self.call(link.pull())
        self.assertEqual(self.store.last_seen(ALICE.public_key), 1000)

    def test_pipelined_pulls(self):
        link = self.established(self.connect())
        self.call(link.register())
        self.deliver(ALICE, *[b"%d" % i for i in range(43)])
        ds = [link.pull() for _ in range(6)]
        self.pump.flush()
        got = [b for d in ds for _, b in self.successResultOf(d).messages]
        self.assertEqual(got, [b"%d" % i for i in range(43)])

    def test_store_pull_after(self):
        self.store.register(ALICE.public_key, b"t" * 32)
        self.deliver(ALICE, b"a", b"b", b"c")
        [(a, _), (b, _), (c, _)] = self.store.pull(ALICE.public_key, 10)
        self.assertEqual(self.store.pull(ALICE.public_key, 10, after=a), [(b, b"b"), (c, b"c")])
        self.assertEqual(self.store.pull(ALICE.public_key, 1, after=a), [(b, b"b")])
        self.assertEqual(self.store.pull(ALICE.public_key, 10, after=c), [])

    def test_every_frame_one_size_and_nothing_in_the_clear(self):
        link = self.established(self.connect())
        self.call(link.register())
        secret = b"meet me at the usual place"
        self.deliver(ALICE, secret)
        [(ident, _)] = self.call(link.pull()).messages
        self.call(link.pull([ident]))
        self.call(link.pull())
        up, down = self.client_bytes.messages(), self.server_bytes.messages()
        self.assertEqual([len(m) for m in up], [98] + [101] * 4)
        self.assertEqual([len(m) for m in down], [50] + [10521] * 4)
        wire = b"".join(up + down)
        for needle in (secret, secret[:8], ALICE.public_key, ALICE.public_key[:8],
                       struct.pack(">Q", ident)):
            self.assertNotIn(needle, wire)

    def test_ack_of_other_clients_mail(self):
        for keys in (ALICE, BOB):
            link = self.established(self.connect(keys))
            self.call(link.register())
        self.deliver(BOB, b"bob's")
        [(bobs, _)] = self.store.pull(BOB.public_key, 5)
        alice = self.established(self.connect(ALICE))
        answer = self.call(alice.pull([bobs]))
        self.assertEqual((answer.acked, answer.messages), (0, ()))
        self.assertEqual(self.store.usage(BOB.public_key)[0], 1)

    def test_unknown_key_may_only_register(self):
        link = self.established(self.connect(BOB))
        failure = self.failureResultOf(self.call_failing(link.pull()), PrivateLinkError)
        self.assertIn("unknown-client", str(failure.value))
        self.assertEqual(self.factory.errors["unknown-client"], 1)
        # that connection is closed; a new one may register and go on
        self.pump.flush()
        self.assertTrue(link._lost)
        link = self.established(self.connect(BOB))
        self.call(link.register())
        self.assertEqual(self.call(link.pull()).messages, ())

    def test_full(self):
        self.store.max_clients = 1
        self.call(self.established(self.connect(ALICE)).register())
        link = self.established(self.connect(BOB))
        failure = self.failureResultOf(self.call_failing(link.register()), PrivateLinkError)
        self.assertIn("(full)", str(failure.value))
        # a registered key renews whatever the room
        self.call(self.established(self.connect(ALICE)).register())

    def call_failing(self, d):
        self.pump.flush()
        return d

    def test_wrong_gateway_key(self):
        client = self.connect(gateway_key=BOB.public_key)
        self.pump.flush()
        failure = self.failureResultOf(client.established, PrivateLinkError)
        self.assertIn("closed the connection during the handshake", str(failure.value))
        self.assertIn("does not decrypt", self.server.close_reason)
        self.assertEqual(self.factory.connections, set())
        self.assertEqual(self.factory.channels, set())

    def test_replayed_session_gets_no_mail(self):
        link = self.established(self.connect())
        self.call(link.register())
        self.deliver(ALICE, b"one", b"two")
        pulled = self.call(link.pull())
        self.assertEqual(len(pulled.messages), 2)
        recorded = list(self.client_bytes.data)
        link.close()
        self.pump.flush()
        # a second connection replays the recorded session, acks and all
        replay = self.factory.buildProtocol(None)
        transport = StringTransport()
        replay.makeConnection(transport)
        for data in recorded:
            replay.dataReceived(data)
        # message 2 (fresh, useless to the replayer), then the close
        self.assertEqual(len(transport.value()), 50)
        self.assertTrue(transport.disconnecting)
        self.assertIn("frame 0 does not decrypt", replay.close_reason)
        self.assertEqual(self.store.usage(ALICE.public_key)[0], 2)
        # and the real client still gets its mail
        link = self.established(self.connect())
        self.assertEqual(self.call(link.pull()).messages, pulled.messages)

    def test_malformed_requests_close_after_five(self):
        client = self.connect()
        link = self.established(client)
        answers = []
        link.dataReceived = lambda data: answers.append(P.parse_answer(data))
        for n in range(5):
            client.transport.write(client.channel.send(b"\x09" + b"\x00" * (P.REQUEST_SIZE - 1)))
            self.pump.flush()
        self.assertEqual([a.code for a in answers], [F.E_UNKNOWN_TYPE] * 5)
        self.pump.flush()
        self.assertEqual(self.factory.connections, set())
        self.assertTrue(link._lost)
        self.assertEqual(self.factory.errors["unknown-type"], 5)

    def test_idle_timeout(self):
        link = self.established(self.connect())
        self.call(link.register())
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.call(link.pull())
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.pump.flush()
        self.assertEqual(len(self.factory.connections), 1)
        self.clock.advance(1)
        self.pump.flush()
        self.assertEqual(self.factory.connections, set())
        self.assertTrue(link._lost)

    def test_handshake_timeout_frees_the_slot(self):
        self.listener.max_connections = 1
        server = self.listener.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        self.assertIsNone(self.listener.buildProtocol(None))
        self.assertEqual(self.listener.refused, 1)
        self.clock.advance(C.HANDSHAKE_TIMEOUT)
        self.assertTrue(transport.disconnecting)
        self.assertIn("handshake not finished", server.wrappedProtocol.close_reason)
        server.connectionLost(None)
        self.assertEqual(self.factory.channels, set())
        self.assertIsNotNone(self.listener.buildProtocol(None))

    def test_answers_wait_while_the_client_does_not_read(self):
        link = self.established(self.connect())
        self.call(link.register())
        inner = next(iter(self.factory.connections))
        inner.pauseProducing()
        ds = [link.pull() for _ in range(3)]
        self.pump.flush()
        self.assertEqual(len(inner._pending), 3)
        self.assertNoResult(ds[0])
        inner.resumeProducing()
        self.pump.flush()
        for d in ds:
            self.assertEqual(self.successResultOf(d).messages, ())

    def test_store_failure_is_an_internal_error(self):
        link = self.established(self.connect())
        self.call(link.register())
        self.store.db.close()
        self.pump.flush()
        d = link.pull()
        self.pump.flush()
        failure = self.failureResultOf(d, PrivateLinkError)
        self.assertIn("(internal)", str(failure.value))
        self.flushLoggedErrors()

    def test_client_refuses_a_broken_answer(self):
        link = self.established(self.connect())
        d = link.pull()
        link.dataReceived(b"\x84\x0b" + b"\x00" * (P.ANSWER_SIZE - 2))
        self.failureResultOf(d, PrivateLinkError)
        self.assertIn("broken answer", str(link.error))

    def test_pull_of_too_many_acks(self):
        link = self.established(self.connect())
        self.failureResultOf(link.pull(range(1, P.PULL_SIZE + 2)), ValueError)


class OverTCP(TestCase):
    """The same, on a real loopback socket."""

    def setUp(self):
        self.store = MailboxStore.open(reactor, self.mktemp())
        self.addCleanup(self.store.close)
        self.factory = PrivateClientFactory(self.store, GATEWAY, clock=reactor)
        self.listener = listener_factory(self.factory)
        d = serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(self.listener)
        return d.addCallback(self._listening)

    def _listening(self, port):
        self.port = port
        self.addCleanup(port.stopListening)
        self.addCleanup(self.listener.close_all, abort=True)

    def endpoint(self):
        return TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)

    async def test_connect_register_pull(self):
        link = await connect(self.endpoint(), ALICE, GATEWAY.public_key, reactor)
        await link.register()
        self.store.add(ALICE.public_key, b"over tcp")
        self.store.flush()
        answer = await link.pull()
        self.assertEqual([b for _, b in answer.messages], [b"over tcp"])
        answer = await link.pull([answer.messages[0][0]])
        self.assertEqual(answer.acked, 1)
        await link.close()

    async def test_capture_through_a_relay(self):
        # What a passive observer of the link sees, tapped on a real socket
        captured = {"up": [], "down": []}

        class Client(portforward.ProxyClient):
            def dataReceived(self, data):
                captured["down"].append(data)
                super().dataReceived(data)

        class ClientFactory(portforward.ProxyClientFactory):
            protocol = Client

        class Server(portforward.ProxyServer):
            clientProtocolFactory = ClientFactory

            def dataReceived(self, data):
                captured["up"].append(data)
                super().dataReceived(data)

        relay = portforward.ProxyFactory("127.0.0.1", self.port.getHost().port)
        relay.protocol = Server
        relay_port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(relay)
        self.addCleanup(relay_port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", relay_port.getHost().port)
        secret = b"the plaintext nobody on the wire may see"
        cover = b"\x00loop-cover-marker"

        link = await connect(endpoint, ALICE, GATEWAY.public_key, reactor)
        await link.register()
        self.store.add(ALICE.public_key, secret)
        self.store.add(ALICE.public_key, cover)
        self.store.flush()
        answer = await link.pull()
        self.assertEqual([b for _, b in answer.messages], [secret, cover])
        await link.pull([i for i, _ in answer.messages])
        for _ in range(3):
            await link.pull()
        await link.close()
        # a second connection replays the recorded client bytes
        self.store.add(ALICE.public_key, secret)
        self.store.flush()
        replayer = await connectProtocol(self.endpoint(), Protocol())
        replayer.transport.write(b"".join(captured["up"]))
        lost = Deferred()
        replayer.connectionLost = lambda reason: lost.callback(None)
        await lost
        self.assertEqual(self.store.usage(ALICE.public_key)[0], 1)

        def messages(chunks):
            stream, out = b"".join(chunks), []
            while stream:
                (n,) = struct.unpack_from(">H", stream)
                out.append(stream[:2 + n])
                stream = stream[2 + n:]
            return out
        up, down = messages(captured["up"]), messages(captured["down"])
        self.assertEqual([len(m) for m in up], [98] + [101] * 6)
        self.assertEqual([len(m) for m in down], [50] + [10521] * 6)
        wire = b"".join(captured["up"] + captured["down"])
        for needle in (secret, secret[:10], cover, ALICE.public_key, ALICE.public_key[:10],
                       GATEWAY.public_key[:10]):
            self.assertNotIn(needle, wire)

    async def test_connect_with_the_wrong_key(self):
        d = connect(self.endpoint(), ALICE, BOB.public_key, reactor)
        with self.assertRaises(PrivateLinkError) as e:
            await d
        self.assertIn("during the handshake", str(e.exception))

    async def test_connection_refused(self):
        port = self.port.getHost().port
        await self.port.stopListening()
        with self.assertRaises(PrivateLinkError) as e:
            await connect(TCP4ClientEndpoint(reactor, "127.0.0.1", port), ALICE,
                          GATEWAY.public_key, reactor)
        self.assertIn("cannot connect", str(e.exception))


class FuzzRequests(SynchronousTestCase):
    """Any REQUEST_SIZE bytes a proven client sends get exactly one well-formed answer."""

    @given(st.binary(min_size=P.REQUEST_SIZE, max_size=P.REQUEST_SIZE))
    def test_any_request(self, data):
        clock = Clock()
        store = MailboxStore.open(clock, ":memory:")
        try:
            store.register(ALICE.public_key, b"t" * 32)
            store.add(ALICE.public_key, b"kept")
            store.flush()
            [(kept, _)] = store.pull(ALICE.public_key, 1)
            factory = PrivateClientFactory(store, GATEWAY, clock=clock)
            inner = factory.accept(ALICE.public_key)
            transport = StringTransport()
            inner.makeConnection(transport)
            inner.dataReceived(data)
            self.assertEqual(transport.value(), b"")  # answers leave at the tick
            clock.advance(0)
            answer = P.parse_answer(transport.value())
            self.assertIsInstance(answer, (P.Messages, P.Registered, P.Error))
            # only a well-formed pull naming its id deletes the stored message
            if not store.pull(ALICE.public_key, 1):
                self.assertIn(kept, P.parse_request(data).acks)
        finally:
            store.close()


class AnswerTick(SynchronousTestCase):
    """Every answer leaves at the tick, after the tick committed the acks."""

    def setUp(self):
        self.clock = Clock()
        self.path = self.mktemp()
        self.store = MailboxStore.open(self.clock, self.path)
        self.addCleanup(self.store.close)
        self.store.register(ALICE.public_key, b"t" * 32)
        for m in (b"a", b"b"):
            self.store.add(ALICE.public_key, m)
        self.store.flush()
        self.ids = [i for i, _ in self.store.pull(ALICE.public_key, 10)]

    def committed(self):
        import sqlite3
        db = sqlite3.connect(self.path)
        try:
            return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        finally:
            db.close()

    def connection(self, factory):
        inner = factory.accept(ALICE.public_key)
        transport = StringTransport()
        inner.makeConnection(transport)
        return inner, transport

    def test_no_answer_before_its_acks_are_committed(self):
        factory = PrivateClientFactory(self.store, GATEWAY, clock=self.clock)
        inner, transport = self.connection(factory)
        seen = []
        write = transport.write
        transport.write = lambda data: (seen.append(self.committed()), write(data))
        inner.dataReceived(P.encode_request(P.Pull(tuple(self.ids))))
        inner.dataReceived(P.encode_request(P.Pull()))
        self.assertEqual((transport.value(), self.committed()), (b"", 2))
        self.clock.advance(0)
        # both answers, in order, each written after the deletion hit the disk
        self.assertEqual(seen, [0, 0])
        answers = [P.parse_answer(transport.value()[i:i + P.ANSWER_SIZE])
                   for i in (0, P.ANSWER_SIZE)]
        self.assertEqual([a.acked for a in answers], [2, 0])

    def test_a_longer_tick_holds_every_answer_alike(self):
        factory = PrivateClientFactory(self.store, GATEWAY, clock=self.clock,
                                       answer_interval=0.01)
        inner, transport = self.connection(factory)
        other, other_transport = self.connection(factory)
        inner.dataReceived(P.encode_request(P.Pull(tuple(self.ids))))  # carries acks
        self.clock.advance(0.005)
        other.dataReceived(P.encode_request(P.Pull(take=False)))        # carries none
        self.clock.advance(0.004)
        self.assertEqual((transport.value(), other_transport.value()), (b"", b""))
        self.clock.advance(0.001)
        self.assertEqual(len(transport.value()), P.ANSWER_SIZE)
        self.assertEqual(len(other_transport.value()), P.ANSWER_SIZE)
        self.assertEqual(self.committed(), 0)

    def test_a_connection_stops_at_max_held_until_the_tick(self):
        from nymtx.gateway import private_server as S
        factory = PrivateClientFactory(self.store, GATEWAY, clock=self.clock,
                                       answer_interval=0.01)
        inner, transport = self.connection(factory)
        for _ in range(S.MAX_HELD + 3):  # the channel gives one request per call
            inner.dataReceived(P.encode_request(P.Pull(take=False)))
        self.assertEqual((inner.held, len(inner._pending)), (S.MAX_HELD, 3))
        self.clock.advance(0.01)
        self.assertEqual(len(transport.value()), S.MAX_HELD * P.ANSWER_SIZE)
        self.assertEqual((inner.held, len(inner._pending)), (3, 0))
        self.clock.advance(0.01)
        self.assertEqual(len(transport.value()), (S.MAX_HELD + 3) * P.ANSWER_SIZE)

    def test_a_failed_commit_sends_no_answer_and_closes(self):
        import sqlite3
        factory = PrivateClientFactory(self.store, GATEWAY, clock=self.clock)
        inner, transport = self.connection(factory)
        real = self.store.db

        class DiskFull:
            in_transaction = property(lambda self: real.in_transaction)

            def execute(self, sql, *args):
                if sql == "COMMIT":
                    raise sqlite3.OperationalError("database or disk is full")
                return real.execute(sql, *args)
        self.store.db = DiskFull()
        inner.dataReceived(P.encode_request(P.Pull(tuple(self.ids))))
        self.clock.advance(0)
        self.store.db = real
        self.assertEqual(transport.value(), b"")     # never told "acked 2"
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.store.usage(ALICE.public_key), (2, 2))
        self.assertEqual(len(self.store.pull(ALICE.public_key, 10)), 2)
        self.flushLoggedErrors()

    def test_a_bad_tick_is_refused(self):
        self.assertRaises(ValueError, PrivateClientFactory, self.store, GATEWAY,
                          clock=self.clock, answer_interval=-1)


class RegistrationLimits(SynchronousTestCase):
    def peer(self, host):
        from twisted.internet.address import IPv4Address, IPv6Address
        return (IPv6Address if ":" in host else IPv4Address)("TCP", host, 1234)

    def test_per_source_burst_then_one_per_period(self):
        clock = Clock()
        limit = RegistrationLimit(clock, per_source_burst=2, per_source_seconds=100,
                                  total_burst=100, total_seconds=0.001)
        a = self.peer("192.0.2.1")
        self.assertIsNone(limit.allow(a))
        self.assertIsNone(limit.allow(a))
        self.assertIn("from 192.0.2.1", limit.allow(a))
        self.assertIsNone(limit.allow(self.peer("192.0.2.2")))   # another source
        clock.advance(100)
        self.assertIsNone(limit.allow(a))
        self.assertIsNotNone(limit.allow(a))

    def test_ipv6_counts_by_64_and_mapped_ipv4_as_ipv4(self):
        clock = Clock()
        limit = RegistrationLimit(clock, per_source_burst=1, total_burst=100)
        self.assertIsNone(limit.allow(self.peer("2001:db8:1:2::1")))
        self.assertIn("2001:db8:1:2::/64", limit.allow(self.peer("2001:db8:1:2::ffff")))
        self.assertIsNone(limit.allow(self.peer("2001:db8:1:3::1")))
        self.assertIsNone(limit.allow(self.peer("::ffff:192.0.2.9")))
        self.assertIsNotNone(limit.allow(self.peer("192.0.2.9")))

    def test_total_bound_whatever_the_sources(self):
        clock = Clock()
        limit = RegistrationLimit(clock, total_burst=5, total_seconds=10)
        results = [limit.allow(self.peer(f"198.51.100.{i}")) for i in range(50)]
        self.assertEqual(results[:5], [None] * 5)
        self.assertTrue(all("at this gateway" in r for r in results[5:]))
        clock.advance(10)
        self.assertIsNone(limit.allow(self.peer("203.0.113.1")))

    def test_memory_bounded_by_max_sources(self):
        clock = Clock()
        limit = RegistrationLimit(clock, total_burst=10**6, total_seconds=1e-6,
                                  max_sources=100)
        for i in range(1000):
            limit.allow(self.peer(f"10.0.{i // 256}.{i % 256}"))
            self.assertLessEqual(len(limit._sources), 100)

    def test_the_gateway_refuses_over_the_limit(self):
        clock = Clock()
        store = MailboxStore.open(clock, ":memory:")
        self.addCleanup(store.close)
        factory = PrivateClientFactory(store, GATEWAY, clock=clock,
                                       admission=RegistrationLimit(clock, per_source_burst=1))
        answers = []
        for keys in (ALICE, BOB, ALICE):
            inner = factory.accept(keys.public_key)
            transport = StringTransport(peerAddress=self.peer("192.0.2.7"))
            inner.makeConnection(transport)
            inner.dataReceived(P.encode_request(P.Register()))
            clock.advance(0)
            answers.append(P.parse_answer(transport.value()))
        self.assertEqual(answers[0], P.Registered())
        self.assertEqual(P.error_name(answers[1].code), "rate-limited")
        self.assertEqual(answers[2], P.Registered())   # already registered: free
        self.assertEqual(factory.errors["rate-limited"], 1)
