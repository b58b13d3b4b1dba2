"""Memory per client: in the process that embeds the clients, and at the gateway.

    python benchmarks/memory_bench.py [--steps 0,50,100,200] [--registered 200] [--json]

A local network with one process per node (``nym-localnet --processes``).
This process starts idle clients (``nymtx.client.connect``, default
settings: loop cover and fetches, no messages) in steps, and after each
step, once things settle, reads its own RSS and the gateway's. The figures
are the slopes of a least-squares line through the steps (bytes per
client), so the interpreter and the first client's imports do not count:

- ``client_bytes``: RSS of the embedding process per running idle client;
- ``gateway_connected_bytes``: the gateway's RSS per such client (registered,
  pulling every second);
- ``gateway_registered_bytes``: the gateway's RSS per client that only
  registered (``init_client``) and never connects.

RSS moves in pages and the allocator keeps freed memory, so a slope is
good to a few hundred bytes per client at these counts.
"""

import argparse
import gc
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scale_bench import free_base_port, node_processes, proc_rss, self_rss, start_network  # noqa: E402


def slope(points):
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="0,50,100,200",
                        help="running clients after each step (after one warm-up client)")
    parser.add_argument("--registered", type=int, default=200,
                        help="clients that only register, for the gateway's figure")
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    if len(steps) < 2 or steps != sorted(steps) or steps[0] < 0:
        parser.error("--steps: at least two increasing counts")

    home = tempfile.mkdtemp(prefix="memory-bench-")
    network, url = start_network(home + "/net", free_base_port(34500))
    try:
        gateway = node_processes(network.pid)["gateway-1"]
        result = measure(args, steps, home, url, gateway)
    finally:
        network.terminate()
        network.wait(timeout=60)
    if args.json:
        print(json.dumps(result))
        return
    for p in result["points"]:
        print(f"  {p['clients']:4d} running clients: this process {p['rss_mb']} MB,"
              f" gateway {p['gateway_rss_mb']} MB")
    print(f"per idle running client: {result['client_bytes']:.0f} bytes here,"
          f" {result['gateway_connected_bytes']:.0f} bytes at the gateway")
    print(f"per registered client that never connects: {result['gateway_registered_bytes']:.0f}"
          f" bytes at the gateway ({args.registered} registered)")


def measure(args, steps, home, url, gateway):
    from twisted.internet import defer
    from twisted.internet.task import deferLater
    from twisted.python.failure import Failure

    from nymtx.client import connect, init_client

    out = {}

    async def body(reactor):
        def sleep(s):
            return deferLater(reactor, s, lambda: None)
        sem = defer.DeferredSemaphore(8)
        clients = []

        async def start(cid):
            clients.append(await connect(reactor, home + "/clients", cid, url))

        def starting(ids):
            return defer.gatherResults(
                [sem.run(lambda cid=cid: defer.Deferred.fromCoroutine(start(cid)))
                 for cid in ids], consumeErrors=True)

        await starting(["warm-up"])  # the imports and caches of a first client
        points = []
        running = 0
        for target in steps:
            await starting([f"c{i}" for i in range(running, target)])
            running = target
            await sleep(args.settle)
            gc.collect()
            points.append({"clients": target, "rss": self_rss(),
                           "gateway_rss": proc_rss(gateway)})
        before = proc_rss(gateway)
        await defer.gatherResults([
            sem.run(lambda i=i: init_client(reactor, home + "/clients", f"r{i}", url))
            for i in range(args.registered)], consumeErrors=True)
        await sleep(args.settle)
        after = proc_rss(gateway)
        out.update({
            "client_bytes": round(slope([(p["clients"], p["rss"]) for p in points])),
            "gateway_connected_bytes": round(
                slope([(p["clients"], p["gateway_rss"]) for p in points])),
            "gateway_registered_bytes": round((after - before) / max(1, args.registered)),
            "points": [{"clients": p["clients"], "rss_mb": round(p["rss"] / 2**20, 1),
                        "gateway_rss_mb": round(p["gateway_rss"] / 2**20, 1)}
                       for p in points]})
        # the figures are taken: the process exits after this, so a slow stop
        # costs nothing but time
        stops = defer.gatherResults([defer.maybeDeferred(c.stop) for c in clients],
                                    consumeErrors=True)
        stops.addTimeout(30, reactor)
        try:
            await stops
        except Exception:
            pass

    from twisted.internet import reactor
    failures = []

    def done(result):
        if isinstance(result, Failure):
            failures.append(result)
        reactor.stop()
    reactor.callWhenRunning(
        lambda: defer.Deferred.fromCoroutine(body(reactor)).addBoth(done))
    reactor.run()
    if failures:
        failures[0].raiseException()
    return out


if __name__ == "__main__":
    main()
