"""nym-measure with anonymous replies: sendAnonymous, reply by sender tag,
and the checks of what the gateways see of them (docs/anonymity.md
"Anonymous replies").

One short real measurement (three clients, fast rates, a few seconds) with
a conversation whose recipient answers every message: the replies must
really be sent, reach their builders' applications, and every packet of
them, their acks included, be peeled and labelled; then the reply checks
must be computed against that truth. The workload file's new keys are
fuzzed with the loader.
"""

import json
import math

from hypothesis import given, settings as hsettings, strategies as st
import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.localnet import Timing
from nymtx.measure import checks, cli, network, replies, sim
from nymtx.measure.trace import ACK, PROTOCOL, REAL, REPLY

FAST = sim.Settings(clients=3, send_gap=0.05, loop_gap=0.1, hop_delay=0.02, fetch_gap=0.1)
TIMING = Timing(presence_interval=0.1, metrics_interval=0.5, expiry=2.0)


def conversation(replies):
    return (sim.Conversation(0, 1, 2.0, anonymous=True, reply_surbs=5, replies=replies),)


WORKLOAD = [sim.Phase(0.0, 1.0, "idle"),
            sim.Phase(1.0, 3.0, "anonymous", conversation(0.0)),
            sim.Phase(3.0, 5.0, "replies", conversation(1.0)),
            sim.Phase(5.0, 6.0, "idle")]


