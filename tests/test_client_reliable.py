"""The client's reliable delivery (issue 12) on task.Clock: SURB-ACKs in
every packet, acks to outcomes, retries through the stream and capped, the
outbox across a restart, and the API's opt-in outcome events."""

import json
import random

from hypothesis import given, settings, strategies as st
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.client.api import (
    BINARY_SEND_ID, BINARY_SEND_VIA_ID, ApiDispatcher, Push, parse_binary_send)
from nymtx.client.config import ClientConfig, ConfigError
from nymtx.client.core import ClientCore, DeliveryFailed, SendError
from nymtx.client.inbox import Inbox
from nymtx.client.outbox import Outbox
from nymtx.keys import KeyPair, encode_key
from nymtx.message import Message, fragment_message, seal_fragment
from nymtx.reliable.ack import SURB_ACK_SIZE, build_surb_ack, compose_payload, open_ack
from nymtx.reliable.retransmit import DELIVERED, FAILED
from nymtx.sphinx import MAX_MESSAGE_SIZE
from nymtx.sphinx.surb import parse_delivery
from nymtx.testing import FakeDirectory, FakeGatewayLink, FakeLinks, FakeNetwork

STEP = 0.05


def run(clock, seconds, step=STEP):
    """Many small steps: the client's streams are Poisson (one call per advance)."""
    for _ in range(int(seconds / step)):
        clock.advance(step)


class Harness:
    """Alice's core against the fake network; Bob is a key there."""

    def __init__(self, case, outbox_path=None, network=None, keys=None, clock=None,
                 listen=True, **config_values):
        self.case = case
        self.clock = clock or Clock()
        self.keys = keys or KeyPair.generate()
        self.network = network or FakeNetwork()
        if network is None:
            self.bob = self.network.add_client()
            self.network.clients.append(self.keys.public_key)
        values = dict(provider_id=encode_key(self.network.gateway_keys.public_key),
                      provider_authtoken=encode_key(bytes(32)))
        values.update(config_values)
        self.config = ClientConfig.new(case.mktemp(), "Alice", **values)
        self.link = FakeGatewayLink()
        self.links = FakeLinks()
        self.inbox = Inbox(":memory:", self.clock)
        case.addCleanup(self.inbox.close)
        self.outbox = Outbox.open(outbox_path or ":memory:", self.clock)
        case.addCleanup(self.outbox.close)
        self.core = ClientCore(self.clock, self.config, self.keys,
                               FakeDirectory(self.network.topology), self.links, self.link,
                               self.inbox, outbox=self.outbox, rng=random.Random(7))
        self.outcomes = []
        if listen:
            self.core.on_outcome(lambda i, o: self.outcomes.append((i, o)))
        self._next_id = 10_000
        self._acked = 0

    def to(self, key):
        """The packets sent so far that end at *key*."""
        return [p for _, p in self.links.packets if self.network.unwrap(p)[0] == key]

    def ack_new(self, key):
        """The recipient's gateway committed every packet to *key* not acked
        yet and sent its SURB-ACK: the acks wait at Alice's gateway."""
        packets = self.to(key)
        for packet in packets[self._acked:]:
            self._next_id += 1
            self.link.mail.append((self._next_id, self.network.ack_record(packet)))
        self._acked = len(packets)


