"""How many clients the cryptography alone lets one machine hold.

    python benchmarks/crypto_budget.py [--rounds 7] [--cores 2] [--json]

Issue 14 asks for 500 clients at nym's default rates on one 2-core machine,
clients and network together. Before any timer, socket or sqlite statement,
every client-second costs a fixed amount of public-key cryptography, and
this benchmark measures it on the functions the code runs:

- a client sends ``1/message_sending_average_delay`` packets a second on its
  sending stream (real or drop cover) and ``1/loop_cover_traffic_average_delay``
  loops; each packet is sealed to its recipient (the end-to-end envelope),
  carries a SURB-ACK (a 4-hop SURB header) and is a 4-hop Sphinx packet;
- the network unwraps each packet at three mixnodes and a gateway, and its
  ack at three mixnodes and the sender's gateway;
- the client reads each ack's identifier and opens each loop's envelope.

Each operation is timed in interleaved rounds (A B C … A B C …), the median
of the rounds kept; X25519 alone is the floor every figure is read against.
The budget per client-second is the sum; ``--cores`` divided by it is the
largest N the cryptography leaves room for, with no other cost at all.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

from nacl.bindings import crypto_scalarmult

from nymtx.addressing import NodeAddress
from nymtx.client.config import DEBUG_DEFAULTS
from nymtx.message import drop_cover_payload, loop_cover_payload, open_payload
from nymtx.reliable.ack import build_surb_ack, compose_payload, open_ack, STORED_SIZE
from nymtx.sphinx import build_packet, process_packet, sample_delays
from nymtx.sphinx.surb import process_gateway_packet
from nymtx.keys import KeyPair


class Hop:
    def __init__(self, port):
        keys = KeyPair.generate()
        self.private_key, self.public_key = keys.private_key, keys.public_key
        self.address = NodeAddress("127.0.0.1", port).to_bytes()


def _timed(fn, n):
    # CPU time of this process: a moment the machine gives to another
    # process does not count against the operation being timed
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def measure(rounds, n):
    rng = random.Random(4)
    mixes = [Hop(9000 + i) for i in range(3)]
    gateway = Hop(9100)
    own_gateway = Hop(9101)
    route = mixes + [gateway]
    ack_route = mixes + [own_gateway]
    client = KeyPair.generate()
    client_private, client_public = client.private_key, client.public_key
    ack_key = os.urandom(32)
    delays = sample_delays(4, 0.2, rng)

    def surb_ack():
        return build_surb_ack(ack_route, client_public, ack_key, 1, 0, 0, delays)

    def sealed():
        # a drop cover payload's envelope (a real fragment's costs the same:
        # the envelope is one size); STORED_SIZE bytes
        return drop_cover_payload(gateway.public_key)

    sa, stored = surb_ack(), sealed()
    assert len(stored) == STORED_SIZE

    def packet():
        return build_packet(route, gateway.public_key, bytes(16), compose_payload(sa, stored),
                            delays)

    one = packet()
    at_mix = process_packet(mixes[0].private_key, one).packet
    at_gateway = one
    for hop in mixes:
        at_gateway = process_packet(hop.private_key, at_gateway).packet
    loop = loop_cover_payload(client_public)
    point = os.urandom(32)
    scalar = os.urandom(32)
    identifier = bytes(16)

    ops = {
        "x25519": lambda: crypto_scalarmult(scalar, point),
        "seal": sealed,
        "surb_ack": surb_ack,
        "sphinx_build": packet,
        "mix_unwrap": lambda: process_packet(mixes[1].private_key, at_mix),
        "gateway_unwrap": lambda: process_gateway_packet(gateway.private_key, at_gateway),
        "open_ack": lambda: open_ack(ack_key, identifier),
        "open_loop": lambda: open_payload(client_private, client_public, loop),
    }
    samples = {name: [] for name in ops}
    for _ in range(rounds):
        for name, fn in ops.items():
            samples[name].append(_timed(fn, n))
    return {name: statistics.median(v) for name, v in samples.items()}


def budget(us, config=DEBUG_DEFAULTS):
    stream = 1000 / config["message_sending_average_delay"]
    loops = 1000 / config["loop_cover_traffic_average_delay"]
    packets = stream + loops
    client = packets * (us["seal"] + us["surb_ack"] + us["sphinx_build"]) \
        + packets * us["open_ack"] + loops * us["open_loop"]
    # forward: three mixnodes and the recipient's gateway; the ack: three
    # mixnodes and the sender's gateway
    network = packets * 2 * (3 * us["mix_unwrap"] + us["gateway_unwrap"])
    return {"packets_per_client_s": packets, "client_us_per_client_s": client,
            "network_us_per_client_s": network, "total_us_per_client_s": client + network}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=200, help="calls per operation per round")
    parser.add_argument("--cores", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.n < 1 or args.cores <= 0:
        parser.error("--rounds and --n must be at least 1, --cores above 0")
    us = measure(args.rounds, args.n)
    b = budget(us)
    b["max_clients"] = int(args.cores * 1e6 / b["total_us_per_client_s"])
    b["cores"] = args.cores
    b["us"] = {k: round(v, 1) for k, v in us.items()}
    b["x25519_per_client_s"] = b["total_us_per_client_s"] / us["x25519"]
    if args.json:
        print(json.dumps(b, sort_keys=True))
        return 0
    for name, value in us.items():
        print(f"{name:>15}: {value:8.1f} us  ({value / us['x25519']:.1f} x X25519)")
    print(f"per client-second at nym's default rates ({b['packets_per_client_s']:.0f} packets):"
          f" client {b['client_us_per_client_s']:,.0f} us, network"
          f" {b['network_us_per_client_s']:,.0f} us, total {b['total_us_per_client_s']:,.0f} us"
          f" (= {b['x25519_per_client_s']:.0f} X25519)")
    print(f"largest N the cryptography alone leaves room for on {args.cores:g} cores:"
          f" {b['max_clients']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
