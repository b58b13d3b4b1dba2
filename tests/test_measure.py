"""nym-measure: the model, the attacks, the checks and the report, on short runs."""

import io
import json
import math
import os

import numpy as np
from hypothesis import given, settings as hsettings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from nymtx.measure import attacks, checks, cli, sim
from nymtx.measure.trace import DROP, LOOP, REAL, Topology, View


def short_run(cover="loopix", minutes=2.0, clients=5, seed=1, **kw):
    s = sim.Settings(clients=clients, cover=cover,
                     pulls="grid" if cover == "legacy" else "poisson", **kw)
    trace = sim.simulate(s, sim.default_workload(clients, minutes), minutes * 60, seed=seed)
    return s, trace


class Model(SynchronousTestCase):

    def test_truth_is_complete_and_every_hop_named(self):
        s, trace = short_run()
        self.assertEqual(trace.check_complete(), [])
        # four hops a packet (three mixes and the gateway), unless cut off by the end
        per_packet = np.bincount(trace.hop_packet, minlength=len(trace.packet_sender))
        self.assertTrue(set(per_packet) <= {1, 2, 3, 4})
        self.assertGreater(np.mean(per_packet == 4), 0.99)
        self.assertTrue(np.all(np.diff(trace.hop_time) >= 0))

    def test_view_carries_no_truth(self):
        _, trace = short_run()
        view = trace.view()
        for field in ("hop_packet", "packet_sender", "packet_kind", "message_sender"):
            self.assertFalse(hasattr(view, field), field)

    def test_loopix_cover_sends_drops_and_legacy_sends_loops(self):
        _, new = short_run("loopix")
        _, old = short_run("legacy")
        self.assertGreater(np.sum(new.packet_kind == DROP), 0)
        self.assertEqual(np.sum(old.packet_kind == DROP), 0)
        # drop cover never comes back to anyone's mailbox (it ends at a gateway)
        self.assertTrue(np.all(new.packet_recipient[new.packet_kind == DROP] == -1))
        self.assertTrue(np.all(old.packet_recipient[old.packet_kind == LOOP]
                               == old.packet_sender[old.packet_kind == LOOP]))

    def test_every_queued_message_is_sent_once_in_order(self):
        _, trace = short_run()
        real = trace.packet_kind == REAL
        messages = trace.packet_message[real]
        self.assertEqual(len(messages), len(set(messages)))
        # a message never leaves before the application handed it over
        sent = trace.packet_sent[real]
        self.assertTrue(np.all(sent >= trace.message_queued[messages]))

    def test_settings_are_checked(self):
        self.assertRaises(ValueError, sim.Settings, cover="other")
        self.assertRaises(ValueError, sim.Settings, hop_delay=0)
        self.assertRaises(ValueError, sim.Settings, send_gap=float("nan"))
        self.assertRaises(ValueError, sim.Settings, clients=1)


def tiny_view(hops, n_clients=2, targets=()):
    """A hand-made view: one mix (node n), one gateway (node n+1)."""
    topo = Topology(clients=[f"c{i}" for i in range(n_clients)], mix_layers=[1],
                    gateways=["g"], client_gateway=[0] * n_clients)
    t, a, b = (np.array(x) for x in zip(*hops))
    return View(topology=topo, hop_time=t.astype(float), hop_src=a, hop_dst=b,
                hop_size=np.full(len(t), 1372), pull_time=np.zeros(0),
                pull_client=np.zeros(0, dtype=int), pull_count=np.zeros(0, dtype=int),
                targets=np.array(targets), duration=10.0)


