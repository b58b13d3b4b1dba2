"""The Noise channel between client and gateway: handshake, transport, bad input."""

import hashlib
import hmac
import os
import re
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, strategies as st
from noise.backends.default.keypairs import KeyPair25519
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from nymtx.gateway import channel as C
from nymtx.gateway import padded as P
from nymtx.keys import KeyPair

GATEWAY = KeyPair.generate()
CLIENT = KeyPair.generate()
OTHER = KeyPair.generate()


def pair(clock=None, client=CLIENT, gateway=GATEWAY, gateway_key=None, **kwargs):
    """An open client/gateway channel pair, and the handshake's wire bytes."""
    clock = clock or Clock()
    c = C.Channel.client(client, gateway_key or gateway.public_key, clock, **kwargs)
    g = C.Channel.gateway(gateway, clock, **kwargs)
    m1 = c.start()
    assert g.receive(m1) == []
    m2 = g.take_output()
    assert c.receive(m2) == []
    return c, g, m1, m2


class Handshake(SynchronousTestCase):
    def test_static_keys_are_the_sphinx_keys(self):
        # The gateway's channel key is the X25519 key the topology lists:
        # noiseprotocol must derive the same public key from our private one.
        for keys in (GATEWAY, CLIENT, KeyPair.generate()):
            self.assertEqual(
                KeyPair25519.from_private_bytes(keys.private_key).public_bytes, keys.public_key)

    def test_round_trip(self):
        c, g, m1, m2 = pair()
        self.assertEqual((len(m1), len(m2)), (2 + C.MESSAGE1_SIZE, 2 + C.MESSAGE2_SIZE))
        self.assertEqual((len(m1), len(m2)), (98, 50))
        self.assertEqual(g.remote_key, CLIENT.public_key)
        self.assertEqual(c.handshake_hash, g.handshake_hash)
        self.assertTrue(c.peer_proven)
        # the gateway has the client's key but no proof this is not a replay
        self.assertFalse(g.peer_proven)
        self.assertEqual(g.receive(c.send(b"hello")), [b"hello"])
        self.assertTrue(g.peer_proven)
        self.assertEqual(c.receive(g.send(b"")), [b""])

    def test_client_key_never_in_the_clear(self):
        c, g, m1, m2 = pair()
        self.assertNotIn(CLIENT.public_key, m1 + m2)
        self.assertNotIn(CLIENT.public_key[:8], m1 + m2)

    def test_wrong_gateway_key(self):
        # the client thinks the gateway's key is OTHER's
        c = C.Channel.client(CLIENT, OTHER.public_key, Clock())
        g = C.Channel.gateway(GATEWAY, Clock())
        e = self.assertRaises(C.ChannelError, g.receive, c.start())
        self.assertIn("does not decrypt", str(e))
        self.assertEqual(g.state, C.CLOSED)
        self.assertEqual(g.take_output(), b"")

    def test_impostor_gateway_cannot_answer(self):
        # An impostor without the gateway's private key cannot make message
        # 2 for this client; the nearest it can do is relay the real
        # gateway's answer to another handshake.
        c1 = C.Channel.client(CLIENT, GATEWAY.public_key, Clock())
        c2 = C.Channel.client(CLIENT, GATEWAY.public_key, Clock())
        g = C.Channel.gateway(GATEWAY, Clock())
        c1.start()
        g.receive(c2.start())
        e = self.assertRaises(C.ChannelError, c1.receive, g.take_output())
        self.assertIn("handshake message 2 does not decrypt", str(e))
        self.assertFalse(c1.peer_proven)

    def test_replayed_message_1_gets_nothing(self):
        # Record a whole session from the client, then replay it to the
        # gateway on a new connection.
        c, g, m1, m2 = pair()
        frames = [c.send(P.encode_request(P.Pull((i,)))) for i in (1, 2, 3)]
        replay = C.Channel.gateway(GATEWAY, Clock())
        self.assertEqual(replay.receive(m1), [])
        # the gateway answers, but under a fresh ephemeral: not the old
        # message 2, and nothing the replayer can read
        m2_again = replay.take_output()
        self.assertEqual(len(m2_again), len(m2))
        self.assertNotEqual(m2_again, m2)
        self.assertFalse(replay.peer_proven)
        e = self.assertRaises(C.ChannelError, replay.receive, b"".join(frames))
        self.assertIn("frame 0 does not decrypt", str(e))
        self.assertFalse(replay.peer_proven)

    def test_low_order_ephemeral(self):
        # e = 0 gives an all-zero X25519 result, which must not be used
        msg = b"\x00" * 32 + os.urandom(C.MESSAGE1_SIZE - 32)
        g = C.Channel.gateway(GATEWAY, Clock())
        e = self.assertRaises(C.ChannelError, g.receive, struct.pack(">H", len(msg)) + msg)
        self.assertIn("handshake message 1", str(e))

    def test_wrong_handshake_length(self):
        for length in (0, 95, 97, 65535):
            g = C.Channel.gateway(GATEWAY, Clock())
            e = self.assertRaises(C.ChannelError, g.receive, struct.pack(">H", length))
            self.assertIn(f"announced as {length} bytes, expected 96", str(e))
        c = C.Channel.client(CLIENT, GATEWAY.public_key, Clock())
        c.start()
        e = self.assertRaises(C.ChannelError, c.receive, b"\x00\x31")
        self.assertIn("expected 48", str(e))

    def test_a_different_prologue_fails(self):
        c = C.Channel.client(CLIENT, GATEWAY.public_key, Clock(), prologue=b"nymtx gateway channel v3")
        g = C.Channel.gateway(GATEWAY, Clock())
        self.assertRaises(C.ChannelError, g.receive, c.start())

    def test_send_before_open(self):
        c = C.Channel.client(CLIENT, GATEWAY.public_key, Clock())
        self.assertRaises(C.ChannelError, c.send, b"x")
        c.start()
        self.assertRaises(C.ChannelError, c.start)
        self.assertRaises(C.ChannelError, c.send, b"x")

    def test_bad_arguments(self):
        self.assertRaises(ValueError, C.Channel.client, CLIENT, b"short", Clock())
        self.assertRaises(ValueError, C.Channel.gateway, GATEWAY, Clock(), rekey_messages=0)
        self.assertRaises(ValueError, C.Channel.gateway, GATEWAY, Clock(), send_sizes={70000})


