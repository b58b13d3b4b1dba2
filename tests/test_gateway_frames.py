import struct

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from nymtx.gateway import frames as F

keys = st.binary(min_size=32, max_size=32)


class RoundTrip(SynchronousTestCase):
    def roundtrip(self, value, parse):
        data = F.encode(value)
        (length,) = struct.unpack(">I", data[:4])
        self.assertEqual(length, len(data) - 4)
        self.assertEqual(parse(data[4:]), value)

    def test_client_frames(self):
        self.roundtrip(F.Register(b"k" * 32, b"p" * 32), F.parse_client_frame)
        self.roundtrip(F.Authenticate(b"k" * 32, b"t" * 32), F.parse_client_frame)
        self.roundtrip(F.Pull(17), F.parse_client_frame)
        self.roundtrip(F.Ack((1, 2, 2 ** 63)), F.parse_client_frame)
        self.roundtrip(F.Ack(()), F.parse_client_frame)

    def test_gateway_frames(self):
        self.roundtrip(F.Hello(1, b"g" * 32, b"n" * 32), F.parse_gateway_frame)
        self.roundtrip(F.Registered(b"t" * 32), F.parse_gateway_frame)
        self.roundtrip(F.Authenticated(), F.parse_gateway_frame)
        self.roundtrip(F.Messages(((5, b"hello"), (9, b""))), F.parse_gateway_frame)
        self.roundtrip(F.Acked(3), F.parse_gateway_frame)
        self.roundtrip(F.Error(F.E_BAD_TOKEN, "nope é"), F.parse_gateway_frame)

    def test_exact_bytes(self):
        # the layout docs/gateway-protocol.md promises
        self.assertEqual(F.encode(F.Pull(258)), b"\x00\x00\x00\x03\x03\x01\x02")
        self.assertEqual(F.encode(F.Ack((1,))),
                         b"\x00\x00\x00\x0b\x04\x00\x01" + b"\x00" * 7 + b"\x01")
        self.assertEqual(F.encode(F.Messages(((7, b"ab"),))),
                         b"\x00\x00\x00\x0f\x84\x00\x01" + b"\x00" * 7 + b"\x07\x00\x02ab")


class Parsing(SynchronousTestCase):
    def assertFrameError(self, code, body, parse=F.parse_client_frame, text=None):
        e = self.assertRaises(F.FrameError, parse, body)
        self.assertEqual(e.code, code)
        if text:
            self.assertIn(text, str(e))

    def test_truncated(self):
        self.assertFrameError(F.E_MALFORMED, b"", text="empty")
        self.assertFrameError(F.E_MALFORMED, bytes([F.REGISTER]) + b"x" * 63, text="register")
        self.assertFrameError(F.E_MALFORMED, bytes([F.AUTHENTICATE]) + b"x" * 40, text="authenticate")
        self.assertFrameError(F.E_MALFORMED, bytes([F.PULL, 0]), text="pull")
        self.assertFrameError(F.E_MALFORMED, bytes([F.ACK, 0, 2]) + b"\x00" * 9, text="ack")

    def test_pull_limits(self):
        self.assertFrameError(F.E_MALFORMED, bytes([F.PULL, 0, 0]), text="limit 0")
        self.assertFrameError(F.E_MALFORMED, struct.pack(">BH", F.PULL, F.MAX_PULL + 1))

    def test_ack_too_many(self):
        self.assertFrameError(F.E_MALFORMED, struct.pack(">BH", F.ACK, F.MAX_ACK + 1),
                              text="maximum")

    def test_unknown_type(self):
        self.assertFrameError(F.E_UNKNOWN_TYPE, b"\x42", text="0x42")
        self.assertFrameError(F.E_UNKNOWN_TYPE, b"\x01", parse=F.parse_gateway_frame)

    def test_messages_truncated(self):
        good = F.encode(F.Messages(((1, b"abc"),)))[4:]
        self.assertFrameError(F.E_MALFORMED, good[:-1], parse=F.parse_gateway_frame)
        self.assertFrameError(F.E_MALFORMED, good + b"x", parse=F.parse_gateway_frame)

    @given(st.binary(max_size=300))
    def test_fuzz_client_parser(self, body):
        try:
            value = F.parse_client_frame(body)
        except F.FrameError as e:
            self.assertIn(e.code, F.ERROR_NAMES)
        else:
            self.assertEqual(F.encode(value)[4:], body)

    @given(st.binary(max_size=300))
    def test_fuzz_gateway_parser(self, body):
        try:
            F.parse_gateway_frame(body)
        except F.FrameError as e:
            self.assertIn(e.code, F.ERROR_NAMES)


