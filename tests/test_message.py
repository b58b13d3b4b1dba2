"""The end-to-end message layer: envelope, payload types, fragments, reassembly."""

import hashlib
import importlib.util
import json
import os
import random

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, strategies as st
from nacl.bindings import crypto_scalarmult
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair
from nymtx.message import (
    DEFAULT_MAX_MESSAGE_SIZE, ENVELOPE_SIZE, FRAGMENT_DATA_SIZE, FRAGMENT_HEADER_SIZE,
    KIND_BINARY, KIND_TEXT, PLAINTEXT_SIZE, DropCover, EnvelopeError, Fragment, LoopCover,
    Message, MessageLayerError, MessageTooLarge, NotForMe, PlaintextError, Reassembler,
    RecipientKeyError, Receiver, Reserved, decode_plaintext, drop_cover_payload,
    encode_fragment, fragment_count, fragment_message, loop_cover_payload, open_envelope,
    open_payload, seal, seal_fragment)
from nymtx.message import ENVELOPE_V1_SIZE, FRAGMENT_DATA_V1_SIZE, PLAINTEXT_V1_SIZE, VERSION_1
from nymtx.message import MAX_MESSAGE_SIZE_V2
from nymtx.message.payload import (
    MAX_COUNT, SET_ID_SIZE, TYPE_ACK, TYPE_LOOP_COVER, encode_drop_cover, encode_loop_cover)
from nymtx.message.payload import decode_reply_fragment, encode_reply_fragment
from nymtx.reliable.ack import SURB_ACK_SIZE
from nymtx.message.reassembly import set_cost
from nymtx.sphinx import MAX_MESSAGE_SIZE, FinalHop, Hop, build_packet, process_packet

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "vectors", "message.json")
VECTORS_V2 = os.path.join(HERE, "vectors", "message-v2.json")

BOB = KeyPair.generate(random.Random(1).randbytes)
CAROL = KeyPair.generate(random.Random(2).randbytes)


def plain_fragment(data=b"\x02hello", count=1, index=0, set_id=b"S" * SET_ID_SIZE):
    return Fragment(set_id, index, count, data)