class Transport(SynchronousTestCase):
    def test_replayed_frame(self):
        c, g, _, _ = pair()
        frame = c.send(b"pull")
        self.assertEqual(g.receive(frame), [b"pull"])
        e = self.assertRaises(C.ChannelError, g.receive, frame)
        self.assertIn("frame 1 does not decrypt", str(e))
        self.assertEqual(g.state, C.CLOSED)
        self.assertRaises(C.ChannelError, g.receive, c.send(b"more"))

    def test_reordered_frames(self):
        c, g, _, _ = pair()
        a, b = c.send(b"a"), c.send(b"b")
        self.assertRaises(C.ChannelError, g.receive, b + a)

    def test_truncated_frame(self):
        c, g, _, _ = pair()
        frame = c.send(b"x" * 42)
        # the length prefix made consistent with the shorter body
        cut = struct.pack(">H", len(frame) - 3) + frame[2:-1]
        self.assertRaises(C.ChannelError, g.receive, cut)
        # and a frame that stops short just waits for the rest
        c, g, _, _ = pair()
        frame = c.send(b"x" * 42)
        self.assertEqual(g.receive(frame[:-1]), [])
        self.assertEqual(g.pending, len(frame) - 1)
        self.assertEqual(g.receive(frame[-1:]), [b"x" * 42])

    def test_every_bit_flip_is_caught(self):
        for i in range(C.frame_size(42) * 8):
            # each on a fresh channel, in the state the real frame was sent in
            c, g, _, _ = pair()
            frame = bytearray(c.send(b"x" * 42))
            frame[i // 8] ^= 1 << (i % 8)
            try:
                out = g.receive(bytes(frame))
            except C.ChannelError:
                continue
            # only a flipped length prefix announcing a longer frame gets
            # by, and then it waits for bytes that never decrypt
            self.assertLess(i, 16)
            self.assertEqual(out, [])

    def test_bit_flips_in_handshake(self):
        c = C.Channel.client(CLIENT, GATEWAY.public_key, Clock())
        m1 = c.start()
        for i in range(16, len(m1) * 8):
            flipped = bytearray(m1)
            flipped[i // 8] ^= 1 << (i % 8)
            g = C.Channel.gateway(GATEWAY, Clock())
            self.assertRaises(C.ChannelError, g.receive, bytes(flipped))

    def test_oversized_length_refused_on_the_prefix(self):
        c, g, _, _ = pair(receive_sizes={P.REQUEST_SIZE})
        e = self.assertRaises(C.ChannelError, g.receive, b"\xff\xff")
        self.assertIn("announced as 65535 bytes", str(e))
        self.assertEqual(g.pending, 0)

    def test_sizes(self):
        c, g, _, _ = pair(receive_sizes={42}, send_sizes={42})
        self.assertEqual(len(c.send(b"x" * 42)), C.frame_size(42))
        self.assertEqual(C.frame_size(42), 61)
        self.assertRaises(ValueError, c.send, b"x" * 41)
        c2, g2, _, _ = pair()
        self.assertRaises(ValueError, c2.send, b"x" * (C.MAX_PLAINTEXT + 1))
        self.assertEqual(g2.receive(c2.send(b"x" * C.MAX_PLAINTEXT)), [b"x" * C.MAX_PLAINTEXT])
        # a frame shorter than its tag
        self.assertRaises(C.ChannelError, g2.receive, b"\x00\x10" + b"\x00" * 16)

    def test_unknown_flags(self):
        c, g, _, _ = pair()
        forged = c._noise.encrypt(b"\x02hello")
        e = self.assertRaises(C.ChannelError, g.receive, struct.pack(">H", len(forged)) + forged)
        self.assertIn("unknown flags 0x02", str(e))

    def test_rekey_by_count(self):
        c, g, _, _ = pair(rekey_messages=10)
        key = c._noise.noise_protocol.cipher_state_encrypt.k
        for n in range(25):
            self.assertEqual(g.receive(c.send(b"%d" % n)), [b"%d" % n])
            if n in (8, 18):
                self.assertEqual(c._noise.noise_protocol.cipher_state_encrypt.k, key)
            if n in (9, 19):
                self.assertNotEqual(c._noise.noise_protocol.cipher_state_encrypt.k, key)
                key = c._noise.noise_protocol.cipher_state_encrypt.k
        self.assertEqual(c._noise.noise_protocol.cipher_state_encrypt.k,
                         g._noise.noise_protocol.cipher_state_decrypt.k)

    def test_rekey_by_time(self):
        clock = Clock()
        c, g, _, _ = pair(clock)
        self.assertEqual(g.receive(c.send(b"a")), [b"a"])
        key = g._noise.noise_protocol.cipher_state_encrypt.k
        self.assertEqual(c.receive(g.send(b"b")), [b"b"])
        clock.advance(C.REKEY_SECONDS - 1)
        self.assertEqual(c.receive(g.send(b"c")), [b"c"])
        self.assertEqual(g._noise.noise_protocol.cipher_state_encrypt.k, key)
        clock.advance(1)
        self.assertEqual(c.receive(g.send(b"d")), [b"d"])
        self.assertNotEqual(g._noise.noise_protocol.cipher_state_encrypt.k, key)
        self.assertEqual(c.receive(g.send(b"e")), [b"e"])

    def test_rekey_timer_runs_from_the_handshake(self):
        clock = Clock()
        c, g, _, _ = pair(clock)
        key = c._noise.noise_protocol.cipher_state_encrypt.k
        clock.advance(C.REKEY_SECONDS)
        self.assertEqual(g.receive(c.send(b"first")), [b"first"])
        self.assertNotEqual(c._noise.noise_protocol.cipher_state_encrypt.k, key)

    def test_old_key_cannot_read_after_rekey(self):
        # What a rekey is for: a key taken from memory now does not open
        # frames sent under the earlier key, nor the earlier key later ones.
        c, g, _, _ = pair(rekey_messages=2)
        old_key = g._noise.noise_protocol.cipher_state_decrypt.k
        self.assertEqual(g.receive(c.send(b"one")), [b"one"])
        self.assertEqual(g.receive(c.send(b"two")), [b"two"])   # rekeyed after this
        frame = c.send(b"three")
        nonce = b"\x00" * 4 + (2).to_bytes(8, "little")
        self.assertRaises(InvalidTag, ChaCha20Poly1305(old_key).decrypt, nonce, frame[2:], None)
        new_key = g._noise.noise_protocol.cipher_state_decrypt.k
        self.assertEqual(ChaCha20Poly1305(new_key).decrypt(nonce, frame[2:], None), b"\x00three")

    def test_peer_that_never_rekeys(self):
        clock = Clock()
        c, g, _, _ = pair(clock)
        c.rekey_messages = 10 ** 9       # a broken client
        g.rekey_messages = 5
        for n in range(4):
            g.receive(c.send(b"x"))
        e = self.assertRaises(C.ChannelError, g.receive, c.send(b"x"))
        self.assertIn("without rekeying", str(e))

    def test_noise_max_nonce(self):
        c, g, _, _ = pair()
        c._noise.noise_protocol.cipher_state_encrypt.n = 2 ** 64 - 1
        self.assertRaises(C.ChannelError, c.send, b"x")


class Fuzz(SynchronousTestCase):
    @given(st.binary(max_size=400), st.integers(1, 64))
    def test_gateway_handshake_bytes(self, data, chunk):
        g = C.Channel.gateway(GATEWAY, Clock())
        try:
            for i in range(0, len(data), chunk):
                self.assertEqual(g.receive(data[i:i + chunk]), [])
                self.assertLessEqual(g.pending, 2 + C.MESSAGE1_SIZE)
        except C.ChannelError:
            self.assertEqual(g.state, C.CLOSED)

    @given(st.binary(max_size=300))
    def test_client_handshake_bytes(self, data):
        c = C.Channel.client(CLIENT, GATEWAY.public_key, Clock())
        c.start()
        try:
            self.assertEqual(c.receive(data), [])
        except C.ChannelError:
            pass
        self.assertLessEqual(c.pending, 2 + C.MESSAGE2_SIZE)

    @given(st.binary(max_size=6000), st.integers(1, 4096))
    def test_open_channel_bytes(self, data, chunk):
        c, g, _, _ = pair(receive_sizes={P.REQUEST_SIZE})
        try:
            for i in range(0, len(data), chunk):
                g.receive(data[i:i + chunk])
                self.assertLess(g.pending, C.frame_size(P.REQUEST_SIZE))
        except C.ChannelError:
            pass


# ---- the Twisted glue ------------------------------------------------------

class Inner(Protocol):
    """Records what it gets; answers each frame with its own bytes reversed."""

    def __init__(self, key=None, answer=True):
        self.key = key
        self.answer = answer
        self.frames = []
        self.made = False
        self.lost = None

    def connectionMade(self):
        self.made = True

    def dataReceived(self, data):
        self.frames.append(data)
        if self.answer:
            self.transport.write(data[::-1])

    def connectionLost(self, reason):
        self.lost = reason


class Glue(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.accepted = []
        self.events = []

    def gateway_protocol(self, refuse=False):
        def accept(key):
            self.accepted.append(key)
            if refuse:
                raise C.Refused("not registered here")
            self.gateway_inner = Inner(key)
            return self.gateway_inner
        p = C.ChannelProtocol(C.Channel.gateway(GATEWAY, self.clock), accept, self.clock)
        p.log = Logger(observer=self.events.append)
        return p

    def client_protocol(self, client=CLIENT, gateway_key=GATEWAY.public_key):
        self.client_inner = Inner(answer=False)
        p = C.ChannelProtocol(C.Channel.client(client, gateway_key, self.clock),
                              lambda key: self.client_inner, self.clock)
        p.log = Logger(observer=self.events.append)
        return p

    def reasons(self):
        return [e["reason"] for e in self.events if "reason" in e]

    def test_iosim_session(self):
        client, server, pump = connectedServerAndClient(
            self.gateway_protocol, self.client_protocol, clock=self.clock)
        self.assertTrue(self.client_inner.made)
        # the gateway has built nothing yet: the key is not proven
        self.assertEqual(self.accepted, [])
        client.inner.transport.write(b"first")
        client.inner.transport.write(b"second")
        pump.flush()
        self.assertEqual(self.accepted, [CLIENT.public_key])
        self.assertEqual(self.gateway_inner.frames, [b"first", b"second"])
        self.assertEqual(self.client_inner.frames, [b"tsrif", b"dnoces"])
        # the handshake deadline no longer applies
        self.clock.advance(C.HANDSHAKE_TIMEOUT * 2)
        pump.flush()
        self.assertFalse(server.transport.disconnecting)
        client.transport.loseConnection()
        pump.flush()
        self.assertIsNotNone(self.gateway_inner.lost)
        self.assertIsNotNone(self.client_inner.lost)
        self.assertEqual(self.reasons(), [])

    def connect(self, gateway, client):
        gt, ct = StringTransport(), StringTransport()
        gateway.makeConnection(gt)
        client.makeConnection(ct)
        return gt, ct

    def flow(self, gateway, client, gt, ct):
        """Carry bytes both ways until neither side has more."""
        while ct.value() or gt.value():
            data, _ = ct.value(), ct.clear()
            if data and not gt.disconnecting:
                gateway.dataReceived(data)
            data, _ = gt.value(), gt.clear()
            if data and not ct.disconnecting:
                client.dataReceived(data)

    def test_wrong_gateway_key(self):
        gateway = self.gateway_protocol()
        client = self.client_protocol(gateway_key=OTHER.public_key)
        gt, ct = self.connect(gateway, client)
        self.flow(gateway, client, gt, ct)
        self.assertTrue(gt.disconnecting)
        self.assertEqual(self.accepted, [])
        self.assertIn("does not decrypt", gateway.close_reason)
        self.assertEqual(self.reasons(), [gateway.close_reason])
        self.assertFalse(self.client_inner.made)

    def test_unknown_key_refused_only_after_proof(self):
        # Until the client's first frame, a refused key sees exactly what an
        # accepted one sees: message 2 and an open connection.
        seen = []
        for refuse in (False, True):
            gateway = self.gateway_protocol(refuse=refuse)
            client = self.client_protocol()
            gt, ct = self.connect(gateway, client)
            gateway.dataReceived(ct.value())
            ct.clear()
            seen.append((len(gt.value()), gt.disconnecting))
            client.dataReceived(gt.value())
            gt.clear()
            self.assertEqual(self.accepted, [])
        self.assertEqual(seen, [(50, False), (50, False)])
        client.inner.transport.write(b"pull")
        gateway.dataReceived(ct.value())
        self.assertTrue(gt.disconnecting)
        self.assertIn("not registered here", gateway.close_reason)
        self.assertIn("refused key", gateway.close_reason)
        self.assertEqual(gt.value(), b"")

    def test_replayed_session(self):
        gateway = self.gateway_protocol()
        client = self.client_protocol()
        gt, ct = self.connect(gateway, client)
        recorded = []
        def carry():
            while ct.value() or gt.value():
                data, _ = ct.value(), ct.clear()
                if data:
                    recorded.append(data)
                    gateway.dataReceived(data)
                data, _ = gt.value(), gt.clear()
                if data:
                    client.dataReceived(data)
        carry()
        client.inner.transport.write(b"pull and ack")
        carry()
        self.assertEqual(self.accepted, [CLIENT.public_key])
        # a second connection replays what the client sent
        self.accepted.clear()
        replay = self.gateway_protocol()
        rt = StringTransport()
        replay.makeConnection(rt)
        for data in recorded:
            replay.dataReceived(data)
        self.assertEqual(self.accepted, [])
        self.assertTrue(rt.disconnecting)
        self.assertIn("frame 0 does not decrypt", replay.close_reason)

    def test_replayed_frame(self):
        gateway = self.gateway_protocol()
        client = self.client_protocol()
        gt, ct = self.connect(gateway, client)
        self.flow(gateway, client, gt, ct)
        client.inner.transport.write(b"x")
        frame = ct.value()
        self.flow(gateway, client, gt, ct)
        gateway.dataReceived(frame)
        self.assertTrue(gt.disconnecting)
        self.assertIn("frame 1 does not decrypt", gateway.close_reason)
        self.assertEqual(self.gateway_inner.frames, [b"x"])

    def test_bit_flipped_and_truncated_frames(self):
        for mangle in (lambda f: f[:5] + bytes([f[5] ^ 0x40]) + f[6:],
                       lambda f: struct.pack(">H", len(f) - 3) + f[2:-1]):
            gateway = self.gateway_protocol()
            client = self.client_protocol()
            gt, ct = self.connect(gateway, client)
            self.flow(gateway, client, gt, ct)
            client.inner.transport.write(b"x" * 42)
            frame, _ = ct.value(), ct.clear()
            gateway.dataReceived(mangle(frame))
            self.assertTrue(gt.disconnecting)
            self.assertIn("does not decrypt", gateway.close_reason)
            self.assertEqual(self.accepted, [])

    def test_oversized_length(self):
        gateway = C.ChannelProtocol(
            C.Channel.gateway(GATEWAY, self.clock, receive_sizes={P.REQUEST_SIZE}),
            lambda key: Inner(), self.clock)
        gateway.log = Logger(observer=self.events.append)
        client = self.client_protocol()
        gt, ct = self.connect(gateway, client)
        self.flow(gateway, client, gt, ct)
        gateway.dataReceived(b"\x10\x00")
        self.assertTrue(gt.disconnecting)
        self.assertIn("announced as 4096 bytes", gateway.close_reason)
        # nothing of the announced body was waited for
        self.assertEqual(gateway.channel.pending, 0)

    def test_slow_handshake(self):
        # nothing at all, half a message 1, and a whole handshake without
        # the client's first frame: each is cut at the deadline
        for sent in (b"", None, "handshake"):
            gateway = self.gateway_protocol()
            gt = StringTransport()
            gateway.makeConnection(gt)
            c = C.Channel.client(CLIENT, GATEWAY.public_key, self.clock)
            m1 = c.start()
            if sent is None:
                gateway.dataReceived(m1[:50])
            elif sent == "handshake":
                gateway.dataReceived(m1)
                self.assertEqual(len(gt.value()), 50)
            self.clock.advance(C.HANDSHAKE_TIMEOUT - 0.1)
            self.assertFalse(gt.disconnecting)
            self.clock.advance(0.1)
            self.assertTrue(gt.disconnecting)
            self.assertEqual(gateway.close_reason, "handshake not finished within 10 s")
            self.assertEqual(self.accepted, [])
            gateway.connectionLost(None)

    def test_client_side_timeout(self):
        client = self.client_protocol()
        ct = StringTransport()
        client.makeConnection(ct)
        self.assertEqual(len(ct.value()), 98)
        self.clock.advance(C.HANDSHAKE_TIMEOUT)
        self.assertTrue(ct.disconnecting)
        self.assertFalse(self.client_inner.made)


def _key(label):
    return hashlib.sha256(label.encode()).digest()


VECTOR_KEYS = {
    "gateway static private": _key("nymtx channel vector gateway static"),
    "client static private": _key("nymtx channel vector client static"),
    "client ephemeral private": _key("nymtx channel vector client ephemeral"),
    "gateway ephemeral private": _key("nymtx channel vector gateway ephemeral"),
}


#: one record of each size a gateway stores: a SURB delivery (identifier
#: 16 x 0x11, block 1024 x 0x22), a stored part after a SURB-ACK (608 x
#: 0x33), a whole 975-byte message (975 x 0x44)
RECORDS = ((2, b"\x11" * 16 + b"\x22" * 1024), (3, b"\x33" * 608), (4, b"\x44" * 975))


def vectors():
    """Every value of the spec's test vectors, from the fixed keys."""
    clock = Clock()
    gateway = KeyPair.from_private(VECTOR_KEYS["gateway static private"])
    client = KeyPair.from_private(VECTOR_KEYS["client static private"])
    c = C.Channel.client(client, gateway.public_key, clock,
                         ephemeral=VECTOR_KEYS["client ephemeral private"])
    g = C.Channel.gateway(gateway, clock, ephemeral=VECTOR_KEYS["gateway ephemeral private"])
    m1 = c.start()
    g.receive(m1)
    m2 = g.take_output()
    c.receive(m2)
    first = c.send(P.encode_request(P.Register()))
    assert g.receive(first) == [P.encode_request(P.Register())]
    answer = g.send(P.encode_answer(P.Messages(((1, b"hello"),), 0)))
    # a slot of each record size the gateway stores (docs/gateway-protocol.md)
    records = P.encode_answer(P.Messages(RECORDS, 1))
    second = g.send(records)
    out = dict((name, value) for name, value in VECTOR_KEYS.items())
    out.update({
        "gateway static public": gateway.public_key,
        "client static public": client.public_key,
        "message 1 (wire)": m1,
        "message 2 (wire)": m2,
        "handshake hash": g.handshake_hash,
        "first client frame: register (wire)": first,
        "first gateway frame: messages [(1, \"hello\")] (wire), SHA-256": hashlib.sha256(answer).digest(),
        "records answer (inner frame), SHA-256": hashlib.sha256(records).digest(),
        "second gateway frame: the records answer (wire), SHA-256": hashlib.sha256(second).digest(),
    })
    return out


class Vectors(SynchronousTestCase):
    def test_vectors_match_the_spec(self):
        path = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "gateway-channel.md")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        block = text.split("<!-- vectors -->")[1]
        found = dict(re.findall(r"^- (.+?): `([0-9a-f]+)`$", block, re.M))
        expected = {name: value.hex() for name, value in vectors().items()}
        self.assertEqual(found, expected)

    def test_vectors_are_stable(self):
        self.assertEqual(vectors(), vectors())


class RawClient:
    """The client side written from docs/gateway-channel.md alone, with no
    Noise library: X25519, ChaCha20-Poly1305, SHA-256 and HMAC only."""

    def __init__(self, static_private, gateway_public, ephemeral_private):
        self.s = X25519PrivateKey.from_private_bytes(static_private)
        self.e = X25519PrivateKey.from_private_bytes(ephemeral_private)
        self.rs = gateway_public
        self.h = self.ck = C.PROTOCOL_NAME          # 32 bytes: used as is
        self.k = None
        self.n = 0
        self.mix_hash(C.PROLOGUE)
        self.mix_hash(gateway_public)

    @staticmethod
    def pub(private):
        return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def mix_hash(self, data):
        self.h = hashlib.sha256(self.h + data).digest()

    @staticmethod
    def hkdf(ck, ikm):
        temp = hmac.digest(ck, ikm, "sha256")
        one = hmac.digest(temp, b"\x01", "sha256")
        return one, hmac.digest(temp, one + b"\x02", "sha256")

    def mix_key(self, ikm):
        self.ck, self.k = self.hkdf(self.ck, ikm)
        self.n = 0

    @staticmethod
    def nonce(n):
        return b"\x00" * 4 + n.to_bytes(8, "little")

    def encrypt_and_hash(self, plaintext):
        c = ChaCha20Poly1305(self.k).encrypt(self.nonce(self.n), plaintext, self.h)
        self.n += 1
        self.mix_hash(c)
        return c

    def dh(self, private, public):
        return private.exchange(X25519PublicKey.from_public_bytes(public))

    def message1(self):
        e = self.pub(self.e)
        self.mix_hash(e)
        self.mix_key(self.dh(self.e, self.rs))
        s = self.encrypt_and_hash(self.pub(self.s))
        self.mix_key(self.dh(self.s, self.rs))
        msg = e + s + self.encrypt_and_hash(b"")
        return struct.pack(">H", len(msg)) + msg

    def read_message2(self, wire):
        assert wire[:2] == b"\x00\x30"
        re, tag = wire[2:34], wire[34:]
        self.mix_hash(re)
        self.mix_key(self.dh(self.e, re))
        self.mix_key(self.dh(self.s, re))
        assert ChaCha20Poly1305(self.k).decrypt(self.nonce(0), tag, self.h) == b""
        self.mix_hash(tag)
        self.send_key, self.receive_key = self.hkdf(self.ck, b"")
        self.sent = self.received = 0

    def send(self, inner):
        c = ChaCha20Poly1305(self.send_key).encrypt(self.nonce(self.sent), b"\x00" + inner, None)
        self.sent += 1
        return struct.pack(">H", len(c)) + c

    def receive(self, wire):
        (length,) = struct.unpack_from(">H", wire)
        plain = ChaCha20Poly1305(self.receive_key).decrypt(
            self.nonce(self.received), wire[2:2 + length], None)
        self.received += 1
        return plain[0], plain[1:]


class RawClientFromTheSpec(SynchronousTestCase):
    def test_raw_client_makes_the_vectors(self):
        v = vectors()
        raw = RawClient(v["client static private"], v["gateway static public"],
                        v["client ephemeral private"])
        self.assertEqual(raw.message1(), v["message 1 (wire)"])
        raw.read_message2(v["message 2 (wire)"])
        self.assertEqual(raw.h, v["handshake hash"])
        self.assertEqual(raw.send(P.encode_request(P.Register())),
                         v["first client frame: register (wire)"])

    def test_raw_client_talks_to_the_gateway_channel(self):
        gateway = C.Channel.gateway(GATEWAY, Clock())
        raw = RawClient(CLIENT.private_key, GATEWAY.public_key, os.urandom(32))
        gateway.receive(raw.message1())
        raw.read_message2(gateway.take_output())
        self.assertEqual(gateway.receive(raw.send(P.encode_request(P.Pull((5,))))),
                         [P.encode_request(P.Pull((5,)))])
        self.assertTrue(gateway.peer_proven)
        answer = P.Messages(((9, b"mail"),), 1)
        flags, inner = raw.receive(gateway.send(P.encode_answer(answer)))
        self.assertEqual((flags, P.parse_answer(inner)), (0, answer))