class RealReplies(TestCase):
    timeout = 90

    def test_replies_are_sent_received_labelled_and_scored(self):
        return Deferred.fromCoroutine(self._measure())

    async def _measure(self):
        cap = await network.capture(reactor, FAST, WORKLOAD, 6.0, seed=5,
                                    home=self.mktemp(), timing=TIMING)
        trace, problems, stats = network.to_trace(cap)
        self.assertEqual(problems, [])
        self.assertEqual(trace.check_complete(), [])

        # the replies were really made, left, and reached their builder's
        # application, every one answering a message of the replies phase
        n_replies = len(trace.reply_sender)
        self.assertGreater(n_replies, 2)
        self.assertEqual(stats["replies"], n_replies)
        self.assertEqual(stats["replies not sent by the end"], 0)
        self.assertEqual(stats["replies found"], n_replies)
        self.assertEqual(stats["replies their builder's application received"], n_replies)
        # every message the workload answers was answered
        due = [i for i, t in enumerate(trace.message_queued) if 3.0 <= t < 5.0]
        self.assertEqual(sorted(trace.reply_to), due)
        self.assertTrue(np.all(trace.reply_sender == 1))
        self.assertTrue(np.all(trace.reply_recipient == 0))

        # every anonymous message (several fragments: five reply blocks of
        # 420 bytes) was found and each of its packets names it
        real = (trace.packet_kind == REAL) & (trace.packet_message >= 0)
        per_message = np.bincount(trace.packet_message[real],
                                  minlength=len(trace.message_sender))
        self.assertTrue(np.all(per_message == 4), per_message)
        self.assertEqual(stats["messages found"], len(trace.message_sender))

        # a reply packet: from the replier into layer 1, to the builder's
        # gateway, named by its reply
        kind = trace.packet_kind
        workload_replies = (kind == REPLY) & (trace.packet_message >= 0)
        self.assertEqual(sorted(trace.packet_message[workload_replies]),
                         list(range(n_replies)))
        self.assertTrue(np.all(trace.packet_sender[workload_replies] == 1))
        self.assertTrue(np.all(trace.packet_recipient[workload_replies] == 0))
        # what is not a workload reply is a request for more blocks, and the
        # real packets that are no workload message are the top-ups answering them
        other = (kind == REPLY) & ~workload_replies
        self.assertTrue(np.all(trace.packet_message[other] == PROTOCOL))
        self.assertEqual(stats["reply packets asking for more reply blocks"], int(other.sum()))
        topups = (kind == REAL) & (trace.packet_message == PROTOCOL)
        self.assertEqual(stats["real packets carrying reply blocks asked for (top-ups)"],
                         int(topups.sum()))
        if topups.any():
            self.assertTrue(other.any())

        # the ack of a reply: sent into layer 1 by the builder's client (not
        # a gateway), back to the replier's gateway, for the replier
        acks = (kind == ACK) & (trace.packet_origin >= 0)
        of_reply = acks & (kind[np.maximum(trace.packet_origin, 0)] == REPLY)
        self.assertGreater(of_reply.sum(), 0)
        self.assertEqual(stats["acks of replies (sent by their builders' clients)"],
                         int(of_reply.sum()))
        self.assertGreaterEqual(of_reply.sum() + stats[
            "replies whose builder had not sent their ack by the end"], (kind == REPLY).sum())
        topo = trace.topology
        first = {}
        for hop in range(len(trace.hop_time)):
            first.setdefault(int(trace.hop_packet[hop]), int(trace.hop_src[hop]))
        for p in np.nonzero(of_reply)[0]:
            self.assertEqual(first[p], 0)     # client 0, the builder, sent it
            self.assertEqual(trace.packet_sender[p], 1)
            self.assertEqual(trace.packet_recipient[p], 1)
        for p in np.nonzero(workload_replies)[0]:
            self.assertEqual(first[p], 1)
        self.assertTrue(np.all(trace.hop_size == 1372))

        # the reply checks, against this truth
        result = replies.run(trace, FAST, window=1.0)
        self.assertIsNotNone(result)
        builder = next(b for b in result["builders"] if b["client"] == topo.clients[0])
        self.assertEqual(builder["replies received"], int((kind == REPLY).sum()))
        self.assertGreater(builder["surb deliveries"], builder["replies received"])
        timing = result["reply or ack"]
        self.assertEqual(timing["replies"], int((kind == REPLY).sum()))
        self.assertTrue(0.0 <= timing["auc"] <= 1.0)
        self.assertAlmostEqual(timing["base rate"],
                               timing["replies"] / timing["deliveries"])
        unacked = result["sends with no ack"]
        self.assertEqual(unacked["reply acks"], int(
            np.sum(of_reply & (trace.packet_sent > 4 * (7 * 0.02 + 0.05))
                   & (trace.packet_sent < trace.duration - 4 * (7 * 0.02 + 0.05)))))
        self.assertTrue(unacked["auc"] is None or 0.0 <= unacked["auc"] <= 1.0)
        replier = next(r for r in result["repliers"] if r["client"] == topo.clients[1])
        self.assertEqual(replier["replies sent"], n_replies)
        self.assertEqual(replier["sizes"], [1372])
        self.assertIn("z", replier["sent"])
        # the whole check goes into figures.json: it must be JSON
        json.dumps(checks.run_all(trace, FAST)["replies"])

        # the truth must say what it cannot explain: without the keys of the
        # reply blocks, no reply opens; without a reply's packets, it is lost
        import attrs
        _, problems, _ = network.to_trace(attrs.evolve(cap, reply_keys={}))
        self.assertTrue(any("neither an ack's nor a reply block's" in p for p in problems))
        self.assertTrue(any("never seen at its builder's gateway" in p for p in problems))
        first_reply = next(i for i, p in enumerate(trace.packet_message)
                           if kind[i] == REPLY and p >= 0)
        hops = [h for h in range(len(trace.hop_time)) if trace.hop_packet[h] == first_reply]
        gone = {(float(trace.hop_time[h]) + cap.start) for h in hops}
        kept = [p for p in cap.packets if p[0] not in gone]
        self.assertEqual(len(kept), len(cap.packets) - len(hops))
        _, problems, _ = network.to_trace(attrs.evolve(cap, packets=kept))
        self.assertTrue(any(f"reply {trace.packet_message[first_reply]} " in p
                            and "never seen" in p for p in problems), problems[:5])


