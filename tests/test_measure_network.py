"""nym-measure on the real network: a local network in this process, tapped, peeled.

One short real measurement (three clients, fast rates, a few seconds) is
checked for a complete truth, attacks scored against it and one packet size;
then the same capture, altered, must make the truth name what it cannot
explain. The parts with no network (the tap hook, the classifier, what a
pull answer shows) are tested on their own.
"""

import io
import json
import os
import sys

import attrs
from hypothesis import given, settings as hsettings, strategies as st
import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from unittest import skipIf

from nymtx.gateway import frames as F
from nymtx.keys import KeyPair
from nymtx.localnet import Timing
from nymtx.measure import attacks, checks, cli, compare, network, sim
from nymtx.measure.trace import ACK, DROP, FORWARD, LOOP, REAL
from nymtx.listening import ConnectionLimit

FAST = sim.Settings(clients=3, send_gap=0.05, loop_gap=0.1, hop_delay=0.02, fetch_gap=0.1)
WORKLOAD = [sim.Phase(0.0, 1.5, "idle"),
            sim.Phase(1.5, 3.0, "conversations", (sim.Conversation(0, 1, 8.0),)),
            sim.Phase(3.0, 4.5, "bursts", (sim.Conversation(2, 1, 8.0),)),
            sim.Phase(4.5, 6.0, "idle")]
TIMING = Timing(presence_interval=0.1, metrics_interval=0.5, expiry=2.0)