class EnvelopeTests(SynchronousTestCase):
    def test_fills_the_sphinx_room_after_the_surb_ack_exactly(self):
        self.assertEqual(ENVELOPE_SIZE, MAX_MESSAGE_SIZE - SURB_ACK_SIZE)
        self.assertEqual(ENVELOPE_SIZE, 608)
        self.assertEqual(PLAINTEXT_SIZE, 608 - 1 - 32 - 16)
        self.assertEqual(FRAGMENT_HEADER_SIZE, 11)
        self.assertEqual(FRAGMENT_DATA_SIZE, 548)
        # 0.9 of the room the SURB-ACK leaves (issue 11's benchmark)
        self.assertGreaterEqual(FRAGMENT_DATA_SIZE / ENVELOPE_SIZE, 0.9)
        # version 1, still read, filled the whole room
        self.assertEqual((ENVELOPE_V1_SIZE, PLAINTEXT_V1_SIZE, FRAGMENT_DATA_V1_SIZE),
                         (975, 926, 907))

    def test_version_1_still_opens(self):
        plaintext = encode_fragment(Fragment(b"V" * 8, 0, 1, b"\x02v1", FRAGMENT_DATA_V1_SIZE))
        payload = seal(BOB.public_key, plaintext)
        self.assertEqual((len(payload), payload[0]), (975, 0x01))
        opened = open_payload(BOB.private_key, BOB.public_key, payload)
        self.assertEqual(opened, Fragment(b"V" * 8, 0, 1, b"\x02v1", FRAGMENT_DATA_V1_SIZE))
        # a version byte that does not match the size is refused, not misread
        for bad in (b"\x02" + payload[1:], b"\x01" + seal(BOB.public_key,
                                                         bytes(PLAINTEXT_SIZE))[1:]):
            e = self.assertRaises(EnvelopeError, open_envelope, BOB.private_key,
                                  BOB.public_key, bad)
            self.assertNotIsInstance(e, NotForMe)

    def test_round_trip(self):
        plaintext = os.urandom(PLAINTEXT_SIZE)
        payload = seal(BOB.public_key, plaintext)
        self.assertEqual(len(payload), ENVELOPE_SIZE)
        self.assertEqual(payload[0], 0x02)
        self.assertEqual(open_envelope(BOB.private_key, BOB.public_key, payload), plaintext)

    def test_fresh_ephemeral_key_each_time(self):
        plaintext = bytes(PLAINTEXT_SIZE)
        a, b = seal(BOB.public_key, plaintext), seal(BOB.public_key, plaintext)
        self.assertNotEqual(a[1:33], b[1:33])
        self.assertNotEqual(a[33:], b[33:])

    def test_wrong_recipient_is_not_for_me(self):
        payload = seal(BOB.public_key, bytes(PLAINTEXT_SIZE))
        self.assertRaises(NotForMe, open_envelope, CAROL.private_key, CAROL.public_key, payload)

    def test_recipient_key_is_bound(self):
        # The right private key with another public key: the KDF covers the
        # recipient key, so the envelope does not open.
        payload = seal(BOB.public_key, bytes(PLAINTEXT_SIZE))
        self.assertRaises(NotForMe, open_envelope, BOB.private_key, CAROL.public_key, payload)

    def test_any_flipped_bit_is_refused(self):
        payload = seal(BOB.public_key, bytes(PLAINTEXT_SIZE))
        for at in (1, 20, 32, 33, 400, 591, 592, 607):
            bad = payload[:at] + bytes((payload[at] ^ 0x80,)) + payload[at + 1:]
            self.assertRaises(NotForMe, open_envelope, BOB.private_key, BOB.public_key, bad)

    def test_unknown_version(self):
        payload = seal(BOB.public_key, bytes(PLAINTEXT_SIZE))
        e = self.assertRaises(EnvelopeError, open_envelope, BOB.private_key, BOB.public_key,
                              b"\x03" + payload[1:])
        self.assertNotIsInstance(e, NotForMe)
        self.assertIn("version 3", str(e))

    def test_wrong_sizes(self):
        payload = seal(BOB.public_key, bytes(PLAINTEXT_SIZE))
        for bad in (payload[:-1], payload + b"\x00", b"", None, "text"):
            self.assertRaises(EnvelopeError, open_envelope, BOB.private_key, BOB.public_key, bad)
        self.assertRaises(EnvelopeError, seal, BOB.public_key, bytes(PLAINTEXT_SIZE - 1))
        self.assertRaises(RecipientKeyError, seal, BOB.public_key[:31], bytes(PLAINTEXT_SIZE))

    def test_small_order_recipient_refused(self):
        e = self.assertRaises(RecipientKeyError, seal, bytes(32), bytes(PLAINTEXT_SIZE))
        self.assertIn("not a usable X25519 key", str(e))

    def test_small_order_ephemeral_is_not_for_me(self):
        payload = seal(BOB.public_key, bytes(PLAINTEXT_SIZE))
        bad = payload[:1] + bytes(32) + payload[33:]
        self.assertRaises(NotForMe, open_envelope, BOB.private_key, BOB.public_key, bad)

    def test_through_sphinx(self):
        keys = [KeyPair.generate(random.Random(10 + i).randbytes) for i in range(4)]
        route = [Hop(NodeAddress.parse(f"127.0.0.1:{2000 + i}").to_bytes(), k.public_key)
                 for i, k in enumerate(keys)]
        for payload in (seal_fragment(BOB.public_key, plain_fragment()),
                        loop_cover_payload(BOB.public_key)):
            packet = build_packet(route, BOB.public_key, bytes(16), payload, [0] * 4)
            for k in keys:
                out = process_packet(k.private_key, packet)
                if isinstance(out, FinalHop):
                    break
                packet = out.packet
            self.assertEqual(out.message, payload)


class CoverTests(SynchronousTestCase):
    def test_loop_and_drop_cover_open(self):
        loop_id = os.urandom(16)
        self.assertEqual(open_payload(BOB.private_key, BOB.public_key,
                                      loop_cover_payload(BOB.public_key, loop_id)),
                         LoopCover(loop_id))
        a, b = (open_payload(BOB.private_key, BOB.public_key, loop_cover_payload(BOB.public_key))
                for _ in range(2))
        self.assertNotEqual(a.loop_id, b.loop_id)
        self.assertEqual(open_payload(BOB.private_key, BOB.public_key,
                                      drop_cover_payload(BOB.public_key)), DropCover())

    def test_same_envelope_on_the_wire(self):
        # With the same ephemeral key and recipient, a loop, a drop and a
        # fragment differ only inside the AEAD output: same size, same clear
        # header, and no clear byte that says which is which.
        fixed = lambda n: b"\x42" * n  # noqa: E731
        loop = loop_cover_payload(BOB.public_key, bytes(16), fixed)
        drop = drop_cover_payload(BOB.public_key, fixed)
        real = seal_fragment(BOB.public_key, plain_fragment(), fixed)
        self.assertEqual({len(loop), len(drop), len(real)}, {ENVELOPE_SIZE})
        self.assertEqual(loop[:33], drop[:33])
        self.assertEqual(loop[:33], real[:33])
        # one keystream: the ciphertexts differ exactly where the plaintexts do
        self.assertEqual(loop[34:592], drop[34:592])
        self.assertNotEqual(loop[33], drop[33])
        self.assertNotEqual(loop[592:], drop[592:])

    def test_cover_not_for_others(self):
        for payload in (loop_cover_payload(BOB.public_key), drop_cover_payload(BOB.public_key)):
            self.assertRaises(NotForMe, open_payload, CAROL.private_key, CAROL.public_key,
                              payload)


