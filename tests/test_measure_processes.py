"""nym-measure --processes: one OS process per node, the taps' records on disk.

A short real measurement with every node in a process of its own must give
a complete truth (every packet peeled, every message found), as in one
process. The tap record format is checked against its test vectors
(docs/anonymity.md) and fuzzed.
"""

import io
import os

from hypothesis import given, settings as hsettings, strategies as st
import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.localnet import Timing
from nymtx.measure import cli, network, processes as P, sim
from nymtx.measure.trace import ACK, REAL

FAST = sim.Settings(clients=2, send_gap=0.05, loop_gap=0.1, hop_delay=0.02, fetch_gap=0.1)
WORKLOAD = [sim.Phase(0.0, 0.5, "idle"),
            sim.Phase(0.5, 2.0, "conversations", (sim.Conversation(0, 1, 8.0),)),
            sim.Phase(2.0, 2.5, "idle")]
TIMING = Timing(presence_interval=0.1, metrics_interval=0.5, expiry=2.0)


class OneProcessPerNode(TestCase):
    timeout = 90

    def test_the_truth_is_complete(self):
        return Deferred.fromCoroutine(self._measure())

    async def _measure(self):
        home = os.path.abspath(self.mktemp())
        cap = await network.capture(reactor, FAST, WORKLOAD, 2.5, seed=2, home=home,
                                    timing=TIMING, processes=True)
        # every node wrote its records to a file of its own, read back whole
        names = sorted(os.listdir(os.path.join(home, "taps")))
        self.assertEqual(names, sorted(f"{n}.tap" for n in cap.mixnodes + cap.gateways))
        trace, problems, stats = network.to_trace(cap)
        self.assertEqual(problems, [])
        self.assertEqual(trace.check_complete(), [])
        self.assertGreater(len(cap.packets), 200)
        self.assertGreater(len(trace.message_sender), 5)
        self.assertEqual(stats["messages found"], len(trace.message_sender))
        real = trace.packet_kind == REAL
        self.assertEqual(sorted(trace.packet_message[real]),
                         list(range(len(trace.message_sender))))
        # each packet's sender is its connection's address, mapped by the
        # parent: clients into layer 1, each mixnode into the next layer
        topo = trace.topology
        # into layer 1: the clients' packets, and the gateways' acks (from the
        # gateway processes' own source addresses)
        into_first = trace.hop_dst == topo.first_mix
        acks = trace.packet_kind == ACK
        self.assertTrue(np.all((trace.hop_src[into_first] < topo.n_clients)
                               == ~acks[trace.hop_packet[into_first]]))
        self.assertTrue(np.all(trace.hop_src[into_first][acks[trace.hop_packet[into_first]]]
                               == topo.first_gateway))
        self.assertGreater(acks.sum(), 50)
        self.assertEqual(stats["packets that reached their gateway whose ack never left it"], 0)
        self.assertTrue(np.all(trace.hop_src[trace.hop_dst == topo.first_gateway]
                               == topo.first_gateway - 1))
        self.assertEqual(set(trace.hop_size), {1372})
        # the gateway's process recorded the pull answers with the key its
        # channel proved, and the truth of each
        self.assertGreater(len(cap.pulls), 10)
        self.assertGreater(trace.pull_true_count.sum(), 0)
        self.assertTrue(np.all(trace.pull_count == -1))
        # one clock: no packet reaches the next node before its delay is over
        for hop in network.link_checks(cap, trace)["lateness"]:
            self.assertGreater(hop["min"], -0.001, hop)


