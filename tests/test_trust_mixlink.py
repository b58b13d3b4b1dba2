"""Authenticated mix links (nymtx.trust.mixlink, docs/mix-link.md): the
handshake, the frames, every refusal, the vectors, a fuzzed parser, and
real sockets through PacketLinks."""

import os
import re

from hypothesis import given, settings, strategies as st
from noise.connection import Keypair, NoiseConnection
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair
from nymtx.links import PacketLinks, PeerState
from nymtx.listening import ConnectionLimit
from nymtx.sphinx import PACKET_SIZE
from nymtx.topology import GatewayInfo, MixNodeInfo, Topology
from nymtx.trust import mixlink_vectors
from nymtx.trust.admission import LinkAuthority
from nymtx.trust.identity import IdentityKey
from nymtx.trust.mixlink import (
    ADMITTED_SIZE, FRAME_SIZE, MESSAGE1_SIZE, MESSAGE2_SIZE, MESSAGE3_SIZE, PROLOGUE, PROTOCOL_NAME,
    AuthenticatingFactory, LinkError, LinkKeys, MixLink, link_public_key)

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "mix-link.md")


def packet(i=0):
    return bytes([i % 256]) * PACKET_SIZE


def pair(sender=None, receiver=None, admit=None):
    sender = sender or IdentityKey.generate()
    receiver = receiver or IdentityKey.generate()
    initiator = MixLink(True, LinkKeys(sender), remote_key=link_public_key(receiver.public_key))
    responder = MixLink(False, LinkKeys(receiver), admit=admit)
    return initiator, responder


def handshake(initiator, responder):
    """Runs the handshake; returns (message 1, message 3)."""
    m1 = initiator.take_output()
    responder.receive(m1)
    initiator.receive(responder.take_output())
    m3 = initiator.take_output()
    responder.receive(m3)
    initiator.receive(responder.take_output())
    assert initiator.is_open and responder.is_open
    return m1, m3


