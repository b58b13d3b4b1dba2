import os
import struct

from hypothesis import given, strategies as st
from nacl.bindings import crypto_scalarmult
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from nymtx.gateway import frames as F
from nymtx.gateway.server import ClientServerFactory, listener_factory
from nymtx.gateway.store import MailboxStore
from nymtx.keys import KeyPair


class Peer:
    """One client connection to the protocol over a StringTransport."""

    def __init__(self, factory):
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.decoder = F.FrameDecoder()
        [self.hello] = self.read()

    def read(self):
        data = self.transport.value()
        self.transport.clear()
        return [F.parse_gateway_frame(b) for b in self.decoder.feed(data)]

    def send_raw(self, data):
        self.proto.dataReceived(data)
        return self.read()

    def send(self, value):
        return self.send_raw(F.encode(value))

    def ask(self, value):
        [reply] = self.send(value)
        return reply

    @property
    def closed(self):
        return self.transport.disconnecting


class Server(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        path = os.path.join(self.mktemp())
        self.store = MailboxStore.open(self.clock, path)
        self.addCleanup(self.store.close)
        self.keys = KeyPair.generate()
        self.factory = ClientServerFactory(self.store, self.keys)
        self.alice = KeyPair.generate()
        self.bob = KeyPair.generate()

    def proof(self, keys, peer):
        shared = crypto_scalarmult(keys.private_key, self.keys.public_key)
        return F.registration_proof(shared, peer.hello.nonce, keys.public_key)

    def register(self, keys):
        peer = Peer(self.factory)
        reply = peer.ask(F.Register(keys.public_key, self.proof(keys, peer)))
        self.assertIsInstance(reply, F.Registered)
        return reply.token

    def authenticated(self, keys, token):
        peer = Peer(self.factory)
        self.assertEqual(peer.ask(F.Authenticate(keys.public_key, token)), F.Authenticated())
        return peer

    def deliver(self, keys, *messages):
        for m in messages:
            self.assertIsNone(self.store.add(keys.public_key, m))
        self.store.flush()

    def assertError(self, reply, code, text=None):
        self.assertIsInstance(reply, F.Error)
        self.assertEqual(reply.code, code, reply.message)
        if text:
            self.assertIn(text, reply.message)

    def test_hello(self):
        peer = Peer(self.factory)
        self.assertEqual(peer.hello.gateway_key, self.keys.public_key)
        self.assertEqual(peer.hello.version, F.PROTOCOL_VERSION)
        self.assertNotEqual(peer.hello.nonce, Peer(self.factory).hello.nonce)

    def test_register_pull_ack(self):
        token = self.register(self.alice)
        self.assertEqual(len(token), 32)
        self.deliver(self.alice, b"one", b"two", b"three")
        peer = self.authenticated(self.alice, token)
        reply = peer.ask(F.Pull(2))
        self.assertEqual([m for _, m in reply.messages], [b"one", b"two"])
        self.assertEqual(peer.ask(F.Ack(tuple(i for i, _ in reply.messages))), F.Acked(2))
        self.assertEqual([m for _, m in peer.ask(F.Pull(10)).messages], [b"three"])

    def test_unacked_delivered_again_after_disconnect(self):
        token = self.register(self.alice)
        self.deliver(self.alice, b"one")
        peer = self.authenticated(self.alice, token)
        first = peer.ask(F.Pull(10))
        peer.proto.connectionLost(None)
        again = self.authenticated(self.alice, token).ask(F.Pull(10))
        self.assertEqual(first, again)
        self.assertEqual(len(again.messages), 1)

    def test_forged_proof(self):
        peer = Peer(self.factory)
        # Mallory signs with her own key but claims Alice's address.
        mallory = KeyPair.generate()
        shared = crypto_scalarmult(mallory.private_key, self.keys.public_key)
        proof = F.registration_proof(shared, peer.hello.nonce, self.alice.public_key)
        self.assertError(peer.ask(F.Register(self.alice.public_key, proof)),
                         F.E_BAD_PROOF, "proof")
        self.assertFalse(self.store.is_registered(self.alice.public_key))

    def test_replayed_registration_refused(self):
        # a proof seen on one connection is useless on another: the nonce differs
        first = Peer(self.factory)
        proof = self.proof(self.alice, first)
        other = Peer(self.factory)
        self.assertError(other.ask(F.Register(self.alice.public_key, proof)), F.E_BAD_PROOF)

    def test_low_order_key(self):
        peer = Peer(self.factory)
        self.assertError(peer.ask(F.Register(b"\x00" * 32, b"\x00" * 32)), F.E_BAD_PROOF)

    def test_one_registration_per_connection(self):
        peer = Peer(self.factory)
        proof = self.proof(self.alice, peer)
        self.assertIsInstance(peer.ask(F.Register(self.alice.public_key, proof)), F.Registered)
        self.assertError(peer.ask(F.Register(self.alice.public_key, proof)), F.E_ALREADY)

    def test_reregistration_revokes_old_token(self):
        old = self.register(self.alice)
        new = self.register(self.alice)
        self.assertNotEqual(old, new)
        peer = Peer(self.factory)
        self.assertError(peer.ask(F.Authenticate(self.alice.public_key, old)), F.E_BAD_TOKEN)
        self.authenticated(self.alice, new)

    def test_wrong_token(self):
        self.register(self.alice)
        peer = Peer(self.factory)
        self.assertError(peer.ask(F.Authenticate(self.alice.public_key, b"x" * 32)),
                         F.E_BAD_TOKEN, "token")

    def test_unknown_address(self):
        peer = Peer(self.factory)
        self.assertError(peer.ask(F.Authenticate(self.bob.public_key, b"x" * 32)),
                         F.E_UNKNOWN_CLIENT, "not registered")

    def test_pull_before_authenticate(self):
        peer = Peer(self.factory)
        self.assertError(peer.ask(F.Pull(1)), F.E_NOT_AUTHENTICATED)
        self.assertError(peer.ask(F.Ack((1,))), F.E_NOT_AUTHENTICATED)

    def test_cannot_touch_another_clients_mail(self):
        alice_token = self.register(self.alice)
        bob_token = self.register(self.bob)
        self.deliver(self.alice, b"secret")
        [(ident, _)] = self.authenticated(self.alice, alice_token).ask(F.Pull(10)).messages
        bob = self.authenticated(self.bob, bob_token)
        self.assertEqual(bob.ask(F.Pull(10)).messages, ())
        self.assertEqual(bob.ask(F.Ack((ident,))), F.Acked(0))
        self.assertEqual(len(self.store.pull(self.alice.public_key, 10)), 1)
        # Bob's token does not open Alice's mailbox either
        peer = Peer(self.factory)
        self.assertError(peer.ask(F.Authenticate(self.alice.public_key, bob_token)),
                         F.E_BAD_TOKEN)

    def test_truncated_frame(self):
        peer = Peer(self.factory)
        body = bytes([F.AUTHENTICATE]) + b"x" * 10
        [reply] = peer.send_raw(F.frame(body))
        self.assertError(reply, F.E_MALFORMED, "authenticate frame is 11 bytes")
        self.assertFalse(peer.closed)

    def test_unknown_frame(self):
        peer = Peer(self.factory)
        [reply] = peer.send_raw(F.frame(b"\x77"))
        self.assertError(reply, F.E_UNKNOWN_TYPE, "0x77")

    def test_oversized_frame_closes(self):
        peer = Peer(self.factory)
        [reply] = peer.send_raw(struct.pack(">I", F.MAX_CLIENT_FRAME_SIZE + 1))
        self.assertError(reply, F.E_TOO_LARGE, str(F.MAX_CLIENT_FRAME_SIZE))
        self.assertTrue(peer.closed)

    def test_the_largest_client_frame_is_accepted(self):
        peer = Peer(self.factory)
        reply = peer.ask(F.Ack(tuple(range(F.MAX_ACK))))
        self.assertError(reply, F.E_NOT_AUTHENTICATED, "authenticate")
        self.assertEqual(len(F.encode(F.Ack(tuple(range(F.MAX_ACK))))),
                         F.LENGTH_SIZE + F.MAX_CLIENT_FRAME_SIZE)

    def test_a_partial_frame_pins_little_memory(self):
        # A client frame is at most an ack of MAX_ACK ids; a prefix promising
        # more is refused at once rather than buffered up to 256 KiB per
        # connection while the client dribbles the body.
        peer = Peer(self.factory)
        [reply] = peer.send_raw(struct.pack(">I", 64 * 1024) + b"\x03")
        self.assertError(reply, F.E_TOO_LARGE, "over the maximum")
        self.assertTrue(peer.closed)

    def test_a_client_that_does_not_read_stops_being_answered(self):
        token = self.register(self.alice)
        self.deliver(self.alice, b"x" * 1000)
        peer = self.authenticated(self.alice, token)
        self.assertIs(peer.transport.producer, peer.proto)
        # the transport's buffer is full: it pauses its producer
        peer.proto.pauseProducing()
        self.assertEqual(peer.transport.producerState, "paused")
        self.assertEqual(peer.send_raw(F.encode(F.Pull(10)) * 50), [])
        # ...and nothing more is read while the 50 pulls wait
        self.assertEqual(len(peer.proto._pending), 50)
        peer.proto.resumeProducing()
        replies = peer.read()
        self.assertEqual(len(replies), 50)
        self.assertEqual(replies[0].messages[0][1], b"x" * 1000)
        self.assertEqual(peer.transport.producerState, "producing")

    def test_pausing_mid_read_answers_the_rest_in_order(self):
        token = self.register(self.alice)
        peer = self.authenticated(self.alice, token)
        sent = []
        write = peer.transport.write

        def write_then_pause(data):
            write(data)
            sent.append(data)
            if len(sent) == 2:
                peer.proto.pauseProducing()
        peer.transport.write = write_then_pause
        replies = peer.send_raw(F.encode(F.Pull(1)) * 3 + F.encode(F.Ack((7,))))
        self.assertEqual(len(replies), 2)
        self.assertEqual(peer.transport.producerState, "paused")
        peer.proto.resumeProducing()
        replies = peer.read()
        self.assertEqual([type(r) for r in replies], [F.Messages, F.Acked])

    def test_an_oversized_frame_waits_for_the_answers_before_it(self):
        token = self.register(self.alice)
        peer = self.authenticated(self.alice, token)
        peer.proto.pauseProducing()
        peer.send_raw(F.encode(F.Pull(1)) + struct.pack(">I", F.MAX_CLIENT_FRAME_SIZE + 1))
        self.assertFalse(peer.closed)
        peer.proto.resumeProducing()
        replies = peer.read()
        self.assertEqual([type(r) for r in replies], [F.Messages, F.Error])
        self.assertTrue(peer.closed)
        self.assertEqual(peer.transport.producerState, "paused")

    def test_frames_before_an_oversized_prefix_are_answered(self):
        # One answer per request, even when a request shares a read with
        # the oversized prefix that ends the connection.
        token = self.register(self.alice)
        self.deliver(self.alice, b"one")
        peer = self.authenticated(self.alice, token)
        replies = peer.send_raw(F.encode(F.Pull(10)) + F.encode(F.Ack((1,)))
                                + struct.pack(">I", F.MAX_FRAME_SIZE + 1))
        self.assertEqual([type(r) for r in replies], [F.Messages, F.Acked, F.Error])
        self.assertEqual([m for _, m in replies[0].messages], [b"one"])
        self.assertError(replies[2], F.E_TOO_LARGE)
        self.assertTrue(peer.closed)

    def test_repeated_errors_close(self):
        peer = Peer(self.factory)
        replies = peer.send_raw(F.frame(b"\x77") * 10)
        self.assertEqual(len(replies), self.factory.max_errors)
        self.assertIn("closing", replies[-1].message)
        self.assertTrue(peer.closed)
        self.assertEqual(self.factory.errors["unknown-type"], self.factory.max_errors)

    def test_pull_capped(self):
        factory = ClientServerFactory(self.store, self.keys, max_pull=3)
        self.factory = factory
        token = self.register(self.alice)
        self.deliver(self.alice, *[b"m"] * 5)
        self.assertEqual(len(self.authenticated(self.alice, token).ask(F.Pull(100)).messages), 3)

    def test_garbage_after_auth_keeps_connection_until_limit(self):
        token = self.register(self.alice)
        peer = self.authenticated(self.alice, token)
        self.assertError(peer.ask(F.Authenticate(self.alice.public_key, token)), F.E_ALREADY)
        self.assertEqual(peer.ask(F.Pull(1)), F.Messages(()))

    def test_full_gateway_refuses_new_clients_only(self):
        # A registration flood must not push the presence document past the
        # directory's body limit (the gateway would leave the topology).
        self.store.max_clients = 2
        self.register(self.alice)
        self.register(self.bob)
        carol = KeyPair.generate()
        peer = Peer(self.factory)
        self.assertError(peer.ask(F.Register(carol.public_key, self.proof(carol, peer))),
                         F.E_FULL, "2 clients")
        self.assertFalse(self.store.is_registered(carol.public_key))
        token = self.register(self.alice)  # a registered client may renew its token
        self.authenticated(self.alice, token)

    def test_storage_failure_is_an_internal_error_frame(self):
        # Every request that touches the database, when the database fails
        # (here: closed under the gateway), gets error 9 and the connection
        # stays up: no sqlite exception escapes into Twisted.
        token = self.register(self.alice)
        peer = self.authenticated(self.alice, token)
        fresh = Peer(self.factory)
        proof = self.proof(self.bob, fresh)
        self.store.db.close()
        self.assertError(fresh.ask(F.Register(self.bob.public_key, proof)), F.E_INTERNAL,
                         "storage")
        self.assertError(fresh.ask(F.Authenticate(self.alice.public_key, token)),
                         F.E_INTERNAL, "storage")
        self.assertError(peer.ask(F.Pull(10)), F.E_INTERNAL, "storage")
        self.assertError(peer.ask(F.Ack((1, 2))), F.E_INTERNAL, "storage")
        self.assertFalse(fresh.closed)
        self.assertFalse(peer.closed)
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class Limits(SynchronousTestCase):
    """A listener's bounds: connections at once, and how long one may idle."""

    def setUp(self):
        self.clock = Clock()
        self.store = MailboxStore.open(self.clock, self.mktemp())
        self.addCleanup(self.store.close)
        self.keys = KeyPair.generate()

    def factory(self, **kwargs):
        return listener_factory(ClientServerFactory(self.store, self.keys), **kwargs)

    def test_connections_past_the_maximum_are_refused(self):
        factory = self.factory(max_connections=2)
        peers = [Peer(factory), Peer(factory)]
        self.assertIsNone(factory.buildProtocol(None))
        self.assertIsNone(factory.buildProtocol(None))
        self.assertEqual(factory.refused, 2)
        peers[0].proto.connectionLost(None)
        self.assertIsNotNone(factory.buildProtocol(None))

    def test_a_connection_that_never_authenticates_is_closed(self):
        factory = self.factory(handshake_timeout=30, idle_timeout=300)
        peer = Peer(factory)
        self.clock.advance(29)
        peer.send_raw(b"\x00\x00")  # a byte now and then does not keep it
        self.assertFalse(peer.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(peer.transport.disconnecting)

    def test_an_authenticated_client_gets_the_idle_timeout(self):
        factory = self.factory(handshake_timeout=30, idle_timeout=300)
        peer = Peer(factory)
        alice = KeyPair.generate()
        shared = crypto_scalarmult(alice.private_key, self.keys.public_key)
        proof = F.registration_proof(shared, peer.hello.nonce, alice.public_key)
        token = peer.ask(F.Register(alice.public_key, proof)).token
        peer = Peer(factory)
        self.assertIsInstance(peer.ask(F.Authenticate(alice.public_key, token)),
                              F.Authenticated)
        self.clock.advance(200)
        self.assertIsInstance(peer.ask(F.Pull(1)), F.Messages)
        self.clock.advance(299)
        self.assertFalse(peer.transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(peer.transport.disconnecting)


class ServerFuzz(SynchronousTestCase):
    """Whatever a client sends, the gateway answers or closes, and never raises."""

    def setUp(self):
        self.store = MailboxStore.open(Clock(), self.mktemp())
        self.addCleanup(self.store.close)
        self.factory = ClientServerFactory(self.store, KeyPair.generate())
        self.victim = KeyPair.generate()
        self.store.register(self.victim.public_key, b"t" * 32)
        self.store.add(self.victim.public_key, b"private")
        self.store.flush()

    @given(st.lists(st.one_of(
        st.binary(max_size=80),
        st.builds(lambda b: F.frame(b), st.binary(max_size=80)),
        st.builds(lambda t, b: F.frame(bytes([t]) + b),
                  st.sampled_from([1, 2, 3, 4]), st.binary(max_size=70))), max_size=12))
    def test_any_bytes(self, chunks):
        peer = Peer(self.factory)
        for chunk in chunks:
            if peer.closed:
                break
            for reply in peer.send_raw(chunk):
                self.assertIsInstance(reply, (F.Error, F.Registered, F.Messages, F.Acked,
                                              F.Authenticated))
                if isinstance(reply, F.Messages):
                    self.fail("a pull without the victim's token returned messages")
        self.assertLessEqual(peer.proto.errors, self.factory.max_errors)
        self.assertEqual(len(self.store.pull(self.victim.public_key, 10)), 1)
