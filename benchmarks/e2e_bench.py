"""End-to-end latency on a local network.

    python benchmarks/e2e_bench.py [--packets 1000] [--messages 40] [--json]

1. Overhead: a local network (directory, 3 mixnodes, gateway, one process,
   loopback) with zero per-hop delays. Pre-built packets for a registered
   client go to the first mixnode one at a time, every few milliseconds, over
   a persistent mix link; each is timed from the moment it is handed to the
   link until the gateway has *committed* it to its sqlite store. Reported:
   median and p99 over --packets packets, beside the floor measured in the
   same run: the CPU time of the four Sphinx layers alone.
2. The model: with nym's default delays (sending stream 500 ms, 200 ms per
   hop, fetch every 1000 ms), Alice's messages to Bob are timed from
   MixnetClient.send until Bob's client has them in its inbox. The median
   is compared with the model's median (a Monte Carlo of an Exp(0.5 s)
   sending wait + four Exp(0.2 s) hop delays + an Exp(1 s) fetch wait:
   the client pulls on its own Poisson clock, so the wait from a message's
   arrival at the gateway to the next pull is memoryless, mean 1 s); sends are spaced so that the queue stays empty.
"""

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time

from twisted.internet import defer, task
from twisted.internet.task import deferLater

from nymtx.addressing import NodeAddress
from nymtx.client import MixnetClient, init_client
from nymtx.links import PacketLinks
from nymtx.localnet import LocalNetwork, Timing, plan
from nymtx.sphinx import build_packet, process_packet

QUIET_TIMING = Timing(presence_interval=0.5, metrics_interval=1.0, expiry=10.0)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def sleep(reactor, seconds):
    return deferLater(reactor, seconds, lambda: None)


async def overhead(reactor, home, count, gap):
    net = LocalNetwork(reactor, home, plan(1, 1, 0), timing=QUIET_TIMING)
    net.startService()
    try:
        await net.whenReady()
        topology = await net.wait_for_topology()
        gateway_service = net.node_services["gateway-1"]
        store = gateway_service.store
        client_key = os.urandom(32)
        store.register(client_key, os.urandom(32))
        # one mailbox receives every packet: lift its quota (1000 by default)
        store.quota_messages = count + 10
        gateway = topology.gateways[0]
        rng = random.Random(1)
        packets, routes = [], []
        for i in range(count):
            route = topology.route(gateway, rng)
            routes.append(route)
            packets.append(build_packet(route, client_key, bytes(16), b"%d" % i, [0] * 4))
        # the floor: the four layers' crypto alone, on the same packets
        private = {net.node_services[n].keys.public_key: net.node_services[n].keys.private_key
                   for n in ("mix-1-1", "mix-2-1", "mix-3-1", "gateway-1")}
        sample = packets[: min(200, count)]
        start = time.perf_counter()
        for packet, route in zip(sample, routes):
            current = packet
            for hop in route:
                out = process_packet(private[hop.public_key], current)
                current = getattr(out, "packet", None)
        floor_ms = (time.perf_counter() - start) / len(sample) * 1000

        sent_at, latencies = {}, []
        # MailboxStore has slots: time its commits by wrapping the class's flush
        store_class = type(store)
        original_flush = store_class.flush

        def timed_flush(self):
            batch = list(self._pending)
            n = original_flush(self)
            now = time.perf_counter()
            for _, body, _ in batch:
                i = int(body)
                if i in sent_at:
                    latencies.append((now - sent_at.pop(i)) * 1000)
            return n

        store_class.flush = timed_flush
        links = PacketLinks(reactor)
        first = NodeAddress.from_bytes(routes[0][0].address)
        # warm the link up so the first packet does not pay for the connect
        links.send(first, build_packet(routes[0], client_key, bytes(16), b"-1", [0] * 4))
        await sleep(reactor, 0.3)
        for i, packet in enumerate(packets):
            sent_at[i] = time.perf_counter()
            links.send(NodeAddress.from_bytes(routes[i][0].address), packet)
            await sleep(reactor, gap)
        deadline = reactor.seconds() + 10
        while sent_at and reactor.seconds() < deadline:
            await sleep(reactor, 0.05)
        await links.stop()
        store_class.flush = original_flush
        drops = {name: dict(service.node.dropped if name.startswith("mix")
                            else service.handler.dropped)
                 for name, service in net.node_services.items() if name != "directory"}
        drops = {name: d for name, d in drops.items() if d}
        return {"drops": drops, "overhead_median_ms": statistics.median(latencies),
                "overhead_p99_ms": percentile(latencies, 99),
                "overhead_floor_ms": floor_ms,
                "packets": count, "lost": len(sent_at)}
    finally:
        await net.stopService()


