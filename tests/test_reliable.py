"""SURB-ACKs, retransmission and the reply layer's data: pure parts, fuzzed."""

import os
import random

from hypothesis import given, strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair
from nymtx.reliable import ack, replies
from nymtx.reliable.retransmit import (
    DELIVERED, FAILED, Retransmitter, Retry, wire_packets_per_fragment)
from nymtx.sphinx import (
    HEADER_SIZE, MAX_MESSAGE_SIZE, PACKET_SIZE, ForwardHop, Hop, ReplayCache, build_packet,
    process_packet)
from nymtx.sphinx.errors import ReplayError
from nymtx.sphinx.surb import (
    MAX_SURB_MESSAGE_SIZE, SurbDelivery, open_surb_delivery, process_gateway_packet, use_surb)

from tests.test_sphinx import make_route

ACK_KEY = bytes(range(32))


def deliver(keys, packet, cache=None):
    for k in keys[:-1]:
        out = process_packet(k.private_key, packet, cache)
        assert isinstance(out, ForwardHop)
        packet = out.packet
    return process_gateway_packet(keys[-1].private_key, packet)


class Network:
    """Alice and Bob, each behind its own gateway, over the same three mixnodes."""

    def __init__(self, seed=0):
        rng = random.Random(seed)
        self.rng = rng
        self.mix_keys, mix_route = make_route(3, random.Random(seed))
        self.gw_a, self.gw_b = (KeyPair.generate(rng.randbytes) for _ in range(2))
        self.addr_a = NodeAddress.parse("10.9.0.1:1789").to_bytes()
        self.addr_b = NodeAddress.parse("[2001:db8::b]:1789").to_bytes()
        self.alice = KeyPair.generate(rng.randbytes)
        self.bob = KeyPair.generate(rng.randbytes)
        self.mixes = mix_route
        self.to_a = mix_route + [Hop(self.addr_a, self.gw_a.public_key)]
        self.to_b = mix_route + [Hop(self.addr_b, self.gw_b.public_key)]

    def alice_sends(self, number, index, attempt, stored, delays=(1, 2, 3, 4)):
        """Alice's fragment packet to Bob, with her SURB-ACK."""
        surb_ack = ack.build_surb_ack(self.to_a, self.alice.public_key, ACK_KEY, number, index,
                                      attempt, list(delays), randbytes=self.rng.randbytes)
        message = ack.compose_payload(surb_ack, stored)
        return build_packet(self.to_b, self.bob.public_key, bytes(16), message, [0] * 4,
                            randbytes=self.rng.randbytes)