class Tracing(SynchronousTestCase):

    def test_a_lone_packet_is_traced_for_certain(self):
        view = tiny_view([(0, 0, 2), (1, 2, 3), (2, 1, 2), (3, 2, 3)], targets=[1, 3])
        post = attacks.tracing(view)
        np.testing.assert_allclose(post, [[1, 0], [0, 1]])

    def test_packets_together_in_a_mix_are_indistinguishable(self):
        view = tiny_view([(0, 0, 2), (1, 1, 2), (2, 2, 3), (3, 2, 3)], targets=[2, 3])
        post = attacks.tracing(view)
        np.testing.assert_allclose(post, [[0.5, 0.5], [0.5, 0.5]])

    def test_pool_mass_carries_over(self):
        # c0 in, c1 in, one out (½,½), c0 in again, out: pool held ½c0+½c1 + c0
        view = tiny_view([(0, 0, 2), (1, 1, 2), (2, 2, 3), (3, 0, 2), (4, 2, 3)],
                         targets=[2, 4])
        post = attacks.tracing(view)
        np.testing.assert_allclose(post[1], [0.75, 0.25])

    def test_a_gateways_acks_are_in_the_pool_as_no_clients_mass(self):
        # c0 in, the gateway's ack in, one out (½ c0, ½ ack), c1 in, out:
        # the pool then held ½ c0 + ½ ack + c1. The ack's mass counts in
        # the mixing (it dilutes what leaves) but a target is a client's
        # message: the posterior is over the clients alone
        view = tiny_view([(0, 0, 2), (1, 3, 2), (2, 2, 3), (3, 1, 2), (4, 2, 3)],
                         targets=[2, 4])
        post = attacks.tracing(view)
        np.testing.assert_allclose(post[0], [1.0, 0.0])
        np.testing.assert_allclose(post[1], [1 / 3, 2 / 3])


class Attacks(SynchronousTestCase):

    def test_the_tool_finds_the_previous_releases_weakness(self):
        s, trace = short_run("legacy", minutes=3)
        view = trace.view()
        scores = {k: attacks.score(p, trace.target_senders())
                  for k, p in attacks.run_all(view, s, trace.target_recipients()).items()}
        self.assertGreater(scores["deficit"]["messages"], 50)
        self.assertGreater(scores["deficit"]["success"], 0.5)
        self.assertLess(scores["combined"]["mean_entropy_bits"], 1.5)

    def test_with_drop_cover_and_padded_pulls_there_is_nothing_to_count(self):
        s, trace = short_run("loopix", minutes=3)
        d = attacks.deficit(trace.view(), s.hop_delay, s.fetch_gap)
        np.testing.assert_allclose(d, 1.0 / s.clients)

    def test_scores_are_against_the_truth(self):
        post = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
        result = attacks.score(post, np.array([0, 0, 0]))
        # a tie gives half the credit
        self.assertAlmostEqual(result["success"], (1 + 0.5 + 0) / 3)
        self.assertEqual(result["chance"], 0.5)
        self.assertAlmostEqual(result["entropy_bits"][1], 1.0)
        self.assertAlmostEqual(result["true_sender_probability"], (0.9 + 0.5 + 0.2) / 3)

    def test_timing_uses_the_path_delay_density(self):
        # a send 0.6 s before the exit (the Erlang's mean) beats one 5 s before
        view = tiny_view([(0.0, 0, 2), (4.4, 1, 2), (5.0, 2, 3)], targets=[2])
        post = attacks.timing(view, hop_delay=0.2, mix_layers=3)
        self.assertGreater(post[0, 1], 0.99)


class Checks(SynchronousTestCase):

    def test_ks_accepts_exponential_and_refuses_uniform(self):
        rng = np.random.default_rng(5)
        good = checks.ks_exponential(rng.exponential(0.5, 2000), 0.5)
        bad = checks.ks_exponential(rng.uniform(0, 1, 2000), 0.5)
        self.assertGreater(good["p"], 0.01)
        self.assertLess(bad["p"], 1e-6)
        self.assertEqual(good["n"], 2000)

    def test_two_sample_ks_tells_a_shifted_sample(self):
        # (the ack stream's check: the lags of real packets' acks against cover's)
        rng = np.random.default_rng(6)
        same = checks.ks_two_samples(rng.exponential(0.02, 300), rng.exponential(0.02, 3000))
        later = checks.ks_two_samples(rng.exponential(0.02, 300) + 0.01,
                                      rng.exponential(0.02, 3000))
        self.assertGreater(same["p"], 0.01)
        self.assertLess(later["p"], 1e-6)
        self.assertEqual((same["n"], same["m"]), (300, 3000))
        self.assertIsNone(checks.ks_two_samples([], [1.0])["p"])
        # the statistic is the largest gap between the two empirical CDFs
        self.assertAlmostEqual(checks.ks_two_samples([1, 2], [3, 4])["statistic"], 1.0)
        self.assertAlmostEqual(checks.ks_two_samples([1, 3], [2, 4])["statistic"], 0.5)

    def test_rates_show_the_old_deficit_and_not_the_new(self):
        for cover, expect_deficit in (("legacy", True), ("loopix", False)):
            _, trace = short_run(cover, minutes=4)
            [c0] = [r for r in checks.rate_independence(trace) if r["client"] == "c0"]
            self.assertLess(abs(c0["sent"]["z"]), 3)
            self.assertEqual(c0["received"]["z"] < -3, expect_deficit, cover)

    def test_gateway_link_shows_counts_only_in_the_old_design(self):
        _, old = short_run("legacy")
        _, new = short_run("loopix")
        self.assertFalse(checks.gateway_link(old)["shows_only_timing"])
        self.assertTrue(checks.gateway_link(new)["shows_only_timing"])