class RealMeasurement(TestCase):
    timeout = 60

    def test_the_truth_is_complete_and_the_attacks_are_scored_against_it(self):
        return Deferred.fromCoroutine(self._measure())

    async def _measure(self):
        cap = await network.capture(reactor, FAST, WORKLOAD, 6.0, seed=3,
                                    home=self.mktemp(), timing=TIMING)
        trace, problems, stats = network.to_trace(cap)

        # every tapped packet peeled and explained, every message found
        self.assertEqual(problems, [])
        self.assertEqual(trace.check_complete(), [])
        self.assertGreater(len(cap.packets), 500)
        self.assertGreater(len(trace.message_sender), 15)
        self.assertEqual(stats["messages found"], len(trace.message_sender))
        self.assertEqual(stats["messages not sent by the end"], 0)
        real = trace.packet_kind == REAL
        self.assertEqual(sorted(trace.packet_message[real]), list(range(len(trace.message_sender))))
        # each message came from its workload sender (by the connection's
        # address, not by anything the packet says) to its recipient
        m = trace.packet_message[real]
        self.assertTrue(np.all(trace.packet_sender[real] == trace.message_sender[m]))
        self.assertTrue(np.all(trace.packet_recipient[real] == trace.message_recipient[m]))
        # today's clients: loop cover, each back to its sender
        loops = trace.packet_kind == LOOP
        self.assertTrue(np.all(trace.packet_recipient[loops] == trace.packet_sender[loops]))
        # three mixes and the gateway for nearly every packet; the hops of the view
        # go client -> layer 1 -> layer 2 -> layer 3 -> gateway
        per_packet = np.bincount(trace.hop_packet, minlength=len(trace.packet_sender))
        self.assertTrue(set(per_packet) <= {1, 2, 3, 4})
        # (the view holds fewer hops only of packets still on their way at the
        # end; the truth has the rest: every packet has a kind)
        short = per_packet < 4
        self.assertTrue(np.all(trace.packet_sent[short] > trace.duration - 3.0))
        self.assertGreater(np.mean(~short), 0.5)
        topo = trace.topology
        # into layer 1: the clients' packets, and the gateway's acks
        into_first = trace.hop_dst == topo.first_mix
        acks = trace.packet_kind == ACK
        from_client = trace.hop_src[into_first] < topo.n_clients
        self.assertTrue(np.all(from_client == ~acks[trace.hop_packet[into_first]]))
        self.assertTrue(np.all(trace.hop_src[into_first][~from_client] == topo.first_gateway))
        self.assertTrue(np.all(trace.hop_src[trace.hop_dst == topo.first_gateway]
                               == topo.first_gateway - 1))
        self._the_acks(trace, stats)
        # the delays peeled are the ones the nodes applied: no packet leaves a
        # mix before its delay (the clocks are one), and none very late
        lateness = network.link_checks(cap, trace)["lateness"]
        self.assertEqual([h["hop"] for h in lateness], [1, 2, 3])
        for hop in lateness:
            self.assertGreater(hop["n"], 100)
            self.assertGreater(hop["min"], -0.001, hop)
            self.assertLess(hop["median"], 0.25, hop)

        # one size on every mix link
        self.assertEqual(set(trace.hop_size), {1372})
        self.assertEqual({len(p[3]) for p in cap.packets}, {1372})
        self.assertEqual(checks.packet_sizes(trace)["sizes"], [1372])

        # the attacks read the view and are scored against the truth
        settings = network.observed_settings(FAST, trace)
        self.assertEqual(settings.cover, "loopix")   # drop cover on the sending stream (issue 11)
        view = trace.view()
        self.assertEqual(len(view.targets), len(trace.message_sender))
        posteriors = attacks.run_all(view, settings, trace.target_recipients())
        for name, p in posteriors.items():
            score = attacks.score(p, trace.target_senders())
            self.assertEqual(score["messages"], len(trace.message_sender), name)
            self.assertTrue(0.0 <= score["success"] <= 1.0, name)
        # The plaintext link showed every pull's count, and the deficit attack
        # read it (success over 0.6 here). The private link (issue 10) answers
        # every pull with one size of ciphertext: no count shows, though the
        # pulls carried mail, and the attack is left with nothing to count
        # (its window fitted to these fast rates: ten sending gaps either side)
        self.assertTrue(np.all(trace.pull_count == -1))
        self.assertEqual(len({len(p[2]) for p in cap.pulls}), 1)
        self.assertGreater(trace.pull_true_count.sum(), 0)
        # The deficit attack (issue 11) read "sent minus own loops returned":
        # with drop cover on the sending stream the loops return at their own
        # rate whatever a client sends, so the attack is left near guessing.
        # Its posterior keeps most of the entropy (the seed's cover: 0.36 of
        # 2.32 bits; here about 1.50 of 1.58 in the runs made; the bound is
        # three quarters).
        deficit = attacks.score(attacks.deficit(view, FAST.hop_delay, FAST.fetch_gap,
                                                window=10 * FAST.send_gap),
                                trace.target_senders())
        self.assertLessEqual(deficit["success"], 1 / topo.n_clients + 1e-9)
        self.assertGreater(deficit["mean_entropy_bits"], 0.75 * deficit["max_entropy_bits"],
                           deficit)

        self._what_the_truth_cannot_explain(cap)

    def _what_the_truth_cannot_explain(self, cap):
        # a packet no node's key opens
        bogus = attrs.evolve(cap, packets=cap.packets + [
            (cap.end - 0.5, len(cap.clients), 0, bytes(1372))])
        _, problems, _ = network.to_trace(bogus)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("cannot be peeled", problems[0])
        # a packet from the middle of a route, sent again by a client straight
        # to that node (a replay): no route starts past the first layer
        t, dst, src, packet = next(p for p in cap.packets if p[2] >= len(cap.clients))
        replay = attrs.evolve(cap, packets=cap.packets + [(cap.end - 0.5, dst, 0, packet)])
        _, problems, _ = network.to_trace(replay)
        self.assertTrue(any("not a layer-1 mixnode" in p for p in problems), problems)
        # a first hop whose sender is misattributed contradicts the truth when
        # the truth knows its sender (a loop comes back to it, a message is the
        # workload's); drop cover ends at a gateway and names no sender, so
        # the first of c0's packets that is not a drop is the one moved
        found = []
        for i, first in [(i, p) for i, p in enumerate(cap.packets) if p[2] == 0][:40]:
            wrong = list(cap.packets)
            wrong[i] = (first[0], first[1], 1, first[3])
            _, problems, _ = network.to_trace(attrs.evolve(cap, packets=wrong))
            if problems:
                found = problems
                break
        # (or, since every packet is acked, drop cover too: its ack goes
        # back to its true sender)
        self.assertTrue(any("came from client c1" in p or
                            "of client c1 came back to client c0" in p for p in found), found)
        # a message that left its client but never reached its gateway (the
        # truth still knows where it went)
        trace, _, _ = network.to_trace(cap)
        exit_time = trace.hop_time[trace.exits()[0]] + cap.start
        gateway = len(cap.clients) + len(cap.mixnodes)
        lost = [p for p in cap.packets if not (p[1] == gateway and abs(p[0] - exit_time) < 1e-6)]
        self.assertEqual(len(lost), len(cap.packets) - 1)
        _, problems, _ = network.to_trace(attrs.evolve(cap, packets=lost))
        # (and the ack its gateway sent for it is one the capture cannot explain)
        self.assertEqual(len(problems), 2, problems)
        self.assertTrue(any("never arrived" in p for p in problems), problems)
        # (the ack is still followed to its end: only its first hop is named)
        self.assertTrue(any("the ack of no packet" in p for p in problems), problems)
        # an ack sent twice by the gateway (a replay into layer 1): the
        # second has no packet left to acknowledge
        t, dst, src, packet = next(p for p in cap.packets if p[2] == gateway)
        _, problems, _ = network.to_trace(attrs.evolve(cap, packets=cap.packets + [
            (cap.end - 0.5, dst, src, packet)]))
        self.assertTrue(any("the ack of no packet" in p for p in problems), problems)

    def _the_acks(self, trace, stats):
        """Every packet a client sent comes back to it as an ack (docs/surb.md
        §2.5), which the truth peels hop by hop like any other packet."""
        topo = trace.topology
        kind, origin = trace.packet_kind, trace.packet_origin
        acks = kind == ACK
        self.assertGreater(acks.sum(), 200)
        self.assertEqual(stats["ack packets"], int(acks.sum()))
        self.assertEqual(stats["reply packets"], 0)
        self.assertTrue(np.all(origin[~acks] == -1))
        # each ack acknowledges a forward packet of the client it returns to
        acked = origin[acks & (origin >= 0)]
        self.assertGreater(len(acked), 0.9 * acks.sum())
        self.assertTrue(np.all(np.isin(kind[acked], FORWARD)))
        self.assertTrue(np.all(trace.packet_sender[acks & (origin >= 0)]
                               == trace.packet_sender[acked]))
        self.assertTrue(np.all(trace.packet_recipient[acks] == trace.packet_sender[acks]))
        self.assertEqual(len(set(acked)), len(acked))        # one ack each
        # real, loop and drop packets alike are acked
        self.assertEqual(set(kind[acked]), {REAL, LOOP, DROP})
        # an ack's route: gateway -> layer 1 -> 2 -> 3 -> the gateway
        for p in np.nonzero(acks)[0][:50]:
            hops = np.nonzero(trace.hop_packet == p)[0]
            route = [int(trace.hop_src[hops[0]])] + [int(d) for d in trace.hop_dst[hops]]
            self.assertEqual(route[0], topo.first_gateway)
            if len(route) == 5:
                self.assertEqual(route[1:4], list(range(topo.first_mix, topo.first_gateway)))
                self.assertEqual(route[4], topo.first_gateway)
        # every packet that reached the gateway well before the end was acked
        self.assertEqual(stats["packets that reached their gateway whose ack never left it"], 0)
        stream = checks.ack_stream(trace)
        self.assertEqual(stream["acks"], int(acks.sum()))
        (g,) = stream["gateways"]
        # (a few acks out are of packets sent before the workload began,
        # which the trace leaves out; a few packets in are acked after its end)
        self.assertLess(abs(g["acks out"] - g["final hops in"]), 0.05 * g["final hops in"], g)
        for name in ("real", "loop", "drop"):
            self.assertGreater(g["by kind"][name]["acked"], 0.95, (name, g))
            self.assertLess(g["by kind"][name]["ack lag median s"], 0.5, (name, g))
        self.assertGreater(g["correlation per 1 s"], 0.5, g)
        ks = g["ack lag, real against cover (KS)"]
        # (those that arrived two seconds before the end or earlier)
        self.assertGreater(ks["n"], 10, ks)
        self.assertLessEqual(ks["n"], int(np.sum(kind[acked] == REAL)), ks)
        self.assertIsNotNone(ks["p"])
        self.assertEqual({a["client"] for a in stream["arrivals"]}, {"c0", "c2"})
        # a gateway that acked only real mail (cover's acks dropped) would
        # show it: the check reads who was acked from the truth
        only_real = trace.packet_kind.copy()
        cover_acks = acks & (origin >= 0)
        cover_acks[cover_acks] = kind[origin[cover_acks]] != REAL
        only_real[cover_acks] = -1
        (g,) = checks.ack_stream(attrs.evolve(trace, packet_kind=only_real))["gateways"]
        self.assertEqual(g["by kind"]["loop"]["acked"], 0.0)
        self.assertEqual(g["by kind"]["drop"]["acked"], 0.0)
        self.assertGreater(g["by kind"]["real"]["acked"], 0.95)