class AckTests(SynchronousTestCase):
    def test_every_packet_carries_a_surb_ack_back_to_the_own_gateway(self):
        h = Harness(self)
        h.core.start()
        h.core.send(h.bob.public_text, b"x" * 1200)
        run(h.clock, 5)
        self.assertGreater(len(h.links.packets), 5)
        for _, packet in h.links.packets:
            _, message, _ = h.network.unwrap_whole(packet)
            self.assertEqual(len(message), MAX_MESSAGE_SIZE)
            self.assertIn(message[0], (4, 6))  # an address family: the SURB-ACK's first hop
            record = h.network.ack_record(packet)
            identifier, _ = parse_delivery(record)
            ref = open_ack(h.outbox.ack_key, identifier)
            destination = h.network.unwrap(packet)[0]
            if destination == h.bob.public_key:
                self.assertEqual(ref.number, 1)  # the message's outbox number
            else:
                self.assertIsNone(ref)  # cover: an ack that opens to nothing
        # cover acks have fresh identifiers, like real ones
        ids = [parse_delivery(h.network.ack_record(p))[0] for _, p in h.links.packets]
        self.assertEqual(len(set(ids)), len(ids))
        h.core.stop()

    def test_acks_make_the_message_delivered_and_stop_the_retries(self):
        h = Harness(self)
        h.core.start()
        d = h.core.send(h.bob.public_text, b"y" * 2000, id="m-1", delivered=True)
        while h.core.sent_real < 4:
            h.clock.advance(STEP)
        run(h.clock, 0.5)
        self.assertEqual(h.core.sent_messages, 1)  # 2001 bytes: 4 fragments of 548
        self.assertNoResult(d)
        h.ack_new(h.bob.public_key)
        run(h.clock, 3)
        self.assertEqual(self.successResultOf(d), DELIVERED)
        self.assertEqual(h.outcomes, [("m-1", DELIVERED)])
        self.assertEqual(len(h.outbox), 0)
        self.assertGreaterEqual(h.core.acks_received, 4)  # (and those of early retries)
        self.assertEqual(h.core.delivered, 1)
        # nothing more goes to Bob: no retry after the acks
        before = len(h.to(h.bob.public_key))
        run(h.clock, 30)
        self.assertEqual(len(h.to(h.bob.public_key)), before)
        self.assertEqual(h.network.messages_to(h.bob, h.links.packets), [b"y" * 2000])
        # the acks were acked to the gateway like any record
        self.assertEqual(h.link.mail, [])
        h.core.stop()

    def test_cover_acks_are_dropped(self):
        h = Harness(self)
        h.core.start()
        run(h.clock, 5)
        for _, packet in h.links.packets:
            h._next_id += 1
            h.link.mail.append((h._next_id, h.network.ack_record(packet)))
        n = len(h.link.mail)
        run(h.clock, 5)
        self.assertGreaterEqual(h.core.unreadable, n)
        self.assertEqual((h.core.acks_received, h.core.fetch()), (0, []))
        h.core.stop()

    def test_a_975_byte_record_from_an_old_gateway_is_split(self):
        # A gateway from before issue 12 stores the whole message, SURB-ACK
        # included; the recipient cuts it off itself.
        h = Harness(self)
        other = KeyPair.generate()
        route = h.network.topology().route(h.network.gateway, random.Random(1))
        surb_ack = build_surb_ack(route, other.public_key, bytes(32), 5, 0, 0, [0] * 4)
        [fragment] = fragment_message(Message.from_text("through an old gateway"))
        record = compose_payload(surb_ack, seal_fragment(h.keys.public_key, fragment))
        self.assertEqual(len(record), SURB_ACK_SIZE + 608)
        h.link.mail = [(1, record)]
        h.core.start()
        run(h.clock, 3)
        self.assertEqual(h.core.fetch(), [b"through an old gateway"])
        h.core.stop()


