"""SURB costs beside their X25519 floor, and packets on the wire per delivered fragment.

    python benchmarks/surb_bench.py [--rounds 9] [--seconds 0.3] [--json]

Building a 4-hop SURB does the X25519 work of a forward packet's header:
1 base-point and 10 variable-base multiplications. Using one (the replier)
does none: one Lioness encryption. The builder's open is four Lioness
encryptions and one decryption. A SURB-ACK is a header alone. Each is
timed against the floor of build's multiplications, interleaved A B A B in
rounds; the ratio reported is the median of the rounds' ratios, so a burst
of load on a shared machine moves one round, not the answer.

The wire model: each attempt sends one forward packet; an arriving forward
packet makes its gateway send one ack packet; a fragment is sent again
while its ack has not come back, at most 5 more times (the default cap).
"""

import argparse
import json
import os
import statistics
import sys
import time

from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair
from nymtx.message import (
    ENVELOPE_SIZE, FRAGMENT_DATA_SIZE, FRAGMENT_HEADER_SIZE, PLAINTEXT_SIZE)
from nymtx.reliable import ack
from nymtx.reliable.retransmit import wire_packets_per_fragment
from nymtx.sphinx import Hop, process_packet
from nymtx.sphinx.surb import (
    build_surb, open_surb_delivery, process_gateway_packet, use_surb)

HOPS = 4


def rate(fn, seconds):
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            fn()
        n += 20
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def interleaved(a, b, rounds, seconds):
    """Median over rounds of rate(a) / rate(b), each round timing a then b."""
    ratios, rates = [], []
    for _ in range(rounds):
        ra, rb = rate(a, seconds), rate(b, seconds)
        ratios.append(ra / rb)
        rates.append(ra)
    return statistics.median(ratios), statistics.median(rates)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.3, help="time per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    keys = [KeyPair.generate() for _ in range(HOPS)]
    route = [Hop(NodeAddress.parse(f"127.0.0.1:{1789 + i}").to_bytes(), k.public_key)
             for i, k in enumerate(keys)]
    me = KeyPair.generate().public_key
    delays = [0] * HOPS
    surb, surb_keys = build_surb(route, me, os.urandom(16), delays)
    message = os.urandom(1000)
    packet = use_surb(surb, message)
    for k in keys[:-1]:
        packet = process_packet(k.private_key, packet).packet
    block = process_gateway_packet(keys[-1].private_key, packet).block
    scalar, point = os.urandom(32), keys[0].public_key
    general = HOPS * (HOPS + 1) // 2

    def floor():
        crypto_scalarmult_base(scalar)
        for _ in range(general):
            crypto_scalarmult(scalar, point)

    def one_mult():
        crypto_scalarmult(scalar, point)

    cases = {
        "build_surb": (lambda: build_surb(route, me, os.urandom(16), delays), floor),
        "build_surb_ack": (lambda: ack.build_surb_ack(route, me, bytes(32), 1, 0, 0, delays),
                           floor),
        "use_surb": (lambda: use_surb(surb, message), one_mult),
        "open_reply": (lambda: open_surb_delivery(surb_keys, block), one_mult),
    }
    result = {"floor": {"build_surb": "1 base + 10 variable-base X25519",
                        "build_surb_ack": "1 base + 10 variable-base X25519",
                        "use_surb": "1 variable-base X25519",
                        "open_reply": "1 variable-base X25519"}}
    for name, (fn, against) in cases.items():
        ratio, per_s = interleaved(fn, against, args.rounds, args.seconds)
        result[name] = {"per_s": round(per_s), "ratio_to_floor": round(ratio, 3)}

    wire = {}
    for label, loss in (("0%", 0.0), ("5% every packet", 0.05),
                        # 5 % at one of two mixnodes of one layer: a packet
                        # crosses that layer once, so half of them meet it
                        ("5% at one of two layer-2 mixnodes", 0.025)):
        total, delivered, per = wire_packets_per_fragment(loss)
        wire[label] = {"packets_per_fragment": round(total, 4),
                       "delivered": delivered,
                       "packets_per_delivered_fragment": round(per, 4)}
    result["wire"] = wire
    result["efficiency"] = efficiency()

    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for name in cases:
        r = result[name]
        print(f"{name:15} {r['per_s']:8}/s  {r['ratio_to_floor']:.3f} of its floor"
              f" ({result['floor'][name]})")
    for label, w in wire.items():
        print(f"wire, loss {label:34}: {w['packets_per_delivered_fragment']:.3f} packets per"
              f" delivered fragment (delivered {w['delivered']:.10f})")
    e = result["efficiency"]
    print(f"payload efficiency with SURB-ACKs: {e['data_per_packet']:.1f} bytes of a 1 MiB"
          f" message per packet = {e['of_975']:.3f} of the 975-byte room"
          f" ({e['packets']} packets; {e['packets_without_acks']} without SURB-ACKs)")
    return 0


def efficiency(size=1 << 20):
    """A 1 MiB message with a SURB-ACK in every packet: the message layer's
    envelope overhead and fragment header in the 608 bytes left."""
    overhead = (ENVELOPE_SIZE - PLAINTEXT_SIZE) + FRAGMENT_HEADER_SIZE  # 49 + 19
    data = ack.STORED_SIZE - overhead
    packets = -(-(size + 1) // data)
    return {"fragment_data": data, "packets": packets,
            "packets_without_acks": -(-(size + 1) // FRAGMENT_DATA_SIZE),
            "data_per_packet": size / packets, "of_975": size / packets / 975}


if __name__ == "__main__":
    sys.exit(main())