def median_interval(values):
    """A distribution-free 95% interval for the median (binomial order statistics)."""
    ordered = sorted(values)
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2
    return (ordered[max(0, int(math.floor(n / 2 - half)))],
            ordered[min(n - 1, int(math.ceil(n / 2 + half)))])


def model_median(samples=200_000, rng=random.Random(3)):
    totals = [rng.expovariate(2.0) + sum(rng.expovariate(5.0) for _ in range(4))
              + rng.expovariate(1 / 1.0) for _ in range(samples)]
    return statistics.median(totals)


async def model_check(reactor, home, messages):
    net = LocalNetwork(reactor, home, plan(1, 1, 0), timing=QUIET_TIMING)
    net.startService()
    clients = []
    try:
        url = await net.whenReady()
        configs = {}
        for name in ("Alice", "Bob"):
            configs[name] = await init_client(reactor, home, name, url)
        await net.wait_for_clients([c.load_keys().public_key for c in configs.values()])
        alice = MixnetClient(reactor, configs["Alice"])
        bob = MixnetClient(reactor, configs["Bob"])
        clients = [alice, bob]
        await alice.start()
        await bob.start()
        sent_at, latencies = {}, []

        def received(message):
            text = bytes(message).decode()
            if text in sent_at:
                latencies.append(time.perf_counter() - sent_at.pop(text))

        bob.on_message(received)
        for i in range(messages):
            text = f"timed {i}"
            sent_at[text] = time.perf_counter()
            await alice.send(bob.address, text)
            # let the sending stream's queue empty before the next one
            await sleep(reactor, 0.2)
        deadline = reactor.seconds() + 15
        while sent_at and reactor.seconds() < deadline:
            await sleep(reactor, 0.1)
        model = model_median()
        low, high = median_interval(latencies)
        return {"model_median_s": model,
                "measured_median_s": statistics.median(latencies),
                "measured_median_ci95_s": [low, high],
                "model_within_ci95": low <= model <= high,
                "messages": messages, "messages_lost": len(sent_at)}
    finally:
        for c in clients:
            await c.stop()
        await net.stopService()


def report(result, as_json):
    if as_json:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in result.items()}, default=str))
        return
    print(f"overhead over {result['packets']} packets (zero delays, lost {result['lost']}, "
          f"drops {result['drops'] or 'none'}): "
          f"median {result['overhead_median_ms']:.2f} ms, p99 {result['overhead_p99_ms']:.2f} ms; "
          f"floor (4 Sphinx layers' CPU) {result['overhead_floor_ms']:.2f} ms")
    if "model_median_s" in result:
        print(f"default delays, {result['messages']} messages (lost {result['messages_lost']}): "
              f"median {result['measured_median_s']:.2f} s, model {result['model_median_s']:.2f} s, "
              f"ratio {result['measured_median_s'] / result['model_median_s']:.2f}; the model "
              f"{'lies' if result['model_within_ci95'] else 'does NOT lie'} within the measured "
              f"median's 95% interval {result['measured_median_ci95_s'][0]:.2f}–"
              f"{result['measured_median_ci95_s'][1]:.2f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1000)
    parser.add_argument("--gap", type=float, default=0.004, help="seconds between packets")
    parser.add_argument("--messages", type=int, default=40,
                        help="messages timed with the default delays (0 to skip)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = {}

    async def run(reactor):
        with tempfile.TemporaryDirectory() as home:
            result.update(await overhead(reactor, os.path.join(home, "a"), args.packets, args.gap))
            if args.messages:
                result.update(await model_check(reactor, os.path.join(home, "b"), args.messages))
        report(result, args.json)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    sys.exit(main())