class RetryTests(SynchronousTestCase):
    def test_no_ack_retries_up_to_the_cap_then_failed(self):
        h = Harness(self, maximum_retransmissions=2)
        ticks = []
        tick = h.core._sending.f
        h.core._sending.f = lambda: (ticks.append(1), tick())[1]
        h.core.start()
        d = h.core.send(h.bob.public_text, "lost", id="m-2", delivered=True)
        run(h.clock, 120)
        self.failureResultOf(d, DeliveryFailed)
        self.assertEqual(h.outcomes, [("m-2", FAILED)])
        self.assertEqual(len(h.outbox), 0)
        packets = h.to(h.bob.public_key)
        self.assertEqual(len(packets), 3)  # the first send and two retries, no more
        self.assertEqual(h.core.sent_retries, 2)
        # every retry is built afresh: its own packet, SURB-ACK (attempt) and envelope
        wholes = [h.network.unwrap_whole(p)[1] for p in packets]
        self.assertEqual(len({w[:SURB_ACK_SIZE] for w in wholes}), 3)
        self.assertEqual(len({w[SURB_ACK_SIZE:] for w in wholes}), 3)
        attempts = [open_ack(h.outbox.ack_key, parse_delivery(h.network.ack_record(p))[0])
                    for p in packets]
        self.assertEqual([(a.number, a.index, a.attempt) for a in attempts],
                         [(1, 0, 0), (1, 0, 1), (1, 0, 2)])
        # the recipient gets it once all the same
        self.assertEqual(h.network.messages_to(h.bob, h.links.packets), [b"lost"])
        # never an extra packet: each tick of the sending stream sent exactly
        # one, and every packet is the sending stream's or the loop stream's
        self.assertEqual(len(ticks), h.core.sent_real + h.core.sent_retries + h.core.sent_drop)
        self.assertEqual(len(h.links.packets), len(ticks) + h.core.sent_loop)
        h.core.stop()

    def test_no_retry_is_burned_while_the_own_gateway_cannot_be_pulled(self):
        h = Harness(self, maximum_retransmissions=2)
        h.core.start()
        run(h.clock, 1)
        down = {"down": True}
        pull = h.link.pull

        def failing_pull(limit=100):
            if down["down"]:
                return fail(ConnectionRefusedError("the gateway restarts"))
            return pull(limit)
        h.link.pull = failing_pull
        h.core.send(h.bob.public_text, "waits", id="w")
        run(h.clock, 120)  # far past the cap's three round trips
        self.assertEqual(h.outcomes, [])
        self.assertEqual(len(h.to(h.bob.public_key)), 1)  # the first send only
        self.assertEqual(h.core.sent_retries, 0)
        down["down"] = False  # the gateway is back: the retry goes, and is acked
        run(h.clock, 3)
        self.assertEqual(len(h.to(h.bob.public_key)), 2)
        h.ack_new(h.bob.public_key)
        run(h.clock, 3)
        self.assertEqual(h.outcomes, [("w", DELIVERED)])
        h.core.stop()

    def test_a_retry_waits_for_its_round_trip_estimate(self):
        # delays of 0 ms cannot be configured; 1 ms per hop, a 1000 ms addition
        # and five fetch intervals of 100 ms: no retry before 1.5 s after the first send
        h = Harness(self, average_packet_delay=1, average_ack_delay=1,
                    message_sending_average_delay=50, ack_wait_addition=1000,
                    fetch_message_delay=100)
        h.core.start()
        h.core.send(h.bob.public_text, "x")
        first = None
        for _ in range(200):
            h.clock.advance(0.01)
            if h.to(h.bob.public_key):
                first = h.clock.seconds()
                break
        self.assertIsNotNone(first)
        while h.clock.seconds() < first + 1.49:
            h.clock.advance(0.01)
        self.assertEqual(len(h.to(h.bob.public_key)), 1)
        run(h.clock, 0.4, 0.01)  # the next slot of the stream after the deadline
        self.assertEqual(len(h.to(h.bob.public_key)), 2)
        h.core.stop()

    def test_a_lost_fragment_alone_is_sent_again(self):
        h = Harness(self)
        h.core.start()
        d = h.core.send(h.bob.public_text, b"z" * 1500, delivered=True)  # 3 fragments
        run(h.clock, 3)
        packets = h.to(h.bob.public_key)
        self.assertEqual(len(packets), 3)
        # fragment 1's packet is lost; 0 and 2 are acked
        for i in (0, 2):
            h._next_id += 1
            h.link.mail.append((h._next_id, h.network.ack_record(packets[i])))
        run(h.clock, 15)
        again = h.to(h.bob.public_key)[3:]
        self.assertGreaterEqual(len(again), 1)
        refs = [open_ack(h.outbox.ack_key, parse_delivery(h.network.ack_record(p))[0])
                for p in again]
        # only fragment 1 goes again (0 and 2 may have gone before their acks came)
        late = [(r.index, r.attempt) for r in refs if r.index == 1]
        self.assertEqual(late, [(1, a) for a in range(1, len(late) + 1)])
        self.assertTrue(all(r.attempt == 1 for r in refs if r.index != 1))
        h._next_id += 1
        retry = again[[r.index for r in refs].index(1)]
        h.link.mail.append((h._next_id, h.network.ack_record(retry)))
        run(h.clock, 3)
        self.assertEqual(self.successResultOf(d), DELIVERED)
        h.core.stop()


