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
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nymtx.sphinx import PACKET_SIZE  # noqa: E402


def run_node(key_hex, port_file):
    from twisted.internet import reactor
    from nymtx.keys import KeyPair
    from nymtx.mixnode.service import MixnodeService

    keys = KeyPair.from_private(bytes.fromhex(key_hex))
    service = MixnodeService(reactor, keys, 1, "tcp:0:interface=127.0.0.1", "127.0.0.1",
                             queue_size=1 << 16)

    def listening(port):
        with open(port_file + ".tmp", "w") as f:
            f.write(str(port.getHost().port))
        os.replace(port_file + ".tmp", port_file)

    service.startService()
    service.whenListening().addCallback(listening)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def run_load(port, packets_file):
    with open(packets_file, "rb") as f:
        data = f.read()
    sock = socket.create_connection(("127.0.0.1", port))
    view = memoryview(data)
    chunk = PACKET_SIZE * 64
    for start in range(0, len(data), chunk):
        sock.sendall(view[start:start + chunk])
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)  # wait for the node to close: everything was read
    sock.close()


def build(count, node_keys, sink_keys, sink_port, node_port):
    from nymtx.addressing import NodeAddress
    from nymtx.sphinx import Hop, build_packet
    route = [Hop(NodeAddress.parse(f"127.0.0.1:{node_port}").to_bytes(), node_keys.public_key),
             Hop(NodeAddress.parse(f"127.0.0.1:{sink_port}").to_bytes(), sink_keys.public_key)]
    dest = bytes(32)
    return [build_packet(route, dest, bytes(16), b"benchmark %d" % i, [0, 0])
            for i in range(count)]


def measure_process(private_key, packets):
    from nymtx.sphinx import ReplayCache, process_packet
    cache = ReplayCache(len(packets) * 2 + 2)
    start = time.perf_counter()
    for p in packets:
        process_packet(private_key, p, cache)
    return len(packets) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", choices=["main", "node", "load"], default="main",
                        help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "node":
        return run_node(args.key, args.file)
    if args.role == "load":
        return run_load(args.port, args.file)

    from nymtx.keys import KeyPair
    tmp = tempfile.mkdtemp()
    node_keys, sink_keys = KeyPair.generate(), KeyPair.generate()
    port_file = os.path.join(tmp, "port")
    node = subprocess.Popen([sys.executable, __file__, "--role", "node", "--key",
                             node_keys.private_key.hex(), "--file", port_file])
    try:
        return measure(args, node_keys, sink_keys, port_file, tmp)
    finally:
        node.terminate()
        node.wait()


def measure(args, node_keys, sink_keys, port_file, tmp):
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(1)
    sink_port = sink.getsockname()[1]
    deadline = time.monotonic() + 20
    while not os.path.exists(port_file):
        if time.monotonic() > deadline:
            sys.exit("the mixnode did not start")
        time.sleep(0.05)
    node_port = int(open(port_file).read())

    packets = build(args.packets, node_keys, sink_keys, sink_port, node_port)
    process_per_s = measure_process(node_keys.private_key, packets[:min(5000, len(packets))])
    packets_file = os.path.join(tmp, "packets")
    with open(packets_file, "wb") as f:
        f.write(b"".join(packets))

    load = subprocess.Popen([sys.executable, __file__, "--role", "load", "--port",
                             str(node_port), "--file", packets_file])
    # If the node forwards nothing (say it drops every packet) nobody connects:
    # say so rather than wait for ever.
    sink.settimeout(30)
    try:
        conn, _ = sink.accept()
    except socket.timeout:
        load.kill()
        sys.exit("the mixnode forwarded nothing within 30 s")
    conn.settimeout(2.0)
    received = 0
    first = last = None
    while received < len(packets) * PACKET_SIZE:
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
    conn.close()
    sink.close()
    forwarded = received // PACKET_SIZE
    elapsed = (last - first) if forwarded > 1 else float("nan")
    result = {
        "packets": len(packets),
        "forwarded": forwarded,
        "lost": len(packets) - forwarded,
        "forwarded_per_s": round(forwarded / elapsed, 1),
        "process_per_s": round(process_per_s, 1),
    }
    result["ratio"] = round(result["forwarded_per_s"] / result["process_per_s"], 3)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"process_packet in a loop: {result['process_per_s']:.0f} packets/s")
        print(f"forwarded by the mixnode: {result['forwarded_per_s']:.0f} packets/s"
              f" (ratio {result['ratio']:.2f}, target >= 0.70)")
        print(f"lost: {result['lost']} of {result['packets']}")


if __name__ == "__main__":
    main()
