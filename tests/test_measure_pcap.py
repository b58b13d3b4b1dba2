"""nym-measure --pcap: a capture of a real deployment read as the adversary's view.

A real capture (the kernel's loopback frames through a packet socket, as
tcpdump takes them) of a short real measurement must give the same view as
the in-node taps of the same run: the same packets on every link, the same
pull answers. Hand-built captures cover the formats, link types and TCP's
edge cases; hypothesis feeds the reader arbitrary bytes.
"""

import collections
import io
import json
import os
import random
import struct

from hypothesis import given, settings as hsettings, strategies as st
import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.addressing import NodeAddress
from nymtx.keys import encode_key
from nymtx.localnet import Timing
from nymtx.measure import attacks, cli, network, pcap, sim
from nymtx.topology import Topology
from tests.sniff import Sniffer, can_sniff

FAST = sim.Settings(clients=3, send_gap=0.05, loop_gap=0.1, hop_delay=0.02, fetch_gap=0.1)
WORKLOAD = [sim.Phase(0.0, 1.0, "idle"),
            sim.Phase(1.0, 2.5, "conversations", (sim.Conversation(0, 1, 8.0),)),
            sim.Phase(2.5, 3.5, "idle")]
TIMING = Timing(presence_interval=0.1, metrics_interval=0.5, expiry=2.0)
WHY_NOT = can_sniff()


class RealCapture(TestCase):
    timeout = 60
    if WHY_NOT:
        skip = f"no real loopback capture here: {WHY_NOT}"

    def test_a_capture_shows_what_the_taps_saw(self):
        return Deferred.fromCoroutine(self._capture())

    async def _capture(self):
        sniffer = Sniffer()
        try:
            cap = await network.capture(reactor, FAST, WORKLOAD, 3.5, seed=5,
                                        home=self.mktemp(), timing=TIMING)
        finally:
            sniffer.stop()
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        doc = network.nodes_document(cap)
        nodes_path = os.path.join(folder, "nodes.json")
        with open(nodes_path, "w") as f:
            json.dump(doc, f)
        # the frames of this network only, as `tcpdump 'tcp port A or ...'`
        # would keep them: other tests use the loopback too
        ports = {NodeAddress.from_bytes(raw).port for raw in cap.node_address}
        ports |= {g.client_listener.port for g in Topology.from_json(doc).gateways}
        capture_path = os.path.join(folder, "capture.pcap")
        self.assertGreater(sniffer.write(capture_path, ports), 500)

        observed = pcap.read(capture_path, nodes_path)
        view = observed.view
        self.assertEqual(observed.problems, [])
        self.assertEqual(observed.stats["packets with bytes missing from the capture (left out)"], 0)
        self.assertEqual(view.topology.clients, cap.clients)
        # every mix-link packet the nodes cut from their streams is in the
        # capture, on the same link, in the same order, a little earlier
        # (the kernel has it before the node reads it)
        tapped = collections.defaultdict(list)
        for t, dst, src, packet in cap.packets:
            tapped[src, dst].append(t)
        seen = collections.defaultdict(list)
        start = observed.stats["capture start (Unix s)"]
        for t, src, dst in zip(view.hop_time, view.hop_src, view.hop_dst):
            seen[int(src), int(dst)].append(t + start)
        # (up to the end of the recording: as the network stops, a node may
        # close its listener with packets on their way to it, which the
        # kernel carried and the capture shows but the node never read)
        self.assertEqual(set(seen), set(tapped))
        lead = []
        for link, times in tapped.items():
            before = [t for t in times if t <= cap.end]
            self.assertGreater(len(before), 50, link)
            got = sorted(seen[link])
            self.assertTrue(all(t > cap.end - 0.1 for t in got[len(times):]), link)
            lead += list(np.array(sorted(before)) - np.array(got[:len(before)]))
        lead = np.array(lead)
        self.assertGreater(lead.min(), -0.002)   # the two clocks are one (time.time)
        self.assertLess(np.median(lead), 0.05)
        self.assertEqual(set(view.hop_size), {1372})
        # the pull answers, per client: the frames down after the register answer
        # (answers wait for the gateway's commit, and a client keeps several
        # pulls in flight: the taps pair each answer with its store pull in order)
        self.assertEqual(collections.Counter(view.pull_client.tolist()),
                         collections.Counter(p[1] for p in cap.pulls))
        self.assertTrue(np.all(view.pull_count == -1))
        self.assertTrue(observed.link["every frame one size each way (after the handshake)"])
        self.assertEqual(set(observed.link["channel messages down"]), {"50", "10521"})
        # the gateway's acks into layer 1, named by the nodes file's "sources"
        gateway = view.topology.first_gateway
        from_gateway = int(np.sum(view.hop_src == gateway))
        self.assertGreater(from_gateway, 50)
        self.assertEqual(observed.stats["packets from gateways into layer 1 (acks)"], from_gateway)
        self.assertTrue(np.all(view.hop_dst[view.hop_src == gateway] == view.topology.first_mix))
        # the exits asked about are every packet into the gateway
        self.assertEqual(len(view.targets), int(np.sum(view.hop_dst == gateway)))

        # the command reads it: entropies, and what it cannot compute
        out, err = io.StringIO(), io.StringIO()
        report = os.path.join(folder, "report")
        code = cli.main(["--pcap", capture_path, "--nodes", nodes_path, "--out", report,
                         "--send-gap", "0.05", "--loop-gap", "0.1", "--hop-delay", "0.02",
                         "--fetch-gap", "0.1"], out=out, err=err)
        self.assertEqual(code, 0, err.getvalue())
        with open(os.path.join(report, "figures.json")) as f:
            figures = json.load(f)
        self.assertEqual(figures["meta"]["mode"], "pcap")
        for name in ("timing", "tracing", "deficit"):
            s = figures["attacks"][name]
            self.assertEqual(s["packets"], len(view.targets))
            self.assertIsNone(s["success"])
            self.assertTrue(0 < s["mean_entropy_bits"] <= s["max_entropy_bits"] + 1e-9)
        self.assertIsNone(figures["attacks"]["combined"]["mean_entropy_bits"])
        self.assertIn("success of every attack (how often it names the true sender)",
                      figures["not computed"])
        self.assertEqual(figures["checks"]["packet_sizes"]["sizes"], [1372])
        # (the taps' trace leaves out what was sent before the workload)
        trace, problems, _ = network.to_trace(cap)
        self.assertEqual(problems, [])
        self.assertLess(len(trace.hop_time), len(view.hop_time))
        self.assertTrue(os.path.getsize(os.path.join(report, "entropy_cdf.png")) > 0)