class TapRecords(SynchronousTestCase):
    """The test vectors of docs/anonymity.md ("The tap record format")."""

    VECTORS = [
        (P.encode_packet(1.5, "127.0.1.1", b"\x01\x02"),
         "013ff8000000000000093132372e302e312e31000000020102",
         (P.PACKET, 1.5, "127.0.1.1", b"\x01\x02")),
        (P.encode_chunk(2.0, "127.0.1.2", 1, 9871),
         "024000000000000000093132372e302e312e32010000268f",
         (P.CHUNK, 2.0, "127.0.1.2", 1, 9871)),
        (P.encode_pull(3.25, "127.0.1.1", b"ab", 2, bytes(range(32))),
         "03400a000000000000093132372e302e312e3100000002" + bytes(range(32)).hex()
         + "000000026162",
         (P.PULL, 3.25, "127.0.1.1", b"ab", 2, bytes(range(32)))),
        (P.encode_problem("no"), "0400000000000000000000026e6f", (P.PROBLEM, 0.0, "", "no")),
    ]

    def test_vectors(self):
        for encoded, hex_, record in self.VECTORS:
            self.assertEqual(encoded.hex(), hex_)
            self.assertEqual(P.read_records(P.MAGIC + encoded), ([record], None))
        self.assertEqual(P.MAGIC, b"nymtap1\n")

    def test_a_file_cut_short_keeps_its_whole_records(self):
        whole = P.MAGIC + b"".join(v[0] for v in self.VECTORS)
        for cut in (1, 5, 13):   # the last record is 14 bytes
            records, note = P.read_records(whole[:-cut])
            self.assertEqual(len(records), 3)
            self.assertIn("cut short", note)

    def test_what_is_not_a_tap_file_is_a_clear_error(self):
        packet = self.VECTORS[0][0]
        for data, why in ((b"", "not a tap file"), (b"nymtap2\n", "not a tap file"),
                          (P.MAGIC + b"\x09" + packet[1:], "kind 9"),
                          (P.MAGIC + packet[:1] + bytes.fromhex("7ff8000000000000")
                           + packet[9:], "time nan"),
                          (P.MAGIC + self.VECTORS[1][0][:-5] + b"\x07" + bytes(4),
                           "direction 7"),
                          (P.MAGIC + packet[:10] + b"\xff" + packet[11:], "not ASCII")):
            with self.assertRaises(P.TapFileError) as e:
                P.read_records(data)
            self.assertIn(why, str(e.exception))

    @hsettings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_bytes(self, data):
        for candidate in (data, P.MAGIC + data):
            try:
                records, note = P.read_records(candidate)
            except P.TapFileError:
                continue
            self.assertTrue(all(r[0] in (P.PACKET, P.CHUNK, P.PULL, P.PROBLEM) for r in records))

    def test_the_file_recorder_writes_what_the_taps_give(self):
        out = io.BytesIO()
        recorder = P.FileRecorder(reactor, out)
        self.assertEqual(recorder.source("127.0.1.7"), "127.0.1.7")
        self.assertEqual(recorder.key_for("127.0.1.7", b"k" * 32), b"k" * 32)
        recorder.packets.append((1.0, 5, "127.0.2.1", b"p" * 1372))
        recorder.chunks.append((2.0, "127.0.1.1", network.UP, 101))
        recorder.pulls.append((3.0, "127.0.1.1", b"a" * 9871, 4, b"k" * 32))
        recorder.problems.append("a complaint")
        records, note = P.read_records(out.getvalue())
        self.assertIsNone(note)
        self.assertEqual(records, [(P.PACKET, 1.0, "127.0.2.1", b"p" * 1372),
                                   (P.CHUNK, 2.0, "127.0.1.1", 0, 101),
                                   (P.PULL, 3.0, "127.0.1.1", b"a" * 9871, 4, b"k" * 32),
                                   (P.PROBLEM, 0.0, "", "a complaint")])

    def test_collecting_names_every_peer_and_what_does_not_fit(self):
        home = self.mktemp()
        nodes = P.ProcessNodes(reactor, home, FAST, TIMING)
        recorder = network.Recorder(reactor)
        recorder.sources = {"127.0.1.1": 0, "127.0.2.1": 2}
        recorder.key_of = {0: b"a" * 32}
        gateway = nodes.gateway_names[0]
        with open(os.path.join(nodes.tap_dir, f"{gateway}.tap"), "wb") as f:
            f.write(P.MAGIC + P.encode_pull(5.0, "127.0.1.1", b"x", 1, b"b" * 32)
                    + P.encode_packet(4.0, "127.0.2.1", b"y") + b"\x01")
        nodes.collect(recorder)
        self.assertEqual(recorder.packets, [(4.0, nodes.node_number(gateway), 2, b"y")])
        self.assertEqual(recorder.pulls, [(5.0, 0, b"x", 1, b"b" * 32)])
        problems = "\n".join(recorder.problems)
        self.assertIn("answered a pull of client 62626262", problems)
        self.assertIn("cut short", problems)
        # the mixnodes wrote no file at all
        self.assertEqual(sum("cannot be read" in p for p in recorder.problems), 3)

    def test_processes_are_the_real_networks(self):
        err = io.StringIO()
        self.assertEqual(cli.main(["--processes", "--simulate"], out=io.StringIO(), err=err), 2)
        self.assertIn("not with --simulate", err.getvalue())
