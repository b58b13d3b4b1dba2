"""How long a local network takes to start, and to carry its first message.

    python benchmarks/localnet_start_bench.py [--rounds 3] [--directories 1]
                                              [--insecure-links] [--json]

For each round, a fresh LocalNetwork (one process, free ports, the
default Timing) is started and timed until ``whenReady()`` (with mix links
on, that includes every node holding a topology that lists every other
node); then Alice and Bob are made (pinned to the network's directories)
with 1 ms per-hop delays and Alice's first message to Bob is timed from
``send`` until it is in Bob's inbox. A refusal of a mix link at start
(a node not yet in a receiver's topology) would show in the second figure
as the sender's backoff. Wall-clock times on a shared machine: noisy.
"""

import argparse
import inspect
import json
import statistics
import sys
import tempfile
import time

from twisted.internet import defer, task
from twisted.internet.task import deferLater

from nymtx.client.connect import connect
from nymtx.client.embed import init_client
from nymtx.localnet import LocalNetwork, plan

FAST = dict(average_packet_delay=1, loop_cover_traffic_average_delay=100,
            message_sending_average_delay=5, fetch_message_delay=20,
            topology_refresh_rate=1000)


def sleep(reactor, seconds):
    return deferLater(reactor, seconds, lambda: None)


async def one(reactor, directories, insecure):
    home = tempfile.mkdtemp(prefix="localnet-start-")
    extra = {}
    if "secure" in inspect.signature(LocalNetwork).parameters:
        extra["secure"] = not insecure
    net = LocalNetwork(reactor, home, plan(1, 1, 0), directories=directories, **extra)
    started = time.monotonic()
    net.startService()
    try:
        await net.whenReady()
        up = time.monotonic() - started
        settings = {"directory_url": net.directory_url}
        if getattr(net, "signed", False):
            from nymtx.trust.localnet import client_settings
            settings = client_settings(net)
        clients = []
        for name in ("Alice", "Bob"):
            await init_client(reactor, home, name, **settings)
            clients.append(await connect(reactor, home, name, **FAST))
        alice, bob = clients
        try:
            await net.wait_for_clients([alice.core.keys.public_key, bob.core.keys.public_key])
            while bob.address is None or bob.core.topology is None or \
                    bob.core.keys.public_key not in alice.core.topology.clients():
                await sleep(reactor, 0.02)
            sent = time.monotonic()
            await alice.send(bob.address, b"first")
            while not bob.fetch():
                await sleep(reactor, 0.005)
            first = time.monotonic() - sent
        finally:
            for client in clients:
                await client.stop()
    finally:
        await net.stopService()
    return up, first


async def main(reactor, args):
    ups, firsts = [], []
    for _ in range(args.rounds):
        up, first = await one(reactor, args.directories, args.insecure_links)
        ups.append(up)
        firsts.append(first)
    result = {"directories": args.directories, "insecure_links": args.insecure_links,
              "up_s": [round(x, 3) for x in ups], "first_message_s": [round(x, 3) for x in firsts],
              "up_median_s": round(statistics.median(ups), 3),
              "first_message_median_s": round(statistics.median(firsts), 3)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"directories {args.directories}, links "
              f"{'plain' if args.insecure_links else 'default'}: up in"
              f" {result['up_median_s']:.2f} s (median of {args.rounds}: {result['up_s']}),"
              f" first message in {result['first_message_median_s']:.3f} s"
              f" ({result['first_message_s']})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--directories", type=int, default=1)
    parser.add_argument("--insecure-links", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, args)))
    sys.exit(0)