class TapHook(SynchronousTestCase):

    def test_a_tapped_listener_hands_each_protocol_and_its_peer_to_the_tap(self):
        inner = Factory.forProtocol(Protocol)
        inner.marker = "the node's factory"
        limit = ConnectionLimit(inner, Clock(), 10)
        seen, other = [], Protocol()
        network.tap_listener(limit, lambda protocol, addr: seen.append((protocol, addr)) or other)
        peer = IPv4Address("TCP", "127.0.1.3", 5555)
        built = limit.buildProtocol(peer)
        # the listener's bounds still wrap what the tap returned
        self.assertIs(built.wrappedProtocol, other)
        self.assertEqual(seen[0][1], peer)
        self.assertIsInstance(seen[0][0], Protocol)
        # everything else is still the node's factory
        self.assertEqual(limit.wrappedFactory.marker, "the node's factory")

    def test_a_factory_that_refuses_is_not_tapped(self):
        class Refusing(Factory):
            def buildProtocol(self, addr):
                return None
        tapped = network.TappingFactory(Refusing(), lambda p, a: self.fail("tapped"))
        self.assertIsNone(tapped.buildProtocol(None))

    def test_the_source_bound_reactor_binds_every_outgoing_connection(self):
        calls = []

        class Reactor:
            def connectTCP(self, *args):
                calls.append(args)

            def seconds(self):
                return 7.0
        bound = network.SourceBoundReactor(Reactor(), "127.0.1.9")
        bound.connectTCP("127.0.0.1", 1789, "factory")
        bound.connectTCP("127.0.0.1", 1789, "factory", 5, ("127.0.0.1", 0))
        self.assertEqual(calls, [("127.0.0.1", 1789, "factory", 30, ("127.0.1.9", 0)),
                                 ("127.0.0.1", 1789, "factory", 5, ("127.0.0.1", 0))])
        self.assertEqual(bound.seconds(), 7.0)
        self.assertNotEqual(network.source_host("client", 3), network.source_host("mixnode", 3))
        self.assertEqual(network.source_host("client", 250), "127.1.1.1")


