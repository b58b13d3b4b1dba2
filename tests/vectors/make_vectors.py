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
from nymtx.sphinx import FinalHop, Hop, ReplayCache, SphinxError, build_packet, process_packet

P = 2 ** 255 - 19
#: The X25519 u-coordinates of small order (RFC 7748 section 6.1's concern),
#: as 32 little-endian bytes: the points libsodium refuses.
SMALL_ORDER = [
    ("u = 0", 0), ("u = 1", 1),
    ("u of order 8", 325606250916557431795983626356110631294008115727848805560023387167927233504),
    ("the other u of order 8",
     39382357235489614581723060781553021112529911719440698176882885853963445705823),
    ("u = p - 1", P - 1), ("u = p (0 written unreduced)", P), ("u = p + 1 (1 unreduced)", P + 1),
]

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


def flip(packet, offset, mask=0x01):
    return packet[:offset] + bytes((packet[offset] ^ mask,)) + packet[offset + 1:]


def outcome(private_key, packet, cache):
    try:
        process_packet(private_key, packet, cache)
    except SphinxError as e:
        return type(e).__name__
    return "ok"


def negative(name, private_key, packets):
    """Packets processed in order with one fresh replay cache, and what each gives."""
    cache = ReplayCache(1024)
    return {"name": name, "private_key": private_key.hex(),
            "packets": [p.hex() for p in packets],
            "outcomes": [outcome(private_key, p, cache) for p in packets]}


def negatives(vectors):
    """Packets that must be refused, made from the positive vectors."""
    four = vectors[1]  # three mixnodes and a gateway
    key = bytes.fromhex(four["route"][0]["private_key"])
    packet = bytes.fromhex(four["packet"])
    one = vectors[0]
    last_key = bytes.fromhex(one["route"][0]["private_key"])
    last_packet = bytes.fromhex(one["packet"])
    out = [
        negative("tampered MAC: gamma's last bit flipped", key, [flip(packet, 47)]),
        negative("tampered routing block: beta's first bit flipped", key, [flip(packet, 48)]),
        negative("tampered alpha: a valid point, but not the sender's", key,
                 [flip(packet, 0, 0x02)]),
        negative("wrong key: hop 1's packet given to hop 0", key,
                 [bytes.fromhex(four["hops"][0]["packet"])]),
        negative("replay: the same packet twice", key, [packet, packet]),
        negative("tampered payload at the final hop", last_key, [flip(last_packet, 348 + 500)]),
    ]
    for label, u in SMALL_ORDER:
        for top in (False, True):
            alpha = bytearray(u.to_bytes(32, "little"))
            if top:
                alpha[31] |= 0x80  # X25519 ignores bit 255: refused all the same
            out.append(negative(f"bad point: alpha is {label}" + (", bit 255 set" if top else ""),
                                key, [bytes(alpha) + packet[32:]]))
    return out


def main():
    vectors = [make(i, *case) for i, case in enumerate(CASES)]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sphinx.json")
    with open(path, "w") as f:
        json.dump({"format": "nymtx-sphinx-v1", "vectors": vectors,
                   "negative": negatives(vectors)}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(vectors)} vectors and the negative ones to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
