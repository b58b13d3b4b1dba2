"""Time to deliver a long message on a local network, against the model.

    python benchmarks/delivery_bench.py [--sizes 102400,1048576] [--settings fast,default] [--json]

A local network in one process (directory, one mixnode per layer, a gateway,
loopback) and, for each setting and size, a fresh pair of clients: Alice
sends one message of that many random bytes to Bob through ``MixnetClient``
(the embedding API), timed from ``send`` until Bob's ``on_received`` has the
whole message. One run each.

The model: a message of n fragments leaves one fragment per tick of the
sending stream, a Poisson process of rate λP = 1 / message_sending_average_delay
(the wait for the first tick is exponential too: the stream is memoryless);
fragment i reaches Bob's gateway after its send time plus four exponential
hop delays of mean average_packet_delay (three mixnodes and the gateway); the
message is whole when the last fragment is there and Bob's next pull (every
fetch_message_delay) has taken it. So

    T = max_i (Γ_i + D_i) + U,  Γ_i = E_1 + … + E_(i+1),  E ~ Exp(λP),
                                 D_i = sum of 4 Exp(1/delay),  U ~ Uniform(0, fetch)

whose mean is about n / λP + the path delays. The model's median is a Monte
Carlo of T; the measured time is reported as a ratio to it (target: within
20 %), with the sending rate achieved (fragments ÷ the time until the last
one left): a stream that falls behind its rate (a busy reactor fires its
timers late) is what moves a run off the model. Each pair's clients are
stopped after its run, so a run has the process to itself but for the
network's nodes; Bob, who only receives, sends at the default rate.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

from twisted.internet import defer, task
from twisted.internet.task import deferLater

from nymtx.client import MixnetClient, init_client
from nymtx.localnet import LocalNetwork, Timing, plan
from nymtx.message import fragment_count

QUIET_TIMING = Timing(presence_interval=0.5, metrics_interval=1.0, expiry=10.0)

#: milliseconds, as in config.toml's [debug]
SETTINGS = {
    # nym v0.5's defaults
    "default": dict(average_packet_delay=200, loop_cover_traffic_average_delay=1000,
                    message_sending_average_delay=500, fetch_message_delay=1000),
    # 25 times the default rates: what one process on a shared machine keeps up with
    "fast": dict(average_packet_delay=20, loop_cover_traffic_average_delay=200,
                 message_sending_average_delay=20, fetch_message_delay=100),
}


def sleep(reactor, seconds):
    return deferLater(reactor, seconds, lambda: None)


def model(fragments, rates, samples=400, rng=random.Random(5)):
    """(median, mean) of the model's delivery time T in seconds (Monte Carlo)."""
    rate = 1000 / rates["message_sending_average_delay"]
    hop = rates["average_packet_delay"] / 1000
    fetch = rates["fetch_message_delay"] / 1000
    totals = []
    for _ in range(samples):
        sent, last = 0.0, 0.0
        for _ in range(fragments):
            sent += rng.expovariate(rate)
            arrival = sent + sum(rng.expovariate(1 / hop) for _ in range(4))
            last = max(last, arrival)
        totals.append(last + rng.uniform(0, fetch))
    return statistics.median(totals), statistics.fmean(totals)


async def deliver(reactor, home, url, net, name, size, rates, timeout):
    configs = {}
    # Bob only receives: his sending stream (drop cover) is at the default
    # rate, so that the one process's CPU goes to Alice's stream and the path
    for who, own in (("Alice", rates), ("Bob", dict(rates, message_sending_average_delay=500))):
        configs[who] = await init_client(reactor, home, f"{who}-{name}", url, **own)
    await net.wait_for_clients([c.load_keys().public_key for c in configs.values()])
    alice = MixnetClient(reactor, configs["Alice"])
    bob = MixnetClient(reactor, configs["Bob"])
    try:
        await alice.start()
        await bob.start()
        data = random.Random(size).randbytes(size)
        arrived = defer.Deferred()

        def received(message):
            if not arrived.called:
                arrived.callback((time.perf_counter(), message.data))

        bob.on_received(received)
        await sleep(reactor, 1.0)   # both listed, both streams running
        start = time.perf_counter()
        await alice.send(bob.full_address, data)
        sent = time.perf_counter() - start
        arrived.addTimeout(timeout, reactor)
        end, got = await arrived
        return {"seconds": end - start, "last_fragment_left_s": sent,
                "achieved_rate": fragment_count(size) / sent,
                "intact": got == data,
                "sent_real": alice.core.sent_real, "sent_drop": alice.core.sent_drop}
    finally:
        await alice.stop()
        await bob.stop()


async def run(reactor, home, sizes, settings):
    net = LocalNetwork(reactor, home, plan(1, 1, 0), timing=QUIET_TIMING)
    net.startService()
    rows = []
    try:
        url = await net.whenReady()
        for setting in settings:
            rates = SETTINGS[setting]
            for size in sizes:
                n = fragment_count(size)
                median, mean = model(n, rates)
                timeout = 3 * mean + 60
                result = await deliver(reactor, home, url, net, f"{setting}-{size}", size,
                                       rates, timeout)
                result.update(setting=setting, size=size, fragments=n, model_median_s=median,
                              model_mean_s=mean,
                              ratio=result["seconds"] / median)
                rows.append(result)
                print(f"{setting:7s} {size:8d} B  {n:5d} fragments  measured"
                      f" {result['seconds']:7.2f} s  model median {median:7.2f} s"
                      f" (mean {mean:.2f})  ratio {result['ratio']:.3f}  sending rate"
                      f" {result['achieved_rate']:.1f}/s of"
                      f" {1000 / rates['message_sending_average_delay']:.1f}/s"
                      f"  intact {result['intact']}", flush=True)
    finally:
        await net.stopService()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="102400,1048576")
    parser.add_argument("--settings", default="fast,default")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = args.settings.split(",")
    for setting in settings:
        if setting not in SETTINGS:
            parser.error(f"unknown setting {setting!r}; known: {', '.join(SETTINGS)}")

    async def go(reactor):
        with tempfile.TemporaryDirectory() as home:
            rows = await run(reactor, os.path.join(home, "net"), sizes, settings)
        if args.json:
            print(json.dumps(rows))

    task.react(lambda reactor: defer.Deferred.fromCoroutine(go(reactor)))


if __name__ == "__main__":
    sys.exit(main())
