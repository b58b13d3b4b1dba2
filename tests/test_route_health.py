"""Route health (nymtx.reliable.health): the client routes around a mixnode
whose packets keep going unacknowledged, blaming only the nodes not proven
alive; on a Clock."""

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nymtx.reliable.health import RouteHealth
from nymtx.reliable.retransmit import Retransmitter
from nymtx.topology import LAYERS
from tests.test_topology import small_network


class RouteHealthTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.health = RouteHealth(self.clock, strikes=3, quarantine=30.0)

    def lose(self, ref, nodes):
        self.health.sent(ref, nodes)
        self.clock.advance(1)
        self.health.lost(ref)

    def test_a_node_that_keeps_losing_is_avoided_until_its_quarantine_ends(self):
        for i in range(2):
            self.lose(i, ["dead"])
        self.assertEqual(self.health.avoid(), frozenset())  # two strikes: not yet
        self.lose(2, ["dead"])
        self.assertEqual(self.health.avoid(), {"dead"})
        self.clock.advance(29.5)
        self.assertTrue(self.health.avoided("dead"))
        self.clock.advance(1)
        self.assertEqual(self.health.avoid(), frozenset())  # tried again
        self.lose(3, ["dead"])  # one more loss: its count was never cleared
        self.assertEqual(self.health.avoid(), {"dead"})

    def test_one_ack_clears_a_node(self):
        for i in range(3):
            self.lose(i, ["a"])
        self.health.sent("ok", ["a"])
        self.health.acked("ok")
        self.assertFalse(self.health.avoided("a"))
        self.lose("again", ["a"])
        self.assertFalse(self.health.avoided("a"))  # 1 strike since the ack

    def test_a_node_that_forwarded_a_later_packet_is_not_blamed(self):
        # the live node shares every lost route with the dead one, but a
        # packet sent after each loss came back through it
        for i in range(5):
            self.health.sent(("lost", i), ["live", "dead"])
            self.clock.advance(0.1)
            self.health.sent(("ok", i), ["live", "other"])
            self.clock.advance(0.1)
            self.health.acked(("ok", i))
            self.clock.advance(1)
            self.health.lost(("lost", i))
        self.assertEqual(self.health.avoid(), {"dead"})

    def test_an_ack_of_an_earlier_packet_does_not_clear_a_later_loss(self):
        self.health.sent("early", ["x"])
        self.clock.advance(0.1)
        for i in range(3):
            self.health.sent(i, ["x"])
        self.clock.advance(1)
        self.health.acked("early")  # x forwarded before the three, maybe not after
        for i in range(3):
            self.health.lost(i)
        self.assertTrue(self.health.avoided("x"))

    def test_unknown_refs_and_a_bounded_flight(self):
        self.health.lost("never sent")
        self.health.acked("never sent")
        self.assertEqual(self.health.avoid(), frozenset())
        small = RouteHealth(self.clock, max_in_flight=2)
        for i in range(3):
            small.sent(i, ["n"])
        small.lost(0)  # forgotten: neither blamed nor credited
        self.assertEqual(small._nodes, {})
        self.assertRaises(ValueError, RouteHealth, self.clock, strikes=0)


class AvoidingRoutesTests(SynchronousTestCase):
    def test_routes_leave_out_the_avoided_and_never_empty_a_layer(self):
        topology, _ = small_network(per_layer=2)
        gateway = topology.gateways[0]
        layer2 = [m.public_key for m in topology.mixnodes if m.layer == 2]
        rng = random.Random(1)
        for _ in range(50):
            route = topology.route(gateway, rng, frozenset([layer2[0]]))
            self.assertEqual(route[1].public_key, layer2[1])
        # both of layer 2 avoided: the whole layer again
        seen = {topology.route(gateway, rng, frozenset(layer2))[1].public_key
                for _ in range(50)}
        self.assertEqual(seen, set(layer2))
        self.assertEqual(len(topology.route(gateway, rng, frozenset(layer2))), LAYERS + 1)

    def test_no_avoid_draws_as_before(self):
        topology, _ = small_network(per_layer=3)
        gateway = topology.gateways[0]
        a = [topology.route(gateway, random.Random(7)) for _ in range(3)]
        b = [topology.route(gateway, random.Random(7), frozenset()) for _ in range(3)]
        self.assertEqual(a, b)


class TimeoutHookTests(SynchronousTestCase):
    def test_each_overdue_send_is_reported_with_its_attempt(self):
        clock = Clock()
        timeouts = []
        r = Retransmitter(clock, lambda m, o: None, multiplier=1.0, addition=1.0,
                          max_retransmissions=2,
                          on_timeout=lambda *a: timeouts.append(a))
        r.track("m", 2)
        r.sent("m", 0, 0.0)
        r.sent("m", 1, 0.0)
        r.acked("m", 1)
        for _ in range(20):
            clock.advance(0.1)
            r.due()
        self.assertEqual(timeouts, [("m", 0, 0)])
        r.sent("m", 0, 0.0)
        for _ in range(20):
            clock.advance(0.1)
            r.due()
        self.assertEqual(timeouts, [("m", 0, 0), ("m", 0, 1)])