class RestartTests(SynchronousTestCase):
    def test_messages_queued_at_a_stop_go_out_after_a_restart_and_are_acked(self):
        path = self.mktemp()
        first = Harness(self, outbox_path=path)
        first.core.start()
        for i in range(3):
            d = first.core.send(first.bob.public_text, f"queued {i}", id=f"q{i}")
            d.addErrback(lambda f: None)  # the client stops before they leave
        self.assertEqual(len(first.outbox), 3)
        first.core.stop()
        first.outbox.close()
        self.assertEqual(first.to(first.bob.public_key), [])
        # a new client on the same files: same keys, same outbox (and ack key)
        second = Harness(self, outbox_path=path, network=first.network, keys=first.keys,
                         clock=first.clock)
        second.bob = first.bob
        second.core.start()
        run(second.clock, 10)
        self.assertEqual(sorted(second.network.messages_to(second.bob, second.links.packets)),
                         [b"queued 0", b"queued 1", b"queued 2"])
        second.ack_new(second.bob.public_key)
        run(second.clock, 3)
        self.assertEqual(sorted(second.outcomes), [(f"q{i}", DELIVERED) for i in range(3)])
        self.assertEqual(len(second.outbox), 0)
        second.core.stop()

    def test_restored_outcomes_before_the_application_is_back_are_kept_for_it(self):
        # Alice killed with packets in flight: their acks wait at her gateway
        # and come with the restarted client's first pull, before her
        # application has connected again and subscribed
        path = self.mktemp()
        first = Harness(self, outbox_path=path)
        first.core.start()
        for i in range(2):
            first.core.send(first.bob.public_text, f"flying {i}", id=f"f{i}")
        run(first.clock, 3)
        packets = first.to(first.bob.public_key)
        self.assertEqual(len(packets), 2)
        first.core.stop()
        first.outbox.close()
        second = Harness(self, outbox_path=path, network=first.network, keys=first.keys,
                         clock=first.clock, listen=False)
        for n, packet in enumerate(packets):
            second.link.mail.append((n + 1, second.network.ack_record(packet)))
        ids_only = []
        second.core.on_outcome(lambda i, o: ids_only.append(i), every=False)
        second.core.start()
        run(second.clock, 2)
        self.assertEqual(len(second.outbox), 0)  # delivered, with nobody to hear it
        self.assertEqual(sorted(ids_only), ["f0", "f1"])  # a connection's own ids: live only
        written = []
        push = Push(second.core, lambda data, binary: written.append(json.loads(data)) or True)
        push.watch_outcome("x")  # first an id, then every outcome
        self.assertEqual(written, [])
        push.watch_outcome(None)
        self.assertEqual(sorted(w["id"] for w in written), ["f0", "f1"])
        self.assertEqual({w["type"] for w in written}, {DELIVERED})
        later = []
        second.core.on_outcome(lambda i, o: later.append(i))
        self.assertEqual(later, [])  # heard once, by the first
        second.core.stop()

    def test_a_client_killed_right_after_an_outcome_reports_it_again(self):
        # the event may still be in the API transport's buffer when the
        # process dies: the row outlives it by REPORT_GRACE, so a restart
        # in that time reports it again (at least once, never lost)
        path = self.mktemp()
        first = Harness(self, outbox_path=path)
        first.core.start()
        first.core.send(first.bob.public_text, "just acked", id="k")
        run(first.clock, 3)
        first.ack_new(first.bob.public_key)
        run(first.clock, 0.5)
        self.assertEqual(first.outcomes, [("k", DELIVERED)])
        self.assertEqual(first.core.unacknowledged, 0)
        self.assertEqual(len(first.outbox), 1)  # the row, for the grace
        # killed now: a new client on the same file (its own clock)
        second = Harness(self, outbox_path=path, network=first.network, keys=first.keys,
                         listen=False)
        second.core.start()
        run(second.clock, 0.5)
        self.assertEqual(second.to(first.bob.public_key), [])  # nothing sent again
        heard = []
        second.core.on_outcome(lambda i, o: heard.append((i, o)))
        self.assertEqual(heard, [("k", DELIVERED)])
        second.core.stop()
        # the first, had it lived: the row goes after the grace
        run(first.clock, 1)
        self.assertEqual(len(first.outbox), 0)
        first.core.stop()

    def test_a_message_half_acked_before_a_restart_sends_only_the_rest(self):
        path = self.mktemp()
        first = Harness(self, outbox_path=path)
        first.core.start()
        first.core.send(first.bob.public_text, b"h" * 1500, id="half")  # 3 fragments
        run(first.clock, 3)
        packets = first.to(first.bob.public_key)
        self.assertEqual(len(packets), 3)
        first.link.mail.append((1, first.network.ack_record(packets[0])))
        run(first.clock, 2)
        first.core.stop()
        first.outbox.close()
        second = Harness(self, outbox_path=path, network=first.network, keys=first.keys,
                         clock=first.clock)
        second.core.start()
        run(second.clock, 5)
        again = second.to(first.bob.public_key)
        self.assertEqual(sorted(open_ack(second.outbox.ack_key,
                                         parse_delivery(second.network.ack_record(p))[0]).index
                                for p in again[:2]), [1, 2])
        # same set id: the recipient reassembles first sends and retries together
        self.assertEqual(second.network.messages_to(
            first.bob, [(None, p) for p in packets[:1] + again[:2]]), [b"h" * 1500])
        second.core.stop()


class ConfigTests(SynchronousTestCase):
    def test_reliable_section_defaults_and_bounds(self):
        c = ClientConfig.new(self.mktemp(), "A")
        self.assertEqual((c.maximum_retransmissions, c.ack_wait_multiplier,
                          c.ack_wait_addition, c.average_ack_delay), (5, 150, 1500, 200))
        again = ClientConfig.from_toml(c.to_toml())
        self.assertEqual(again, c)
        self.assertIn("[reliable]", c.to_toml())
        for bad in (dict(maximum_retransmissions=-1), dict(maximum_retransmissions=21),
                    dict(maximum_retransmissions=True), dict(ack_wait_multiplier=99),
                    dict(ack_wait_addition=-5), dict(average_ack_delay=0)):
            e = self.assertRaises(ConfigError, ClientConfig.new, self.mktemp(), "A", **bad)
            self.assertIn(next(iter(bad)), str(e))
        self.assertEqual(ClientConfig.new(self.mktemp(), "A",
                                          maximum_retransmissions=0).maximum_retransmissions, 0)


