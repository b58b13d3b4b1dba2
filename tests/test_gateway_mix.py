import os

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from nymtx import sphinx
from nymtx.addressing import NodeAddress
from nymtx.gateway import mix
from nymtx.gateway.mix import FinalHopHandler, MixListenerFactory
from nymtx.gateway.store import MailboxStore
from nymtx.keys import KeyPair


class FinalHop(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = MailboxStore.open(self.clock, os.path.join(self.mktemp()))
        self.addCleanup(self.store.close)
        self.keys = KeyPair.generate()
        self.client = KeyPair.generate()
        self.store.register(self.client.public_key, b"t" * 32)
        self.handler = FinalHopHandler(self.clock, self.keys.private_key, self.store)
        self.gateway_hop = sphinx.Hop(NodeAddress.parse("127.0.0.1:1789").to_bytes(),
                                      self.keys.public_key)

    def packet(self, message=b"hello", delay_ns=250_000_000, destination=None, route=None):
        return sphinx.build_packet(
            route or [self.gateway_hop], destination or self.client.public_key,
            b"\x00" * 16, message, [delay_ns] * len(route or [1]))

    def test_held_for_delay_then_stored(self):
        self.handler.packet_received(self.packet(delay_ns=250_000_000))
        self.assertEqual(self.handler.held, 1)
        self.clock.advance(0.2)
        self.assertEqual(self.store.usage(self.client.public_key), (0, 0))
        self.clock.advance(0.1)
        self.assertEqual(self.handler.held, 0)
        self.store.flush()
        [(_, message)] = self.store.pull(self.client.public_key, 10)
        self.assertEqual(message, b"hello")

    def test_unregistered_destination_dropped(self):
        stranger = KeyPair.generate()
        self.handler.packet_received(self.packet(destination=stranger.public_key, delay_ns=0))
        self.clock.advance(0)
        self.assertEqual(self.handler.dropped, {"unregistered": 1})

    def test_replay_dropped(self):
        packet = self.packet(delay_ns=0)
        self.handler.packet_received(packet)
        self.handler.packet_received(packet)
        self.clock.advance(0)
        self.assertEqual(self.handler.dropped, {mix.REPLAY: 1})
        self.assertEqual(self.store.usage(self.client.public_key)[0], 1)

    def test_garbage_dropped(self):
        self.handler.packet_received(os.urandom(sphinx.PACKET_SIZE))
        self.assertEqual(self.handler.dropped, {mix.MALFORMED: 1})

    def test_forward_hop_dropped(self):
        other = KeyPair.generate()
        route = [self.gateway_hop,
                 sphinx.Hop(NodeAddress.parse("127.0.0.1:2000").to_bytes(), other.public_key)]
        self.handler.packet_received(self.packet(route=route))
        self.assertEqual(self.handler.dropped, {mix.FORWARD_HOP: 1})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_delay_too_long_dropped(self):
        self.handler.packet_received(self.packet(delay_ns=int((self.handler.max_delay + 1) * 1e9)))
        self.assertEqual(self.handler.dropped, {mix.DELAY_TOO_LONG: 1})

    def test_over_quota_dropped(self):
        self.store.quota_messages = 1
        for _ in range(3):
            self.handler.packet_received(self.packet(delay_ns=0))
        self.clock.advance(0)
        self.assertEqual(self.handler.dropped, {"over_message_quota": 2})

    def test_overloaded(self):
        self.handler.max_held = 1
        self.handler.packet_received(self.packet())
        self.handler.packet_received(self.packet())
        self.assertEqual(self.handler.dropped, {mix.OVERLOADED: 1})

    def test_release_all(self):
        self.handler.packet_received(self.packet(delay_ns=int(10e9)))
        self.handler.release_all()
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(),
                         self.store.commit_interval)  # only the commit timer is left
        self.assertEqual(self.store.usage(self.client.public_key)[0], 1)

    def test_protocol_frames_packets(self):
        factory = MixListenerFactory(self.handler)
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        data = self.packet(delay_ns=0) + self.packet(b"two", delay_ns=0)
        proto.dataReceived(data[:100])
        proto.dataReceived(data[100:])
        self.clock.advance(0)
        self.assertEqual(self.handler.received, 2)
        self.assertEqual(self.store.usage(self.client.public_key)[0], 2)

    def test_listener_bounds_connections_and_idle_time(self):
        factory = mix.listener_factory(self.handler, max_connections=2, idle_timeout=300)
        transports = []
        for _ in range(2):
            proto = factory.buildProtocol(None)
            transports.append(StringTransport())
            proto.makeConnection(transports[-1])
        self.assertIsNone(factory.buildProtocol(None))
        self.assertEqual(factory.refused, 1)
        proto.dataReceived(self.packet(delay_ns=0)[:-1])  # all but one byte
        self.clock.advance(300)
        self.assertTrue(all(t.disconnecting for t in transports))
        proto.connectionLost(None)
        self.assertIsNotNone(factory.buildProtocol(None))
