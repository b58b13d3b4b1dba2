"""Writes surb.json: deterministic SURB and SURB-ACK test vectors (docs/surb.md).

Run from the repository root: python tests/vectors/make_surb_vectors.py
Every random byte drawn is recorded, in order, so another implementation
can rebuild each SURB, reply packet and ack packet byte for byte.
tests/test_surb.py regenerates the vectors in memory and compares.
"""

import hashlib
import json
import os
import sys

from nymtx.addressing import NodeAddress
from nymtx.keys import KeyPair
from nymtx.reliable import ack
from nymtx.sphinx import ForwardHop, Hop, process_packet
from nymtx.sphinx.surb import (
    build_surb, open_surb_delivery, process_gateway_packet, use_surb)

FORMAT = "nymtx-surb-v1"
PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "surb.json")

REPLIES = [
    ("three mixnodes and a gateway", 4, b"a reply through a single-use reply block"),
    ("longest reply", 4, bytes(range(256)) * 3 + bytes(239)),
    ("empty reply, ipv6 hops", 4, b""),
    ("one hop", 1, b"x"),
]


class Recorder:
    def __init__(self, seed):
        self.stream = hashlib.shake_256(seed).digest(8192)
        self.used = []

    def __call__(self, n):
        chunk, self.stream = self.stream[:n], self.stream[n:]
        self.used.append(chunk.hex())
        return chunk


def node_key(case, i):
    return KeyPair.from_private(hashlib.sha256(f"nymtx surb vector {case} node {i}".encode()).digest())


def _route(index, hops, ipv6):
    keys = [node_key(index, i) for i in range(hops)]
    addresses = [NodeAddress.parse(f"[2001:db8::{i + 1}]:{1789 + i}" if ipv6
                                   else f"10.0.0.{i + 1}:{1789 + i}") for i in range(hops)]
    route = [Hop(a.to_bytes(), k.public_key) for a, k in zip(addresses, keys)]
    described = [{"private_key": k.private_key.hex(), "public_key": k.public_key.hex(),
                  "address": a.to_bytes().hex(), "address_text": str(a)}
                 for k, a in zip(keys, addresses)]
    return keys, route, described


def _walk(keys, packet):
    """Every hop's output; the last through the gateway's step."""
    hops = []
    for i, k in enumerate(keys):
        if i < len(keys) - 1:
            out = process_packet(k.private_key, packet)
            assert isinstance(out, ForwardHop)
            hops.append({"next_address": out.next_address.hex(), "delay_ns": out.delay_ns,
                         "packet": out.packet.hex()})
            packet = out.packet
        else:
            out = process_gateway_packet(k.private_key, packet)
            hops.append({"destination": out.destination.hex(),
                         "identifier": out.identifier.hex(), "delay_ns": out.delay_ns,
                         "block": out.block.hex()})
    return hops, out


def reply_vector(index, name, hops, message):
    keys, route, described = _route(index, hops, "ipv6" in name)
    destination = KeyPair.from_private(
        hashlib.sha256(f"surb builder {index}".encode()).digest()).public_key
    identifier = hashlib.sha256(f"surb identifier {index}".encode()).digest()[:16]
    delays = [(i + 1) * 2_000_000 + index for i in range(hops)]
    rec = Recorder(f"surb randomness {index}".encode())
    surb, surb_keys = build_surb(route, destination, identifier, delays, randbytes=rec)
    packet = use_surb(surb, message)
    walked, delivery = _walk(keys, packet)
    opened = open_surb_delivery(surb_keys, delivery.block)
    assert opened == message
    return {"name": name, "route": described, "destination": destination.hex(),
            "identifier": identifier.hex(), "delays_ns": delays, "random_bytes": rec.used,
            "surb": surb.to_bytes().hex(), "surb_keys": surb_keys.to_bytes().hex(),
            "message": message.hex(), "packet": packet.hex(), "hops": walked,
            "opened": opened.hex()}


def ack_vector():
    keys, route, described = _route(100, 4, False)
    own = KeyPair.from_private(hashlib.sha256(b"surb-ack sender").digest()).public_key
    ack_key = hashlib.sha256(b"surb-ack key").digest()
    number, index, attempt = 7, 3, 1
    delays = [1_000_000, 2_000_000, 3_000_000, 4_000_000]
    rec = Recorder(b"surb-ack randomness")
    identifier = ack.ack_identifier(ack_key, number, index, attempt)
    surb_ack = ack.build_surb_ack(route, own, ack_key, number, index, attempt, delays,
                                  randbytes=rec)
    stored = hashlib.shake_256(b"surb-ack stored part").digest(ack.STORED_SIZE)
    payload = ack.compose_payload(surb_ack, stored)
    first_hop, packet = ack.ack_packet(ack.split_payload(payload)[0], randbytes=rec)
    walked, delivery = _walk(keys, packet)
    ref = ack.open_ack(ack_key, delivery.identifier)
    assert (ref.number, ref.index, ref.attempt) == (number, index, attempt)
    return {"name": "surb-ack", "route": described, "own_key": own.hex(),
            "ack_key": ack_key.hex(), "number": number, "index": index, "attempt": attempt,
            "identifier": identifier.hex(), "delays_ns": delays, "random_bytes": rec.used,
            "surb_ack": surb_ack.hex(), "stored": stored.hex(), "payload": payload.hex(),
            "first_hop": str(first_hop), "packet": packet.hex(), "hops": walked}


def vectors():
    return {"format": FORMAT,
            "replies": [reply_vector(i, *case) for i, case in enumerate(REPLIES)],
            "acks": [ack_vector()]}


def main():
    with open(PATH, "w") as f:
        json.dump(vectors(), f, indent=1)
        f.write("\n")
    print(f"wrote {PATH}", file=sys.stderr)


if __name__ == "__main__":
    main()
