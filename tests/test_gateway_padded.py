"""The fixed-size frames inside the gateway channel: sizes, strictness, fuzz."""

import struct

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from nymtx.gateway import frames as F
from nymtx.gateway import padded as P

ids = st.integers(1, P.MAX_ID)
bodies = st.binary(max_size=P.MESSAGE_ROOM)


@st.composite
def answers(draw):
    kind = draw(st.sampled_from(["messages", "registered", "error"]))
    if kind == "registered":
        return P.Registered()
    if kind == "error":
        return P.Error(draw(st.integers(0, 255)), draw(st.text(max_size=300)))
    idents = draw(st.lists(ids, max_size=P.PULL_SIZE, unique=True))
    return P.Messages(tuple((i, draw(bodies)) for i in idents),
                      draw(st.integers(0, P.PULL_SIZE)))


requests = st.one_of(
    st.just(P.Register()),
    st.builds(lambda l, take: P.Pull(tuple(l), take),
              st.lists(ids, max_size=P.PULL_SIZE), st.booleans()))


class Sizes(SynchronousTestCase):
    def test_the_sizes(self):
        self.assertEqual(P.MESSAGE_ROOM, 1040)
        self.assertEqual(P.PULL_SIZE, 10)
        self.assertEqual(P.REQUEST_SIZE, 82)
        self.assertEqual(P.SLOT_SIZE, 1050)
        self.assertEqual(P.ANSWER_SIZE, 10502)

    def test_every_request_one_size(self):
        for value in (P.Register(), P.Pull(), P.Pull((1,)), P.Pull((1, 2, 3, 4, 5))):
            self.assertEqual(len(P.encode_request(value)), P.REQUEST_SIZE)

    def test_every_answer_one_size(self):
        for value in (P.Registered(), P.Messages(), P.Messages(((7, b"x" * 975),) * 1),
                      P.Messages(((7, b"x" * 1040), (8, b"y" * 608)), 2),
                      P.Messages(tuple((i, b"") for i in range(1, 6)), 5),
                      P.Error(F.E_FULL, "full" * 1000)):
            self.assertEqual(len(P.encode_answer(value)), P.ANSWER_SIZE)

    def test_layout(self):
        self.assertEqual(P.encode_request(P.Pull((1, 258))).hex(),
                         "0202" + "0000000000000001" + "0000000000000102" + "00" * 64)
        self.assertEqual(P.encode_request(P.Register()), b"\x01" + b"\x00" * 81)
        self.assertEqual(P.encode_request(P.Pull(take=False)), b"\x03" + b"\x00" * 81)
        answer = P.encode_answer(P.Messages(((7, b"ab"),), 1))
        self.assertEqual(answer[:14].hex(), "8401" + "0000000000000007" + "0002" + "6162")
        self.assertEqual(answer[14:], b"\x00" * (P.ANSWER_SIZE - 14))
        error = P.encode_answer(P.Error(5, "é"))
        self.assertEqual(error[:6].hex(), "ff050002c3a9")


class Encoding(SynchronousTestCase):
    def test_refuses_what_does_not_fit(self):
        for value in (P.Pull((1,) * 11), P.Pull((0,)), P.Pull((1 << 63,)), P.Pull(("1",))):
            self.assertRaises(ValueError, P.encode_request, value)
        for value in (P.Messages(tuple((i, b"") for i in range(1, 12))),
                      P.Messages(((1, b"x" * 1041),)),
                      P.Messages(((0, b""),)),
                      P.Messages(((1, b""), (1, b""))),
                      P.Messages((), 11),
                      P.Error(256, "")):
            self.assertRaises(ValueError, P.encode_answer, value)
        self.assertRaises(TypeError, P.encode_request, P.Messages())
        self.assertRaises(TypeError, P.encode_answer, P.Pull())

    def test_long_error_text_cut_on_a_character(self):
        value = P.parse_answer(P.encode_answer(P.Error(1, "a" + "é" * 1000)))
        self.assertEqual(len(value.message.encode()), 1023)

    @given(requests)
    def test_request_round_trip(self, value):
        self.assertEqual(P.parse_request(P.encode_request(value)), value)

    @given(answers())
    def test_answer_round_trip(self, value):
        encoded = P.encode_answer(value)
        self.assertEqual(len(encoded), P.ANSWER_SIZE)
        parsed = P.parse_answer(encoded)
        if isinstance(value, P.Error):
            self.assertEqual(parsed.code, value.code)
            self.assertTrue(value.message.startswith(parsed.message))
        else:
            self.assertEqual(parsed, value)


