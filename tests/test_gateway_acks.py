"""The gateway's half of reliable delivery (issue 12, docs/surb.md §2.2):
store the record, and send the SURB-ACK's packet only once the store has
committed it.

On a Clock with a real sqlite file: no ack before the commit, the ack right
after it, none when the commit fails or the process dies first; drop cover
acked with the next commit and discarded; SURB deliveries stored as
1040-byte records after their delay; a bad first hop keeps the message
and drops the ack with a logged reason.
"""

import os
import random
import sqlite3

from hypothesis import given, settings, strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx import sphinx
from nymtx.addressing import NodeAddress
from nymtx.gateway import mix
from nymtx.gateway.link import register
from nymtx.gateway.mix import FinalHopHandler
from nymtx.gateway.private_link import connect
from nymtx.gateway.service import GatewayService
from nymtx.gateway.store import MailboxStore, StoreError
from nymtx.keys import KeyPair
from nymtx.links import PacketLinks
from nymtx.mixnode.service import MixnodeService
from nymtx.reliable import ack
from nymtx.reliable.inbound import Ack, classify_record
from nymtx.sphinx.constants import MAX_MESSAGE_SIZE
from nymtx.sphinx.surb import DELIVERY_SIZE, process_gateway_packet
from nymtx.testing import FakeLinks

LOCAL = "tcp:0:interface=127.0.0.1"
ACK_KEY = bytes(range(32))


def sleep(seconds):
    d = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def deferred_test(f):
    """An async test method, run as a Deferred for trial."""
    import functools

    @functools.wraps(f)
    def run(self):
        return Deferred.fromCoroutine(f(self))
    return run
rng = random.Random(12)
GATEWAY = KeyPair.generate(rng.randbytes)
OTHER_GATEWAY = KeyPair.generate(rng.randbytes)
CLIENT = KeyPair.generate(rng.randbytes)
SENDER = KeyPair.generate(rng.randbytes)
MIXES = [KeyPair.generate(rng.randbytes) for _ in range(3)]
MIX_ROUTE = [sphinx.Hop(NodeAddress.parse(f"127.0.0.1:{4001 + i}").to_bytes(), k.public_key)
             for i, k in enumerate(MIXES)]
HERE = sphinx.Hop(NodeAddress.parse("127.0.0.1:4100").to_bytes(), GATEWAY.public_key)
SENDERS_GATEWAY = sphinx.Hop(NodeAddress.parse("127.0.0.1:4200").to_bytes(),
                             OTHER_GATEWAY.public_key)


def surb_ack(number=7, index=0, attempt=0):
    """The sender's SURB-ACK: three mixnodes, then the sender's gateway."""
    return ack.build_surb_ack(MIX_ROUTE + [SENDERS_GATEWAY], SENDER.public_key, ACK_KEY,
                              number, index, attempt, [0] * 4)


def final_packet(message, destination=None, delay_ns=0):
    """A one-hop packet that ends at this gateway (the mixnodes before it
    change nothing of what the gateway sees)."""
    return sphinx.build_packet([HERE], destination or CLIENT.public_key, bytes(16), message,
                               [delay_ns])


