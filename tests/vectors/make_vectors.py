"""Writes sphinx.json: deterministic Sphinx test vectors.

Run from the repository root: python tests/vectors/make_vectors.py
The vectors record every random byte the sender drew (the ephemeral secret
and the final hop's padding), so another implementation can rebuild the
exact packet without Python's random module.
"""

import hashlib
import json
import os
import sys

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair
from nymtx.sphinx import FinalHop, Hop, build_packet, process_packet

CASES = [
    ("one hop", 1, b"hello"),
    ("three mixnodes and a gateway", 4, b"The cake is a lie!"),
    ("five hops, longest message", 5, bytes(range(256)) * 3 + bytes(207)),
    ("ipv6 hops", 2, "héllo wörld".encode()),
]


def node_key(case, i):
    return KeyPair.from_private(hashlib.sha256(f"nymtx vector {case} node {i}".encode()).digest())


class Recorder:
    def __init__(self, seed):
        self.stream = hashlib.shake_256(seed).digest(4096)
        self.used = []

    def __call__(self, n):
        chunk, self.stream = self.stream[:n], self.stream[n:]
        self.used.append(chunk.hex())
        return chunk


def make(index, name, hops, message):
    keys = [node_key(index, i) for i in range(hops)]
    family6 = name.startswith("ipv6")
    addresses = [NodeAddress.parse(f"[2001:db8::{i + 1}]:{1789 + i}" if family6
                                   else f"10.0.0.{i + 1}:{1789 + i}") for i in range(hops)]
    destination = hashlib.sha256(f"destination {index}".encode()).digest()
    identifier = hashlib.sha256(f"identifier {index}".encode()).digest()[:16]
    delays = [(i + 1) * 1_000_000 + index for i in range(hops)]
    rec = Recorder(f"randomness {index}".encode())
    route = [Hop(a.to_bytes(), k.public_key) for a, k in zip(addresses, keys)]
    packet = build_packet(route, destination, identifier, message, delays, randbytes=rec)
    outputs = []
    current = packet
    for k in keys:
        out = process_packet(k.private_key, current)
        if isinstance(out, FinalHop):
            outputs.append({"final": True, "destination": out.destination.hex(),
                            "identifier": out.identifier.hex(), "delay_ns": out.delay_ns,
                            "message": out.message.hex()})
        else:
            outputs.append({"final": False, "next_address": out.next_address.hex(),
                            "delay_ns": out.delay_ns, "packet": out.packet.hex()})
            current = out.packet
    return {
        "name": name,
        "route": [{"private_key": k.private_key.hex(), "public_key": k.public_key.hex(),
                   "address": a.to_bytes().hex(), "address_text": str(a)}
                  for k, a in zip(keys, addresses)],
        "destination": destination.hex(), "identifier": identifier.hex(),
        "message": message.hex(), "delays_ns": delays,
        "random_bytes": rec.used, "packet": packet.hex(), "hops": outputs,
    }


def main():
    vectors = [make(i, *case) for i, case in enumerate(CASES)]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sphinx.json")
    with open(path, "w") as f:
        json.dump({"format": "nymtx-sphinx-v1", "vectors": vectors}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(vectors)} vectors to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