class Classifier(SynchronousTestCase):

    def setUp(self):
        self.alice, self.bob, self.gateway = (KeyPair.generate() for _ in range(3))
        self.classifier = network.Classifier([self.alice, self.bob], [self.gateway],
                                             [b"first", b"second"])

    def test_workload_messages_and_the_unexplained(self):
        self.assertEqual(self.classifier.classify(self.bob.public_key, b"second"), (REAL, 1, 1))
        self.assertIsNone(self.classifier.classify(self.bob.public_key, b"third"))
        self.assertIsNone(self.classifier.classify(bytes(32), b"first"))


    @skipIf(network._message_layer is None, "the message layer (nymtx.message) is not here")
    def test_the_message_layers_payloads_are_opened_with_the_keys(self):
        from nymtx import message
        body = message.fragment_message(message.Message(message.KIND_BINARY, b"second"))
        self.assertEqual(len(body), 1)
        sealed = message.seal_fragment(self.bob.public_key, body[0])
        self.assertEqual(self.classifier.classify(self.bob.public_key, sealed), (REAL, 1, 1))
        # sealed to Bob, it is nobody else's
        self.assertIsNone(self.classifier.classify(self.alice.public_key, sealed))
        loop = message.loop_cover_payload(self.alice.public_key)
        self.assertEqual(self.classifier.classify(self.alice.public_key, loop), (LOOP, 0, -1))
        drop = message.drop_cover_payload(self.gateway.public_key)
        self.assertEqual(self.classifier.classify(self.gateway.public_key, drop), (DROP, -1, -1))
        drop = message.drop_cover_payload(self.bob.public_key)
        self.assertEqual(self.classifier.classify(self.bob.public_key, drop), (DROP, 1, -1))