class RealRepliesOneProcessPerNode(TestCase):
    """The same workload with every node in a process of its own
    (``--processes``): the clients, and so the replies, stay in this one."""
    timeout = 90

    def test_replies_with_one_process_per_node(self):
        return Deferred.fromCoroutine(self._measure())

    async def _measure(self):
        workload = [sim.Phase(0.0, 0.5, "idle"),
                    sim.Phase(0.5, 2.5, "replies", (sim.Conversation(
                        0, 1, 2.0, anonymous=True, reply_surbs=3, replies=1.0),))]
        cap = await network.capture(reactor, FAST, workload, 2.5, seed=4,
                                    home=self.mktemp(), timing=TIMING, processes=True)
        trace, problems, stats = network.to_trace(cap)
        self.assertEqual(problems, [])
        self.assertEqual(trace.check_complete(), [])
        self.assertGreater(stats["replies"], 0)
        self.assertEqual(stats["replies found"], stats["replies"])
        self.assertEqual(stats["replies their builder's application received"],
                         stats["replies"])
        self.assertEqual(sorted(trace.reply_to), list(range(len(trace.message_sender))))
        self.assertEqual(int(np.sum((trace.packet_kind == REPLY) & (trace.packet_message >= 0))),
                         stats["replies"])


class ReplyChecksOnTheModel(SynchronousTestCase):

    def test_a_trace_without_replies_has_no_reply_checks(self):
        trace = sim.simulate(sim.Settings(clients=3), sim.default_workload(3, 0.5), 30.0)
        self.assertIsNone(replies.run(trace, sim.Settings(clients=3)))
        self.assertIsNone(checks.run_all(trace, sim.Settings(clients=3))["replies"])

    def test_the_model_refuses_anonymous_conversations(self):
        e = self.assertRaises(ValueError, sim.simulate, FAST, WORKLOAD, 6.0)
        self.assertIn("real network only", str(e))

    def test_auc_against_known_orderings(self):
        self.assertEqual(replies.auc([3.0, 4.0], [1.0, 2.0])["auc"], 1.0)
        self.assertEqual(replies.auc([1.0, 2.0], [3.0, 4.0])["auc"], 0.0)
        self.assertEqual(replies.auc([1.0, 1.0], [1.0, 1.0])["auc"], 0.5)
        self.assertIsNone(replies.auc([], [1.0])["auc"])