class HandshakeTests(SynchronousTestCase):

    def test_sizes_and_the_proven_key(self):
        sender = IdentityKey.generate()
        initiator, responder = pair(sender)
        m1 = initiator.take_output()
        self.assertEqual(len(m1), MESSAGE1_SIZE)
        self.assertEqual(responder.receive(m1), [])
        m2 = responder.take_output()
        self.assertEqual(len(m2), MESSAGE2_SIZE)
        self.assertEqual(initiator.receive(m2), [])
        self.assertFalse(initiator.is_open)  # not before it is admitted
        m3 = initiator.take_output()
        self.assertEqual(len(m3), MESSAGE3_SIZE)
        self.assertEqual(responder.receive(m3), [])
        admitted = responder.take_output()
        self.assertEqual(len(admitted), ADMITTED_SIZE)
        self.assertEqual(initiator.receive(admitted), [])
        self.assertTrue(initiator.is_open)
        frames = [initiator.seal(packet(i)) for i in range(3)]
        self.assertEqual({len(f) for f in frames}, {FRAME_SIZE})
        # the frames back to back, cut anywhere
        data = b"".join(frames)
        got = []
        for start in range(0, len(data), 700):
            got += responder.receive(data[start:start + 700])
        self.assertEqual(got, [packet(i) for i in range(3)])
        self.assertEqual(responder.remote_key, link_public_key(sender.public_key))
        self.assertEqual(initiator.handshake_hash, responder.handshake_hash)

    def test_it_is_standard_noise_xk(self):
        """A plain noiseprotocol responder (its own backend) reads our
        initiator's handshake and frames: the link is Noise, not look-alike."""
        sender, receiver = IdentityKey.generate(), IdentityKey.generate()
        receiver_keys = LinkKeys(receiver)
        initiator = MixLink(True, LinkKeys(sender), remote_key=receiver_keys.public_key)
        other = NoiseConnection.from_name(PROTOCOL_NAME)
        other.set_prologue(PROLOGUE)
        other.set_keypair_from_private_bytes(Keypair.STATIC, receiver_keys.private_key)
        other.set_as_responder()
        other.start_handshake()
        other.read_message(initiator.take_output())
        initiator.receive(other.write_message())
        other.read_message(initiator.take_output())
        self.assertTrue(other.handshake_finished)
        initiator.receive(other.encrypt(b""))
        self.assertTrue(initiator.is_open)
        self.assertEqual(other.decrypt(initiator.seal(packet(7))), packet(7))
        self.assertEqual(other.decrypt(initiator.seal(packet(8))), packet(8))

    def test_a_node_not_admitted_is_refused_before_any_packet(self):
        initiator, responder = pair(admit=lambda key: "not a layer-1 node")
        m1 = initiator.take_output()
        responder.receive(m1)
        initiator.receive(responder.take_output())
        e = self.assertRaises(LinkError, responder.receive, initiator.take_output())
        self.assertEqual(str(e), "not a layer-1 node")
        self.assertFalse(responder.is_open)
        self.assertEqual(responder.take_output(), b"")  # no admission message

    def test_a_wrong_receiver_key(self):
        """The sender dials with a key the receiver does not hold (a node
        impersonating another's address): message 1 does not decrypt."""
        receiver = IdentityKey.generate()
        initiator = MixLink(True, LinkKeys(IdentityKey.generate()),
                            remote_key=link_public_key(IdentityKey.generate().public_key))
        responder = MixLink(False, LinkKeys(receiver))
        e = self.assertRaises(LinkError, responder.receive, initiator.take_output())
        self.assertIn("handshake message 1 does not decrypt", str(e))

    def test_a_receiver_without_the_key(self):
        """Seen from the sender: an impostor at the next hop's address
        cannot answer message 1 so that message 2 decrypts."""
        initiator = MixLink(True, LinkKeys(IdentityKey.generate()),
                            remote_key=link_public_key(IdentityKey.generate().public_key))
        impostor = MixLink(True, LinkKeys(IdentityKey.generate()),
                           remote_key=link_public_key(IdentityKey.generate().public_key))
        initiator.take_output()
        e = self.assertRaises(LinkError, initiator.receive, impostor.take_output())
        self.assertIn("handshake message 2 does not decrypt", str(e))

    def test_a_replayed_handshake_and_frames(self):
        """Messages 1 and 3 and the frames of a real link, captured and
        played again: the receiver's fresh ephemeral key makes message 3 fail."""
        sender, receiver = IdentityKey.generate(), IdentityKey.generate()
        initiator, responder = pair(sender, receiver)
        m1, m3 = handshake(initiator, responder)
        frames = initiator.seal(packet(1)) + initiator.seal(packet(2))
        self.assertEqual(len(responder.receive(frames)), 2)
        again = MixLink(False, LinkKeys(receiver))
        self.assertEqual(again.receive(m1), [])
        e = self.assertRaises(LinkError, again.receive, m3)
        self.assertIn("handshake message 3 does not decrypt", str(e))

    def test_frames_replayed_or_reordered_within_a_link(self):
        initiator, responder = pair()
        handshake(initiator, responder)
        first, second = initiator.seal(packet(1)), initiator.seal(packet(2))
        self.assertEqual(responder.receive(first), [packet(1)])
        e = self.assertRaises(LinkError, responder.receive, first)
        self.assertIn("frame 1 does not authenticate", str(e))
        initiator, responder = pair()
        handshake(initiator, responder)
        first, second = initiator.seal(packet(1)), initiator.seal(packet(2))
        self.assertRaises(LinkError, responder.receive, second + first)

    def test_a_bit_flipped_or_truncated_frame(self):
        for damage in ("flip", "cut"):
            initiator, responder = pair()
            handshake(initiator, responder)
            frame = bytearray(initiator.seal(packet(3)))
            following = initiator.seal(packet(4))
            if damage == "flip":
                frame[100] ^= 0x01
            else:
                del frame[-10:]
            e = self.assertRaises(LinkError, responder.receive, bytes(frame) + following)
            self.assertIn("frame 0 does not authenticate", str(e), damage)

    def test_the_receiver_sends_nothing_after_admission(self):
        initiator, responder = pair()
        handshake(initiator, responder)
        self.assertRaises(LinkError, initiator.receive, b"x")

    def test_a_forged_admission_message(self):
        initiator, responder = pair()
        responder.receive(initiator.take_output())
        initiator.receive(responder.take_output())
        e = self.assertRaises(LinkError, initiator.receive, bytes(ADMITTED_SIZE))
        self.assertIn("admission message does not authenticate", str(e))

    def test_only_whole_packets_are_sealed(self):
        initiator, responder = pair()
        self.assertRaises(LinkError, initiator.seal, packet())  # not open yet
        handshake(initiator, responder)
        self.assertRaises(ValueError, initiator.seal, b"short")
        self.assertRaises(LinkError, responder.seal, packet())

    def test_a_key_off_the_curve(self):
        # 2^255 - 19 + 1 as the y coordinate: not a point
        self.assertRaises(LinkError, link_public_key, b"\xff" * 31 + b"\x7f")