class CommitThenAck(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.path = os.path.join(self.mktemp())
        self.store = MailboxStore.open(self.clock, self.path, commit_interval=0.5)
        self.store.register(CLIENT.public_key, b"t" * 32)
        self.links = FakeLinks()
        # no hold: these tests are about the commit; the hold after it is
        # tests/test_ack_hold.py's
        self.handler = FinalHopHandler(self.clock, GATEWAY.private_key, self.store,
                                       links=self.links, public_key=GATEWAY.public_key,
                                       ack_hold=0)

    def tearDown(self):
        if not getattr(self, "crashed", False):
            self.store.close()

    def committed_rows(self):
        """What another reader of the file sees: committed rows only."""
        db = sqlite3.connect(self.path)
        try:
            return [bytes(b) for (b,) in db.execute("SELECT body FROM messages ORDER BY id")]
        finally:
            db.close()

    def step(self, seconds, by=0.01):
        for _ in range(round(seconds / by)):
            self.clock.advance(by)

    def test_no_ack_before_the_commit_and_the_ack_after_it(self):
        stored = os.urandom(ack.STORED_SIZE)
        sa = surb_ack()
        seen_at_send = []
        send = self.links.send

        def checking_send(address, packet):
            # the moment the ack leaves, the message must be committed
            seen_at_send.append(self.committed_rows())
            send(address, packet)
        self.links.send = checking_send
        self.handler.packet_received(final_packet(ack.compose_payload(sa, stored),
                                                  delay_ns=200_000_000))
        self.step(0.3)
        self.assertEqual(self.handler.held, 0)
        self.assertEqual(self.store.pending, 1)
        self.assertEqual(self.links.packets, [])
        self.assertEqual(self.committed_rows(), [])
        self.step(0.5)
        self.assertEqual(self.store.pending, 0)
        [(address, packet)] = self.links.packets
        self.assertEqual(seen_at_send, [[stored]])  # only the stored part, committed
        self.assertEqual(address, NodeAddress.from_bytes(MIX_ROUTE[0].address))
        self.assertEqual(len(packet), sphinx.PACKET_SIZE)
        self.assertEqual(packet[:sphinx.HEADER_SIZE], sa[ack.COMPACT_ADDRESS_SIZE:])
        self.assertEqual(self.handler.acks_sent, 1)

    def test_the_ack_reaches_the_sender_as_an_ack(self):
        self.handler.packet_received(final_packet(
            ack.compose_payload(surb_ack(41, 3, 2), bytes(ack.STORED_SIZE))))
        self.step(0.6)
        [(_, packet)] = self.links.packets
        for k in MIXES:
            packet = sphinx.process_packet(k.private_key, packet).packet
        hop = process_gateway_packet(OTHER_GATEWAY.private_key, packet)
        self.assertEqual(hop.destination, SENDER.public_key)
        self.assertEqual(len(hop.stored()), DELIVERY_SIZE)
        self.assertEqual(classify_record(hop.stored(), ACK_KEY, lambda i: None),
                         Ack(ack.AckRef(41, 3, 2)))

    def test_a_crash_before_the_commit_sends_no_ack(self):
        self.handler.packet_received(final_packet(
            ack.compose_payload(surb_ack(), bytes(ack.STORED_SIZE))))
        self.step(0.2)
        self.assertEqual(self.store.pending, 1)
        # the process dies: the connection goes without a commit, and with
        # it the buffered message and its token
        self.store._timer.cancel()
        self.store.db.close()
        self.crashed = True
        self.step(1.0)
        self.assertEqual(self.links.packets, [])
        reopened = MailboxStore.open(self.clock, self.path)
        self.addCleanup(reopened.close)
        self.assertEqual(reopened.pull(CLIENT.public_key, 10), [])

    def test_a_failed_commit_sends_no_ack(self):
        self.handler.packet_received(final_packet(
            ack.compose_payload(surb_ack(), bytes(ack.STORED_SIZE))))
        self.step(0.2)
        real = self.store.db

        class Full:
            """A disk that refuses the insert."""
            def __getattr__(self, name):
                return getattr(real, name)

            def executemany(self, *a):
                raise sqlite3.OperationalError("database or disk is full")
        self.store.db = Full()
        self.assertRaises(StoreError, self.store.flush)
        self.store.db = real
        self.assertEqual(self.store.lost, 1)
        self.step(1.0)
        self.assertEqual(self.links.packets, [])
        self.assertEqual(self.committed_rows(), [])

    def test_acks_in_the_order_of_their_commits(self):
        acks = [surb_ack(5, i) for i in range(3)]
        for sa in acks:
            self.handler.packet_received(final_packet(
                ack.compose_payload(sa, os.urandom(ack.STORED_SIZE))))
        self.step(0.6)
        headers = [p[:sphinx.HEADER_SIZE] for _, p in self.links.packets]
        self.assertEqual(headers, [sa[ack.COMPACT_ADDRESS_SIZE:] for sa in acks])
        # and their payloads are fresh random bytes, not the message
        payloads = {p[sphinx.HEADER_SIZE:] for _, p in self.links.packets}
        self.assertEqual(len(payloads), 3)

    def test_drop_cover_is_acked_with_the_next_commit_and_discarded(self):
        sa = surb_ack(ack.COVER)
        self.handler.packet_received(final_packet(
            ack.compose_payload(sa, bytes(ack.STORED_SIZE)), destination=GATEWAY.public_key))
        self.step(0.2)
        self.assertEqual(self.links.packets, [])  # not at once: with the next commit
        self.step(0.5)
        [(address, packet)] = self.links.packets
        self.assertEqual(packet[:sphinx.HEADER_SIZE], sa[ack.COMPACT_ADDRESS_SIZE:])
        self.assertEqual(self.handler.dropped, {mix.DROP_COVER: 1})
        self.assertEqual(self.committed_rows(), [])
        self.assertEqual(self.store.stored, 0)

    def test_drop_cover_ack_leaves_with_a_stored_messages_ack(self):
        cover, real = surb_ack(ack.COVER), surb_ack(9)
        self.handler.packet_received(final_packet(
            ack.compose_payload(cover, bytes(ack.STORED_SIZE)), destination=GATEWAY.public_key))
        self.handler.packet_received(final_packet(
            ack.compose_payload(real, bytes(ack.STORED_SIZE))))
        self.step(0.2)
        self.assertEqual(self.links.packets, [])
        self.store.flush()
        # one commit, in the order they came: cover is a row of the batch
        self.assertEqual([p[:sphinx.HEADER_SIZE] for _, p in self.links.packets],
                         [cover[ack.COMPACT_ADDRESS_SIZE:], real[ack.COMPACT_ADDRESS_SIZE:]])
        self.assertEqual(self.committed_rows(), [bytes(ack.STORED_SIZE)])

    def test_messages_without_a_surb_ack_are_stored_whole_and_not_acked(self):
        seed = b"a seed client's message"
        version_one = b"\x01" + os.urandom(MAX_MESSAGE_SIZE - 1)
        for message in (seed, version_one):
            self.handler.packet_received(final_packet(message))
        self.step(0.6)
        self.assertEqual(self.committed_rows(), [seed, version_one])
        self.assertEqual(self.links.packets, [])
        self.assertEqual(self.handler.dropped, {})

    def test_a_surb_delivery_is_stored_as_its_record_after_its_delay(self):
        sa = ack.build_surb_ack([HERE], CLIENT.public_key, ACK_KEY, 3, 1, 0, [300_000_000])
        _, packet = ack.ack_packet(sa)
        self.handler.packet_received(packet)
        self.step(0.25)
        self.assertEqual(self.store.pending, 0)  # still held for its delay
        self.step(0.6)
        [record] = self.committed_rows()
        self.assertEqual(len(record), DELIVERY_SIZE)
        self.assertEqual(classify_record(record, ACK_KEY, lambda i: None),
                         Ack(ack.AckRef(3, 1, 0)))
        self.assertEqual(self.links.packets, [])  # acks are not acked

    def test_a_bad_first_hop_keeps_the_message_and_drops_the_ack(self):
        stored = os.urandom(ack.STORED_SIZE)
        # family 4, port 0: not a node address
        bad = bytes([4, 0, 0]) + bytes(16) + surb_ack()[ack.COMPACT_ADDRESS_SIZE:]
        with capturedLogs() as events:
            self.handler.packet_received(final_packet(ack.compose_payload(bad, stored)))
            self.step(0.6)
        self.assertEqual(self.committed_rows(), [stored])
        self.assertEqual(self.links.packets, [])
        self.assertEqual(self.handler.dropped, {mix.BAD_ACK: 1})
        lines = [e["log_format"].format(**e) for e in events
                 if "an ack not sent" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertIn("port 0", lines[0])

    def test_an_unregistered_destination_is_not_acked(self):
        stranger = KeyPair.generate()
        self.handler.packet_received(final_packet(
            ack.compose_payload(surb_ack(), bytes(ack.STORED_SIZE)),
            destination=stranger.public_key))
        self.step(0.6)
        self.assertEqual(self.links.packets, [])
        self.assertEqual(self.handler.dropped, {"unregistered": 1})

    def test_held_packets_stored_and_acked_at_stop(self):
        self.handler.packet_received(final_packet(
            ack.compose_payload(surb_ack(), bytes(ack.STORED_SIZE)), delay_ns=10**10))
        self.handler.release_all()
        self.assertEqual(self.links.packets, [])
        self.store.close()
        self.assertEqual(len(self.links.packets), 1)

    def test_a_failing_hook_does_not_undo_the_commit(self):
        def broken(tokens):
            raise RuntimeError("boom")
        self.store._hooks.insert(0, broken)
        self.handler.packet_received(final_packet(
            ack.compose_payload(surb_ack(), bytes(ack.STORED_SIZE))))
        self.step(0.6)
        self.assertEqual(len(self.committed_rows()), 1)
        self.assertEqual(len(self.links.packets), 1)  # the next hook still ran
        self.flushLoggedErrors(RuntimeError)


class StoreHook(SynchronousTestCase):
    def test_hook_gets_the_tokens_of_each_commit(self):
        clock = Clock()
        store = MailboxStore.open(clock, ":memory:", commit_batch=2)
        self.addCleanup(store.close)
        store.register(b"k" * 32, b"t")
        seen = []
        store.add_commit_hook(seen.append)
        store.add(b"k" * 32, b"a", "A")
        store.add(b"k" * 32, b"b")          # no token
        store.add(b"k" * 32, b"c", "C")
        self.assertEqual(seen, [["A"]])     # the batch of 2 committed
        store.add(b"x" * 32, b"d", "D")     # unregistered: never committed
        clock.advance(0)
        self.assertEqual(seen, [["A"], ["C"]])


class FuzzFinalHop(SynchronousTestCase):
    """Whatever a sender puts in a 975-byte message, the gateway stores
    something and never raises; an ack goes out only for a parseable
    first hop."""

    def setUp(self):
        self.clock = Clock()
        self.store = MailboxStore.open(self.clock, ":memory:", quota_messages=10**6,
                                       quota_bytes=10**9)
        self.addCleanup(self.store.close)
        self.store.register(CLIENT.public_key, b"t")
        self.links = FakeLinks()
        self.handler = FinalHopHandler(self.clock, GATEWAY.private_key, self.store,
                                       links=self.links, public_key=GATEWAY.public_key)

    @settings(max_examples=300)
    @given(st.binary(min_size=MAX_MESSAGE_SIZE, max_size=MAX_MESSAGE_SIZE),
           st.sampled_from([None, 4, 6]), st.booleans())
    def test_any_message(self, message, family, to_gateway):
        if family is not None:
            message = bytes([family]) + message[1:]
        before = (self.store.stored, len(self.links.packets), dict(self.handler.dropped))
        destination = GATEWAY.public_key if to_gateway else CLIENT.public_key
        held = self.handler.acks_held
        self.handler.deliver(sphinx.FinalHop(destination, bytes(16), message, 0))
        self.store.flush()
        # sent now, or held for its hold (the default's): either way, after the commit
        acked = len(self.links.packets) - before[1] + self.handler.acks_held - held
        if message[0] in (4, 6):
            try:
                ack.ack_packet(message[:ack.SURB_ACK_SIZE])
                parseable = True
            except ack.AckError:
                parseable = False
            self.assertEqual(acked, 1 if parseable else 0)
        else:
            self.assertEqual(acked, 0)
        if not to_gateway:
            self.assertEqual(self.store.stored, before[0] + 1)


class ThroughRealNodes(TestCase):
    """Alice's packet, with her SURB-ACK, through three real mixnodes to
    Bob's real gateway; its ack back through the same mixnodes to Alice's
    gateway, all on loopback sockets; Alice pulls it through the private
    link as a 1040-byte record that reads as the right Ack."""

    timeout = 30

    async def gateway(self, keys):
        service = GatewayService(reactor, keys, self.mktemp(), LOCAL, LOCAL, "127.0.0.1",
                                 commit_interval=0.001)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        await service.whenListening()
        return service

    async def mixnode(self, layer):
        keys = KeyPair.generate()
        node = MixnodeService(reactor, keys, layer, LOCAL, "127.0.0.1")
        node.startService()
        self.addCleanup(node.stopService)
        port = await node.whenListening()
        return sphinx.Hop(NodeAddress.parse(f"127.0.0.1:{port.getHost().port}").to_bytes(),
                          keys.public_key)

    async def until(self, check, what):
        for _ in range(1000):
            if check():
                return
            await sleep(0.01)
        self.fail(f"never: {what}")

    async def pull(self, service, keys, gateway_key):
        address = NodeAddress.parse(f"127.0.0.1:{service.client_port}")
        link = await connect(HostnameEndpoint(reactor, address.host, address.port), keys,
                             gateway_key, reactor, address)
        self.addCleanup(link.close)
        await link.register()
        answer = await link.pull()
        return [body for _, body in answer.messages]

    @deferred_test
    async def test_a_fragment_and_its_ack(self):
        alice, bob = KeyPair.generate(), KeyPair.generate()
        keys_a, keys_b = KeyPair.generate(), KeyPair.generate()
        gw_a, gw_b = await self.gateway(keys_a), await self.gateway(keys_b)
        for service, client, gk in ((gw_a, alice, keys_a), (gw_b, bob, keys_b)):
            await register(reactor, NodeAddress.parse(f"127.0.0.1:{service.client_port}"),
                           client, gk.public_key)
        mixes = [await self.mixnode(layer) for layer in (1, 2, 3)]
        hop_a = sphinx.Hop(NodeAddress.parse(f"127.0.0.1:{gw_a.mix_port}").to_bytes(),
                           keys_a.public_key)
        hop_b = sphinx.Hop(NodeAddress.parse(f"127.0.0.1:{gw_b.mix_port}").to_bytes(),
                           keys_b.public_key)
        ack_key = os.urandom(32)
        envelope = os.urandom(ack.STORED_SIZE)
        # as tests/test_reliable_flow.py builds it (and the client will)
        surb_ack = ack.build_surb_ack(mixes + [hop_a], alice.public_key, ack_key, 17, 4, 1,
                                      [1_000_000] * 4)
        packet = sphinx.build_packet(mixes + [hop_b], bob.public_key, bytes(16),
                                     ack.compose_payload(surb_ack, envelope), [1_000_000] * 4)
        links = PacketLinks(reactor)
        self.addCleanup(links.stop)
        links.send(NodeAddress.from_bytes(mixes[0].address), packet)
        await self.until(lambda: gw_b.store.stored == 1, "Bob's gateway stores the fragment")
        await self.until(lambda: gw_a.store.stored == 1, "the ack reaches Alice's gateway")
        self.assertEqual(gw_b.handler.acks_sent, 1)
        [record] = await self.pull(gw_a, alice, keys_a.public_key)
        self.assertEqual(len(record), DELIVERY_SIZE)
        self.assertEqual(classify_record(record, ack_key, lambda i: None),
                         Ack(ack.AckRef(17, 4, 1)))
        # Bob gets the stored part, never the SURB-ACK; his gateway sent nothing else
        self.assertEqual(await self.pull(gw_b, bob, keys_b.public_key), [envelope])
        self.assertEqual(gw_a.handler.acks_sent, 0)  # acks are not acked