# ---- hand-built captures -----------------------------------------------------

def key(i):
    return encode_key(bytes([i]) * 32)


NODES = {
    "MixNodes": [{"host": f"10.0.0.{i}:1789", "pubKey": key(i), "layer": i} for i in (1, 2, 3)],
    "MixProviderNodes": [{"host": "10.0.0.4:1789", "clientListener": "10.0.0.4:9000",
                          "pubKey": key(4)}],
}
CLIENT, MIX1, MIX2, GATEWAY = "10.0.1.1", "10.0.0.1", "10.0.0.2", "10.0.0.4"


def ipv4(src, dst, body, proto=6, fragment=0):
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, fragment, 64, proto, 0,
                         bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return header + body


def ipv6(src, dst, body, extension=True):
    import ipaddress
    if extension:   # a hop-by-hop options header, 8 bytes, before TCP
        body = bytes([6, 0]) + bytes(6) + body
    return (struct.pack(">IHBB", 6 << 28, len(body), 0 if extension else 6, 64)
            + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + body)


def tcp(sport, dport, seq, payload=b"", flags=0x18):
    return struct.pack(">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 0, 5 << 4, flags,
                       65535, 0, 0) + payload


def ether(ip, vlan=False):
    kind = b"\x86\xdd" if ip[0] >> 4 == 6 else b"\x08\x00"
    tag = b"\x81\x00\x00\x07" if vlan else b""
    return bytes(12) + tag + kind + ip


