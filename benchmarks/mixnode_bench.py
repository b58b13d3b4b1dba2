"""Mixnode throughput against the crypto floor measured in the same run.

One mixnode runs in its own process on 127.0.0.1 with zero delays; a load
generator in a second process pushes pre-built, distinct packets (route:
the mixnode, then a sink as the final hop) over one TCP connection as
fast as the socket takes them; this process is the sink and counts what
the node forwards. The figure to watch is the ratio

    forwarded_per_s / process_per_s

where process_per_s is process_packet() on the same kind of packets in a
tight loop here: 1.0 would mean the node costs nothing beyond the crypto.

    python benchmarks/mixnode_bench.py [--packets 20000] [--json]

With ``--gap MS`` (the low-rate mode) the load sends one packet every MS
milliseconds, each asking for a delay (``--delay``, mean 200 ms), so that
each packet has a read, a timer and a write of its own at the node, as at
realistic rates; the figure is the node's CPU time per packet (from
/proc) against process_packet's CPU time per packet, measured just before
each round, median of ``--rounds``.

With ``--workers N`` the node also runs with N worker processes, in rounds
interleaved with single-process ones (``--rounds``, A B A B): the figure
is then the median of the rounds' ``forwarded_per_s`` ratios, N workers
against one process.
"""

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nymtx.sphinx import PACKET_SIZE  # noqa: E402


def time_sphinx(out_file):
    """Times every process_packet call of this node process (CPU seconds, total)
    and writes the total and the count to *out_file* at shutdown."""
    from twisted.internet import reactor
    from nymtx.mixnode import node
    process, clock = node.process_packet, time.thread_time
    spent = [0.0, 0]

    def timed(*args):
        start = clock()
        try:
            return process(*args)
        finally:
            spent[0] += clock() - start
            spent[1] += 1
    node.process_packet = timed

    def write():
        with open(out_file, "w") as f:
            json.dump({"seconds": spent[0], "calls": spent[1]}, f)
    reactor.addSystemEventTrigger("after", "shutdown", write)


def run_node(key_hex, port_file, workers=1, sphinx_file=None):
    from twisted.internet import reactor
    from nymtx.keys import KeyPair
    from nymtx.mixnode.service import MixnodeService

    if sphinx_file:
        time_sphinx(sphinx_file)

    keys = KeyPair.from_private(bytes.fromhex(key_hex))
    service = MixnodeService(reactor, keys, 1, "tcp:0:interface=127.0.0.1", "127.0.0.1",
                             queue_size=1 << 16, workers=workers)

    def listening(port):
        with open(port_file + ".tmp", "w") as f:
            f.write(str(port.getHost().port))
        os.replace(port_file + ".tmp", port_file)

    service.startService()
    service.whenListening().addCallback(listening)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def run_load(port, packets_file, gap=0.0):
    with open(packets_file, "rb") as f:
        data = f.read()
    sock = socket.create_connection(("127.0.0.1", port))
    view = memoryview(data)
    chunk = PACKET_SIZE * 64 if not gap else PACKET_SIZE
    next_at = time.monotonic()
    for start in range(0, len(data), chunk):
        sock.sendall(view[start:start + chunk])
        if gap:
            # one packet at a time, as at realistic rates: a read, a timer
            # and a write of its own at the node
            next_at += gap
            time.sleep(max(0.0, next_at - time.monotonic()))
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # wait for the node to close: everything was read
    sock.close()


def build(count, node_keys, sink_keys, sink_port, node_port, mean_delay=0.0):
    from nymtx.addressing import NodeAddress
    from nymtx.sphinx import Hop, build_packet, sample_delays
    route = [Hop(NodeAddress.parse(f"127.0.0.1:{node_port}").to_bytes(), node_keys.public_key),
             Hop(NodeAddress.parse(f"127.0.0.1:{sink_port}").to_bytes(), sink_keys.public_key)]
    dest = bytes(32)
    rng = random.Random(7)
    return [build_packet(route, dest, bytes(16), b"benchmark %d" % i,
                         [sample_delays(1, mean_delay, rng)[0], 0])
            for i in range(count)]


def measure_process_paced(private_key, packets, gap):
    """process_packet's CPU seconds per packet when each comes alone, *gap* s apart."""
    from nymtx.sphinx import ReplayCache, process_packet
    cache = ReplayCache(len(packets) * 2 + 2)
    total = 0.0
    for p in packets:
        time.sleep(gap)
        start = time.process_time()
        process_packet(private_key, p, cache)
        total += time.process_time() - start
    return total / len(packets)


