"""The sending side of the message layer: the bounded queue and the stream tick."""

import collections
import os
import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair
from nymtx.message import (
    FRAGMENT_DATA_SIZE, KIND_BINARY, DropCover, Message, MessageTooLarge, QueueFull,
    Reassembler, Receiver, RecipientKeyError, SendingStream, SendQueue, drop_gateway, open_payload)
from nymtx.poisson import PoissonLoop
from nymtx.topology import GatewayInfo, Topology

BOB = KeyPair.generate(random.Random(1).randbytes)
GATEWAY = KeyPair.generate(random.Random(3).randbytes)


def binary(size):
    return Message(KIND_BINARY, os.urandom(size))


class SendQueueTests(SynchronousTestCase):
    def test_too_large_names_both_sizes(self):
        q = SendQueue(max_message_size=100)
        e = self.assertRaises(MessageTooLarge, q.enqueue, BOB.public_key, binary(101))
        self.assertEqual(str(e), "message too long. Sent 101 bytes, but the maximum is 100")
        self.assertEqual(len(q), 0)

    def test_unusable_recipient_key_refused_at_once(self):
        q = SendQueue()
        for key in (bytes(32), b"\x01" + bytes(31), b"short"):
            self.assertRaises(RecipientKeyError, q.enqueue, key, binary(1))
        self.assertEqual(len(q), 0)

    def test_bounded_in_messages(self):
        q = SendQueue(max_messages=2)
        q.enqueue(BOB.public_key, binary(1))
        q.enqueue(BOB.public_key, binary(1))
        e = self.assertRaises(QueueFull, q.enqueue, BOB.public_key, binary(1))
        self.assertIn("2 messages", str(e))
        self.assertEqual(len(q), 2)

    def test_bounded_in_bytes_with_backpressure(self):
        q = SendQueue(max_message_size=3 * FRAGMENT_DATA_SIZE,
                      max_bytes=4 * FRAGMENT_DATA_SIZE)
        q.enqueue(BOB.public_key, binary(3 * FRAGMENT_DATA_SIZE - 1))
        self.assertEqual(q.queued_bytes, 3 * FRAGMENT_DATA_SIZE)
        e = self.assertRaises(QueueFull, q.enqueue, BOB.public_key,
                              binary(2 * FRAGMENT_DATA_SIZE))
        self.assertIn(f"over the {4 * FRAGMENT_DATA_SIZE}-byte bound", str(e))
        # as fragments leave, their bytes are released and the queue takes more
        q.sent(q.peek())
        q.sent(q.peek())
        self.assertEqual(q.queued_bytes, FRAGMENT_DATA_SIZE)
        q.enqueue(BOB.public_key, binary(2 * FRAGMENT_DATA_SIZE))
        self.assertEqual(len(q), 2)

    def test_bound_must_hold_one_message(self):
        self.assertRaises(ValueError, SendQueue, max_message_size=1000, max_bytes=1000)
        self.assertRaises(ValueError, SendQueue, max_messages=0)

    def test_messages_take_turns(self):
        q = SendQueue()
        big = q.enqueue(BOB.public_key, binary(3 * FRAGMENT_DATA_SIZE))
        q.enqueue(BOB.public_key, binary(5))
        order = []
        while (p := q.peek()) is not None:
            order.append((p.outgoing is big, p.index))
            q.sent(p)
        self.assertEqual(order, [(True, 0), (False, 0), (True, 1), (True, 2), (True, 3)])
        self.assertEqual(q.queued_bytes, 0)

    def test_unsendable_keep_their_place(self):
        q = SendQueue()
        first = q.enqueue(BOB.public_key, binary(5), destination="nowhere")
        second = q.enqueue(BOB.public_key, binary(5), destination="here")
        p = q.peek(lambda o: o.destination == "here")
        self.assertIs(p.outgoing, second)
        q.sent(p)
        self.assertIs(q.peek().outgoing, first)

    def test_sent_checks_its_fragment(self):
        q = SendQueue()
        q.enqueue(BOB.public_key, binary(2 * FRAGMENT_DATA_SIZE))
        p = q.peek()
        q.sent(p)
        self.assertRaises(ValueError, q.sent, p)

    def test_fragments_reassemble(self):
        q = SendQueue()
        m = binary(4 * FRAGMENT_DATA_SIZE + 17)
        q.enqueue(BOB.public_key, m)
        r = Reassembler(Clock().seconds)
        out = []
        while (p := q.peek()) is not None:
            out.append(r.add(p.fragment))
            q.sent(p)
        self.assertEqual(out[-1], m)

    def test_clear(self):
        q = SendQueue()
        a = q.enqueue(BOB.public_key, binary(5))
        self.assertEqual(q.clear(), [a])
        self.assertEqual((len(q), q.queued_bytes), (0, 0))


