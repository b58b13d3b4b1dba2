"""End-to-end payload cost beside its X25519 floor, and payload efficiency.

    python benchmarks/message_bench.py [--seconds 3] [--json]

Sealing one payload (a fragment or cover) does one base-point and one
variable-base X25519 multiplication (the fresh ephemeral key and the shared
secret); opening one does one variable-base multiplication. The floors are
exactly those multiplications with PyNaCl's crypto_scalarmult, timed in the
same run, interleaved with the real thing (A B A B ..., twenty rounds) so
that a noisy neighbour slows both alike; each ratio is the median of the
per-round ratios, and says what the rest costs (BLAKE2b, ChaCha20-Poly1305
over 559 bytes, framing). Rates are medians too.

Efficiency: the application bytes of a 1 MiB message over the number of
1372-byte packets it needs, against the Sphinx message room of one packet
(975 bytes). The target was 0.9; every packet now carries a 367-byte
SURB-ACK (docs/surb.md §2.4), so it is 0.562, and 0.901 of the 608 bytes
the SURB-ACK leaves (``of_room_after_surb_ack``: version 2's 11-byte
fragment header, docs/message-format.md "Efficiency").
"""

import argparse
import json
import os
import statistics
import sys
import time

from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from nymtx.keys import KeyPair
from nymtx.message import (
    ENVELOPE_SIZE, FRAGMENT_DATA_SIZE, KIND_BINARY, Message, Reassembler, Receiver,
    fragment_message, loop_cover_payload, open_payload, seal_fragment)
from nymtx.sphinx import MAX_MESSAGE_SIZE, PACKET_SIZE

ROUNDS = 20
BATCH = 25


def interleaved(pairs, seconds):
    """{name: [calls/s per round]} for each (name, fn), run in turn, round after round.

    Neighbouring measurements share the machine's state, so a ratio is
    taken within each round and the median over rounds is reported: a
    burst of load on a shared machine moves one round, not the result.
    """
    rates = {name: [] for name, _ in pairs}
    per_round = seconds / ROUNDS / len(pairs)
    for _ in range(ROUNDS):
        for name, fn in pairs:
            n, start = 0, time.perf_counter()
            while True:
                for _ in range(BATCH):
                    fn()
                n += BATCH
                now = time.perf_counter()
                if now - start >= per_round:
                    break
            rates[name].append(n / (now - start))
    return rates


def ratio(rates, name, floor):
    return statistics.median(a / b for a, b in zip(rates[name], rates[floor]))


def efficiency(size=1 << 20):
    fragments = fragment_message(Message(KIND_BINARY, bytes(size)))
    per_packet = size / len(fragments)
    return {
        "message_bytes": size,
        "packets": len(fragments),
        "app_bytes_per_packet": per_packet,
        "plaintext_room": MAX_MESSAGE_SIZE,
        "efficiency": per_packet / MAX_MESSAGE_SIZE,
        "of_whole_packet": per_packet / PACKET_SIZE,
        "full_fragment_efficiency": FRAGMENT_DATA_SIZE / MAX_MESSAGE_SIZE,
        "of_room_after_surb_ack": per_packet / ENVELOPE_SIZE,
    }