class Decoder(SynchronousTestCase):
    def test_split_anywhere(self):
        data = F.encode(F.Pull(1)) + F.encode(F.Ack((1, 2))) + F.encode(F.Pull(3))
        for cut in range(len(data) + 1):
            d = F.FrameDecoder()
            bodies = d.feed(data[:cut]) + d.feed(data[cut:])
            self.assertEqual([F.parse_client_frame(b) for b in bodies],
                             [F.Pull(1), F.Ack((1, 2)), F.Pull(3)])
            self.assertEqual(d.pending, 0)

    def test_oversized(self):
        d = F.FrameDecoder(max_size=100)
        e = self.assertRaises(F.FrameTooLarge, d.feed, struct.pack(">I", 101))
        self.assertEqual(e.code, F.E_TOO_LARGE)
        self.assertIn("101", str(e))

    @given(st.lists(st.binary(max_size=64), max_size=20), st.data())
    def test_fuzz_stream(self, chunks, data):
        d = F.FrameDecoder(max_size=1000)
        stream = b"".join(chunks)
        try:
            bodies = d.feed(stream)
        except F.FrameTooLarge:
            return
        self.assertEqual(sum(4 + len(b) for b in bodies) + d.pending, len(stream))


class Proof(SynchronousTestCase):
    def test_proof_binds_nonce_and_key(self):
        p = F.registration_proof(b"s" * 32, b"n" * 32, b"k" * 32)
        self.assertEqual(len(p), 32)
        self.assertNotEqual(p, F.registration_proof(b"s" * 32, b"m" * 32, b"k" * 32))
        self.assertNotEqual(p, F.registration_proof(b"s" * 32, b"n" * 32, b"j" * 32))
        self.assertNotEqual(p, F.registration_proof(b"t" * 32, b"n" * 32, b"k" * 32))


class Shared(SynchronousTestCase):
    def test_every_code_has_one_name(self):
        codes = [v for k, v in vars(F).items() if k.startswith("E_")]
        self.assertEqual(sorted(codes), sorted(F.ERROR_NAMES))
        self.assertEqual(len(set(F.ERROR_NAMES.values())), len(codes))

    def test_nothing_speaks_the_plaintext_frames(self):
        # The old link sent a token at login and every message in the clear.
        # Its codec stays for reading that release's captures; no part of the
        # gateway or the client may use it to send anything.
        import os
        import nymtx
        # the package as installed (under .ci/run there is no source tree)
        root = os.path.dirname(nymtx.__file__)
        self.assertFalse(os.path.exists(os.path.join(root, "gateway", "server.py")))
        names = ("F.encode", "F.Authenticate", "F.Hello", "F.FrameDecoder", "F.Register(",
                 "F.Pull(", "F.Ack(", "registration_proof", "legacy_plaintext")
        for folder in ("gateway", "client"):
            for name in os.listdir(os.path.join(root, folder)):
                if not name.endswith(".py") or name == "frames.py":
                    continue
                with open(os.path.join(root, folder, name), encoding="utf-8") as f:
                    text = f.read()
                for needle in names:
                    self.assertNotIn(needle, text, f"{folder}/{name} uses {needle}")
        from nymtx.gateway.private_server import PrivateClientFactory
        from nymtx.gateway.service import GatewayService
        from twisted.internet.task import Clock
        from nymtx.keys import KeyPair
        gateway = GatewayService(Clock(), KeyPair.generate(), self.mktemp(), "tcp:0", "tcp:0",
                                 "127.0.0.1")
        self.addCleanup(gateway.store.close)
        self.assertIsInstance(gateway.client_factory, PrivateClientFactory)
        self.assertIs(gateway.client_listener.factory.wrappedFactory, gateway.client_factory)
