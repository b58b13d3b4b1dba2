"""What authenticated mix links (docs/mix-link.md) cost a mixnode per packet.

    python benchmarks/mixlink_bench.py [--packets 20000] [--rounds 3] [--json]

Two parts, each against the Sphinx floor measured in the same run:

1. micro: sealing and opening one 1388-byte frame (MixLink.seal, then the
   receiver's MixLink.receive) against process_packet() on one packet,
   timed in turn (A B A B ...), best of --rounds; and a whole handshake
   (both sides, messages 1-4) against process_packet().
2. node: a layer-2 mixnode in its own process (as benchmarks/mixnode_bench.py
   runs one) takes --packets packets from a load process and forwards them
   to a sink in this process, with plain links and with mix links in and
   out (the load and the sink are the previous layer's node and the next
   hop, proven by their keys), in interleaved rounds (plain, mix links,
   plain, ...). The figures: the node's CPU per packet (from /proc) each
   way, and the difference against process_packet's CPU per packet
   measured just before each pair of rounds.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mixnode_bench import build, cpu_seconds, measure_process  # noqa: E402

from nymtx.sphinx import PACKET_SIZE  # noqa: E402
from nymtx.trust.identity import IdentityKey  # noqa: E402
from nymtx.trust.mixlink import FRAME_SIZE, LinkKeys, MixLink, link_public_key  # noqa: E402

LOAD_SEED, SINK_SEED, NODE_SEED = b"\x31" * 32, b"\x32" * 32, b"\x33" * 32


def best(fn, repeat):
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def handshake(initiator, responder):
    responder.receive(initiator.take_output())
    initiator.receive(responder.take_output())
    responder.receive(initiator.take_output())
    initiator.receive(responder.take_output())


def micro(packets, private_key, rounds):
    from nymtx.sphinx import ReplayCache, process_packet
    a, b = IdentityKey.from_seed(LOAD_SEED), IdentityKey.from_seed(SINK_SEED)
    ka, kb = LinkKeys(a), LinkKeys(b)
    remote = link_public_key(b.public_key)
    sender = MixLink(True, ka, remote_key=remote)
    receiver = MixLink(False, kb)
    handshake(sender, receiver)
    sphinx, frames, handshakes = [], [], []
    for _ in range(rounds):
        cache = ReplayCache(len(packets) * 2 + 2)
        it = iter(packets)
        sphinx.append(best(lambda: process_packet(private_key, next(it), cache),
                           len(packets)))
        p = packets[0]
        frames.append(best(lambda: receiver.receive(sender.seal(p)), len(packets)))
        handshakes.append(best(lambda: handshake(MixLink(True, ka, remote_key=remote),
                                                 MixLink(False, kb)), 200))
    s, f, h = min(sphinx), min(frames), min(handshakes)
    return {"process_packet_us": round(s * 1e6, 1), "frame_us": round(f * 1e6, 2),
            "frame_ratio": round(f / s, 4), "handshake_us": round(h * 1e6, 1),
            "handshake_ratio": round(h / s, 2)}


# -- the node, the load and the sink -----------------------------------------

class _Directory:
    def __init__(self, topology):
        self.topology = topology

    def get_topology(self):
        from twisted.internet.defer import succeed
        return succeed(self.topology)


def run_node(key_hex, port_file, sink_port, secure):
    from twisted.internet import reactor
    from nymtx.addressing import NodeAddress
    from nymtx.keys import KeyPair
    from nymtx.mixnode.service import MixnodeService
    from nymtx.topology import GatewayInfo, MixNodeInfo, Topology
    from nymtx.trust.admission import LinkAuthority
    from nymtx.trust.mixlink import AuthenticatingFactory

    keys = KeyPair.from_private(bytes.fromhex(key_hex))
    service = MixnodeService(reactor, keys, 2, "tcp:0:interface=127.0.0.1", "127.0.0.1",
                             queue_size=1 << 16)
    if secure:
        topology = Topology(
            [MixNodeInfo(NodeAddress.parse("127.0.0.1:1"), KeyPair.generate().public_key, 1,
                         identity_key=IdentityKey.from_seed(LOAD_SEED).public_key)],
            [GatewayInfo(NodeAddress.parse(f"127.0.0.1:{sink_port}"),
                         NodeAddress.parse("127.0.0.1:2"), KeyPair.generate().public_key,
                         identity_key=IdentityKey.from_seed(SINK_SEED).public_key)])
        authority = LinkAuthority(reactor, _Directory(topology),
                                  IdentityKey.from_seed(NODE_SEED), layer=1)
        limit = service.factory
        limit.wrappedFactory = AuthenticatingFactory(limit.wrappedFactory, authority, reactor)
        service.links.secure = authority

    def listening(port):
        with open(port_file + ".tmp", "w") as f:
            f.write(str(port.getHost().port))
        os.replace(port_file + ".tmp", port_file)

    service.startService()
    service.whenListening().addCallback(listening)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def _exactly(sock, n):
    data = b""
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            raise SystemExit("the peer closed during the handshake")
        data += more
    return data


def run_load(port, packets_file, secure):
    from nymtx.trust.mixlink import ADMITTED_SIZE, MESSAGE2_SIZE
    with open(packets_file, "rb") as f:
        data = f.read()
    sock = socket.create_connection(("127.0.0.1", port))
    if secure:
        link = MixLink(True, LinkKeys(IdentityKey.from_seed(LOAD_SEED)),
                       remote_key=link_public_key(IdentityKey.from_seed(NODE_SEED).public_key))
        sock.sendall(link.take_output())
        link.receive(_exactly(sock, MESSAGE2_SIZE))
        sock.sendall(link.take_output())
        link.receive(_exactly(sock, ADMITTED_SIZE))
        # sealed before the clock starts: the load's cost is not the node's
        data = link.seal_all(data[i:i + PACKET_SIZE] for i in range(0, len(data), PACKET_SIZE))
    view = memoryview(data)
    chunk = FRAME_SIZE * 64
    for start in range(0, len(data), chunk):
        sock.sendall(view[start:start + chunk])
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)
    sock.close()


def measure(count, sink, port_file, packets_file, pid, secure):
    from nymtx.trust.mixlink import MESSAGE1_SIZE, MESSAGE3_SIZE
    deadline = time.monotonic() + 20
    while not os.path.exists(port_file):
        if time.monotonic() > deadline:
            sys.exit("the mixnode did not start")
        time.sleep(0.05)
    node_port = int(open(port_file).read())
    time.sleep(1.5)  # the authority's first topology
    cpu_before = cpu_seconds(pid)[0]
    load = subprocess.Popen([sys.executable, __file__, "--role", "load", "--port",
                             str(node_port), "--file", packets_file]
                            + (["--secure"] if secure else []))
    sink.settimeout(30)
    try:
        conn, _ = sink.accept()
    except socket.timeout:
        load.kill()
        sys.exit("the mixnode forwarded nothing within 30 s")
    conn.settimeout(10)
    size = PACKET_SIZE
    if secure:
        # the sink is the next hop: it answers the node's mix link (and
        # counts frames without opening them: its CPU is not the node's)
        link = MixLink(False, LinkKeys(IdentityKey.from_seed(SINK_SEED)))
        link.receive(_exactly(conn, MESSAGE1_SIZE))
        conn.sendall(link.take_output())
        link.receive(_exactly(conn, MESSAGE3_SIZE))
        conn.sendall(link.take_output())
        size = FRAME_SIZE
    conn.settimeout(2.0)
    received = 0
    first = last = None
    while received < count * size:
        try:
            data = conn.recv(1 << 20)
        except socket.timeout:
            break
        if not data:
            break
        now = time.perf_counter()
        first = now if first is None else first
        last = now
        received += len(data)
    load.wait()
    cpu = cpu_seconds(pid)[0] - cpu_before
    conn.close()
    forwarded = received // size
    elapsed = (last - first) if forwarded > 1 else float("nan")
    return {"secure": secure, "forwarded": forwarded, "lost": count - forwarded,
            "forwarded_per_s": round(forwarded / elapsed, 1),
            "node_cpu_us": round(cpu / count * 1e6, 1)}


def node_rounds(args, node_keys, sink_keys):
    tmp = tempfile.mkdtemp()
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(1)
    sink_port = sink.getsockname()[1]
    packets = build(args.packets, node_keys, sink_keys, sink_port, 1789)
    packets_file = os.path.join(tmp, "packets")
    with open(packets_file, "wb") as f:
        f.write(b"".join(packets))
    floor_sample = packets[:2000]
    rounds = []
    for i in range(args.rounds):
        process_us = 1e6 / measure_process(node_keys.private_key, floor_sample,
                                           clock=time.process_time)
        pair = {"process_us": round(process_us, 1)}
        for secure in (False, True):
            port_file = os.path.join(tmp, f"port{i}{int(secure)}")
            node = subprocess.Popen([sys.executable, __file__, "--role", "node", "--key",
                                     node_keys.private_key.hex(), "--file", port_file,
                                     "--port", str(sink_port)]
                                    + (["--secure"] if secure else []))
            try:
                pair["secure" if secure else "plain"] = measure(
                    len(packets), sink, port_file, packets_file, node.pid, secure)
            finally:
                node.terminate()
                node.wait()
        extra = pair["secure"]["node_cpu_us"] - pair["plain"]["node_cpu_us"]
        pair["extra_us"] = round(extra, 1)
        pair["extra_ratio"] = round(extra / process_us, 3)
        pair["cpu_ratio"] = round(pair["secure"]["node_cpu_us"]
                                  / pair["plain"]["node_cpu_us"], 3)
        rounds.append(pair)
    sink.close()
    return rounds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--micro-only", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", choices=["main", "node", "load"], default="main",
                        help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--secure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "node":
        return run_node(args.key, args.file, args.port, args.secure)
    if args.role == "load":
        return run_load(args.port, args.file, args.secure)
    from nymtx.keys import KeyPair
    node_keys, sink_keys = KeyPair.generate(), KeyPair.generate()
    sample = build(min(args.packets, 3000), node_keys, sink_keys, 1, 1789)
    result = {"micro": micro(sample, node_keys.private_key, args.rounds)}
    if not args.micro_only:
        rounds = node_rounds(args, node_keys, sink_keys)
        result["rounds"] = rounds
        result["node"] = {
            "plain_cpu_us": statistics.median(r["plain"]["node_cpu_us"] for r in rounds),
            "secure_cpu_us": statistics.median(r["secure"]["node_cpu_us"] for r in rounds),
            "process_us": statistics.median(r["process_us"] for r in rounds),
            "extra_ratio": statistics.median(r["extra_ratio"] for r in rounds),
            "cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds),
            "lost": max(max(r["plain"]["lost"], r["secure"]["lost"]) for r in rounds)}
    if args.json:
        print(json.dumps(result))
        return
    m = result["micro"]
    print(f"process_packet: {m['process_packet_us']} µs; seal + open one frame:"
          f" {m['frame_us']} µs ({m['frame_ratio']:.3f}x); a whole handshake:"
          f" {m['handshake_us']} µs ({m['handshake_ratio']:.1f}x)")
    if "node" in result:
        for r in result["rounds"]:
            print(f"  round: node CPU per packet plain {r['plain']['node_cpu_us']} µs"
                  f" ({r['plain']['forwarded_per_s']:.0f}/s), mix links"
                  f" {r['secure']['node_cpu_us']} µs ({r['secure']['forwarded_per_s']:.0f}/s);"
                  f" +{r['extra_us']} µs = {r['extra_ratio']:.3f}x process_packet"
                  f" ({r['process_us']} µs)")
        n = result["node"]
        print(f"node: mix links cost {n['extra_ratio']:.3f}x process_packet per packet"
              f" beyond plain links, {n['cpu_ratio']:.2f}x the plain node's CPU (median of"
              f" {len(result['rounds'])} pairs), lost {n['lost']}")


if __name__ == "__main__":
    main()