def whole_message(bob, size=1 << 20, rounds=5):
    """Seconds of CPU to seal and to open-and-reassemble one *size*-byte message,
    each beside the X25519 floor of the same packets, interleaved."""
    data = os.urandom(size)
    scalar = os.urandom(32)
    times = {"seal": [], "seal_floor": [], "open": [], "open_floor": []}
    for _ in range(rounds):
        start = time.perf_counter()
        payloads = [seal_fragment(bob.public_key, f)
                    for f in fragment_message(Message(KIND_BINARY, data))]
        times["seal"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in payloads:
            crypto_scalarmult_base(scalar)
            crypto_scalarmult(scalar, bob.public_key)
        times["seal_floor"].append(time.perf_counter() - start)
        receiver = Receiver(bob.private_key, bob.public_key, Reassembler(lambda: 0.0))
        start = time.perf_counter()
        out = [receiver.receive(p) for p in payloads]
        times["open"].append(time.perf_counter() - start)
        assert out[-1].data == data
        start = time.perf_counter()
        for p in payloads:
            crypto_scalarmult(bob.private_key, p[1:33])
        times["open_floor"].append(time.perf_counter() - start)
    out = {f"mib_{k}_s": statistics.median(v) for k, v in times.items()}
    out["mib_seal_ratio"] = statistics.median(
        f / t for f, t in zip(times["seal_floor"], times["seal"]))
    out["mib_open_ratio"] = statistics.median(
        f / t for f, t in zip(times["open_floor"], times["open"]))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="time per pair of measurements (build, open)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    bob = KeyPair.generate()
    fragment = fragment_message(Message(KIND_BINARY, os.urandom(4 * FRAGMENT_DATA_SIZE)))[1]
    payload = seal_fragment(bob.public_key, fragment)
    assert len(payload) == ENVELOPE_SIZE
    cover = loop_cover_payload(bob.public_key)
    scalar = os.urandom(32)

    def build():
        seal_fragment(bob.public_key, fragment)

    def build_floor():
        crypto_scalarmult(scalar, bob.public_key)
        crypto_scalarmult_base(scalar)

    def open_():
        open_payload(bob.private_key, bob.public_key, payload)

    def open_cover():
        open_payload(bob.private_key, bob.public_key, cover)

    def open_floor():
        crypto_scalarmult(bob.private_key, payload[1:33])

    rates = interleaved([("build", build), ("build_floor", build_floor)], args.seconds)
    rates.update(interleaved([("open", open_), ("open_cover", open_cover),
                              ("open_floor", open_floor)], args.seconds * 1.5))
    out = {f"{k}_per_s": statistics.median(v) for k, v in rates.items()}
    out["build_ratio"] = ratio(rates, "build", "build_floor")
    out["open_ratio"] = ratio(rates, "open", "open_floor")
    out["open_cover_ratio"] = ratio(rates, "open_cover", "open_floor")
    out.update(efficiency())
    out.update(whole_message(bob))
    if args.json:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in out.items()}))
        return 0
    print(f"build (seal one fragment) {out['build_per_s']:9.0f}/s  floor "
          f"{out['build_floor_per_s']:9.0f}/s (2 X25519)  ratio {out['build_ratio']:.2f}")
    print(f"open  (a fragment)        {out['open_per_s']:9.0f}/s  floor "
          f"{out['open_floor_per_s']:9.0f}/s (1 X25519)  ratio {out['open_ratio']:.2f}")
    print(f"open  (loop cover)        {out['open_cover_per_s']:9.0f}/s  "
          f"{'':>24}ratio {out['open_cover_ratio']:.2f}")
    print(f"1 MiB message: {out['packets']} packets, {out['app_bytes_per_packet']:.1f}"
          f" application bytes per {PACKET_SIZE}-byte packet: efficiency"
          f" {out['efficiency']:.4f} of the {MAX_MESSAGE_SIZE}-byte room"
          f" ({out['of_whole_packet']:.4f} of the whole packet,"
          f" {out['of_room_after_surb_ack']:.4f} of the {ENVELOPE_SIZE} bytes after the"
          f" SURB-ACK)")
    print(f"1 MiB message: seal all {out['mib_seal_s'] * 1000:.0f} ms (floor"
          f" {out['mib_seal_floor_s'] * 1000:.0f} ms, ratio {out['mib_seal_ratio']:.2f}),"
          f" open and reassemble {out['mib_open_s'] * 1000:.0f} ms (floor"
          f" {out['mib_open_floor_s'] * 1000:.0f} ms, ratio {out['mib_open_ratio']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