def measure_process(private_key, packets, clock=time.perf_counter):
    from nymtx.sphinx import ReplayCache, process_packet
    cache = ReplayCache(len(packets) * 2 + 2)
    start = clock()
    for p in packets:
        process_packet(private_key, p, cache)
    return len(packets) / (clock() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=1,
                        help="also run the node with this many worker processes, interleaved"
                             " with single-process rounds, and report the ratio")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of each kind with --workers (A B A B ...)")
    parser.add_argument("--gap", type=float, default=0.0,
                        help="milliseconds between packets: the low-rate mode (see above)")
    parser.add_argument("--delay", type=float, default=200.0,
                        help="with --gap: the packets' mean delay at the node, ms")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", choices=["main", "node", "load"], default="main",
                        help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--sphinx-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "node":
        return run_node(args.key, args.file, args.workers, args.sphinx_file)
    if args.role == "load":
        return run_load(args.port, args.file, args.gap / 1000)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.gap:
        return low_rate(args)

    from nymtx.keys import KeyPair
    tmp = tempfile.mkdtemp()
    node_keys, sink_keys = KeyPair.generate(), KeyPair.generate()
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(1)
    sink_port = sink.getsockname()[1]
    # the node's own address is not read at its hop: any will do
    packets = build(args.packets, node_keys, sink_keys, sink_port, 1789)
    process_per_s = measure_process(node_keys.private_key, packets[:min(5000, len(packets))])
    packets_file = os.path.join(tmp, "packets")
    with open(packets_file, "wb") as f:
        f.write(b"".join(packets))
    kinds = [1] if args.workers == 1 else [1, args.workers] * args.rounds
    rounds = []
    for i, workers in enumerate(kinds):
        port_file = os.path.join(tmp, f"port{i}")
        node = subprocess.Popen([sys.executable, __file__, "--role", "node", "--key",
                                 node_keys.private_key.hex(), "--file", port_file,
                                 "--workers", str(workers)])
        try:
            r, node_cpu, workers_cpu = measure(len(packets), sink, port_file, packets_file,
                                               node.pid)
            r.update(workers=workers,
                     node_cpu_us=round(node_cpu / len(packets) * 1e6, 1),
                     workers_cpu_us=round(workers_cpu / len(packets) * 1e6, 1))
            rounds.append(r)
        finally:
            node.terminate()
            node.wait()
    sink.close()
    single = [r for r in rounds if r["workers"] == 1]
    result = {
        "packets": len(packets),
        "forwarded": min(r["forwarded"] for r in single),
        "lost": max(r["lost"] for r in single),
        "forwarded_per_s": round(statistics.median(r["forwarded_per_s"] for r in single), 1),
        "process_per_s": round(process_per_s, 1),
    }
    result["ratio"] = round(result["forwarded_per_s"] / result["process_per_s"], 3)
    if args.workers > 1:
        multi = [r for r in rounds if r["workers"] == args.workers]
        # each round's multi-worker rate against the single-process round before it
        ratios = [m["forwarded_per_s"] / s["forwarded_per_s"] for s, m in zip(single, multi)]
        result.update({
            "workers": args.workers,
            "workers_forwarded_per_s": round(
                statistics.median(r["forwarded_per_s"] for r in multi), 1),
            "workers_lost": max(r["lost"] for r in multi),
            "workers_speedup": round(statistics.median(ratios), 3),
            "rounds": rounds,
        })
    if args.json:
        print(json.dumps(result))
        return
    print(f"process_packet in a loop: {result['process_per_s']:.0f} packets/s")
    print(f"forwarded by the mixnode: {result['forwarded_per_s']:.0f} packets/s"
          f" (ratio {result['ratio']:.2f}, target >= 0.70)")
    print(f"lost: {result['lost']} of {result['packets']}")
    if args.workers > 1:
        for r in result["rounds"]:
            print(f"  round: {r['workers']} worker(s): {r['forwarded_per_s']:.0f}/s,"
                  f" lost {r['lost']}; CPU per packet: node process {r['node_cpu_us']} µs,"
                  f" workers {r['workers_cpu_us']} µs")
        print(f"with {args.workers} workers: {result['workers_forwarded_per_s']:.0f} packets/s,"
              f" {result['workers_speedup']:.2f}x one process (median of the rounds'"
              f" ratios, target >= 1.5), lost {result['workers_lost']}")