class InboxTagTests(SynchronousTestCase):
    def test_a_sender_tag_survives_the_inbox(self):
        path = self.mktemp()
        inbox = Inbox(path, Clock())
        tagged = Message(1, "hé".encode(), b"T" * 16)
        plain = Message(2, b"\x00\x01")
        inbox.commit([1, 2], [tagged, plain])
        inbox.close()
        inbox = Inbox(path, Clock())
        self.addCleanup(inbox.close)
        self.assertEqual([m for _, m in inbox.peek()], [tagged, plain])
        self.assertEqual(inbox.take_all(), [tagged, plain])


class ConnectSettingsTests(SynchronousTestCase):
    def test_connect_takes_the_reliable_keys_for_this_run(self):
        from nymtx.client import connect
        network = FakeNetwork()
        root = self.mktemp()
        client = self.successResultOf(connect(
            Clock(), root, "Alice", "http://directory.invalid",
            directory=FakeDirectory(network.topology), register=network.register,
            links=FakeLinks(), gateway_link=FakeGatewayLink(), maximum_retransmissions=0))
        self.assertEqual(client.config.maximum_retransmissions, 0)
        self.successResultOf(client.stop())
        failure = self.failureResultOf(connect(
            Clock(), root, "Alice", directory=FakeDirectory(network.topology),
            links=FakeLinks(), gateway_link=FakeGatewayLink(), maximum_retransmissions=99),
            ConfigError)
        self.assertIn("maximum_retransmissions", str(failure.value))


class ApiOutcomeTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness(self)
        self.h.core.start()
        self.dispatcher = ApiDispatcher(self.h.core)
        self.written = []
        self.push = Push(self.h.core, lambda data, binary: self.written.append(data) or True)

    def send(self, request):
        answer = self.dispatcher.answer_bytes(json.dumps(request).encode(), push=self.push)
        answer.sent()
        return answer.response

    def test_a_send_without_id_hears_nothing_new(self):
        self.assertEqual(self.send({"type": "send", "message": "hi",
                                    "recipient_address": self.h.bob.public_text}),
                         {"type": "send"})
        run(self.h.clock, 3)
        self.h.ack_new(self.h.bob.public_key)
        run(self.h.clock, 3)
        self.assertEqual(self.h.outcomes[0][1], DELIVERED)
        self.assertEqual(self.written, [])  # a seed client sees exactly what it saw

    def test_a_send_with_id_hears_delivered(self):
        self.assertEqual(self.send({"type": "send", "message": "hi", "id": "abc",
                                    "recipient_address": self.h.bob.public_text}),
                         {"type": "send"})
        run(self.h.clock, 3)
        self.h.ack_new(self.h.bob.public_key)
        run(self.h.clock, 3)
        self.assertEqual([json.loads(w) for w in self.written],
                         [{"type": "delivered", "id": "abc"}])

    def test_failed_event_and_subscribe_outcomes(self):
        h = Harness(self, maximum_retransmissions=0)
        h.core.start()
        dispatcher = ApiDispatcher(h.core)
        written = []
        push = Push(h.core, lambda data, binary: written.append(data) or True)
        answer = dispatcher.answer_bytes(b'{"type":"subscribe","outcomes":true}', push=push)
        answer.sent()
        self.assertEqual(answer.response, {"type": "subscribe"})
        h.core.send(h.bob.public_text, "to nobody", id="lost-1")
        frame = bytes((BINARY_SEND_ID, 2)) + b"b2" + h.bob.public_key + b"bin"
        self.assertEqual(dispatcher.answer_binary(frame, push).response, {"type": "send"})
        run(h.clock, 30)
        self.assertEqual(sorted(json.loads(w)["id"] for w in written), ["b2", "lost-1"])
        self.assertEqual({json.loads(w)["type"] for w in written}, {"failed"})

    def test_bad_ids_are_refused(self):
        for bad in (5, "", "x" * 201, None, "\ud800"):
            r = self.send({"type": "send", "message": "hi", "id": bad,
                           "recipient_address": self.h.bob.public_text})
            self.assertEqual(r["type"], "error", bad)
            self.assertIn("'id'", r["message"])
        r = self.send({"type": "subscribe", "outcomes": "yes"})
        self.assertEqual(r["type"], "error")
        e = self.assertRaises(SendError, self.h.core.send, self.h.bob.public_text, "a", id="")
        self.assertIn("message id", str(e))
        self.h.core.send(self.h.bob.public_text, "a", id="dup")
        e = self.assertRaises(SendError, self.h.core.send, self.h.bob.public_text, "b", id="dup")
        self.assertIn("already in the outbox", str(e))

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.sampled_from(["type", "message", "data", "id", "outcomes",
                                            "recipient_address"]),
                           st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=250),
                                     st.sampled_from(["send", "subscribe"]))))
    def test_any_send_or_subscribe_request_gets_an_answer(self, request):
        answer = self.dispatcher.answer_bytes(json.dumps(request).encode(), push=self.push)
        self.assertIn(answer.response["type"], ("send", "subscribe", "error"))