class StreamTests(SynchronousTestCase):
    def make(self, queue, clock, seed, sendable=None, real_ok=True):
        sends = []

        def send_real(outgoing, payload):
            if not real_ok:
                return False
            sends.append((clock.seconds(), "real", outgoing.recipient_key, payload))
            return True

        def send_drop(seal):
            sends.append((clock.seconds(), "drop", GATEWAY.public_key, seal(GATEWAY.public_key)))

        done = []
        stream = SendingStream(queue, send_real, send_drop, on_sent=done.append,
                               sendable=sendable)
        loop = PoissonLoop(stream.tick, 0.5, clock, random.Random(seed))
        return stream, loop, sends, done

    def test_rate_does_not_depend_on_the_queue(self):
        # Same seed, one client idle and one sending a long message: the
        # packets leave at exactly the same instants; only the content differs.
        runs = []
        for busy in (False, True):
            clock = Clock()
            q = SendQueue()
            if busy:
                q.enqueue(BOB.public_key, binary(150 * FRAGMENT_DATA_SIZE))
            stream, loop, sends, done = self.make(q, clock, seed=7)
            loop.start()
            clock.pump([0.05] * 2000)
            loop.stop()
            runs.append(sends)
        idle, busy = runs
        self.assertGreater(len(idle), 150)
        self.assertEqual([t for t, *_ in idle], [t for t, *_ in busy])
        self.assertEqual({kind for _, kind, *_ in idle}, {"drop"})
        kinds = collections.Counter(kind for _, kind, *_ in busy)
        self.assertEqual(kinds["real"], 151)
        self.assertEqual(kinds["drop"], len(busy) - 151)
        self.assertEqual({len(p) for *_, p in idle + busy}, {608})

    def test_delivered_once_and_drops_open_at_the_gateway(self):
        clock = Clock()
        q = SendQueue()
        messages = [binary(3 * FRAGMENT_DATA_SIZE), binary(10), Message.from_text("héllo")]
        for m in messages:
            q.enqueue(BOB.public_key, m, context=m)
        stream, loop, sends, done = self.make(q, clock, seed=1)
        loop.start()
        clock.pump([0.1] * 200)
        loop.stop()
        self.assertEqual([o.context for o in done], [messages[1], messages[2], messages[0]])
        receiver = Receiver(BOB.private_key, BOB.public_key, Reassembler(clock.seconds))
        got = [receiver.receive(p) for _, kind, _, p in sends if kind == "real"]
        self.assertEqual(sorted((m for m in got if m), key=repr), sorted(messages, key=repr))
        drops = [p for _, kind, _, p in sends if kind == "drop"]
        self.assertGreater(len(drops), 0)
        for p in drops:
            self.assertEqual(open_payload(GATEWAY.private_key, GATEWAY.public_key, p),
                             DropCover())
            self.assertIsNone(receiver.receive(p))
        # a drop is sealed to the gateway: to Bob it is someone else's payload
        self.assertEqual(receiver.stats.not_for_me, len(drops))

    def test_unroutable_fragment_waits_and_drop_goes_instead(self):
        clock = Clock()
        q = SendQueue()
        q.enqueue(BOB.public_key, binary(10))
        stream, loop, sends, done = self.make(q, clock, seed=2, real_ok=False)
        for _ in range(3):
            self.assertFalse(stream.tick())
        self.assertEqual([kind for _, kind, *_ in sends], ["drop"] * 3)
        self.assertEqual(stream.failed, 3)
        self.assertEqual(len(q), 1)
        self.assertEqual(done, [])

    def test_nothing_sendable_sends_drop(self):
        clock = Clock()
        q = SendQueue()
        q.enqueue(BOB.public_key, binary(10))
        stream, loop, sends, done = self.make(q, clock, seed=2, sendable=lambda o: False)
        self.assertFalse(stream.tick())
        self.assertEqual((stream.real_sent, stream.drop_sent, stream.failed), (0, 1, 0))