class SurbAckTests(SynchronousTestCase):
    def test_fragment_ack_round_trip(self):
        net = Network()
        stored = os.urandom(ack.STORED_SIZE)
        packet = net.alice_sends(41, 2, 0, stored)
        # Bob's gateway: the final hop as ever, then the SURB-ACK off the front
        hop = deliver(net.mix_keys + [net.gw_b], packet)
        self.assertEqual(hop.destination, net.bob.public_key)
        self.assertEqual(len(hop.message), MAX_MESSAGE_SIZE)
        surb_ack, kept = ack.split_payload(hop.message)
        self.assertEqual(kept, stored)
        first_hop, ack_pkt = ack.ack_packet(surb_ack)
        self.assertEqual(first_hop.to_bytes(), net.mixes[0].address)
        self.assertEqual(len(ack_pkt), PACKET_SIZE)  # as large as every packet
        # three mixnodes, then Alice's gateway: a SURB delivery for Alice
        out = deliver(net.mix_keys + [net.gw_a], ack_pkt)
        self.assertIsInstance(out, SurbDelivery)
        self.assertEqual(out.destination, net.alice.public_key)
        self.assertEqual(ack.open_ack(ACK_KEY, out.identifier), ack.AckRef(41, 2, 0))

    def test_only_the_sender_reads_it(self):
        net = Network()
        packet = net.alice_sends(5, 0, 3, bytes(ack.STORED_SIZE))
        hop = deliver(net.mix_keys + [net.gw_b], packet)
        surb_ack, _ = ack.split_payload(hop.message)
        # Bob's gateway sees the first hop and a header: neither Alice's key
        # nor her gateway's address nor the identifier is in it
        for secret in (net.alice.public_key, net.addr_a, ack.ack_identifier(ACK_KEY, 5, 0, 3)):
            self.assertNotIn(secret, surb_ack)
        out = deliver(net.mix_keys + [net.gw_a], ack.ack_packet(surb_ack)[1])
        self.assertIsNone(ack.open_ack(os.urandom(32), out.identifier))
        self.assertEqual(ack.open_ack(ACK_KEY, out.identifier), ack.AckRef(5, 0, 3))

    def test_cover_ack_is_ignored(self):
        net = Network()
        packet = net.alice_sends(ack.COVER, 0, 0, bytes(ack.STORED_SIZE))
        hop = deliver(net.mix_keys + [net.gw_b], packet)
        out = deliver(net.mix_keys + [net.gw_a], ack.ack_packet(ack.split_payload(hop.message)[0])[1])
        self.assertIsInstance(out, SurbDelivery)
        self.assertIsNone(ack.open_ack(ACK_KEY, out.identifier))

    def test_cover_and_fragments_look_alike_to_the_gateway(self):
        """Same sizes, same place, same kind of bytes: the gateway cannot tell
        a cover packet's SURB-ACK from a fragment's."""
        net = Network()
        real = deliver(net.mix_keys + [net.gw_b], net.alice_sends(9, 1, 0, os.urandom(608)))
        cover = deliver(net.mix_keys + [net.gw_b], net.alice_sends(0, 0, 0, os.urandom(608)))
        for hop in (real, cover):
            surb_ack, stored = ack.split_payload(hop.message)
            self.assertEqual((len(surb_ack), len(stored)), (ack.SURB_ACK_SIZE, ack.STORED_SIZE))
            first_hop, packet = ack.ack_packet(surb_ack)
            self.assertEqual(first_hop.to_bytes(), net.mixes[0].address)
            self.assertIsInstance(process_packet(net.mix_keys[0].private_key, packet), ForwardHop)

    def test_ack_sent_twice_refused_by_first_hop(self):
        net = Network()
        hop = deliver(net.mix_keys + [net.gw_b], net.alice_sends(3, 0, 0, bytes(608)))
        surb_ack, _ = ack.split_payload(hop.message)
        cache = ReplayCache(16)
        process_packet(net.mix_keys[0].private_key, ack.ack_packet(surb_ack)[1], cache)
        self.assertRaises(ReplayError, process_packet, net.mix_keys[0].private_key,
                          ack.ack_packet(surb_ack)[1], cache)

    def test_identifier_fields(self):
        for fields in [(1, 0, 0), ((1 << 64) - 1, (1 << 32) - 1, (1 << 16) - 1), (77, 5, 2)]:
            ident = ack.ack_identifier(ACK_KEY, *fields)
            self.assertEqual(len(ident), 16)
            self.assertEqual(ack.open_ack(ACK_KEY, ident), ack.AckRef(*fields))
        self.assertRaises(ack.AckError, ack.ack_identifier, ACK_KEY, -1, 0, 0)
        self.assertRaises(ack.AckError, ack.ack_identifier, ACK_KEY, 1, 1 << 32, 0)
        self.assertRaises(ack.AckError, ack.ack_identifier, b"short", 1, 0, 0)

    def test_sizes(self):
        self.assertEqual(ack.SURB_ACK_SIZE, 367)
        self.assertEqual(ack.STORED_SIZE, 608)
        self.assertRaises(ack.AckError, ack.compose_payload, bytes(366), bytes(608))
        self.assertRaises(ack.AckError, ack.compose_payload, bytes(367), bytes(607))
        self.assertRaises(ack.AckError, ack.split_payload, bytes(974))

    def test_compact_address(self):
        for text in ("10.1.2.3:80", "[2001:db8::1]:65535"):
            a = NodeAddress.parse(text).to_bytes()
            c = ack.compact_address(a)
            self.assertEqual(len(c), 19)
            first, _ = ack.ack_packet(c + bytes(HEADER_SIZE))
            self.assertEqual(str(first), text)
        self.assertRaises(ValueError, ack.compact_address, bytes(32))

    def test_bad_first_hop(self):
        self.assertRaises(ack.AckError, ack.ack_packet, b"\x05" + bytes(366))
        self.assertRaises(ack.AckError, ack.ack_packet, b"\x04" + bytes(366))  # port 0
        self.assertRaises(ack.AckError, ack.ack_packet, bytes(100))