class Command(SynchronousTestCase):

    def run_cli(self, *args):
        out, err = io.StringIO(), io.StringIO()
        # the model: the real network (the default) has its own tests,
        # tests/test_measure_network.py
        code = cli.main(["--simulate"] + list(args), out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    def test_writes_the_report(self):
        folder = self.mktemp()
        code, out, err = self.run_cli("--clients", "4", "--minutes", "1", "--out", folder)
        self.assertEqual((code, err), (0, ""))
        for name in ("summary.md", "figures.json", "rates.png", "entropy_cdf.png",
                     "delays.png"):
            self.assertTrue(os.path.getsize(os.path.join(folder, name)) > 0, name)
        with open(os.path.join(folder, "figures.json")) as f:
            figures = json.load(f)
        self.assertEqual(set(figures["attacks"]), set(attacks.ATTACKS))
        self.assertAlmostEqual(figures["attacks"]["timing"]["max_entropy_bits"], 2.0)
        with open(os.path.join(folder, "rates.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        self.assertIn("names the sender of", out)

    def test_json_output(self):
        code, out, _ = self.run_cli("--minutes", "0.5", "--out", self.mktemp(), "--json")
        self.assertEqual(code, 0)
        data = json.loads(out)
        self.assertIn("success", data["tracing"])

    def test_usage_errors_exit_2(self):
        for args in (["--clients", "1"], ["--cover", "x"], ["--minutes", "-1"],
                     ["--clients", "many"], ["--hop-delay", "0"]):
            code, _, err = self.run_cli(*args, "--out", self.mktemp())
            self.assertEqual(code, 2, args)
            self.assertIn("nym-measure:", err)

    def test_a_bad_workload_file_exits_1_with_the_reason(self):
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump({"phases": [{"start": 0, "end": 10, "conversations": [
                {"sender": 0, "recipient": 9, "rate": 1}]}]}, f)
        code, _, err = self.run_cli("--workload", path, "--out", self.mktemp())
        self.assertEqual(code, 1)
        self.assertIn("phases[0].conversations[0]: clients are numbered 0..4", err)

    def test_a_workload_file_is_run(self):
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump({"phases": [
                {"start": 0, "end": 20, "label": "idle"},
                {"start": 20, "end": 40, "label": "flood", "conversations": [
                    {"sender": 1, "recipient": 2, "pattern": "flood"}]}]}, f)
        folder = self.mktemp()
        code, _, _ = self.run_cli("--workload", path, "--minutes", "0.5", "--out", folder,
                                  "--json")
        self.assertEqual(code, 0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["phases", "start", "end", "label", "conversations", "sender",
                         "recipient", "rate", "pattern"]), inner, max_size=5),
    max_leaves=20)


class WorkloadFuzz(SynchronousTestCase):

    @hsettings(max_examples=200, deadline=None)
    @given(json_values)
    def test_any_json_is_a_workload_or_a_workload_error(self, value):
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump(value, f)
        try:
            phases = cli.load_workload(path, 5)
        except cli.WorkloadError:
            return
        for p in phases:
            self.assertTrue(math.isfinite(p.start) and p.start < p.end)

    @hsettings(max_examples=50, deadline=None)
    @given(st.binary(max_size=64))
    def test_any_bytes_are_a_workload_or_a_workload_error(self, data):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        try:
            cli.load_workload(path, 5)
        except cli.WorkloadError:
            pass
