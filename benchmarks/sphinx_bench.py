"""Sphinx build and process rates beside the floor of their X25519 work.

    python benchmarks/sphinx_bench.py [--rounds 101] [--slice 0.05] [--json]

A 4-hop build (3 mixnodes + gateway) does 1 base-point and 10 variable-base
X25519 multiplications (each hop's shared secret, then every earlier
blinding factor applied to it: 1+2+3+4); a forward-hop process does 2 (the
shared secret, the blinded group element). The floor is the rate of exactly
those multiplications alone, so the ratio says how much the rest of the
code costs.

The candidate and its floor are timed in alternation, A B A B …, for
--slice CPU seconds each, --rounds times; each round gives one ratio, and
the median of those is reported with the middle half of them (quartiles).
A machine that speeds up or slows down during the run (frequency scaling,
another process) then moves both sides of a round alike instead of making
one side look fast and the other slow.
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
from nymtx.sphinx import Hop, build_packet, process_packet

HOPS = 4


def rate(fn, seconds):
    """Calls per CPU second of *fn* over about *seconds* of CPU (batches of 20).

    CPU time of this process, not wall time: on a shared machine the time
    the process waits for a core is then not counted against either side.
    """
    n, start = 0, time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(20):
            fn()
        n += 20
        now = time.process_time()
        if now >= deadline:
            return n / (now - start)


def interleaved(candidate, floor, rounds, seconds):
    """Per-round (candidate rate, floor rate), measured A B A B …"""
    candidate(), floor()  # warm up: first calls pay for imports and caches
    return [(rate(candidate, seconds), rate(floor, seconds)) for _ in range(rounds)]


def summary(pairs):
    ratios = sorted(a / b for a, b in pairs)
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return {"per_s": statistics.median(a for a, _ in pairs),
            "floor_per_s": statistics.median(b for _, b in pairs),
            "ratio": median, "ratio_q1": q1, "ratio_q3": q3,
            "ratio_min": ratios[0], "ratio_max": ratios[-1]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=101, help="A B rounds (default 101)")
    parser.add_argument("--slice", type=float, default=0.05,
                        help="CPU seconds for each side of a round (default 0.05)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.slice <= 0:
        parser.error("--rounds must be at least 2 and --slice above 0")

    keys = [KeyPair.generate() for _ in range(HOPS)]
    route = [Hop(NodeAddress.parse(f"127.0.0.1:{1789 + i}").to_bytes(), k.public_key)
             for i, k in enumerate(keys)]
    destination, identifier, message = os.urandom(32), bytes(16), os.urandom(500)
    delays = [0] * HOPS
    packet = build_packet(route, destination, identifier, message, delays)
    scalar, point = os.urandom(32), keys[0].public_key

    def build():
        build_packet(route, destination, identifier, message, delays)

    def process():
        process_packet(keys[0].private_key, packet)

    general = HOPS * (HOPS + 1) // 2

    def build_floor():
        crypto_scalarmult_base(scalar)
        for _ in range(general):
            crypto_scalarmult(scalar, point)

    def process_floor():
        crypto_scalarmult(scalar, point)
        crypto_scalarmult(scalar, point)

    result = {"rounds": args.rounds, "slice_s": args.slice,
              "build": summary(interleaved(build, build_floor, args.rounds, args.slice)),
              "process": summary(interleaved(process, process_floor, args.rounds, args.slice))}
    if args.json:
        print(json.dumps({k: {n: round(x, 3) for n, x in v.items()} if isinstance(v, dict)
                          else v for k, v in result.items()}))
    else:
        for name, label, work in (("build", "build   (4 hops)", f"{1 + general} X25519"),
                                  ("process", "process (1 hop) ", "2 X25519")):
            r = result[name]
            print(f"{label} {r['per_s']:9.0f}/s  floor {r['floor_per_s']:9.0f}/s ({work})  "
                  f"ratio {r['ratio']:.2f} (median of {args.rounds} rounds; quartiles "
                  f"{r['ratio_q1']:.2f}–{r['ratio_q3']:.2f}, range "
                  f"{r['ratio_min']:.2f}–{r['ratio_max']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