class SurbPackets(SynchronousTestCase):
    """Acks and replies at their gateway, as the truth reads them; on the
    wire both are one size with every forward packet."""

    def test_acks_open_under_the_ack_key_and_replies_do_not(self):
        import os as _os
        from nymtx.reliable.ack import ack_packet, build_surb_ack
        from nymtx.sphinx import PACKET_SIZE, build_packet
        from nymtx.sphinx.surb import build_surb, process_gateway_packet, use_surb
        from nymtx.measure.trace import REPLY
        from tests.test_sphinx import make_route
        keys, route = make_route(4)
        alice, bob = KeyPair.generate(), KeyPair.generate()
        ack_key = _os.urandom(32)
        clients = {alice.public_key: 0, bob.public_key: 1}

        def at_gateway(packet):
            for k in keys[:-1]:
                packet = process_gateway_packet(k.private_key, packet).packet
            return process_gateway_packet(keys[-1].private_key, packet)
        delays = [1000] * 4
        packets = {}
        # the ack of a fragment, and of cover (message number 0)
        for number in (7, 0):
            surb_ack = build_surb_ack(route, alice.public_key, ack_key, number, 1, 0, delays)
            _, packets["ack", number] = ack_packet(surb_ack)
            self.assertEqual(network.surb_kind(clients, [ack_key, None],
                                               at_gateway(packets["ack", number])), (ACK, 0))
        # a reply through one of Alice's reply blocks (a random identifier)
        surb, _ = build_surb(route, alice.public_key, _os.urandom(16), delays)
        packets["reply"] = use_surb(surb, b"a reply")
        self.assertEqual(network.surb_kind(clients, [ack_key, None],
                                           at_gateway(packets["reply"])), (REPLY, 0))
        # under another key an ack reads as a reply; for nobody's key, None
        self.assertEqual(network.surb_kind(clients, [_os.urandom(32), None],
                                           at_gateway(packets["ack", 7]))[0], REPLY)
        self.assertIsNone(network.surb_kind({bob.public_key: 1}, [None, None],
                                            at_gateway(packets["ack", 7])))
        # a client without an ack key (a release before acks): a reply
        self.assertEqual(network.surb_kind(clients, [None, None],
                                           at_gateway(packets["ack", 7])), (REPLY, 0))
        # one size on the wire: acks, replies and forward packets
        forward = build_packet(route, bob.public_key, bytes(16), bytes(975), delays)
        self.assertEqual({len(p) for p in packets.values()} | {len(forward)}, {PACKET_SIZE})