LINKS = {
    pcap.LINKTYPE_ETHERNET: ether,
    pcap.LINKTYPE_LINUX_SLL: lambda ip: bytes(14) + (b"\x86\xdd" if ip[0] >> 4 == 6
                                                     else b"\x08\x00") + ip,
    pcap.LINKTYPE_LINUX_SLL2: lambda ip: (b"\x86\xdd" if ip[0] >> 4 == 6 else b"\x08\x00")
    + bytes(18) + ip,
    pcap.LINKTYPE_NULL: lambda ip: struct.pack("<I", 30 if ip[0] >> 4 == 6 else 2) + ip,
    pcap.LINKTYPE_LOOP: lambda ip: struct.pack(">I", 24 if ip[0] >> 4 == 6 else 2) + ip,
    pcap.LINKTYPE_RAW: lambda ip: ip,
}


def classic(frames, linktype=pcap.LINKTYPE_ETHERNET, nanoseconds=False, big=False):
    """A libpcap file of (time, frame bytes[, length on the wire])."""
    if not big:
        out = pcap.pcap_header(linktype, nanoseconds=nanoseconds)
        for f in frames:
            out += pcap.pcap_record(f[0], f[1], f[2] if len(f) > 2 else None, nanoseconds)
        return out
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = struct.pack(">IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    unit = 1e9 if nanoseconds else 1e6
    for f in frames:
        sec = int(f[0])
        out += struct.pack(">IIII", sec, int(round((f[0] - sec) * unit)), len(f[1]),
                           f[2] if len(f) > 2 else len(f[1])) + f[1]
    return out


def pcapng(frames, linktype=pcap.LINKTYPE_ETHERNET, resolution=9, offset=0):
    def block(kind, body):
        body += bytes(-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    options = struct.pack("<HHB3x", 9, 1, resolution) + struct.pack("<HHq", 14, 8, offset) \
        + struct.pack("<HH", 0, 0)
    out += block(1, struct.pack("<HHI", linktype, 0, 0) + options)
    out += block(5, b"statistics: skipped")
    unit = 10 ** resolution
    for f in frames:
        ticks = int(round((f[0] - offset) * unit))
        out += block(6, struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(f[1]),
                                    f[2] if len(f) > 2 else len(f[1])) + f[1])
    return out


def mix_stream(payloads, isn=1000, t0=100.0, link=ether, v6=False, src=CLIENT, dst=MIX1):
    """Frames of one connection to a mixnode: SYN, then each (offset, bytes) as a segment."""
    make = (lambda s, d, b: ipv6(s, d, b)) if v6 else ipv4
    frames = [(t0, link(make(src, dst, tcp(40000, 1789, isn, flags=0x02))))]
    for i, (offset, data) in enumerate(payloads):
        frames.append((t0 + 0.1 * (i + 1), link(make(src, dst, tcp(40000, 1789,
                                                                   isn + 1 + offset, data)))))
    return frames


def observe(data, nodes=NODES):
    return pcap.observe(pcap.read_frames(data), pcap.load_nodes(json.dumps(nodes)))


STREAM = bytes(random.Random(1).randrange(256) for _ in range(3 * 1372))


def two_clients():
    """Frames of two clients' three packets each, through the three mixes."""
    frames = mix_stream([(0, STREAM)])
    frames += mix_stream([(0, STREAM)], src="10.0.1.2", t0=100.05)
    for src, t0 in ((MIX1, 100.4), ("10.0.0.2", 100.6), ("10.0.0.3", 100.8)):
        dst = {MIX1: MIX2, "10.0.0.2": "10.0.0.3", "10.0.0.3": GATEWAY}[src]
        frames += mix_stream([(0, STREAM + STREAM)], src=src, dst=dst, t0=t0)
    frames.sort(key=lambda f: f[0])
    return frames


class Formats(SynchronousTestCase):

    def test_three_packets_cut_from_odd_segments(self):
        # 1000 bytes, then 1744 (the end of packet 1 and all of packet 2), then
        # the last 1372: a packet's time is its last byte's
        frames = mix_stream([(0, STREAM[:1000]), (1000, STREAM[1000:2744]),
                             (2744, STREAM[2744:])])
        view = observe(classic(frames)).view
        self.assertEqual(view.topology.clients, [CLIENT])
        self.assertEqual(list(view.hop_src), [0, 0, 0])
        self.assertEqual(list(view.hop_dst), [1, 1, 1])
        self.assertTrue(np.allclose(view.hop_time, [0.2, 0.2, 0.3]))

    def test_every_format_and_link_type_gives_the_same_view(self):
        payload = [(0, STREAM[:2000]), (2000, STREAM[2000:])]
        expected = None
        for linktype, link in LINKS.items():
            for v6 in (False, True):
                src, dst = ("fd00::1:1", "fd00::1") if v6 else (CLIENT, MIX1)
                nodes = json.loads(json.dumps(NODES))
                if v6:
                    nodes["MixNodes"][0]["host"] = "[fd00::1]:1789"
                frames = mix_stream(payload, link=link, v6=v6, src=src, dst=dst)
                for data in (classic(frames, linktype), classic(frames, linktype, True, True),
                             pcapng(frames, linktype), pcapng(frames, linktype, 6, 50)):
                    view = observe(data, nodes).view
                    got = ([int(x) for x in view.hop_src], [int(x) for x in view.hop_dst],
                           [round(float(t), 6) for t in view.hop_time])
                    expected = expected or got
                    self.assertEqual(got, expected, (linktype, v6))
        self.assertEqual(expected, ([0, 0, 0], [1, 1, 1], [0.1, 0.2, 0.2]))
        # an 802.1Q tag is skipped
        frames = mix_stream(payload, link=lambda ip: ether(ip, vlan=True))
        self.assertEqual(len(observe(classic(frames)).view.hop_time), 3)

    def test_reordering_retransmission_and_a_wrapping_sequence_number(self):
        isn = 0xFFFFFFFF - 500   # the sequence number wraps inside packet 1
        frames = mix_stream([(1372, STREAM[1372:2744]),        # early: held
                             (0, STREAM[:800]),
                             (400, STREAM[400:1372]),          # overlaps what came
                             (0, STREAM[:1372]),               # a retransmission
                             (2744, STREAM[2744:])], isn=isn)
        observed = observe(classic(frames))
        self.assertEqual(len(observed.view.hop_time), 3)
        # packet 1 completes with the third segment, packet 2 with it too
        self.assertTrue(np.allclose(observed.view.hop_time, [0.3, 0.3, 0.5]))

    def test_the_reassembly_gives_the_stream_back(self):
        got = bytearray()
        stream = pcap.Stream(lambda offset, t, data: got.extend(data), self.fail)
        seg = lambda seq, data, flags=0x18: pcap.Segment(0.0, "a", 1, "b", 2, seq, flags, data, 0)
        stream.feed(seg(7, b"", pcap.SYN))
        stream.feed(seg(8 + 5, b"fghij"))
        stream.feed(seg(8, b"abcde"))
        stream.feed(seg(8 + 3, b"defghijk"))
        self.assertEqual(bytes(got), b"abcdefghijk")

    def test_bytes_the_capture_lacks_damage_only_their_packets(self):
        # the frame with packet 2's first 600 bytes is cut by the snap length
        # to 100 bytes of payload: packet 2 is left out, 1 and 3 are kept
        frames = mix_stream([(0, STREAM[:1372]), (1372, STREAM[1372:2744]),
                             (2744, STREAM[2744:])])
        _, syn, first, second, third = [None] + frames
        cut = second[1][:14 + 20 + 20 + 100]
        frames = [syn, first, (second[0], cut, len(second[1])), third]
        observed = observe(classic(frames))
        self.assertEqual(len(observed.view.hop_time), 2)
        self.assertTrue(np.allclose(observed.view.hop_time, [0.1, 0.3]))
        self.assertEqual(observed.stats["packets with bytes missing from the capture (left out)"], 1)
        # a dropped frame is a hole too (known from the next one's sequence number)
        observed = observe(classic([syn, first, third]))
        self.assertEqual(len(observed.view.hop_time), 2)
        self.assertEqual(observed.stats["packets with bytes missing from the capture (left out)"], 1)

    def test_a_stream_without_its_start_is_not_cut(self):
        frames = mix_stream([(0, STREAM[:1372]), (1372, STREAM[1372:])])[1:]
        observed = observe(classic(frames))
        self.assertEqual(len(observed.view.hop_time), 0)
        self.assertEqual(observed.stats[
            "bytes of streams whose start is not in the capture (not cut)"], len(STREAM))

    def test_fragments_other_protocols_and_other_traffic_are_counted_apart(self):
        frames = mix_stream([(0, STREAM)])
        frames += [(101.0, ether(ipv4(CLIENT, MIX1, b"x" * 40, fragment=0x2000))),
                   (101.1, ether(ipv4(CLIENT, MIX1, b"x" * 40, proto=17))),
                   (101.2, ether(ipv4(CLIENT, "10.9.9.9", tcp(1, 80, 5, b"GET /")))),
                   (101.3, b"\xff" * 60)]
        stats = observe(classic(frames)).stats
        self.assertEqual(stats["mix-link packets"], 3)
        self.assertEqual(stats["IP fragments (left out)"], 1)
        self.assertEqual(stats["IP packets that are not TCP"], 1)
        self.assertEqual(stats["segments of other traffic (left out)"], 1)
        self.assertEqual(stats["frames that are not IP"], 1)

    def test_names_come_from_the_topology_and_its_sources(self):
        # mix 1 forwards to mix 2 from its own host; a host no node names is a
        # client only into layer 1
        frames = mix_stream([(0, STREAM[:1372])])
        frames += mix_stream([(0, STREAM[:1372])], src=MIX1, dst=MIX2, t0=101.0)
        frames += mix_stream([(0, STREAM[:1372])], src="10.7.7.7", dst=MIX2, t0=102.0)
        observed = observe(classic(frames))
        self.assertEqual(list(observed.view.hop_src), [0, 1])
        self.assertEqual(list(observed.view.hop_dst), [1, 2])
        self.assertEqual(observed.stats[
            "packets from addresses the topology does not name (left out)"], 1)
        # "sources" names a node's outgoing address, "clients" a client's name
        nodes = dict(NODES, sources={"10.7.7.7": "10.0.0.1:1789"}, clients={CLIENT: "alice"})
        observed = observe(classic(frames), nodes)
        self.assertEqual(list(observed.view.hop_src), [0, 1, 1])
        self.assertEqual(observed.view.topology.clients, ["alice"])
        nodes = dict(NODES, sources={"10.7.7.7": key(2)})
        self.assertEqual(list(observe(classic(frames), nodes).view.hop_src), [0, 1, 2])

    def test_the_client_link_is_cut_into_channel_messages(self):
        def message(length):
            return struct.pack(">H", length) + bytes(length)
        up = message(96) + message(99) * 3
        down = message(48) + message(9869) * 3
        frames = [(10.0, ether(ipv4(CLIENT, GATEWAY, tcp(5000, 9000, 1, flags=0x02)))),
                  (10.0, ether(ipv4(GATEWAY, CLIENT, tcp(9000, 5000, 70, flags=0x12)))),
                  (10.1, ether(ipv4(CLIENT, GATEWAY, tcp(5000, 9000, 2, up))))]
        # down in pieces: a message split across segments, and one segment
        # holding the ends of two
        cuts = [0, 30, 50 + 9871 - 7, 50 + 2 * 9871 + 3, len(down)]
        for i in range(4):
            frames.append((11.0 + i, ether(ipv4(GATEWAY, CLIENT, tcp(
                9000, 5000, 71 + cuts[i], down[cuts[i]:cuts[i + 1]])))))
        observed = observe(classic(frames))
        self.assertEqual(observed.link["channel messages up"], {"98": 1, "101": 3})
        self.assertEqual(observed.link["channel messages down"], {"50": 1, "9871": 3})
        self.assertTrue(observed.link["every frame one size each way (after the handshake)"])
        # the first answer is the register's; the pulls are the other two,
        # at the time of each one's last byte
        self.assertEqual(list(observed.view.pull_client), [0, 0])
        start = observed.stats["capture start (Unix s)"]
        self.assertTrue(np.allclose(observed.view.pull_time + start, [13.0, 14.0]))
        self.assertEqual(observed.view.topology.client_gateway, [0])

    def test_packets_back_on_a_mix_link_are_a_problem(self):
        frames = mix_stream([(0, STREAM[:1372])])
        frames.append((105.0, ether(ipv4(MIX1, CLIENT, tcp(1789, 40000, 9, flags=0x12)))))
        frames.append((105.1, ether(ipv4(MIX1, CLIENT, tcp(1789, 40000, 10, STREAM[:1372])))))
        problems = observe(classic(frames)).problems
        self.assertEqual(len(problems), 1)
        self.assertIn("one way", problems[0])

    def test_a_capture_stopped_while_writing_keeps_its_whole_frames(self):
        data = classic(mix_stream([(0, STREAM[:1372]), (1372, STREAM[1372:2744])]))
        for cut in (1, 10, 17, 100):
            self.assertEqual(len(pcap.read_frames(data[:-cut])), 2)
        data = pcapng(mix_stream([(0, STREAM[:1372]), (1372, STREAM[1372:2744])]))
        self.assertEqual(len(pcap.read_frames(data[:-5])), 2)

    def test_what_cannot_be_read_is_a_clear_error(self):
        good = classic(mix_stream([(0, STREAM[:1372])]))
        cases = {b"": "too short", b"GIF89a": "not a pcap",
                 good[:20]: "24 bytes",
                 good[:4] + b"\x03" + good[5:]: "version 3",
                 good[:24] + struct.pack("<IIII", 1, 0, 1 << 30, 1 << 30): "corrupt",
                 good[:24] + struct.pack("<IIII", 1, 2_000_000, 0, 0): "fraction",
                 classic([(1.0, b"x")], linktype=147): "link type 147"}
        ng = pcapng(mix_stream([(0, STREAM[:100])]))
        cases[ng[:8] + b"\x00\x00\x00\x00" + ng[12:]] = "byte-order magic"
        cases[ng[:24] + b"\x00" + ng[25:]] = "trailing length"
        cases[ng[:4] + struct.pack("<I", 14) + ng[8:]] = "multiple of 4"
        # the first packet block names an interface that was never described
        first = ng.index(struct.pack("<I", 6))
        cases[ng[:first + 8] + struct.pack("<I", 3) + ng[first + 12:]] = "interface 3"
        for data, why in cases.items():
            with self.assertRaises(pcap.PcapError) as e:
                pcap.observe(pcap.read_frames(data), pcap.load_nodes(json.dumps(NODES)))
            self.assertIn(why, str(e.exception))

    def test_a_nodes_file_that_cannot_be_used_is_a_clear_error(self):
        for doc, why in ((b"{", "not JSON"), (b"[]", "JSON object"),
                         (json.dumps({"MixNodes": []}), "no mixnodes"),
                         (json.dumps(dict(NODES, sources={"10.1.1.1": "10.0.0.9:1"})),
                          "names no node"),
                         (json.dumps(dict(NODES, sources={"nothing": "10.0.0.1:1789"})),
                          "'sources'"),
                         (json.dumps(dict(NODES, clients=[1])), "'clients'")):
            with self.assertRaises(pcap.PcapError) as e:
                pcap.load_nodes(doc)
            self.assertIn(why, str(e.exception))

    def test_the_command_names_a_bad_capture(self):
        folder = self.mktemp()
        os.makedirs(folder)
        nodes, bad = os.path.join(folder, "nodes.json"), os.path.join(folder, "x.pcap")
        with open(nodes, "w") as f:
            json.dump(NODES, f)
        with open(bad, "wb") as f:
            f.write(b"not a capture")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.main(["--pcap", bad, "--nodes", nodes, "--out", folder],
                                  out=out, err=err), 1)
        self.assertIn("not a pcap or pcapng file", err.getvalue())
        # one client is too few to ask who sent a packet
        with open(bad, "wb") as f:
            f.write(classic(mix_stream([(0, STREAM)])))
        self.assertEqual(cli.main(["--pcap", bad, "--nodes", nodes, "--out", folder],
                                  out=out, err=err), 1)
        self.assertIn("at least 2", err.getvalue())
        # two are enough: the report has each attack's entropy, and says
        # what a capture cannot give
        with open(bad, "wb") as f:
            f.write(pcapng(two_clients()))
        report = os.path.join(folder, "report")
        out = io.StringIO()
        self.assertEqual(cli.main(["--pcap", bad, "--nodes", nodes, "--out", report],
                                  out=out, err=err), 0)
        self.assertIn("tracing   sender entropy", out.getvalue())
        self.assertIn("combined  not computed", out.getvalue())
        with open(os.path.join(report, "figures.json")) as f:
            figures = json.load(f)
        self.assertEqual(figures["attacks"]["tracing"]["packets"], 6)
        self.assertEqual(figures["checks"]["packet_sizes"]["sizes"], [1372])
        self.assertEqual(len(figures["checks"]["send_gaps"]), 2)
        with open(os.path.join(report, "summary.md")) as f:
            summary = f.read()
        self.assertIn("## Not computed from a capture", summary)
        self.assertIn("no truth", summary)
        self.assertEqual(cli.main(["--pcap", bad], out=out, err=err), 2)
        self.assertEqual(cli.main(["--pcap", bad, "--nodes", nodes, "--simulate"],
                                  out=out, err=err), 2)

    def test_two_clients_scored_without_truth(self):
        view = observe(classic(two_clients())).view
        self.assertEqual(view.topology.n_clients, 2)
        self.assertEqual(len(view.targets), 6)
        p = attacks.tracing(view)
        self.assertTrue(np.allclose(p.sum(axis=1), 1.0))
        u = attacks.uncertainty(p, 2)
        self.assertEqual(u["packets"], 6)
        self.assertIsNone(u["success"])
        self.assertIsNone(attacks.uncertainty(None, 2)["mean_entropy_bits"])