class BinaryFrameTests(SynchronousTestCase):
    KEY = bytes(range(1, 33))
    GATEWAY = bytes(range(33, 65))

    def test_layouts(self):
        recipient, data, mid = parse_binary_send(bytes((BINARY_SEND_ID, 3)) + b"m-1"
                                                 + self.KEY + b"hi")
        self.assertEqual((data, mid), (b"hi", "m-1"))
        self.assertFalse("@" in recipient)
        recipient, data, mid = parse_binary_send(bytes((BINARY_SEND_VIA_ID, 1)) + b"z"
                                                 + self.KEY + self.GATEWAY)
        self.assertEqual((data, mid), (b"", "z"))
        self.assertIn("@", recipient)
        self.assertEqual(parse_binary_send(b"\x00" + self.KEY + b"x")[2], None)
        for bad, why in [(b"\x02", "id length"), (b"\x02\x00", "1 to 200"),
                         (b"\x02\xc9" + bytes(300), "1 to 200"),
                         (b"\x02\x05abc", "inside its"), (b"\x02\x01\xff" + self.KEY, "UTF-8"),
                         (b"\x02\x01a" + self.KEY[:5], "too short"), (b"\x04", "unknown")]:
            e = self.assertRaises(ValueError, parse_binary_send, bad)
            self.assertIn(why, str(e))

    def test_the_documented_vector(self):
        # docs/client.md, "Binary frames"
        frame = bytes.fromhex("02017a") + bytes(range(1, 33)) + bytes.fromhex("6869")
        self.assertEqual(parse_binary_send(frame),
                         ("4wBqpZM9xaSheZzJSMawUKKwhdpChKbZ5eu5ky4Vigw", b"hi", "z"))

    @given(st.binary(max_size=400))
    def test_any_bytes_parse_or_say_why(self, frame):
        try:
            recipient, data, mid = parse_binary_send(frame)
        except ValueError:
            return
        self.assertIsInstance(data, bytes)
        self.assertTrue(mid is None or 1 <= len(mid.encode()) <= 200)

    @given(st.text(min_size=1, max_size=60), st.binary(max_size=50), st.booleans())
    def test_round_trip(self, mid, data, via):
        raw = mid.encode("utf-8", "surrogatepass")
        if len(raw) > 200:
            return
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return
        kind = BINARY_SEND_VIA_ID if via else BINARY_SEND_ID
        frame = bytes((kind, len(raw))) + raw + self.KEY + (self.GATEWAY if via else b"") + data
        _, got, got_id = parse_binary_send(frame)
        self.assertEqual((got, got_id), (data, mid))



class Gateway:
    """The gateway side as issue 12 has it, in memory: every packet the
    clients send through the fake network's mixnodes; the final hop stores
    the record for its client and sends the SURB-ACK on after 'storing'."""

    def __init__(self, network, cores):
        self.network = network
        self.cores = {c.keys.public_key: c for c in cores}
        self.seen = {c.keys.public_key: 0 for c in cores}
        self.next_id = 1
        self.delivered = []   # (destination, record)

    def _final(self, packet):
        from nymtx.sphinx import ForwardHop, process_packet
        from nymtx.sphinx.surb import process_gateway_packet
        for keys in self.network.mix_keys:
            hop = process_packet(keys.private_key, packet)
            assert isinstance(hop, ForwardHop)
            packet = hop.packet
        return process_gateway_packet(self.network.gateway_keys.private_key, packet)

    def carry(self, packet):
        from nymtx.reliable.ack import ack_packet
        from nymtx.reliable.inbound import gateway_record
        rec = gateway_record(self._final(packet))
        core = self.cores.get(rec.destination)
        if core is not None:
            self.delivered.append((rec.destination, rec.record))
            core.gateway_link.mail.append((self.next_id, rec.record))
            self.next_id += 1
        if rec.surb_ack is not None:
            self.carry(ack_packet(rec.surb_ack)[1])

    def step(self):
        for key, core in self.cores.items():
            packets = core.links.packets
            for _, packet in packets[self.seen[key]:]:
                self.carry(packet)
            self.seen[key] = len(packets)