class PullAnswers(SynchronousTestCase):

    def test_a_plaintext_answer_shows_its_count(self):
        answer = F.encode(F.Messages(((1, b"a"), (2, b"bc"))))
        self.assertEqual(network.observed_count(answer), 2)
        self.assertEqual(network.observed_count(F.encode(F.Messages(()))), 0)

    def test_other_bytes_show_no_count(self):
        self.assertIsNone(network.observed_count(b"\x00\x00\x00\x05hello"))
        self.assertIsNone(network.observed_count(bytes(40)))
        self.assertIsNone(network.observed_count(F.encode(F.Authenticated())))

    def test_sizes_alone(self):
        self.assertEqual(list(network.counts_from_sizes([100, 100, 100])), [-1, -1, -1])
        self.assertEqual(list(network.counts_from_sizes([20, 70, 120, 20])), [0, 1, 2, 0])
        self.assertEqual(len(network.counts_from_sizes([])), 0)

    def test_the_schedule_is_the_models(self):
        schedule = network.message_schedule(WORKLOAD, 3, 0.05, np.random.default_rng(0))
        times = [t for t, _, _ in schedule]
        self.assertEqual(times, sorted(times))
        self.assertTrue(all(1.5 <= t < 4.5 for t in times))
        self.assertTrue(all(a == (0 if t < 3.0 else 2) for t, a, _ in schedule))
        self.assertEqual({(a, b) for _, a, b in schedule}, {(0, 1), (2, 1)})
        self.assertRaises(ValueError, network.message_schedule,
                          [sim.Phase(0, 1, "x", (sim.Conversation(0, 5, 1.0),))], 3, 0.05,
                          np.random.default_rng(0))


class Command(TestCase):
    """``nym-measure`` measures the real network by default (in a process of
    its own: it runs the reactor)."""

    timeout = 60

    def test_the_default_is_the_real_network(self):
        return Deferred.fromCoroutine(self._by_command())

    async def _by_command(self):
        folder = os.path.abspath(self.mktemp())
        code, out, err = await run_command(
            "--clients", "3", "--minutes", "0.03", "--send-gap", "0.05", "--loop-gap", "0.1",
            "--hop-delay", "0.02", "--fetch-gap", "0.1", "--out", folder)
        self.assertEqual(code, 0, err)
        self.assertIn("names the sender of", out)
        with open(os.path.join(folder, "figures.json")) as f:
            figures = json.load(f)
        self.assertEqual(figures["meta"]["mode"], "network")
        self.assertEqual(figures["meta"]["problems (packets the truth cannot explain)"], "none")
        self.assertEqual(figures["settings"]["cover"], "loopix")
        self.assertEqual(figures["checks"]["packet_sizes"]["sizes"], [1372])
        self.assertEqual(set(figures["attacks"]), set(attacks.ATTACKS))
        self.assertIn("lateness", figures["checks"]["network"])
        self.assertTrue(os.path.getsize(os.path.join(folder, "rates.png")) > 0)
        # the run's public topology, with the nodes' and clients' addresses:
        # the nodes file a capture of the run is read with (--pcap)
        from nymtx.measure import pcap
        with open(os.path.join(folder, "nodes.json"), "rb") as f:
            nodes = pcap.load_nodes(f.read())
        self.assertEqual(nodes.mix_layers, [1, 2, 3])
        self.assertEqual(sorted(nodes.client_names.values()), ["c0", "c1", "c2"])
        # (the gateway's outgoing connections carry its acks into layer 1)
        self.assertEqual(sorted(kind for kind, _ in nodes.sources.values()),
                         ["gateway"] + ["mix"] * 3)
        # the ack stream, in the figures and the summary
        self.assertGreater(figures["meta"]["ack packets"], 100)
        stream = figures["checks"]["ack_stream"]
        self.assertEqual(stream["acks"], figures["meta"]["ack packets"])
        self.assertEqual(len(stream["gateways"]), 1)
        with open(os.path.join(folder, "summary.md")) as f:
            summary = f.read()
        self.assertIn("### The ack stream", summary)
        self.assertIn("- ack packets: %d" % stream["acks"], summary)

    def test_the_models_cover_is_not_the_networks(self):
        code, _, err = self.main_in_process(["--cover", "legacy"])
        self.assertEqual(code, 2)
        self.assertIn("add --simulate", err)
        code, _, err = self.main_in_process(["--network", "--simulate"])
        self.assertEqual(code, 2)

    def main_in_process(self, args):
        # usage errors are found before any network starts: in this process
        out, err = io.StringIO(), io.StringIO()
        return cli.main(args, out=out, err=err), out.getvalue(), err.getvalue()