class PlaintextTests(SynchronousTestCase):
    def test_fragment_round_trip(self):
        f = plain_fragment(b"x" * FRAGMENT_DATA_SIZE, count=3, index=1)
        self.assertEqual(decode_plaintext(encode_fragment(f)), f)

    def test_header_layout(self):
        f = Fragment(bytes(range(4)), 2, 3, b"\x02abc")
        plain = encode_fragment(f)
        self.assertEqual(plain[:FRAGMENT_HEADER_SIZE].hex(),
                         "01" "00010203" "0002" "0003" "0004")
        self.assertEqual(plain[11:15], b"\x02abc")
        self.assertEqual(plain[15:], bytes(PLAINTEXT_SIZE - 15))
        # the largest index and count a u16 holds
        last = Fragment(b"\xff" * 4, MAX_COUNT - 1, MAX_COUNT, b"z")
        plain = encode_fragment(last)
        self.assertEqual(plain[:FRAGMENT_HEADER_SIZE].hex(), "01" "ffffffff" "fffe" "ffff" "0001")
        self.assertEqual(decode_plaintext(plain), last)
        self.assertRaises(PlaintextError, Fragment, b"S" * 4, 0, MAX_COUNT + 1, b"z" * 548)
        # version 1 keeps its 19-byte header: 8-byte set id, u32 index and count
        v1 = encode_fragment(Fragment(bytes(range(8)), 2, 3, b"\x02abc", FRAGMENT_DATA_V1_SIZE))
        self.assertEqual(v1[:19].hex(), "01" "0001020304050607" "00000002" "00000003" "0004")
        self.assertEqual(v1[19:23], b"\x02abc")
        # and a set id of the other version's size is refused either way
        self.assertRaises(PlaintextError, Fragment, b"S" * 8, 0, 1, b"z")
        self.assertRaises(PlaintextError, Fragment, b"S" * 4, 0, 1, b"z", FRAGMENT_DATA_V1_SIZE)

    def _refused(self, plain, why):
        e = self.assertRaises(PlaintextError, decode_plaintext, plain)
        self.assertIn(why, str(e))

    def test_malformed(self):
        good = encode_fragment(plain_fragment(b"\x02hi"))
        self._refused(b"\x00" + good[1:], "unknown payload type 0")
        self._refused(b"\x09" + good[1:], "unknown payload type 9")
        self._refused(good[:-1] + b"\x01", "padding")
        self._refused(good[:9] + (549).to_bytes(2, "big") + good[11:], "exceeds")
        self._refused(good[:5] + (1).to_bytes(2, "big") + good[7:], "not below its count")
        self._refused(good[:7] + bytes(2) + good[9:], "count is 1 to")
        self._refused(good[:9] + bytes(PLAINTEXT_SIZE - 9), "the last fragment holds 1 to")
        # a fragment before the last that is not full
        short = encode_fragment(plain_fragment(b"\x02hi"))
        self._refused(short[:7] + (2).to_bytes(2, "big") + short[9:], "all but the last")
        self._refused(bytes((TYPE_LOOP_COVER,)) + bytes(16) + b"\x01" + bytes(PLAINTEXT_SIZE - 18),
                      "loop cover body")
        self._refused(b"\x03\x01" + bytes(PLAINTEXT_SIZE - 2), "drop cover body")
        self._refused(good[:-1], "559 bytes")

    def test_reserved_types_pass_unparsed(self):
        body = os.urandom(PLAINTEXT_SIZE - 1)
        self.assertEqual(decode_plaintext(bytes((TYPE_ACK,)) + body), Reserved(TYPE_ACK, body))

    def test_cover_encoding(self):
        self.assertEqual(encode_drop_cover(), b"\x03" + bytes(558))
        self.assertEqual(encode_loop_cover(b"L" * 16), b"\x02" + b"L" * 16 + bytes(542))
        self.assertEqual(encode_drop_cover(VERSION_1), b"\x03" + bytes(925))
        self.assertEqual(encode_loop_cover(b"L" * 16, VERSION_1),
                         b"\x02" + b"L" * 16 + bytes(909))
        self.assertRaises(PlaintextError, encode_loop_cover, b"short")