class AnonymousReplyTests(SynchronousTestCase):
    def setUp(self):
        self.alice = Harness(self)
        self.bob = Harness(self, network=self.alice.network, keys=self.alice.bob,
                           clock=self.alice.clock)
        self.clock = self.alice.clock
        self.gateway = Gateway(self.alice.network, [self.alice.core, self.bob.core])
        self.alice.core.start()
        self.bob.core.start()

    def go(self, seconds):
        for _ in range(int(seconds / STEP)):
            self.clock.advance(STEP)
            self.gateway.step()

    def test_a_reply_round_trip_without_the_address(self):
        alice, bob = self.alice.core, self.bob.core
        delivered = alice.send_anonymous(bob.address, "hello, reply to me", reply_surbs=15,
                                         delivered=True)
        got = []
        bob.on_received(got.append)
        self.go(15)
        self.assertEqual(self.successResultOf(delivered), DELIVERED)
        [m] = got
        self.assertEqual(m.text, "hello, reply to me")
        tag = m.sender_tag
        self.assertEqual(len(tag), 16)
        self.assertEqual(bob.reply_blocks(tag), 15)
        # nothing Bob got holds Alice's address
        for destination, record in self.gateway.delivered:
            if destination == bob.keys.public_key:
                self.assertNotIn(alice.keys.public_key, record)
        answers = []
        alice.on_received(answers.append)
        first = bob.reply(tag, "first answer", delivered=True)
        second = bob.reply(tag, b"second answer", delivered=True)
        self.go(20)
        self.assertEqual(sorted(a.data for a in answers), [b"first answer", b"second answer"])
        self.assertTrue(all(a.sender_tag == tag for a in answers))
        # Alice's client sent Bob's SURB-ACKs on: his replies are delivered
        self.assertEqual(self.successResultOf(first), DELIVERED)
        self.assertEqual(self.successResultOf(second), DELIVERED)
        self.assertGreaterEqual(alice.reply_acks_sent, 2)
        self.assertEqual(bob.reply_blocks(tag), 13)  # still above the low water mark
        # a reply longer than the blocks left is refused, naming both
        e = self.assertRaises(SendError, bob.reply, tag, b"x" * 621 * 13)
        self.assertIn("a reply of 14 fragment(s)", str(e))
        self.assertIn("13 are held", str(e))

    def test_running_low_asks_for_more(self):
        alice, bob = self.alice.core, self.bob.core
        alice.send_anonymous(bob.address, "few blocks", reply_surbs=4)
        got = []
        bob.on_received(got.append)
        self.go(15)
        tag = got[0].sender_tag
        self.assertEqual(bob.reply_blocks(tag), 4)
        bob.reply(tag, "one")  # 3 left, below the low water mark: a SURB request too
        bob.reply(tag, "two")  # asked already: no second request
        self.go(30)
        # a block for each reply, one for the request, and 20 more came back
        self.assertEqual(bob.reply_blocks(tag), 1 + bob.replies.request)

    def test_blocks_survive_a_restart_and_expire(self):
        path = self.mktemp()
        bob_keys = self.alice.bob
        self.bob.core.stop()
        self.bob = Harness(self, outbox_path=path, network=self.alice.network, keys=bob_keys,
                           clock=self.clock)
        self.gateway = Gateway(self.alice.network, [self.alice.core, self.bob.core])
        self.bob.core.start()
        got = []
        self.bob.core.on_received(got.append)
        self.alice.core.send_anonymous(self.bob.core.address, "keep these", reply_surbs=12)
        self.go(15)
        tag = got[0].sender_tag
        self.bob.core.stop()
        self.bob.outbox.close()
        again = Harness(self, outbox_path=path, network=self.alice.network, keys=bob_keys,
                        clock=self.clock)
        self.assertEqual(again.core.reply_blocks(tag), 12)  # in the outbox's file
        self.clock.advance(24 * 3600 + 1)
        self.assertEqual(again.core.reply_blocks(tag), 0)  # expired with their keys
        e = self.assertRaises(SendError, again.core.reply, tag, "too late")
        self.assertIn("0 are held", str(e))

    def test_blocks_expire_with_the_first_key_of_their_route_to_be_replaced(self):
        """The layer-2 node announces its next key from t = 1 h: every block
        (each route passes it) is dropped then, not used (docs/surb.md 5.6)."""
        import attrs
        network = self.alice.network
        soon = KeyPair.generate().public_key
        network.mixnodes[1] = attrs.evolve(network.mixnodes[1], next_key=soon,
                                           next_key_from=3600 * 10 ** 9)
        alice, bob = self.alice.core, self.bob.core
        alice.refresh_topology()
        bob.refresh_topology()
        got = []
        bob.on_received(got.append)
        alice.send_anonymous(bob.address, "answer within the hour", reply_surbs=5)
        self.go(15)
        tag = got[0].sender_tag
        self.assertEqual(bob.reply_blocks(tag), 5)
        self.clock.advance(3600 - self.clock.seconds() - 1)
        self.assertEqual(bob.reply_blocks(tag), 5)
        self.clock.advance(1)
        self.assertEqual(bob.reply_blocks(tag), 0)
        self.assertRaises(SendError, bob.reply, tag, "too late")
        # and the builder forgot their keys at the same time
        self.assertEqual(alice.replies.expire(), 5)

    def test_the_reply_api(self):
        alice, bob = self.alice.core, self.bob.core
        written = []
        push = Push(bob, lambda data, binary: written.append((data, binary)) or True)
        dispatcher = ApiDispatcher(bob)
        a_written = []
        a_push = Push(alice, lambda data, binary: a_written.append((data, binary)) or True)
        a_dispatcher = ApiDispatcher(alice)
        answer = a_dispatcher.answer_bytes(json.dumps(
            {"type": "sendAnonymous", "message": "ask", "replySurbs": 3,
             "recipient_address": bob.address}).encode(), push=a_push)
        answer.sent()
        self.assertEqual(answer.response, {"type": "send"})
        dispatcher.answer_bytes(b'{"type":"subscribe"}', push=push).sent()
        self.go(15)
        [(event, binary)] = written
        event = json.loads(event)
        self.assertEqual(event["message"], "ask")
        tag = event["senderTag"]
        r = dispatcher.answer_bytes(json.dumps({"type": "reply", "senderTag": tag,
                                                "message": "answer"}).encode(), push=push)
        self.assertEqual(r.response, {"type": "reply"})
        from nymtx.client.core import parse_sender_tag
        frame = bytes((0x04,)) + parse_sender_tag(tag) + b"\x00binary answer"
        self.assertEqual(dispatcher.answer_binary(frame, push).response, {"type": "reply"})
        a_dispatcher.answer_bytes(b'{"type":"subscribe"}', push=a_push).sent()
        self.go(20)
        import base64
        events = [json.loads(d) for d, b in a_written if not b]
        self.assertEqual(sorted(e.get("message") or base64.b64decode(e["data"]).decode()
                                for e in events), ["\x00binary answer", "answer"])
        self.assertEqual({e["senderTag"] for e in events}, {tag})
        for bad in ({"type": "reply", "senderTag": "nope!", "message": "x"},
                    {"type": "reply", "senderTag": "11111111", "message": "x"},
                    {"type": "reply", "message": "x"},
                    {"type": "sendAnonymous", "message": "x", "replySurbs": 501,
                     "recipient_address": alice.address},
                    {"type": "sendAnonymous", "message": "x", "replySurbs": "5",
                     "recipient_address": alice.address}):
            r = dispatcher.answer_bytes(json.dumps(bad).encode(), push=push).response
            self.assertEqual(r["type"], "error", bad)

    @settings(max_examples=100, deadline=None)
    @given(st.binary(max_size=120))
    def test_any_binary_reply_or_anonymous_frame_is_answered(self, rest):
        for kind in (0x04, 0x05):
            r = ApiDispatcher(self.bob.core).answer_binary(bytes((kind,)) + rest).response
            self.assertIn(r["type"], ("reply", "send", "error"))