def low_rate(args):
    """Packets one at a time, --gap ms apart, each held --delay ms on average.

    The figure is the node's CPU per packet against process_packet's CPU per
    packet, each round against the floor measured just before it.
    """
    from nymtx.keys import KeyPair
    tmp = tempfile.mkdtemp()
    node_keys, sink_keys = KeyPair.generate(), KeyPair.generate()
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(1)
    packets = build(args.packets, node_keys, sink_keys, sink.getsockname()[1], 1789,
                    mean_delay=args.delay / 1000)
    floor_sample = build(2000, node_keys, sink_keys, 1, 1789)
    packets_file = os.path.join(tmp, "packets")
    with open(packets_file, "wb") as f:
        f.write(b"".join(packets))
    rounds = []
    for i in range(args.rounds):
        process_per_s = measure_process(node_keys.private_key, floor_sample,
                                        clock=time.process_time)
        paced = measure_process_paced(node_keys.private_key, floor_sample[:500], args.gap / 1000)
        port_file = os.path.join(tmp, f"port{i}")
        sphinx_file = os.path.join(tmp, f"sphinx{i}")
        node = subprocess.Popen([sys.executable, __file__, "--role", "node", "--key",
                                 node_keys.private_key.hex(), "--file", port_file,
                                 "--sphinx-file", sphinx_file])
        try:
            r, node_cpu, _ = measure(len(packets), sink, port_file, packets_file, node.pid,
                                     gap=args.gap / 1000)
        finally:
            node.terminate()
            node.wait()
        with open(sphinx_file) as f:
            sphinx = json.load(f)
        r["node_cpu_us"] = round(node_cpu / len(packets) * 1e6, 1)
        # process_packet's own CPU inside the node, on these very packets
        r["sphinx_in_node_us"] = round(sphinx["seconds"] / sphinx["calls"] * 1e6, 1)
        r["ratio_in_node"] = round(node_cpu / sphinx["seconds"], 3)
        r["process_us"] = round(1e6 / process_per_s, 1)
        r["process_alone_us"] = round(paced * 1e6, 1)
        r["ratio"] = round(r["node_cpu_us"] / r["process_us"], 3)
        r["ratio_alone"] = round(r["node_cpu_us"] / r["process_alone_us"], 3)
        rounds.append(r)
    sink.close()
    result = {"gap_ms": args.gap, "delay_ms": args.delay, "packets": len(packets),
              "lost": max(r["lost"] for r in rounds),
              "node_cpu_us": statistics.median(r["node_cpu_us"] for r in rounds),
              "process_us": statistics.median(r["process_us"] for r in rounds),
              "process_alone_us": statistics.median(r["process_alone_us"] for r in rounds),
              "ratio": statistics.median(r["ratio"] for r in rounds),
              "ratio_alone": statistics.median(r["ratio_alone"] for r in rounds),
              "sphinx_in_node_us": statistics.median(r["sphinx_in_node_us"] for r in rounds),
              "ratio_in_node": statistics.median(r["ratio_in_node"] for r in rounds),
              "rounds": rounds}
    if args.json:
        print(json.dumps(result))
        return
    for r in rounds:
        print(f"  round: node {r['node_cpu_us']} µs CPU per packet; process_packet"
              f" {r['process_us']} µs in a loop ({r['ratio']:.2f}x),"
              f" {r['process_alone_us']} µs one at a time {args.gap:g} ms apart"
              f" ({r['ratio_alone']:.2f}x), {r['sphinx_in_node_us']} µs inside the node"
              f" ({r['ratio_in_node']:.2f}x); lost {r['lost']}")
    print(f"one packet every {args.gap:g} ms, held {args.delay:g} ms on average:"
          f" the node spends {result['ratio_in_node']:.2f}x the CPU of its own"
          f" process_packet calls (target <= 1.5), {result['ratio']:.2f}x process_packet's"
          f" CPU in a loop, {result['ratio_alone']:.2f}x its CPU one packet at a time"
          f" (medians of {len(rounds)} rounds), lost {result['lost']}")


def cpu_seconds(pid):
    """CPU seconds (user + system) of process *pid*, and of its children, from /proc."""
    def one(p):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        children = []
    return one(pid), sum(one(c) for c in children)


def measure(count, sink, port_file, packets_file, pid, gap=0.0):
    deadline = time.monotonic() + 20
    while not os.path.exists(port_file):
        if time.monotonic() > deadline:
            sys.exit("the mixnode did not start")
        time.sleep(0.05)
    node_port = int(open(port_file).read())
    time.sleep(0.5)  # the workers' start-up is not the node's per-packet cost
    cpu_before = cpu_seconds(pid)
    load = subprocess.Popen([sys.executable, __file__, "--role", "load", "--port",
                             str(node_port), "--file", packets_file, "--gap", str(gap * 1000)])
    # If the node forwards nothing (say it drops every packet) nobody connects:
    # say so rather than wait for ever.
    sink.settimeout(30)
    try:
        conn, _ = sink.accept()
    except socket.timeout:
        load.kill()
        sys.exit("the mixnode forwarded nothing within 30 s")
    conn.settimeout(5.0 if gap else 2.0)
    received = 0
    first = last = None
    while received < count * PACKET_SIZE:
        try:
            data = conn.recv(1 << 20)
        except socket.timeout:
            break
        if not data:
            break
        now = time.perf_counter()
        if first is None:
            first = now
        last = now
        received += len(data)
    load.wait()
    cpu_after = cpu_seconds(pid)
    conn.close()
    forwarded = received // PACKET_SIZE
    elapsed = (last - first) if forwarded > 1 else float("nan")
    return ({"forwarded": forwarded, "lost": count - forwarded,
             "forwarded_per_s": round(forwarded / elapsed, 1)},
            cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])


if __name__ == "__main__":
    main()