class AckFuzzTests(SynchronousTestCase):
    @given(st.binary(max_size=2 * MAX_MESSAGE_SIZE))
    def test_gateway_extraction_any_payload(self, data):
        """Whatever a final hop's message holds: AckError or an ack packet."""
        try:
            surb_ack, stored = ack.split_payload(data)
        except ack.AckError:
            self.assertNotEqual(len(data), MAX_MESSAGE_SIZE)
            return
        self.assertEqual(surb_ack + stored, data)
        try:
            first_hop, packet = ack.ack_packet(surb_ack)
        except ack.AckError:
            return
        self.assertIsInstance(first_hop, NodeAddress)
        self.assertEqual(packet[:HEADER_SIZE], surb_ack[19:])
        self.assertEqual(len(packet), PACKET_SIZE)

    @given(st.binary(max_size=ack.SURB_ACK_SIZE + 10))
    def test_ack_packet_any_block(self, data):
        try:
            ack.ack_packet(data)
        except ack.AckError:
            pass

    @given(st.binary(max_size=40))
    def test_open_any_identifier(self, data):
        ref = ack.open_ack(ACK_KEY, data)
        if ref is not None:
            self.assertEqual(ack.ack_identifier(ACK_KEY, ref.number, ref.index, ref.attempt), data)