class OnALocalNetwork(TestCase):
    """Real nodes on loopback, real clients, real time: with the gateway of
    this tree the message arrives exactly once and the sender hears its
    outcome; a gateway that keeps the whole message (no acks) makes the
    sender retry exactly up to the cap and report failed."""

    timeout = 60

    def test_a_message_arrives_once_and_its_outcome_is_heard(self):
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred
        from twisted.internet.task import deferLater
        from nymtx.client import connect
        from nymtx.localnet import LocalNetwork, Timing, plan

        fast = dict(average_packet_delay=5, loop_cover_traffic_average_delay=100,
                    message_sending_average_delay=10, fetch_message_delay=50,
                    average_ack_delay=5, maximum_retransmissions=2,
                    # nym's addition (1.5 s): with 100 ms a loaded machine
                    # let the last retry time out while its acks were on
                    # the way, and the message "failed" though it arrived
                    ack_wait_addition=1500)

        async def run():
            home = self.mktemp()
            net = LocalNetwork(reactor, home, plan(1, 1, 0),
                               timing=Timing(presence_interval=0.1, metrics_interval=0.5,
                                             expiry=1.0))
            net.startService()
            self.addCleanup(net.stopService)
            url = await net.whenReady()
            alice = await connect(reactor, home, "Alice", url, **fast)
            self.addCleanup(alice.stop)
            bob = await connect(reactor, home, "Bob", url, **fast)
            self.addCleanup(bob.stop)
            got = []
            bob.on_message(got.append)
            outcome = alice.send(bob.full_address, b"once " * 300, id="real", delivered=True)
            result = []
            outcome.addBoth(result.append)
            for _ in range(400):
                if result and got:
                    break
                await deferLater(reactor, 0.05, lambda: None)
            await deferLater(reactor, 0.5, lambda: None)  # duplicates would be in by now
            self.assertEqual(got, [b"once " * 300])
            [r] = result
            fragments = 3  # 1501 bytes: 3 fragments of 548
            self.assertEqual(r, DELIVERED)
            # retries are capped: every fragment went at most 1 + 2 times
            self.assertLessEqual(alice.core.sent_retries, 2 * fragments)
            self.assertEqual(alice.core.unacknowledged, 0)
        return Deferred.fromCoroutine(run())