class FragmentTests(SynchronousTestCase):
    def test_counts(self):
        self.assertEqual(fragment_count(0), 1)
        self.assertEqual(fragment_count(FRAGMENT_DATA_SIZE - 1), 1)
        self.assertEqual(fragment_count(FRAGMENT_DATA_SIZE), 2)
        self.assertEqual(fragment_count(DEFAULT_MAX_MESSAGE_SIZE), 1914)
        # one set of version 2 holds at most 65,535 fragments
        self.assertEqual(MAX_MESSAGE_SIZE_V2, 65535 * 548 - 1)
        self.assertEqual(fragment_count(MAX_MESSAGE_SIZE_V2), MAX_COUNT)
        self.assertEqual(fragment_count(MAX_MESSAGE_SIZE_V2 + 1), MAX_COUNT + 1)
        self.assertEqual(fragment_count(DEFAULT_MAX_MESSAGE_SIZE, FRAGMENT_DATA_V1_SIZE), 1157)

    def test_longest_version_2_message(self):
        # a u16 count: one byte past 65,535 full fragments is refused, naming
        # both sizes, whatever maximum the caller allows
        longest = Message(KIND_BINARY, bytes(MAX_MESSAGE_SIZE_V2))
        frags = fragment_message(longest, max_message_size=1 << 30)
        self.assertEqual((len(frags), frags[-1].count, len(frags[-1].data)),
                         (MAX_COUNT, MAX_COUNT, FRAGMENT_DATA_SIZE))
        e = self.assertRaises(MessageTooLarge, fragment_message,
                              Message(KIND_BINARY, bytes(MAX_MESSAGE_SIZE_V2 + 1)),
                              max_message_size=1 << 30)
        self.assertIn(f"Sent {MAX_MESSAGE_SIZE_V2 + 1} bytes, but the maximum is"
                      f" {MAX_MESSAGE_SIZE_V2}", str(e))

    def test_split(self):
        data = os.urandom(3 * FRAGMENT_DATA_SIZE)
        frags = fragment_message(Message(KIND_BINARY, data))
        self.assertEqual(len(frags), 4)
        self.assertEqual(len({f.set_id for f in frags}), 1)
        self.assertEqual([f.index for f in frags], [0, 1, 2, 3])
        self.assertEqual(b"".join(f.data for f in frags), b"\x02" + data)

    def test_too_large_names_both_sizes(self):
        e = self.assertRaises(MessageTooLarge, fragment_message,
                              Message(KIND_BINARY, bytes(DEFAULT_MAX_MESSAGE_SIZE + 1)))
        self.assertIn(str(DEFAULT_MAX_MESSAGE_SIZE + 1), str(e))
        self.assertIn(str(DEFAULT_MAX_MESSAGE_SIZE), str(e))
        e = self.assertRaises(MessageTooLarge, fragment_message, Message(KIND_TEXT, b"x" * 11),
                              max_message_size=10)
        self.assertEqual(str(e), "message too long. Sent 11 bytes, but the maximum is 10")

    def test_larger_maximum_when_configured(self):
        size = 3 << 20
        data = os.urandom(size)
        frags = fragment_message(Message(KIND_BINARY, data), max_message_size=4 << 20)
        clock = Clock()
        r = Reassembler(clock.seconds, max_message_size=4 << 20)
        out = [r.add(f) for f in frags]
        self.assertEqual(out[-1], Message(KIND_BINARY, data))
        self.assertEqual(out[:-1], [None] * (len(frags) - 1))
        # the default reader refuses a set that long
        default = Reassembler(clock.seconds)
        self.assertIsNone(default.add(frags[0]))
        self.assertEqual(default.stats.too_large, 1)
        self.assertEqual(default.partial_sets, 0)

    def test_text(self):
        m = Message.from_text("héllo")
        self.assertEqual(m.text, "héllo")
        self.assertTrue(m.is_text)
        self.assertRaises(TypeError, lambda: Message.from_bytes(b"x").text)


class ReassemblyTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()

    def reassembler(self, **kw):
        return Reassembler(self.clock.seconds, **kw)

    def frags(self, size, kind=KIND_BINARY, **kw):
        data = os.urandom(size)
        return Message(kind, data), fragment_message(Message(kind, data), **kw)

    def test_out_of_order_with_duplicates(self):
        r = self.reassembler()
        message, frags = self.frags(5 * FRAGMENT_DATA_SIZE)
        order = frags[::-1] + frags[2:4]
        out = [r.add(f) for f in order]
        self.assertEqual([m for m in out if m is not None], [message])
        self.assertEqual(out[len(frags) - 1], message)
        self.assertEqual(r.stats.late, 2)
        self.assertEqual(r.partial_sets, 0)
        self.assertEqual(r.buffered_bytes, 0)

    def test_duplicate_in_partial_set(self):
        r = self.reassembler()
        message, frags = self.frags(2 * FRAGMENT_DATA_SIZE)
        r.add(frags[0])
        r.add(frags[0])
        self.assertEqual(r.stats.duplicates, 1)
        r.add(frags[1])
        self.assertEqual(r.add(frags[2]), message)

    def test_late_retransmission_after_completion_ignored(self):
        r = self.reassembler(remember_completed=100)
        message, frags = self.frags(10)
        self.assertEqual(r.add(frags[0]), message)
        self.clock.advance(99)
        self.assertIsNone(r.add(frags[0]))
        self.assertEqual(r.stats.late, 1)
        # past the memory, the id is forgotten (bounded memory beats
        # remembering for ever; the memory outlasts any retransmission)
        self.clock.advance(2)
        self.assertEqual(r.add(frags[0]), message)

    def test_completed_ids_bounded(self):
        r = self.reassembler(max_completed=3)
        msgs = [self.frags(10) for _ in range(4)]
        for m, f in msgs:
            self.assertEqual(r.add(f[0]), m)
        self.assertEqual(len(r._completed), 3)
        self.assertIsNone(r.add(msgs[3][1][0]))

    def test_timeout_since_last_fragment(self):
        r = self.reassembler(timeout=1800)
        message, frags = self.frags(3 * FRAGMENT_DATA_SIZE)
        r.add(frags[0])
        self.clock.advance(1000)
        r.add(frags[1])
        self.clock.advance(1799)
        r.expire()
        self.assertEqual(r.partial_sets, 1)
        self.clock.advance(1)
        r.expire()
        self.assertEqual(r.partial_sets, 0)
        self.assertEqual(r.buffered_bytes, 0)
        self.assertEqual(r.stats.expired_sets, 1)
        # the rest arrives too late: never a message
        self.assertIsNone(r.add(frags[2]))
        self.assertIsNone(r.add(frags[3]))

    def test_takes_a_reactor_too(self):
        r = Reassembler(self.clock, timeout=10)
        _, frags = self.frags(2 * FRAGMENT_DATA_SIZE)
        r.add(frags[0])
        self.clock.advance(10)
        r.expire()
        self.assertEqual(r.stats.expired_sets, 1)

    def test_expiry_also_on_add(self):
        r = self.reassembler(timeout=10)
        _, frags = self.frags(2 * FRAGMENT_DATA_SIZE)
        r.add(frags[0])
        self.clock.advance(10)
        other, more = self.frags(10)
        self.assertEqual(r.add(more[0]), other)
        self.assertEqual(r.partial_sets, 0)

    def test_partial_set_cap_evicts_the_stalest(self):
        r = self.reassembler(max_partial_sets=3)
        sets = [self.frags(2 * FRAGMENT_DATA_SIZE) for _ in range(4)]
        for _, f in sets[:3]:
            r.add(f[0])
            self.clock.advance(1)
        r.add(sets[0][1][1])  # set 0 progresses: set 1 is now the stalest
        r.add(sets[3][1][0])
        self.assertEqual(r.partial_sets, 3)
        self.assertEqual(r.stats.evicted_sets, 1)
        self.assertEqual(r.add(sets[0][1][2]), sets[0][0])
        self.assertIsNone(r.add(sets[1][1][1]))  # evicted: starts afresh
        self.assertEqual(r.add(sets[2][1][1]), None)
        self.assertEqual(r.add(sets[2][1][2]), sets[2][0])

    def test_stranger_cannot_grow_the_buffer(self):
        cap = 2 * set_cost(fragment_count(DEFAULT_MAX_MESSAGE_SIZE))
        r = self.reassembler(max_buffered_bytes=cap, max_partial_sets=10 ** 6)
        message, frags = self.frags(20 * FRAGMENT_DATA_SIZE)
        rng = random.Random(5)
        sent = 0
        for i, f in enumerate(frags):
            # a flood of fragments of made-up sets, each claiming the largest count
            for _ in range(300):
                junk = Fragment(rng.randbytes(SET_ID_SIZE), 0, fragment_count(DEFAULT_MAX_MESSAGE_SIZE),
                                rng.randbytes(FRAGMENT_DATA_SIZE))
                r.add(junk)
                sent += 1
                self.assertLessEqual(r.buffered_bytes, cap)
            out = r.add(f)
            self.assertLessEqual(r.buffered_bytes, cap)
        # The real set made progress more recently than any old junk, so it
        # survived; the junk was evicted.
        self.assertEqual(out, message)
        self.assertGreater(r.stats.evicted_sets, 0)
        self.assertLess(r.partial_sets, sent)

    def test_count_conflict(self):
        r = self.reassembler()
        _, frags = self.frags(2 * FRAGMENT_DATA_SIZE)
        r.add(frags[0])
        forged = Fragment(frags[1].set_id, 1, 5, frags[1].data)
        self.assertIsNone(r.add(forged))
        self.assertEqual(r.stats.conflicts, 1)

    def test_count_over_the_maximum_not_buffered(self):
        r = self.reassembler(max_message_size=1000)
        big = Fragment(b"B" * SET_ID_SIZE, 0, 3, b"\x02" + bytes(FRAGMENT_DATA_SIZE - 1))
        self.assertIsNone(r.add(big))
        self.assertEqual(r.partial_sets, 0)
        self.assertEqual(r.stats.too_large, 1)

    def test_size_over_the_maximum_in_last_fragment(self):
        # 2 fragments are allowed for 1000 bytes, but not 1050
        r = self.reassembler(max_message_size=1000)
        frags = fragment_message(Message(KIND_BINARY, bytes(1050)), max_message_size=2000)
        self.assertEqual(len(frags), 2)
        r.add(frags[0])
        self.assertIsNone(r.add(frags[1]))
        self.assertEqual(r.stats.too_large, 1)

    def test_malformed_kind_and_text(self):
        r = self.reassembler()
        self.assertIsNone(r.add(Fragment(b"K" * SET_ID_SIZE, 0, 1, b"\x07abc")))
        self.assertIsNone(r.add(Fragment(b"T" * SET_ID_SIZE, 0, 1, b"\x01\xff\xfe")))
        self.assertEqual(r.stats.malformed, 2)
        self.assertEqual(r.add(Fragment(b"U" * SET_ID_SIZE, 0, 1, b"\x01")), Message(KIND_TEXT, b""))

    def test_buffer_must_hold_the_largest_message(self):
        e = self.assertRaises(ValueError, Reassembler, self.clock.seconds,
                              max_buffered_bytes=1 << 20)
        self.assertIn("max_message_size 1048576", str(e))
        self.assertRaises(ValueError, Reassembler, self.clock.seconds, timeout=0)