class FuzzTests(SynchronousTestCase):

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(max_size=3 * FRAME_SIZE), max_size=6))
    def test_the_responder_takes_any_bytes_in_any_cuts(self, chunks):
        responder = MixLink(False, LinkKeys(IdentityKey.from_seed(b"\x05" * 32)),
                            admit=lambda key: None)
        try:
            for chunk in chunks:
                self.assertEqual(responder.receive(chunk), [])
        except LinkError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=2 * FRAME_SIZE), st.integers(0, 2 * FRAME_SIZE),
           st.integers(0, 7))
    def test_frames_after_an_honest_handshake(self, tail, position, bit):
        initiator, responder = pair()
        handshake(initiator, responder)
        frames = bytearray(initiator.seal(packet(1)) + initiator.seal(packet(2)))
        frames[position % len(frames)] ^= 1 << bit
        try:
            got = responder.receive(bytes(frames) + tail)
        except LinkError:
            return
        self.fail(f"a damaged frame was taken: {len(got)} packets")

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=200))
    def test_the_initiator_takes_any_answer(self, answer):
        initiator, _ = pair()
        try:
            initiator.receive(answer)
        except LinkError:
            pass


class VectorTests(SynchronousTestCase):

    def test_the_page_shows_the_vectors(self):
        with open(DOC, encoding="utf-8") as f:
            page = f.read()
        self.assertIn(mixlink_vectors.render(), page)

    def test_the_vector_link_carries_its_packets(self):
        labels = dict(mixlink_vectors.build())
        self.assertEqual(len(labels["message 3 (-> s, se)"]), MESSAGE3_SIZE)
        self.assertEqual(len(labels["frame 0 (1372 zero bytes)"]), FRAME_SIZE)

    def test_the_link_key_is_the_identity_key_converted(self):
        """The page's claim, by another route: X25519 of the clamped
        SHA-512 of the seed, as RFC 8032 derives the Ed25519 scalar."""
        import hashlib
        from nacl.bindings import crypto_scalarmult_base
        seed = mixlink_vectors.SENDER_SEED
        scalar = bytearray(hashlib.sha512(seed).digest()[:32])
        scalar[0] &= 248
        scalar[31] &= 127
        scalar[31] |= 64
        labels = dict(mixlink_vectors.build())
        self.assertEqual(crypto_scalarmult_base(bytes(scalar)),
                         labels["sender link key (X25519)"])

    def test_the_page_sizes(self):
        with open(DOC, encoding="utf-8") as f:
            page = f.read()
        for size in (MESSAGE1_SIZE, MESSAGE3_SIZE, FRAME_SIZE):
            self.assertTrue(re.search(rf"\b{size}\b", page), size)


# -- real sockets -----------------------------------------------------------

class _Directory:
    def __init__(self, topology):
        self.topology = topology

    def get_topology(self):
        return succeed(self.topology)


class _Collect(Protocol):
    def dataReceived(self, data):
        self.factory.data += data


class _Sink(Factory):
    protocol = _Collect
    noisy = False

    def __init__(self):
        self.data = b""


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