class Presets(SynchronousTestCase):

    def test_the_replies_preset(self):
        phases = cli.workload("replies", 5, 10)
        self.assertEqual([p.label for p in phases], ["idle", "anonymous", "replies", "idle"])
        self.assertTrue(sim.has_anonymous(phases))
        answered = [c.replies for p in phases for c in p.conversations]
        self.assertEqual(sorted(set(answered)), [0.0, 1.0])
        self.assertFalse(sim.has_anonymous(cli.workload("default", 5, 10)))

    def test_a_file_of_a_presets_name_is_read(self):
        import os
        here = os.getcwd()
        folder = self.mktemp()
        os.makedirs(folder)
        os.chdir(folder)
        try:
            with open("replies", "w") as f:
                json.dump({"phases": [{"start": 0, "end": 5}]}, f)
            self.assertEqual(len(cli.workload("replies", 5, 10)), 1)
        finally:
            os.chdir(here)

    def test_the_model_and_compare_refuse_a_workload_with_replies(self):
        import io
        for args in (["--simulate"], ["--compare", "2"]):
            err = io.StringIO()
            code = cli.main(["--workload", "replies", "--minutes", "0.1", "--out", self.mktemp(),
                             *args], out=io.StringIO(), err=err)
            self.assertEqual(code, 1, args)
            self.assertIn("real network only", err.getvalue())

    def test_reply_keys_in_a_file(self):
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump({"phases": [{"start": 0, "end": 60, "conversations": [
                {"sender": 0, "recipient": 1, "rate": 0.2, "anonymous": True,
                 "reply_surbs": 3, "replies": 0.5}]}]}, f)
        conv = cli.load_workload(path, 5)[0].conversations[0]
        self.assertEqual((conv.anonymous, conv.reply_surbs, conv.replies), (True, 3, 0.5))

    def test_bad_reply_keys_are_named(self):
        cases = [({"anonymous": "yes"}, "anonymous must be true or false"),
                 ({"replies": 0.5}, "need \"anonymous\": true"),
                 ({"reply_surbs": 3}, "need \"anonymous\": true"),
                 ({"anonymous": True, "replies": 1.5}, "replies is the share"),
                 ({"anonymous": True, "reply_surbs": 0, "replies": 0.5}, "at least 1"),
                 ({"anonymous": True, "reply_surbs": 501}, "0 to 500"),
                 ({"anonymous": True, "reply_surbs": 2.5}, "whole number"),
                 ({"anonymous": True, "reply_surbs": True}, "whole number"),
                 ({"rate": 1e400}, "must be finite"),
                 ({"sender": 1e300}, "clients are numbered")]
        for extra, why in cases:
            conv = dict({"sender": 0, "recipient": 1, "rate": 0.2}, **extra)
            path = self.mktemp()
            with open(path, "w") as f:
                f.write(json.dumps({"phases": [{"start": 0, "end": 60,
                                                "conversations": [conv]}]})
                        .replace("Infinity", "1e400"))
            e = self.assertRaises(cli.WorkloadError, cli.load_workload, path, 5)
            self.assertIn(why, str(e), extra)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
    | st.sampled_from([1e308, 10 ** 400, -(10 ** 400), 0.5, 1, 5, 500, 501]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["phases", "start", "end", "label", "conversations", "sender",
                         "recipient", "rate", "pattern", "anonymous", "reply_surbs",
                         "replies"]), inner, max_size=6),
    max_leaves=25)

conversations = st.fixed_dictionaries(
    {"sender": st.integers(-1, 5), "recipient": st.integers(-1, 5)},
    optional={"rate": st.floats() | st.integers(), "anonymous": st.booleans() | st.integers(0, 1),
              "reply_surbs": st.integers(-2, 600) | st.floats(),
              "replies": st.floats() | st.integers(-1, 2),
              "pattern": st.sampled_from(["poisson", "flood", "x"])})


class WorkloadFuzz(SynchronousTestCase):
    """Any file is a workload or a WorkloadError naming why, never another
    exception; what loads is usable."""

    def _load(self, value):
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump(value, f)
        try:
            phases = cli.load_workload(path, 5)
        except cli.WorkloadError as e:
            self.assertIn(path, str(e))
            return None
        for p in phases:
            self.assertTrue(math.isfinite(p.start) and 0 <= p.start < p.end)
            for c in p.conversations:
                self.assertTrue(0 <= c.sender < 5 and 0 <= c.recipient < 5)
                self.assertTrue(0 <= c.replies <= 1)
                if c.replies > 0:
                    self.assertTrue(c.anonymous and 1 <= c.reply_surbs <= 500)
        return phases

    @hsettings(max_examples=300, deadline=None)
    @given(json_values)
    def test_any_json(self, value):
        self._load(value)

    @hsettings(max_examples=300, deadline=None)
    @given(st.lists(conversations, max_size=3), st.floats() | st.integers(), st.floats()
           | st.integers())
    def test_any_conversations(self, convs, start, end):
        self._load({"phases": [{"start": start, "end": end, "conversations": convs}]})

    @hsettings(max_examples=100, deadline=None)
    @given(st.binary(max_size=64) | st.just(b"[" * 100000))
    def test_any_bytes(self, data):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        try:
            cli.load_workload(path, 5)
        except cli.WorkloadError:
            pass