def gateway(i, clients):
    return GatewayInfo(address=NodeAddress.parse(f"10.0.0.{i}:1789"),
                       client_listener=NodeAddress.parse(f"10.0.0.{i}:9000"),
                       public_key=bytes([i]) * 32,
                       registered_clients=tuple(bytes([100 + i, j]) * 16 for j in range(clients)))


class DropGatewayTests(SynchronousTestCase):
    def test_in_proportion_to_clients(self):
        topology = Topology(gateways=[gateway(1, 1), gateway(2, 3), gateway(3, 0)])
        rng = random.Random(4)
        picks = collections.Counter(drop_gateway(topology, rng).public_key[0]
                                    for _ in range(4000))
        self.assertNotIn(3, picks)
        self.assertLess(abs(picks[2] / 4000 - 0.75), 0.04)

    def test_no_clients_uniform(self):
        topology = Topology(gateways=[gateway(1, 0), gateway(2, 0)])
        rng = random.Random(5)
        picks = collections.Counter(drop_gateway(topology, rng).public_key[0]
                                    for _ in range(2000))
        self.assertLess(abs(picks[1] / 2000 - 0.5), 0.05)

    def test_no_gateways(self):
        self.assertIsNone(drop_gateway(Topology(), random.Random()))


class ThroughTheNetworkTests(SynchronousTestCase):
    """Payloads from the stream through real Sphinx hops into a real gateway store."""

    def test_gateway_stores_ciphertext_only_and_drops_drop_cover(self):
        from nymtx.gateway.mix import FinalHopHandler
        from nymtx.gateway.store import MailboxStore
        from nymtx.sphinx import ForwardHop, Hop, build_packet, process_packet

        clock = Clock()
        store = MailboxStore.open(clock, ":memory:")
        store.register(BOB.public_key, b"token")
        handler = FinalHopHandler(clock, GATEWAY.private_key, store)
        mixes = [KeyPair.generate(random.Random(20 + i).randbytes) for i in range(3)]
        route = [Hop(NodeAddress.parse(f"127.0.0.1:{3000 + i}").to_bytes(), k.public_key)
                 for i, k in enumerate(mixes)]
        route.append(Hop(NodeAddress.parse("127.0.0.1:3999").to_bytes(), GATEWAY.public_key))

        def deliver(destination, payload):
            packet = build_packet(route, destination, bytes(16), payload, [0] * 4)
            for k in mixes:
                out = process_packet(k.private_key, packet)
                self.assertIsInstance(out, ForwardHop)
                packet = out.packet
            handler.packet_received(packet)

        secret = b"attack at dawn " * 200
        q = SendQueue()
        q.enqueue(BOB.public_key, Message.from_text(secret.decode()))
        stream = SendingStream(
            q, send_real=lambda o, p: deliver(o.recipient_key, p) or True,
            # drop cover ends at the gateway: its own key in the final slot
            send_drop=lambda seal: deliver(GATEWAY.public_key, seal(GATEWAY.public_key)))
        for _ in range(10):
            stream.tick()
        clock.advance(1)
        store.flush()
        # 3000 bytes: 6 fragments of 548
        self.assertEqual((stream.real_sent, stream.drop_sent), (6, 4))
        # drop cover is addressed to the gateway itself: discarded (its ack sent)
        self.assertEqual(handler.dropped["drop_cover"], 4)
        stored = store.pull(BOB.public_key, 100)
        self.assertEqual(len(stored), 6)
        rows = store.db.execute("SELECT * FROM messages").fetchall()
        dump = b"".join(bytes(c) if isinstance(c, (bytes, memoryview)) else str(c).encode()
                        for row in rows for c in row)
        self.assertGreater(len(dump), 6 * 608)
        for word in (b"attack", b"dawn", secret[:16]):
            self.assertNotIn(word, dump)
        receiver = Receiver(BOB.private_key, BOB.public_key, Reassembler(clock.seconds))
        got = [m for m in (receiver.receive(body) for _, body in stored) if m]
        self.assertEqual([m.text for m in got], [secret.decode()])