class SocketTests(TestCase):
    """A gateway-like receiver admitting layer 3 by key, senders through
    PacketLinks: a layer-3 node gets in; a layer-2 node, a node of no
    layer, a plain sender and a sender that dials the wrong key do not."""

    timeout = 30

    def setUp(self):
        self.ids = {name: IdentityKey.generate() for name in
                    ("l2", "l3", "gateway", "stranger")}
        self.sink = _Sink()
        self.events = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def topology(self, port):
        def mix(name, layer, p):
            return MixNodeInfo(NodeAddress.parse(f"127.0.0.1:{p}"),
                               KeyPair.generate().public_key, layer,
                               identity_key=self.ids[name].public_key)
        gateway = GatewayInfo(NodeAddress.parse(f"127.0.0.1:{port}"),
                              NodeAddress.parse("127.0.0.1:9"),
                              KeyPair.generate().public_key,
                              identity_key=self.ids["gateway"].public_key)
        return Topology([mix("l2", 2, 2), mix("l3", 3, 3)], [gateway])

    async def listen(self):
        authority = LinkAuthority(reactor, None, self.ids["gateway"], layer=3)
        limit = ConnectionLimit(self.sink, reactor, 16, idle_timeout=30)
        factory = AuthenticatingFactory(limit.wrappedFactory, authority, reactor,
                                        run_authority=False)
        limit.wrappedFactory = factory
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(limit)
        self.addCleanup(port.stopListening)
        authority.directory = _Directory(self.topology(port.getHost().port))
        await authority.refresh()
        self.address = NodeAddress.parse(f"127.0.0.1:{port.getHost().port}")
        return factory

    def sender(self, name, topology=None):
        authority = LinkAuthority(reactor, _Directory(topology or self.topology(
            self.address.port)), self.ids[name], layer=2)
        links = PacketLinks(reactor, initial_backoff=5, secure=authority)
        self.addCleanup(links.stop)
        return authority, links

    def test_the_last_layer_gets_in_the_others_do_not(self):
        return Deferred.fromCoroutine(self._scenario())

    async def _scenario(self):
        factory = await self.listen()
        for name in ("l3", "l2", "stranger"):
            authority, links = self.sender(name)
            await authority.refresh()
            for i in range(3):
                links.send(self.address, packet(i))
            for _ in range(100):
                if links.state(self.address) in (PeerState.CONNECTED, PeerState.IDLE,
                                                 PeerState.WAITING) and (
                        name != "l3" or len(self.sink.data) >= 3 * PACKET_SIZE):
                    break
                await sleep(0.02)
            if name == "l3":
                self.assertEqual(self.sink.data, b"".join(packet(i) for i in range(3)))
                self.assertTrue(links.connected(self.address))
            else:
                self.assertFalse(links.connected(self.address), name)
                self.assertEqual(links.handshake_failures, 1, name)
        # a plain sender: its packets are no handshake
        plain = PacketLinks(reactor, initial_backoff=5)
        self.addCleanup(plain.stop)
        plain.send(self.address, packet(9))
        # a sender with a topology that gives the gateway's address another key
        wrong = self.topology(self.address.port)
        wrong = Topology(wrong.mixnodes, [GatewayInfo(
            self.address, NodeAddress.parse("127.0.0.1:9"), KeyPair.generate().public_key,
            identity_key=self.ids["stranger"].public_key)])
        authority, liar = self.sender("l3", wrong)
        await authority.refresh()
        liar.send(self.address, packet(8))
        for _ in range(100):
            if sum(factory.refused.values()) >= 4:
                break
            await sleep(0.02)
        self.assertEqual(self.sink.data, b"".join(packet(i) for i in range(3)))
        self.assertEqual(factory.refused, {"not admitted": 2, "bad message 1": 2})
        logged = [e.get("why", "") for e in self.events
                  if "mix link from" in e.get("log_format", "")]
        self.assertTrue(any("is not a layer-3 node of the signed topology" in w
                            for w in logged), logged)
        self.assertTrue(any("does not decrypt" in w for w in logged), logged)
        # no key for an address off the topology: no link, logged
        authority, links = self.sender("l3")
        await authority.refresh()
        elsewhere = NodeAddress.parse("127.0.0.1:1")
        links.send(elsewhere, packet(0))
        self.assertEqual(links.queued(elsewhere), 1)


class TimeoutTests(SynchronousTestCase):

    def test_a_silent_peer_is_cut_after_the_handshake_deadline(self):
        from twisted.test.proto_helpers import StringTransport
        clock = Clock()
        authority = LinkAuthority(clock, None, IdentityKey.generate(), layer=1)
        factory = AuthenticatingFactory(_Sink(), authority, clock)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        transport.abortConnection = lambda: setattr(transport, "aborted", True)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"x" * 10)
        clock.advance(9.9)
        self.assertFalse(getattr(transport, "aborted", False))
        clock.advance(0.2)
        self.assertTrue(transport.aborted)
        self.assertEqual(factory.refused, {"timeout": 1})
