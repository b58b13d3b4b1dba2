"""Sphinx build and process rates beside the floor of their X25519 work.

    python benchmarks/sphinx_bench.py [--seconds 2] [--json]

A 4-hop build (3 mixnodes + gateway) does 1 base-point and 10 variable-base
X25519 multiplications (each hop's shared secret, then every earlier
blinding factor applied to it: 1+2+3+4); a forward-hop process does 2 (the
shared secret, the blinded group element). The floor is the rate of exactly
those multiplications alone, timed in the same run on the same machine, so
the ratio says how much the rest of the code costs.
"""

import argparse
import json
import os
import sys
import time

from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair
from nymtx.sphinx import Hop, build_packet, process_packet

HOPS = 4


def rate(fn, seconds):
    """Calls per second of *fn*, best of three rounds of about seconds/3."""
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(50):
                fn()
            n += 50
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

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

    result = {
        "build_per_s": rate(build, args.seconds),
        "build_floor_per_s": rate(build_floor, args.seconds),
        "process_per_s": rate(process, args.seconds),
        "process_floor_per_s": rate(process_floor, args.seconds),
    }
    result["build_ratio"] = result["build_per_s"] / result["build_floor_per_s"]
    result["process_ratio"] = result["process_per_s"] / result["process_floor_per_s"]
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in result.items()}))
    else:
        print(f"build   (4 hops) {result['build_per_s']:9.0f}/s  floor "
              f"{result['build_floor_per_s']:9.0f}/s ({1 + general} X25519)  "
              f"ratio {result['build_ratio']:.2f}")
        print(f"process (1 hop)  {result['process_per_s']:9.0f}/s  floor "
              f"{result['process_floor_per_s']:9.0f}/s (2 X25519)  "
              f"ratio {result['process_ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
