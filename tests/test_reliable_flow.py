"""The pieces of issue 12 together, through real Sphinx hops and the
gateways' real sqlite stores: a fragment, its ack, a retry, a reply."""

import os
import random

from hypothesis import given, strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.client.outbox import Outbox
from nymtx.client.replystore import ReplyStore
from nymtx.gateway.store import MailboxStore
from nymtx.reliable import ack, replies
from nymtx.reliable.inbound import (
    Ack, Envelope, GatewayRecord, Reply, Unreadable, classify_record, gateway_record)
from nymtx.reliable.retransmit import DELIVERED, Retransmitter, Retry
from nymtx.sphinx import FinalHop, ForwardHop, build_packet, process_packet
from nymtx.sphinx.constants import MAX_MESSAGE_SIZE
from nymtx.sphinx.surb import (
    DELIVERY_SIZE, SurbDelivery, process_gateway_packet, use_surb)

from tests.test_reliable import Network


class Gateway:
    """A gateway's final-hop step and its real mailbox store."""

    def __init__(self, keys, path, clock, clients):
        self.keys = keys
        self.store = MailboxStore.open(clock, path)
        for c in clients:
            self.store.register(c, b"token")
        #: SURB-ACKs of committed messages, as the store's commit hook
        #: hands them over (what nymtx.gateway.mix.FinalHopHandler sends)
        self.to_ack = []
        self.store.add_commit_hook(self.to_ack.extend)

    def receive(self, packet):
        hop = process_gateway_packet(self.keys.private_key, packet)
        rec = gateway_record(hop)
        self.store.add(rec.destination, rec.record, rec.surb_ack)
        return rec

    def commit(self):
        """Commit, then what an ack waits for: the packets to send."""
        self.store.flush()
        out = [ack.ack_packet(s)[1] for s in self.to_ack]
        del self.to_ack[:]
        return out

    def pull(self, client):
        got = self.store.pull(client, 100)
        self.store.ack(client, [i for i, _ in got])
        return [body for _, body in got]


def through_mixes(net, packet, drop=False):
    for k in net.mix_keys:
        out = process_packet(k.private_key, packet)
        assert isinstance(out, ForwardHop)
        packet = out.packet
    return None if drop else packet


class FlowTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(10_000)
        self.net = Network(11)
        self.gw_a = Gateway(self.net.gw_a, self.mktemp(), self.clock, [self.net.alice.public_key])
        self.gw_b = Gateway(self.net.gw_b, self.mktemp(), self.clock, [self.net.bob.public_key])
        for gw in (self.gw_a, self.gw_b):
            self.addCleanup(gw.store.close)
        self.outbox = Outbox.open(self.mktemp(), self.clock)
        self.addCleanup(self.outbox.close)
        self.replies = ReplyStore(self.outbox.db, self.clock)
        self.outcomes = []
        self.rtx = Retransmitter(self.clock, lambda m, o: self.outcomes.append((m, o)),
                                 addition=1.0)

    def alice_packet(self, number, index, attempt, envelope):
        surb_ack = ack.build_surb_ack(self.net.to_a, self.net.alice.public_key,
                                      self.outbox.ack_key, number, index, attempt, [0] * 4)
        return build_packet(self.net.to_b, self.net.bob.public_key, bytes(16),
                            ack.compose_payload(surb_ack, envelope), [0] * 4)

    def alice_fetches(self):
        return [classify_record(r, self.outbox.ack_key, self.replies.claim)
                for r in self.gw_a.pull(self.net.alice.public_key)]

    def test_fragment_acked_only_after_commit_then_delivered(self):
        envelopes = [os.urandom(ack.STORED_SIZE) for _ in range(2)]
        number = self.outbox.add("msg-1", self.net.bob.public_key, b"hello", 1, 2)
        self.rtx.track(number, 2)
        for i, env in enumerate(envelopes):
            self.gw_b.receive(through_mixes(self.net, self.alice_packet(number, i, 0, env)))
            self.rtx.sent(number, i, 0.0)
            self.outbox.sent(number, i)
        # nothing is acked before Bob's gateway has committed
        self.assertEqual(self.gw_b.to_ack, [])
        self.assertEqual(self.gw_b.store.pull(self.net.bob.public_key, 10), [])
        acks = self.gw_b.commit()
        self.assertEqual(len(acks), 2)
        self.assertEqual([b for b in self.gw_b.pull(self.net.bob.public_key)], envelopes)
        for packet in acks:
            rec = self.gw_a.receive(through_mixes(self.net, packet))
            self.assertIsNone(rec.surb_ack)  # acks are not acked
            self.assertEqual(len(rec.record), DELIVERY_SIZE)
        self.gw_a.commit()
        fetched = self.alice_fetches()
        self.assertEqual(sorted(f.ref.index for f in fetched), [0, 1])
        for f in fetched:
            self.assertIsInstance(f, Ack)
            self.rtx.acked(f.ref.number, f.ref.index)
            self.outbox.mark_acked(f.ref.number, f.ref.index)
        self.assertEqual(self.outcomes, [(number, DELIVERED)])
        self.assertEqual(self.outbox.get(number).acked, {0, 1})

    def test_a_lost_packet_is_sent_again_and_the_retry_acked(self):
        number = self.outbox.add("msg-2", self.net.bob.public_key, b"x", 2, 1)
        self.rtx.track(number, 1)
        through_mixes(self.net, self.alice_packet(number, 0, 0, bytes(608)), drop=True)
        self.rtx.sent(number, 0, 0.5)
        self.clock.advance(1.76)
        retry = self.rtx.take()
        self.assertEqual(retry, Retry(number, 0, 1))
        # a fresh packet: new route draw, SURB-ACK and encryption
        packet = self.alice_packet(number, 0, retry.attempt, os.urandom(608))
        self.rtx.sent(number, 0, 0.5)
        self.gw_b.receive(through_mixes(self.net, packet))
        for p in self.gw_b.commit():
            self.gw_a.receive(through_mixes(self.net, p))
        self.gw_a.commit()
        [f] = self.alice_fetches()
        self.assertEqual(f.ref, ack.AckRef(number, 0, 1))
        self.rtx.acked(number, 0)
        self.assertEqual(self.outcomes, [(number, DELIVERED)])

    def test_cover_ack_comes_back_and_is_dropped(self):
        self.gw_b.receive(through_mixes(self.net, self.alice_packet(ack.COVER, 0, 0, bytes(608))))
        for p in self.gw_b.commit():
            self.gw_a.receive(through_mixes(self.net, p))
        self.gw_a.commit()
        [f] = self.alice_fetches()
        self.assertIsInstance(f, Unreadable)

    def test_reply_round_trip_through_the_stores(self):
        made = replies.build_reply_surbs(
            2, lambda: self.net.to_a, self.net.alice.public_key, 20_000, lambda n: [0] * n)
        tag = self.replies.sender_tag(self.net.bob.public_key)
        for _, keys in made:
            self.replies.remember(keys, tag, 20_000)
        data = replies.encode_repliable(tag, [s for s, _ in made], replies.TEXT, b"hi")
        # Bob's side (another client's store): he keeps the blocks by tag
        bob_box = Outbox.open(self.mktemp(), self.clock)
        self.addCleanup(bob_box.close)
        bob_replies = ReplyStore(bob_box.db, self.clock)
        got = replies.decode_forward(data)
        self.assertEqual(bob_replies.add(got.tag, got.surbs), 2)
        bob_ack = ack.build_surb_ack(self.net.to_b, self.net.bob.public_key, bob_box.ack_key,
                                     5, 0, 0, [0] * 4)
        body = replies.encode_reply(replies.TEXT, b"hi back").ljust(replies.REPLY_BODY_SIZE,
                                                                    b"\x00")
        block = bob_replies.take(got.tag)
        packet = use_surb(block.surb, replies.reply_message(bob_ack, body))
        rec = self.gw_a.receive(through_mixes(self.net, packet))
        self.assertIsNone(rec.surb_ack)
        self.gw_a.commit()
        [f] = self.alice_fetches()
        self.assertIsInstance(f, Reply)
        self.assertEqual(f.tag, tag)
        their_ack, got_body = replies.split_reply(f.message)
        self.assertEqual(got_body, body)
        # the same block again: its keys are gone (and the mixes' caches refuse it)
        self.gw_a.receive(through_mixes(self.net, packet))
        self.gw_a.commit()
        self.assertIsInstance(self.alice_fetches()[0], Unreadable)
        # Alice sends Bob's ack on; Bob's gateway stores it for Bob
        self.gw_b.receive(through_mixes(self.net, ack.ack_packet(their_ack)[1]))
        self.gw_b.commit()
        [r] = self.gw_b.pull(self.net.bob.public_key)
        self.assertEqual(classify_record(r, bob_box.ack_key, bob_replies.claim),
                         Ack(ack.AckRef(5, 0, 0)))

    def test_version_one_envelope_stored_whole(self):
        """The message layer's 975-byte envelopes (version 0x01) are not cut."""
        from nymtx.message import drop_cover_payload
        envelope = drop_cover_payload(self.net.bob.public_key)
        packet = build_packet(self.net.to_b, self.net.bob.public_key, bytes(16), envelope,
                              [0] * 4)
        rec = self.gw_b.receive(through_mixes(self.net, packet))
        self.assertEqual(rec, GatewayRecord(self.net.bob.public_key, envelope, None))

    def test_legacy_message_stored_as_is(self):
        packet = build_packet(self.net.to_b, self.net.bob.public_key, bytes(16), b"seed client",
                              [0] * 4)
        rec = self.gw_b.receive(through_mixes(self.net, packet))
        self.assertEqual(rec, GatewayRecord(self.net.bob.public_key, b"seed client", None))


class InboundFuzzTests(SynchronousTestCase):
    key = bytes(range(32))

    @given(st.binary(max_size=1200))
    def test_classify_any_record(self, data):
        out = classify_record(data, self.key, lambda i: None)
        self.assertIsInstance(out, (Ack, Envelope, Unreadable))

    @given(st.binary(min_size=DELIVERY_SIZE, max_size=DELIVERY_SIZE))
    def test_classify_any_delivery_with_keys(self, data):
        made = replies.build_reply_surbs(1, lambda: Network(1).to_a, bytes(32), 1,
                                         lambda n: [0] * n,
                                         randbytes=random.Random(2).randbytes)
        keys = made[0][1]
        out = classify_record(data, self.key, lambda i: (b"t" * 16, keys))
        self.assertIsInstance(out, Unreadable)

    @given(st.binary(max_size=MAX_MESSAGE_SIZE))
    def test_gateway_record_any_message(self, message):
        rec = gateway_record(FinalHop(b"d" * 32, bytes(16), message, 0))
        if len(message) == MAX_MESSAGE_SIZE and message[0] in (4, 6):
            self.assertEqual(rec.surb_ack + rec.record, message)
        else:
            self.assertEqual((rec.record, rec.surb_ack), (message, None))

    @given(st.binary(min_size=1024, max_size=1024), st.binary(min_size=16, max_size=16))
    def test_gateway_record_any_delivery(self, block, identifier):
        rec = gateway_record(SurbDelivery(b"d" * 32, identifier, block, 0))
        self.assertEqual(rec.record, identifier + block)