class Parsing(SynchronousTestCase):
    def assertMalformed(self, parse, data, text, code=F.E_MALFORMED):
        e = self.assertRaises(F.FrameError, parse, data)
        self.assertEqual(e.code, code)
        self.assertIn(text, str(e))

    def test_bad_requests(self):
        good = bytearray(P.encode_request(P.Pull((1, 2))))
        self.assertMalformed(P.parse_request, bytes(good[:-1]), "81 bytes, expected 82")
        self.assertMalformed(P.parse_request, bytes(good) + b"\x00", "83 bytes")
        self.assertMalformed(P.parse_request, b"\x07" + bytes(good[1:]), "type 0x07",
                             F.E_UNKNOWN_TYPE)
        self.assertMalformed(P.parse_request, b"\x01\x01" + bytes(good[2:]), "register request")
        self.assertMalformed(P.parse_request, b"\x02\x0b" + bytes(good[2:]), "11 ids, at most 10")
        bad = bytearray(good)
        bad[-1] = 1
        self.assertMalformed(P.parse_request, bytes(bad), "padding after 2 ids is not zero")
        bad = bytearray(good)
        bad[2:10] = b"\x00" * 8
        self.assertMalformed(P.parse_request, bytes(bad), "ack id 0 is 0")
        bad[2:10] = b"\x80" + b"\x00" * 7
        self.assertMalformed(P.parse_request, bytes(bad), "ack id 0 is 9223372036854775808")

    def test_bad_answers(self):
        good = P.encode_answer(P.Messages(((7, b"ab"), (8, b"c")), 2))
        self.assertMalformed(P.parse_answer, good[:-1], "10501 bytes, expected 10502")
        self.assertMalformed(P.parse_answer, b"\x85" + good[1:], "type 0x85", F.E_UNKNOWN_TYPE)
        self.assertMalformed(P.parse_answer, b"\x84\x0b" + good[2:], "11 acked")

        def at(offset, data, base=good):
            b = bytearray(base)
            b[offset:offset + len(data)] = data
            return bytes(b)
        slot1 = 2 + P.SLOT_SIZE
        slot2 = 2 + 2 * P.SLOT_SIZE
        self.assertMalformed(P.parse_answer, at(2 + 12, b"z"), "padding of slot 0")
        self.assertMalformed(P.parse_answer, at(2 + 8, struct.pack(">H", 1041)), "1041 bytes, over 1040")
        self.assertMalformed(P.parse_answer, at(slot1, struct.pack(">Q", 7)), "repeats message id 7")
        self.assertMalformed(P.parse_answer, at(slot1, b"\x80"), "over 9223372036854775807")
        self.assertMalformed(P.parse_answer, at(slot2 + 20, b"\x01"), "empty slot 2 is not zero")
        # a message after an empty slot
        self.assertMalformed(P.parse_answer, at(slot2 + P.SLOT_SIZE, struct.pack(">Q", 9)),
                             "slot 3 holds a message after an empty slot")
        registered = P.encode_answer(P.Registered())
        self.assertMalformed(P.parse_answer, at(100, b"\x01", registered), "registered answer padding")
        error = P.encode_answer(P.Error(3, "no"))
        self.assertMalformed(P.parse_answer, at(2, struct.pack(">H", 1025), error), "1025 bytes")
        self.assertMalformed(P.parse_answer, at(4, b"\xff", error), "not UTF-8")
        self.assertMalformed(P.parse_answer, at(10, b"\x01", error), "error answer padding")

    @given(st.binary(min_size=P.REQUEST_SIZE, max_size=P.REQUEST_SIZE))
    def test_fuzz_request(self, data):
        try:
            value = P.parse_request(data)
        except F.FrameError as e:
            self.assertIn(e.code, (F.E_MALFORMED, F.E_UNKNOWN_TYPE))
            return
        # only the canonical encoding parses
        self.assertEqual(P.encode_request(value), data)

    @given(st.binary(max_size=100))
    def test_fuzz_request_any_length(self, data):
        try:
            P.parse_request(data)
        except F.FrameError:
            pass

    @given(st.integers(0, 255), st.integers(0, 255), st.lists(
        st.integers(0, 2 ** 64 - 1), min_size=P.PULL_SIZE, max_size=P.PULL_SIZE))
    def test_fuzz_request_structured(self, kind, count, idents):
        data = struct.pack(f">BB{P.PULL_SIZE}Q", kind, count, *idents)
        try:
            value = P.parse_request(data)
        except F.FrameError:
            return
        self.assertEqual(P.encode_request(value), data)

    @given(st.binary(max_size=200), st.integers(0, 255), st.integers(0, P.ANSWER_SIZE - 1))
    def test_fuzz_answer(self, noise, kind, where):
        # mostly-zero frames reach deep into the parser; random ones do not
        data = bytearray(P.ANSWER_SIZE)
        data[0] = kind
        data[where:where + len(noise)] = noise
        data = bytes(data[:P.ANSWER_SIZE])
        try:
            value = P.parse_answer(data)
        except F.FrameError as e:
            self.assertIn(e.code, (F.E_MALFORMED, F.E_UNKNOWN_TYPE))
            return
        self.assertEqual(P.encode_answer(value), data)

    @given(answers(), st.integers(0, P.ANSWER_SIZE - 1), st.integers(1, 255))
    def test_fuzz_answer_mutated(self, value, where, xor):
        data = bytearray(P.encode_answer(value))
        data[where] ^= xor
        try:
            parsed = P.parse_answer(bytes(data))
        except F.FrameError:
            return
        self.assertEqual(P.encode_answer(parsed), bytes(data))

    @given(st.binary(max_size=6000))
    def test_fuzz_answer_any_length(self, data):
        try:
            P.parse_answer(data)
        except F.FrameError:
            pass
