"""Reliable delivery on a real local network: packets per delivered fragment
at 0 % and 5 % loss, and the latency of a ``delivered`` event against its model.

    python benchmarks/reliable_bench.py [--messages 200] [--rounds 2] [--json]

A local network in one process (directory, one mixnode per layer, one
gateway, real mix links on loopback, the gateway's real sqlite store) and
two clients through ``MixnetClient`` (the embedding API). Alice sends Bob
one-fragment messages, one every ``--gap`` seconds, each with
``delivered=True``, and waits for every outcome. The loss is injected at the
layer-2 mixnode: its outgoing links are wrapped so that each packet it
forwards is dropped with probability p (0 or 0.05), forward packets and acks
alike (every route crosses it: one mixnode per layer). The two loss levels
run interleaved, A B A B, ``--rounds`` batches each, on one network and one
pair of clients.

**What is counted, and how it is known.** Cover traffic cannot be told
from the measured packets on a link (that is its point), so the packets are
counted where their truth is known rather than on a link's byte counter:

- forward packets: the sender's ``sent_real`` (first sends) plus
  ``sent_retries`` (retransmissions), one Sphinx packet handed to its
  gateway link each (each with its own SURB-ACK identifier: message,
  fragment, attempt);
- ack packets: the gateway's store, wrapped where its final-hop handler
  calls it, counts each record stored for Bob that came with a SURB-ACK;
  each is acked once committed (one ack packet onto the mix links, whether
  or not the loss later drops it). Bob receives from Alice only; drop
  cover goes to the gateway itself and is never stored; Alice's loop cover
  is stored for Alice. Bob's own loop cover would be stored for him with a
  SURB-ACK, so his loop cover rate is turned off (a mean of one day: the
  run reports ``bob_loop_cover_sent``, 0 in every run so far). So these are
  exactly the measured fragments' acks, duplicates of a retransmitted
  fragment included.

packets per delivered fragment = (forward + acks) / fragments delivered. A
fragment acked at the first try costs 2; at 0 % loss the target is ≤ 2.1
(retransmissions only when an ack is late past the timeout).

**The latency model** of a ``delivered`` event, from ``send`` to the
Deferred firing, for a fragment acked at its first try:

    T = S + F_1..F_4 + max(C, H) + A_1..A_4 + W

S ~ Exp(mean message_sending_average_delay), the wait for the next tick of
the Poisson sending stream (memoryless, so whatever the queue's phase);
F_i ~ Exp(mean average_packet_delay), three mixnodes and the recipient's
gateway; C the gateway's commit, 0 here (``commit_interval`` 0: the end of
the reactor turn), and H ~ Exp(mean GATEWAY_ACK_HOLD, 50 ms) the gateway's
hold on the ack, counted from the packet's release (docs/surb.md §2.5), so
max(C, H) = H; A_i ~ Exp(mean average_ack_delay), three mixnodes and
the sender's gateway; W ~ Exp(mean fetch_message_delay), the sender's wait
for its next Poisson pull. The measured median at 0 % loss is reported as a
ratio to the Monte Carlo median (a ratio near 1 says the path has no hidden
cost: lateness of timers in a busy reactor, or a commit that waits). At 5 %
the median is reported too, without a model (a lost packet adds a timeout).
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
from nymtx.config import DAY_MS
from nymtx.localnet import LocalNetwork, Timing, plan
from nymtx.reliable.retransmit import GATEWAY_ACK_HOLD

QUIET_TIMING = Timing(presence_interval=0.5, metrics_interval=1.0, expiry=10.0)

#: milliseconds, as in config.toml's [debug] and [reliable]; the "fast"
#: setting of delivery_bench.py, which one process keeps up with
RATES = dict(average_packet_delay=20, average_ack_delay=20,
             loop_cover_traffic_average_delay=200, message_sending_average_delay=20,
             fetch_message_delay=100)
LOSSES = (0.0, 0.05)
LOSSY_NODE = "mix-2-1"


def sleep(reactor, seconds):
    return deferLater(reactor, seconds, lambda: None)


class LossyLinks:
    """A mixnode's outgoing links that drop each packet with probability
    *loss* (changed between batches) and count what they forward."""

    def __init__(self, links, rng):
        self._links, self._rng = links, rng
        self.loss = 0.0
        self.forwarded = 0
        self.dropped = 0

    def send(self, address, packet):
        if self.loss and self._rng.random() < self.loss:
            self.dropped += 1
            return
        self.forwarded += 1
        self._links.send(address, packet)

    def __getattr__(self, name):
        return getattr(self._links, name)


class AckCountingStore:
    """The gateway's store as its final-hop handler sees it: counts the
    records stored for *key* that carry a SURB-ACK (each acked on commit)."""

    def __init__(self, store, key):
        self._store, self._key = store, bytes(key)
        self.acked = 0

    def add(self, destination, record, surb_ack=None):
        reason = self._store.add(destination, record, surb_ack)
        if reason is None and surb_ack is not None and bytes(destination) == self._key:
            self.acked += 1
        return reason

    def __getattr__(self, name):
        return getattr(self._store, name)


def model(rates, samples=20000, rng=random.Random(12), hold=GATEWAY_ACK_HOLD):
    """Monte Carlo median (seconds) of a first-try ``delivered`` latency;
    *hold* the gateway's mean ack hold (the localnet's gateway: the default)."""
    send = rates["message_sending_average_delay"] / 1000
    hop = rates["average_packet_delay"] / 1000
    ack = rates["average_ack_delay"] / 1000
    fetch = rates["fetch_message_delay"] / 1000
    totals = []
    for _ in range(samples):
        t = rng.expovariate(1 / send)
        t += sum(rng.expovariate(1 / hop) for _ in range(4))
        # the commit (the end of the reactor turn, 0) or the ack's hold, whichever ends later
        t += max(0.0, rng.expovariate(1 / hold) if hold > 0 else 0.0)
        t += sum(rng.expovariate(1 / ack) for _ in range(4))
        t += rng.expovariate(1 / fetch)
        totals.append(t)
    return statistics.median(totals)


async def batch(reactor, alice, bob_address, count, gap, tag):
    """Send *count* one-fragment messages *gap* s apart; their latencies."""
    latencies, outcomes = [], []

    def done(result, start):
        latencies.append(time.perf_counter() - start)
        outcomes.append(result)

    def failed(f):
        outcomes.append("failed")

    waits = []
    for i in range(count):
        start = time.perf_counter()
        d = alice.send(bob_address, f"{tag} {i}", delivered=True)
        d.addCallbacks(done, failed, callbackArgs=(start,))
        waits.append(d)
        await sleep(reactor, gap)
    await defer.DeferredList(waits)
    return latencies, outcomes


async def run(reactor, home, messages, rounds, gap, rates=RATES, seed=12):
    net = LocalNetwork(reactor, home, plan(1, 1, 0), timing=QUIET_TIMING)
    net.startService()
    try:
        url = await net.whenReady()
        configs = {}
        # Bob only receives: his own stream at a slow rate leaves the CPU to
        # Alice's stream and the path; his loop cover off (a day's mean),
        # since it would be stored for him with a SURB-ACK and counted
        for who, own in (("Alice", rates),
                         ("Bob", dict(rates, message_sending_average_delay=500,
                                      loop_cover_traffic_average_delay=DAY_MS))):
            configs[who] = await init_client(reactor, home, who, url, **own)
        bob_key = configs["Bob"].load_keys().public_key
        await net.wait_for_clients([c.load_keys().public_key for c in configs.values()])
        node = net.node_services[LOSSY_NODE].node
        lossy = LossyLinks(node.links, random.Random(seed))
        node.links = lossy
        handler = net.node_services["gateway-1"].handler
        acks = AckCountingStore(handler.store, bob_key)
        handler.store = acks
        alice = MixnetClient(reactor, configs["Alice"])
        bob = MixnetClient(reactor, configs["Bob"])
        received = []
        try:
            await alice.start()
            await bob.start()
            bob.on_received(lambda m: received.append(m.data))
            await sleep(reactor, 1.0)   # both listed, both streams running
            bob_loop0 = bob.core.sent_loop
            per = {loss: dict(forward=0, retries=0, acks=0, delivered=0, failed=0, latencies=[],
                              dropped=0, forwarded_layer2=0) for loss in LOSSES}
            per_batch = max(1, messages // rounds)
            for r in range(rounds):
                for loss in LOSSES:   # interleaved: A B A B
                    lossy.loss = loss
                    f0, r0, a0 = alice.core.sent_real, alice.core.sent_retries, acks.acked
                    d0, w0 = lossy.dropped, lossy.forwarded
                    latencies, outcomes = await batch(reactor, alice, bob.full_address,
                                                      per_batch, gap, f"r{r} p{loss}")
                    # the late acks of retransmitted fragments still in flight
                    await sleep(reactor, 1.0)
                    p = per[loss]
                    p["forward"] += alice.core.sent_real - f0
                    p["retries"] += alice.core.sent_retries - r0
                    p["forward"] += alice.core.sent_retries - r0
                    p["acks"] += acks.acked - a0
                    p["dropped"] += lossy.dropped - d0
                    p["forwarded_layer2"] += lossy.forwarded - w0
                    p["delivered"] += outcomes.count("delivered")
                    p["failed"] += len(outcomes) - outcomes.count("delivered")
                    p["latencies"].extend(latencies)
            bob_loop = bob.core.sent_loop - bob_loop0
        finally:
            await alice.stop()
            await bob.stop()
    finally:
        await net.stopService()
    model_median = model(rates)
    rows = []
    for loss in LOSSES:
        p = per[loss]
        fragments = p["delivered"]   # one fragment each
        median = statistics.median(p["latencies"]) if p["latencies"] else None
        rows.append({
            "loss": loss, "messages": p["delivered"] + p["failed"],
            "delivered": p["delivered"], "failed": p["failed"],
            "forward_packets": p["forward"], "ack_packets": p["acks"],
            "retransmissions": p["retries"],
            "packets_per_delivered_fragment":
                (p["forward"] + p["acks"]) / fragments if fragments else None,
            "dropped_at_layer2": p["dropped"],
            "layer2_drop_share": p["dropped"] / max(1, p["dropped"] + p["forwarded_layer2"]),
            "delivered_median_s": median,
            "delivered_p90_s": (statistics.quantiles(p["latencies"], n=10)[-1]
                                if len(p["latencies"]) >= 2 else None),
            "model_median_s": model_median,
            "ratio": median / model_median if median is not None else None,
        })
    received_count = len(received)
    return {"rows": rows, "received_at_bob": received_count,
            "unique_at_bob": len(set(received)), "bob_loop_cover_sent": bob_loop,
            "rates_ms": rates, "gap_s": gap}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200,
                        help="messages per loss level (default 200)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved batches per loss level (default 2)")
    parser.add_argument("--gap", type=float, default=0.1,
                        help="seconds between two sends (default 0.1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.rounds < 1 or args.gap <= 0:
        parser.error("--messages and --rounds are at least 1, --gap above 0")

    async def go(reactor):
        with tempfile.TemporaryDirectory() as home:
            result = await run(reactor, os.path.join(home, "net"), args.messages,
                               args.rounds, args.gap)
        for row in result["rows"]:
            ppf = row["packets_per_delivered_fragment"]
            print(f"loss {row['loss']:4.0%} at {LOSSY_NODE}: {row['delivered']}/{row['messages']}"
                  f" delivered, {row['forward_packets']} forward + {row['ack_packets']} acks"
                  f" ({row['retransmissions']} retransmissions):"
                  f" {ppf if ppf is None else round(ppf, 3)} packets per delivered fragment;"
                  f" delivered median {row['delivered_median_s']:.3f} s, model median"
                  f" {row['model_median_s']:.3f} s, ratio {row['ratio']:.3f}"
                  f" (dropped {row['dropped_at_layer2']} at layer 2,"
                  f" {row['layer2_drop_share']:.1%})", flush=True)
        print(f"Bob received {result['received_at_bob']} ({result['unique_at_bob']} unique);"
              f" Bob's loop cover during the batches: {result['bob_loop_cover_sent']}",
              flush=True)
        if args.json:
            print(json.dumps(result))

    task.react(lambda reactor: defer.Deferred.fromCoroutine(go(reactor)))


if __name__ == "__main__":
    sys.exit(main())