class RetransmitterTests(SynchronousTestCase):
    def make(self, **kw):
        self.clock = Clock()
        self.outcomes = []
        return Retransmitter(self.clock, lambda m, o: self.outcomes.append((m, o)), **kw)

    def test_timeout_formula(self):
        r = self.make(multiplier=1.5, addition=0.8)
        r.track("m", 1)
        self.assertEqual(r.sent("m", 0, 2.0), 0)
        self.assertEqual(r.next_deadline(), 2.0 * 1.5 + 0.8)
        self.clock.advance(3.79)
        self.assertEqual(r.due(), [])
        self.clock.advance(0.02)
        self.assertEqual(r.due(), [Retry("m", 0, 1)])

    def test_delivered_once_every_fragment_acked(self):
        r = self.make()
        r.track("m", 3)
        for i in range(3):
            r.sent("m", i, 1.0)
        self.assertTrue(r.acked("m", 2))
        self.assertFalse(r.acked("m", 2))  # a duplicate ack is no news
        self.assertTrue(r.acked("m", 0))
        self.assertEqual(self.outcomes, [])
        self.assertTrue(r.acked("m", 1))
        self.assertEqual(self.outcomes, [("m", DELIVERED)])
        self.assertFalse(r.tracking("m"))
        self.clock.advance(100)
        self.assertEqual(r.due(), [])

    def test_handed_out_once_until_sent_again(self):
        r = self.make(addition=1.0)
        r.track("m", 2)
        r.sent("m", 0, 0)
        r.sent("m", 1, 0)
        self.clock.advance(1.5)
        self.assertEqual(r.due(), [Retry("m", 0, 1), Retry("m", 1, 1)])
        self.assertEqual(r.due(), [Retry("m", 0, 1), Retry("m", 1, 1)])  # still waiting for the stream
        self.assertEqual(r.sent("m", 0, 0), 1)
        self.assertEqual(r.due(), [Retry("m", 1, 1)])

    def test_ack_while_queued_cancels_the_retry(self):
        r = self.make(addition=1.0)
        r.track("m", 2)
        r.sent("m", 0, 0)
        r.sent("m", 1, 0)
        self.clock.advance(2)
        self.assertEqual(len(r.due()), 2)
        r.acked("m", 0)  # a late ack of the first attempt
        self.assertEqual(r.due(), [Retry("m", 1, 1)])

    def test_fails_after_the_last_retry(self):
        r = self.make(addition=1.0, max_retransmissions=2)
        r.track("m", 1)
        for attempt in range(3):
            self.assertEqual(r.sent("m", 0, 0), attempt)
            self.clock.advance(1.0)
            due = r.due()
            if attempt < 2:
                self.assertEqual(due, [Retry("m", 0, attempt + 1)])
        self.assertEqual(due, [])
        self.assertEqual(self.outcomes, [("m", FAILED)])
        self.assertFalse(r.tracking("m"))
        self.assertFalse(r.acked("m", 0))  # a late ack after failing changes nothing
        self.assertEqual(self.outcomes, [("m", FAILED)])

    def test_zero_retries(self):
        r = self.make(addition=1.0, max_retransmissions=0)
        r.track("m", 1)
        r.sent("m", 0, 0)
        self.clock.advance(1)
        self.assertEqual(r.due(), [])
        self.assertEqual(self.outcomes, [("m", FAILED)])

    def test_default_cap(self):
        r = self.make(addition=1.0)
        r.track("m", 1)
        sends = 0
        while r.tracking("m"):
            for retry in r.due() or [Retry("m", 0, 0)]:
                r.sent("m", retry.index, 0)
                sends += 1
            self.clock.advance(1)
            r.due()
        self.assertEqual(sends, 6)  # the first send and five retransmissions

    def test_resend_timer_from_the_latest_send(self):
        r = self.make(addition=1.0)
        r.track("m", 1)
        r.sent("m", 0, 0)
        self.clock.advance(1)
        r.due()
        r.sent("m", 0, 4.0)  # the retry's route is slower
        self.clock.advance(1)
        self.assertEqual(r.due(), [])  # the first send's deadline is gone
        self.assertEqual(r.next_deadline(), 2 + 4.0 * 1.5)

    def test_restart(self):
        """What the outbox knew: fragment 1 acked, 0 and 2 sent once each."""
        r = self.make()
        r.track("m", 3, acked={1}, attempts={0: 1, 2: 1})
        self.assertEqual(r.due(), [Retry("m", 0, 1), Retry("m", 2, 1)])
        r.track("fresh", 2, attempts={})
        self.assertIn(Retry("fresh", 0, 0), r.due())

    def test_restart_past_the_cap_fails(self):
        r = self.make(max_retransmissions=1)
        r.track("m", 1, attempts={0: 2})
        self.assertEqual(r.due(), [])
        self.assertEqual(self.outcomes, [("m", FAILED)])

    def test_restart_all_acked_is_delivered(self):
        r = self.make()
        r.track("m", 2, acked={0, 1}, attempts={})
        self.assertEqual(self.outcomes, [("m", DELIVERED)])

    def test_unknown_and_bad_calls(self):
        r = self.make()
        self.assertFalse(r.acked("nothing", 0))
        self.assertIsNone(r.sent("nothing", 0, 1))
        r.track("m", 1)
        self.assertIsNone(r.sent("m", 5, 1))
        self.assertRaises(ValueError, r.track, "m", 1)
        self.assertRaises(ValueError, r.track, "z", 0)
        self.assertRaises(ValueError, Retransmitter, Clock(), max_retransmissions=-1)
        self.assertRaises(ValueError, Retransmitter, Clock(), multiplier=-1)
        r.cancel("m")
        self.assertEqual(len(r), 0)
        self.assertEqual(self.outcomes, [])

    def test_never_sends_by_itself(self):
        """Nothing is scheduled on the clock: the stream pulls due()."""
        r = self.make()
        r.track("m", 1)
        r.sent("m", 0, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_wire_model(self):
        total, delivered, per = wire_packets_per_fragment(0.0)
        self.assertEqual((total, delivered, per), (2.0, 1.0, 2.0))
        total, delivered, per = wire_packets_per_fragment(0.05)
        self.assertAlmostEqual(delivered, 1 - 0.05 ** 6)
        self.assertTrue(2.0 < per < 2.3, per)


class ReplyLayerTests(SynchronousTestCase):
    def setUp(self):
        self.net = Network(4)
        self.rng = random.Random(5)

    def reply_surbs(self, n, expires_at=10_000):
        return replies.build_reply_surbs(
            n, lambda: self.net.to_a, self.net.alice.public_key, expires_at,
            lambda n: [1] * n, randbytes=self.rng.randbytes)

    def test_repliable_round_trip(self):
        made = self.reply_surbs(3)
        tag = b"T" * 16
        data = replies.encode_repliable(tag, [s for s, _ in made], replies.TEXT, b"hi Bob")
        got = replies.decode_forward(data)
        self.assertEqual(got, replies.Repliable(tag, tuple(s for s, _ in made), replies.TEXT,
                                                b"hi Bob"))
        self.assertEqual(len(data), 1 + 16 + 2 + 3 * replies.REPLY_SURB_SIZE + 1 + 6)

    def test_top_up_and_request(self):
        made = self.reply_surbs(2)
        data = replies.encode_top_up(b"t" * 16, [s for s, _ in made])
        self.assertEqual(replies.decode_forward(data),
                         replies.TopUp(b"t" * 16, tuple(s for s, _ in made)))
        self.assertEqual(replies.decode_reply(replies.encode_surb_request(20)),
                         replies.SurbRequest(20))
        self.assertEqual(replies.decode_reply(replies.encode_reply(replies.BINARY, b"\x00x")),
                         replies.ReplyData(replies.BINARY, b"\x00x"))
        self.assertRaises(replies.ReplyError, replies.encode_surb_request, 0)
        self.assertRaises(replies.ReplyError, replies.encode_surb_request, 501)

    def test_reply_through_a_block_acked_by_the_builder(self):
        """Bob replies with one of Alice's blocks and his own SURB-ACK; Alice
        opens it and sends Bob's ack on; Bob reads it. Bob never sees
        Alice's key or her gateway's address."""
        (reply_surb, keys), = self.reply_surbs(1)
        held = replies.ReplySurb.from_bytes(reply_surb.to_bytes())
        for secret in (self.net.alice.public_key, self.net.addr_a):
            self.assertNotIn(secret, held.to_bytes())
        bob_ack = ack.build_surb_ack(self.net.to_b, self.net.bob.public_key, ACK_KEY, 12, 0, 0,
                                     [1] * 4, randbytes=self.rng.randbytes)
        body = os.urandom(replies.REPLY_BODY_SIZE)
        packet = use_surb(held.surb, replies.reply_message(bob_ack, body))
        out = deliver(self.net.mix_keys + [self.net.gw_a], packet)
        self.assertIsInstance(out, SurbDelivery)
        self.assertEqual(out.destination, self.net.alice.public_key)
        opened = open_surb_delivery(keys, out.block)
        self.assertEqual(len(opened), MAX_SURB_MESSAGE_SIZE)
        their_ack, got = replies.split_reply(opened)
        self.assertEqual(got, body)
        _, ack_pkt = ack.ack_packet(their_ack)
        back = deliver(self.net.mix_keys + [self.net.gw_b], ack_pkt)
        self.assertEqual(back.destination, self.net.bob.public_key)
        self.assertEqual(ack.open_ack(ACK_KEY, back.identifier), ack.AckRef(12, 0, 0))

    def test_limits(self):
        made = self.reply_surbs(1)
        too_many = [made[0][0]] * (replies.MAX_SURBS_PER_MESSAGE + 1)
        self.assertRaises(replies.ReplyError, replies.encode_top_up, b"t" * 16, too_many)
        self.assertRaises(replies.ReplyError, replies.encode_repliable, b"t" * 15, [], 1, b"")
        self.assertRaises(replies.ReplyError, replies.encode_repliable, b"t" * 16, [], 9, b"")
        count_only = bytes((replies.TOP_UP,)) + b"t" * 16 + (501).to_bytes(2, "big")
        self.assertRaises(replies.ReplyError, replies.decode_forward, count_only)

    def test_each_block_has_its_own_route_and_identifier(self):
        made = self.reply_surbs(3)
        self.assertEqual(len({k.identifier for _, k in made}), 3)
        self.assertEqual(len({s.surb.header[:32] for s, _ in made}), 3)


class ReplyFuzzTests(SynchronousTestCase):
    surb = replies.build_reply_surbs(1, lambda: Network(9).to_a, bytes(range(32)), 5,
                                     lambda n: [0] * n,
                                     randbytes=random.Random(1).randbytes)[0][0]

    @given(st.binary(max_size=3000))
    def test_decode_forward_any_bytes(self, data):
        try:
            replies.decode_forward(data)
        except replies.ReplyError:
            pass

    @given(st.integers(0, 3), st.binary(max_size=40), st.sampled_from([0x10, 0x11]))
    def test_decode_forward_near_valid(self, count, tail, kind):
        data = (bytes((kind,)) + b"x" * 16 + count.to_bytes(2, "big")
                + self.surb.to_bytes() * count + tail)
        try:
            got = replies.decode_forward(data)
        except replies.ReplyError:
            return
        self.assertEqual(len(got.surbs), count)

    @given(st.binary(max_size=600))
    def test_decode_reply_any_bytes(self, data):
        try:
            replies.decode_reply(data)
        except replies.ReplyError:
            pass

    @given(st.binary(max_size=900))
    def test_parse_reply_surb(self, data):
        try:
            s = replies.ReplySurb.from_bytes(data)
        except replies.ReplyError:
            self.assertNotEqual(len(data), replies.REPLY_SURB_SIZE)
        else:
            self.assertEqual(s.to_bytes(), data)

    @given(st.binary(max_size=1100))
    def test_split_reply_any_bytes(self, data):
        try:
            a, b = replies.split_reply(data)
        except replies.ReplyError:
            self.assertNotEqual(len(data), MAX_SURB_MESSAGE_SIZE)
        else:
            self.assertEqual(a + b, data)


class RetransmitterPropertyTests(SynchronousTestCase):
    """Any interleaving of sends, acks and time: one outcome per message,
    never more sends than the cap allows, delivered exactly when all acked."""

    @given(st.lists(st.tuples(st.sampled_from(["send", "ack", "tick"]),
                              st.integers(0, 2), st.integers(0, 3),
                              st.floats(0, 3, allow_nan=False)), max_size=80),
           st.integers(0, 3))
    def test_invariants(self, ops, cap):
        clock = Clock()
        outcomes = []
        r = Retransmitter(clock, lambda m, o: outcomes.append((m, o)), addition=1.0,
                          max_retransmissions=cap)
        counts = {m: m + 2 for m in range(3)}
        sends = {m: [0] * counts[m] for m in counts}
        acked = {m: set() for m in counts}
        for m, count in counts.items():
            r.track(m, count)
        for op, m, index, dt in ops:
            index %= counts[m]
            if op == "send" and r.tracking(m) and index not in acked[m]:
                if sends[m][index] == 0 or Retry(m, index, sends[m][index]) in r.due():
                    self.assertEqual(r.sent(m, index, 0.1), sends[m][index])
                    sends[m][index] += 1
            elif op == "ack":
                if r.acked(m, index):
                    acked[m].add(index)
            else:
                clock.advance(dt)
                for retry in r.due():
                    self.assertLessEqual(retry.attempt, cap)
        for m in counts:
            self.assertLessEqual(max(sends[m]), cap + 1)
            mine = [o for mm, o in outcomes if mm == m]
            self.assertLessEqual(len(mine), 1)
            if mine == [DELIVERED]:
                self.assertEqual(acked[m], set(range(counts[m])))
            if len(acked[m]) == counts[m]:
                self.assertEqual(mine, [DELIVERED])
            if mine == [FAILED]:
                self.assertIn(cap + 1, sends[m])