class Fuzz(SynchronousTestCase):
    """Arbitrary bytes are a clear error or a view, never a crash."""

    nodes = pcap.load_nodes(json.dumps(NODES))

    def _any(self, data):
        try:
            frames = pcap.read_frames(data)
        except pcap.PcapError:
            return
        try:
            pcap.observe(frames, self.nodes)
        except pcap.PcapError:
            pass

    @hsettings(max_examples=300, deadline=None)
    @given(st.binary(max_size=400))
    def test_any_bytes(self, data):
        self._any(data)

    @hsettings(max_examples=300, deadline=None)
    @given(st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                            b"\x0a\x0d\x0d\x0a"]), st.binary(max_size=600))
    def test_any_bytes_after_a_magic(self, magic, tail):
        self._any(magic + tail)

    @hsettings(max_examples=300, deadline=None)
    @given(st.sampled_from(sorted(LINKS)), st.lists(st.binary(max_size=120), max_size=8))
    def test_any_frames(self, linktype, frames):
        self._any(classic([(1.0 + i, f) for i, f in enumerate(frames)], linktype))

    @hsettings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 4200), st.integers(0, 1500), st.booleans()),
                    max_size=12), st.integers(0, 0xFFFFFFFF))
    def test_any_segments_of_a_real_stream(self, pieces, isn):
        # pieces of a real stream in any order, repeated or cut by the snap
        # length: never a crash, and never more packets than the stream holds
        frames = []
        for offset, size, cut in pieces:
            frame = ether(ipv4(CLIENT, MIX1, tcp(40000, 1789, isn + 1 + offset,
                                                 STREAM[offset:offset + size])))
            frames.append((frame[:60], len(frame)) if cut else (frame, None))
        data = classic([(100.0, ether(ipv4(CLIENT, MIX1, tcp(40000, 1789, isn, flags=2))))]
                       + [(100.0 + i, f, n) for i, (f, n) in enumerate(frames)])
        view = pcap.observe(pcap.read_frames(data), self.nodes).view
        self.assertLessEqual(len(view.hop_time), 3)

    @hsettings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(0, len(STREAM) - 1), max_size=10), st.randoms())
    def test_the_reassembly_of_any_shuffle_is_the_stream(self, cuts, rng):
        bounds = sorted(set([0, len(STREAM)] + cuts))
        segments = [(a, STREAM[a:b]) for a, b in zip(bounds, bounds[1:])]
        segments += rng.sample(segments, min(3, len(segments)))   # retransmissions
        rng.shuffle(segments)
        got = bytearray()
        stream = pcap.Stream(lambda offset, t, data: got.extend(data), self.fail)
        stream.feed(pcap.Segment(0.0, "a", 1, "b", 2, 41, pcap.SYN, b"", 0))
        for offset, data in segments:
            stream.feed(pcap.Segment(0.0, "a", 1, "b", 2, 42 + offset, 0x18, data, 0))
        stream.finish()
        self.assertEqual(bytes(got), STREAM)