class ReceiverTests(SynchronousTestCase):
    def test_counts_and_messages(self):
        reserved, loops = [], []
        r = Receiver(BOB.private_key, BOB.public_key, Reassembler(Clock().seconds),
                     on_reserved=reserved.append, on_loop=loops.append)
        message = Message.from_text("hi Bob " * 300)
        payloads = [seal_fragment(BOB.public_key, f) for f in fragment_message(message)]
        inputs = [loop_cover_payload(BOB.public_key, b"L" * 16),
                  drop_cover_payload(BOB.public_key),
                  loop_cover_payload(CAROL.public_key), b"junk", os.urandom(975),
                  seal(BOB.public_key, b"\x04" + bytes(925)),
                  seal(BOB.public_key, b"\x09" + bytes(925))] + payloads
        out = [r.receive(p) for p in inputs]
        self.assertEqual([m for m in out if m is not None], [message])
        s = r.stats
        self.assertEqual((s.loop_cover, s.drop_cover, s.not_for_me, s.malformed, s.reserved,
                          s.fragments), (1, 1, 3, 1, 1, len(payloads)))
        self.assertEqual(reserved, [Reserved(TYPE_ACK, bytes(925))])
        self.assertEqual(loops, [b"L" * 16])


class VectorTests(SynchronousTestCase):
    def setUp(self):
        with open(VECTORS) as f:
            self.data = json.load(f)
        with open(VECTORS_V2) as f:
            self.v2 = json.load(f)

    def test_regenerated_vectors_match(self):
        spec = importlib.util.spec_from_file_location(
            "make_message_vectors", os.path.join(HERE, "vectors", "make_message_vectors.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.assertEqual(json.loads(json.dumps(module.build(1))), self.data)
        self.assertEqual(json.loads(json.dumps(module.build(2))), self.v2)

    def test_independent_computation(self):
        # From docs/message-format.md alone: pyca's AEAD and hashlib, no nymtx crypto.
        self.assertEqual(self.data["format"], "nymtx-message-v1")
        self.assertEqual(self.v2["format"], "nymtx-message-v2")
        self.assertGreaterEqual(len(self.data["vectors"]), 5)
        self.assertGreaterEqual(len(self.v2["vectors"]), 5)
        for v in self.data["vectors"] + self.v2["vectors"]:
            h = {k: bytes.fromhex(v[k]) for k in (
                "recipient_public_key", "ephemeral_private_key", "ephemeral_public_key",
                "plaintext", "payload", "recipient_private_key")}
            shared = crypto_scalarmult(h["ephemeral_private_key"], h["recipient_public_key"])
            self.assertEqual(shared, crypto_scalarmult(h["recipient_private_key"],
                                                       h["ephemeral_public_key"]))
            okm = hashlib.blake2b(shared + h["ephemeral_public_key"] + h["recipient_public_key"],
                                  digest_size=44, person=b"nymtx-e2e-v1").digest()
            self.assertEqual(okm[:32].hex(), v["key"])
            self.assertEqual(okm[32:].hex(), v["nonce"])
            # the version byte: 0x01 for 975 bytes, 0x02 for 608
            version = {975: 1, 608: 2}[len(h["payload"])]
            self.assertEqual(len(h["plaintext"]), {1: 926, 2: 559}[version])
            header = bytes((version,)) + h["ephemeral_public_key"]
            expected = header + ChaCha20Poly1305(okm[:32]).encrypt(
                okm[32:], h["plaintext"], header)
            self.assertEqual(expected.hex(), v["payload"], v["name"])
            opened = open_payload(h["recipient_private_key"], h["recipient_public_key"],
                                  h["payload"])
            self.assertEqual(type(opened).__name__.lower().replace("cover", "_cover"),
                             v["opened"]["type"])
            if isinstance(opened, LoopCover):
                self.assertEqual(opened.loop_id.hex(), v["opened"]["loop_id"])
            if isinstance(opened, Fragment):
                self.assertEqual(opened.data.hex(), v["opened"]["data"])
                self.assertEqual((opened.index, opened.count), (v["opened"]["index"],
                                                                 v["opened"]["count"]))

    def test_negative_vectors(self):
        self.assertGreaterEqual(len(self.data["negative"]), 5)
        self.assertGreaterEqual(len(self.v2["negative"]), 6)
        errors = {"NotForMe": NotForMe, "EnvelopeError": EnvelopeError}
        for v in self.data["negative"] + self.v2["negative"]:
            self.assertRaises(errors[v["error"]], open_envelope, bytes.fromhex(v["private_key"]),
                              bytes.fromhex(v["public_key"]), bytes.fromhex(v["payload"]))

    def test_messages(self):
        for data in (self.data, self.v2):
            self._messages(data)

    def _messages(self, data):
        by_name = {v["name"]: v for v in data["vectors"]}
        for m in data["messages"]:
            r = Reassembler(Clock().seconds)
            out = None
            for name in m["payloads"]:
                v = by_name[name]
                out = r.add(open_payload(bytes.fromhex(v["recipient_private_key"]),
                                         bytes.fromhex(v["recipient_public_key"]),
                                         bytes.fromhex(v["payload"])))
            self.assertEqual(out, Message(m["kind"], bytes.fromhex(m["data"])))


class FuzzTests(SynchronousTestCase):
    @given(st.binary(max_size=1200))
    def test_open_envelope_any_bytes(self, data):
        try:
            open_envelope(BOB.private_key, BOB.public_key, data)
        except EnvelopeError:
            pass
        else:
            self.fail("random bytes opened")

    @given(st.sampled_from([(1, ENVELOPE_V1_SIZE), (2, ENVELOPE_SIZE)]).flatmap(
        lambda vs: st.tuples(st.just(vs[0]), st.binary(min_size=vs[1] - 33,
                                                       max_size=vs[1] - 33))))
    def test_open_envelope_right_version_any_rest(self, version_rest):
        version, rest = version_rest
        payload = bytes((version,)) + BOB.public_key + rest
        self.assertRaises(NotForMe, open_payload, BOB.private_key, BOB.public_key, payload)

    @given(st.integers(0, ENVELOPE_SIZE - 1), st.integers(1, 255))
    def test_open_tampered(self, at, xor):
        payload = loop_cover_payload(BOB.public_key)
        bad = payload[:at] + bytes((payload[at] ^ xor,)) + payload[at + 1:]
        self.assertRaises(EnvelopeError, open_payload, BOB.private_key, BOB.public_key, bad)

    @given(st.binary(min_size=4, max_size=4), st.integers(1, MAX_COUNT),
           st.integers(0, MAX_COUNT), st.integers(1, FRAGMENT_DATA_SIZE))
    def test_version_2_header_bounds_round_trip(self, set_id, count, index, length):
        # every index and count a u16 allows, up to the 65,535 cap, survives
        # encoding; one past the cap cannot even be built
        index = min(index, count - 1)
        data = bytes(FRAGMENT_DATA_SIZE if index < count - 1 else length)
        f = Fragment(set_id, index, count, data)
        plain = encode_fragment(f)
        self.assertEqual(len(plain), PLAINTEXT_SIZE)
        self.assertEqual(plain[5:9], index.to_bytes(2, "big") + count.to_bytes(2, "big"))
        self.assertEqual(decode_plaintext(plain), f)
        self.assertRaises(PlaintextError, Fragment, set_id, index, count + MAX_COUNT, data)

    @given(st.one_of(
        st.binary(min_size=PLAINTEXT_SIZE, max_size=PLAINTEXT_SIZE),
        st.binary(min_size=PLAINTEXT_V1_SIZE, max_size=PLAINTEXT_V1_SIZE),
        # version 2's header, every u16 anywhere in its range (the bounds:
        # index at and past count, count 0 and 65,535, L past 548)
        st.tuples(st.sampled_from([1, 2, 3, 4, 5, 0, 6, 255]), st.binary(max_size=4),
                  st.one_of(st.integers(0, 4), st.integers(0, 2 ** 16 - 1),
                            st.just(2 ** 16 - 2), st.just(2 ** 16 - 1)),
                  st.one_of(st.integers(0, 5), st.integers(0, 2 ** 16 - 1),
                            st.just(2 ** 16 - 1)),
                  st.one_of(st.integers(0, 2 ** 16 - 1), st.integers(545, 551)),
                  st.binary(max_size=PLAINTEXT_SIZE)).map(
            lambda t: (bytes((t[0],)) + t[1].ljust(4, b"\0") + t[2].to_bytes(2, "big")
                       + t[3].to_bytes(2, "big") + t[4].to_bytes(2, "big")
                       + t[5])[:PLAINTEXT_SIZE].ljust(PLAINTEXT_SIZE, b"\0")),
        # version 1's wide header, still read
        st.tuples(st.sampled_from([1, 2, 3]), st.binary(max_size=8),
                  st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1),
                  st.integers(0, 2 ** 16 - 1), st.binary(max_size=PLAINTEXT_V1_SIZE)).map(
            lambda t: (bytes((t[0],)) + t[1].ljust(8, b"\0") + t[2].to_bytes(4, "big")
                       + t[3].to_bytes(4, "big") + t[4].to_bytes(2, "big")
                       + t[5])[:PLAINTEXT_V1_SIZE].ljust(PLAINTEXT_V1_SIZE, b"\0")),
        st.binary(max_size=PLAINTEXT_SIZE + 2)))
    def test_decode_plaintext_any_bytes(self, data):
        try:
            out = decode_plaintext(data)
        except PlaintextError:
            return
        self.assertIsInstance(out, (Fragment, LoopCover, DropCover, Reserved))
        if isinstance(out, Fragment):
            self.assertEqual(encode_fragment(out), data)

    @given(st.lists(st.tuples(st.sampled_from([KIND_TEXT, KIND_BINARY]),
                              st.integers(0, 4 * FRAGMENT_DATA_SIZE)), min_size=1, max_size=3),
           st.randoms(use_true_random=False), st.integers(0, 3))
    def test_round_trip_shuffled_duplicated(self, specs, rng, dups):
        messages = []
        payloads = []
        for kind, size in specs:
            data = rng.randbytes(size)
            if kind == KIND_TEXT:
                data = data.hex()[:size].encode()
            message = Message(kind, data)
            messages.append(message)
            payloads += [seal_fragment(BOB.public_key, f)
                         for f in fragment_message(message)]
        payloads += [rng.choice(payloads) for _ in range(dups)]
        payloads.append(loop_cover_payload(BOB.public_key))
        payloads.append(seal_fragment(CAROL.public_key, plain_fragment()))
        rng.shuffle(payloads)
        receiver = Receiver(BOB.private_key, BOB.public_key, Reassembler(Clock().seconds))
        out = [m for m in (receiver.receive(p) for p in payloads) if m is not None]
        self.assertEqual(sorted(out, key=repr), sorted(messages, key=repr))
        self.assertEqual(receiver.reassembler.partial_sets, 0)
        for m in out:
            if m.is_text:
                self.assertIsInstance(m.text, str)

    @given(st.one_of(
        st.binary(max_size=700),
        st.tuples(st.binary(min_size=8, max_size=8), st.integers(0, 3), st.integers(1, 4),
                  st.integers(1, 621)).map(
            lambda t: encode_reply_fragment(Fragment(
                t[0], min(t[1], t[2] - 1), t[2],
                bytes(621 if min(t[1], t[2] - 1) < t[2] - 1 else t[3]), 621)))))
    def test_decode_reply_fragment_any_bytes(self, data):
        try:
            f = decode_reply_fragment(data)
        except PlaintextError:
            return
        self.assertEqual(f.room, 621)
        self.assertEqual(encode_reply_fragment(f), data)

    def test_only_message_layer_errors(self):
        # The catch-all the Receiver relies on: nothing but MessageLayerError.
        for data in (b"", b"\x01" * 975, bytes(975), None, 5, memoryview(b"\x01" * 975)):
            try:
                open_payload(BOB.private_key, BOB.public_key, data)
            except MessageLayerError:
                pass


class ReassemblyPropertyTests(SynchronousTestCase):
    @given(st.binary(max_size=1100))
    def test_receiver_never_raises(self, data):
        receiver = Receiver(BOB.private_key, BOB.public_key, Reassembler(Clock().seconds))
        self.assertIsNone(receiver.receive(data))

    @given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 6), st.integers(0, 5),
                              st.integers(1, FRAGMENT_DATA_SIZE), st.floats(0, 50)),
                    max_size=60))
    def test_bounds_hold_for_any_fragments(self, steps):
        clock = Clock()
        r = Reassembler(clock.seconds, max_message_size=5 * FRAGMENT_DATA_SIZE,
                        max_partial_sets=3, max_buffered_bytes=set_cost(6) + 2000,
                        timeout=100, remember_completed=200, max_completed=4)
        for set_no, count, index, length, wait in steps:
            clock.advance(wait)
            index = min(index, count - 1)
            size = FRAGMENT_DATA_SIZE if index < count - 1 else length
            data = bytes((KIND_BINARY,)) + bytes(size - 1) if index == 0 else bytes(size)
            r.add(Fragment(bytes([set_no]) * SET_ID_SIZE, index, count, data))
            self.assertLessEqual(r.partial_sets, 3)
            self.assertLessEqual(r.buffered_bytes, r.max_buffered_bytes)
            self.assertLessEqual(len(r._completed), 4)
            self.assertEqual(r.buffered_bytes, sum(p.cost for p in r._partial.values()))