async def run_command(*args):
    """Run ``python -m nymtx.measure`` with *args*: (exit code, stdout, stderr)."""
    from twisted.internet import utils
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out, err, code = await utils.getProcessOutputAndValue(
        sys.executable, ("-m", "nymtx.measure") + args, env=env, reactor=reactor)
    return code, out.decode(), err.decode()


class Comparison(SynchronousTestCase):

    def test_wilson_interval(self):
        lo, hi = compare.wilson(5, 10)
        self.assertAlmostEqual(lo, 0.2366, places=3)
        self.assertAlmostEqual(hi, 0.7634, places=3)
        self.assertEqual(compare.wilson(0, 0), (None, None))
        lo, hi = compare.wilson(20, 20)
        self.assertEqual(hi, 1.0)
        self.assertGreater(lo, 0.8)

    def test_the_model_agrees_with_itself_and_not_with_another_design(self):
        s = sim.Settings(clients=4, cover="legacy", pulls="grid")
        phases = sim.default_workload(4, 1.0)

        def scored(settings, seed):
            trace = sim.simulate(settings, phases, 60.0, seed=seed)
            posteriors = attacks.run_all(trace.view(), settings, trace.target_recipients())
            return ({k: attacks.score(p, trace.target_senders()) for k, p in posteriors.items()},
                    checks.run_all(trace, settings))
        same = compare.compare(s, phases, 60.0, *scored(s, 99), seeds=4)
        self.assertTrue(same["attacks"]["deficit"]["success agrees"])
        self.assertEqual(set(same["attacks"]), set(attacks.ATTACKS))
        # a run of the other design is told apart: its deficit is at chance
        other = compare.compare(s, phases, 60.0,
                                *scored(attrs.evolve(s, cover="loopix", pulls="poisson"), 99),
                                seeds=4)
        self.assertFalse(other["attacks"]["deficit"]["success agrees"])
        lines = compare.markdown(other)
        self.assertTrue(any(line.startswith("| deficit |") and "NO" in line for line in lines))


class TappedBytesFuzz(SynchronousTestCase):
    """What the taps hand the truth is whatever came off the wire."""

    @hsettings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300) | st.builds(
        lambda n, tail: F.frame(bytes([F.MESSAGES]) + n.to_bytes(2, "big") + tail),
        st.integers(0, 0xFFFF), st.binary(max_size=100)))
    def test_any_pull_answer_shows_a_count_or_none(self, data):
        count = network.observed_count(data)
        self.assertTrue(count is None or count >= 0)

    @hsettings(max_examples=200, deadline=None)
    @given(st.binary(min_size=32, max_size=32), st.binary(max_size=1000))
    def test_any_final_hop_is_classified_or_unexplained(self, destination, payload):
        keys = [KeyPair.from_private(bytes([i + 1]) * 32) for i in range(3)]
        classifier = network.Classifier(keys[:2], keys[2:], [b"a body"])
        for d in (destination, keys[0].public_key, keys[2].public_key):
            kind = classifier.classify(d, payload)
            self.assertTrue(kind is None or kind[0] in (REAL, LOOP, DROP))

    @hsettings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(0, 1 << 20), max_size=50))
    def test_any_answer_sizes(self, sizes):
        counts = network.counts_from_sizes(sizes)
        self.assertEqual(len(counts), len(sizes))
        self.assertTrue(np.all(counts >= -1))
