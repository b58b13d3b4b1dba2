"""What signatures cost the directory and the client.

    python benchmarks/trust_bench.py [--nodes 300] [--rounds 5] [--json]

Each figure is a ratio against a floor measured in the same run, the two
timed in turn (A B A B ...), best of --rounds:

1. announce: a directory taking one signed mixnode presence (parse, check
   the signature, PresenceBook.admit) against the seed's path (parse the
   same body with presence.parse_mixnode, Registry.add_mixnode);
2. sign: a directory signing its document of --nodes newly announced
   presences and writing its JSON, against writing the seed's topology JSON
   of the same nodes;
3. refresh: a client offering three directories' documents of --nodes nodes
   to TrustedDirectories and merging them, against Topology.from_json of
   one seed topology; cold (first refresh: every node signature checked)
   and warm (the next refresh: presences re-signed by the directory but
   unchanged nodes skip the check).
"""

import argparse
import json
import sys
import time

from twisted.internet.task import Clock

from nymtx.directory.presence import parse_mixnode
from nymtx.directory.registry import Registry
from nymtx.keys import KeyPair
from nymtx.topology import Topology
from nymtx.trust.agreement import TrustedDirectories
from nymtx.trust.book import PresenceBook
from nymtx.trust.document import sign_topology
from nymtx.trust.identity import IdentityKey
from nymtx.trust.presence import (
    NS, ROLE_GATEWAY, ROLE_MIXNODE, SignedPresence, make_presence, parse_signed_mixnode)

T = 1_700_000_000 * NS


def best(fn, rounds, repeat):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        times.append((time.perf_counter() - start) / repeat)
    return min(times)


def interleaved(a, b, rounds, repeat):
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(best(a, 1, repeat))
        tb.append(best(b, 1, repeat))
    return min(ta), min(tb)


def network(n):
    identities = [IdentityKey.from_seed(i.to_bytes(4, "big") * 8) for i in range(n)]
    sphinx = [KeyPair.from_private((i + 10 ** 6).to_bytes(4, "big") * 8).public_key
              for i in range(n)]
    presences = []
    for i in range(n):
        if i % 10 == 9:
            presences.append(make_presence(
                identities[i], ROLE_GATEWAY, sphinx[i], f"127.0.0.1:{2000 + i}", T, "0.5.0",
                client_listener=f"127.0.0.1:{30000 + i}", clients=[sphinx[i - 1]]))
        else:
            presences.append(make_presence(identities[i], ROLE_MIXNODE, sphinx[i],
                                           f"127.0.0.1:{2000 + i}", T, "0.5.0",
                                           layer=1 + i % 3))
    return presences


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    presences = network(args.nodes)
    mixnodes = [p for p in presences if p.presence.role == ROLE_MIXNODE]
    gateways = [p for p in presences if p.presence.role == ROLE_GATEWAY]
    results = {}

    # 1. announce
    body = json.dumps(mixnodes[0].to_json()).encode()
    clock = Clock()
    clock.advance(T / NS)
    registry = Registry(clock)
    book = PresenceBook()

    def signed_announce():
        # check, not admit: the same body again would be a replay
        book.check(parse_signed_mixnode(body), T)

    def seed_announce():
        registry.add_mixnode(parse_mixnode(body))
    signed, seed = interleaved(signed_announce, seed_announce, args.rounds, 300)
    results["announce"] = {"signed_us": signed * 1e6, "seed_us": seed * 1e6,
                           "ratio": signed / seed}

    # 2. sign
    directories = [IdentityKey.from_seed(bytes([200 + i]) * 32) for i in range(3)]
    seed_json = sign_topology(directories[0], 1, T, mixnodes, gateways)
    seed_topology = Topology.from_json(seed_json.to_json())

    def renewed():
        # nodes re-sign every 1.5 s: the directory writes new presences'
        # JSON each time (SignedPresence caches its own)
        return ([SignedPresence(p.presence, p.signature, p.clients) for p in mixnodes],
                [SignedPresence(p.presence, p.signature, p.clients) for p in gateways])

    def seed_write():
        json.dumps(seed_topology.to_json())
    sign_times, seed_times = [], []
    for _ in range(args.rounds):
        fresh_mixnodes, fresh_gateways = renewed()
        start = time.perf_counter()
        json.dumps(sign_topology(directories[0], 1, T, fresh_mixnodes,
                                 fresh_gateways).to_json())
        sign_times.append(time.perf_counter() - start)
        seed_times.append(best(seed_write, 1, 1))
    signed, seed = min(sign_times), min(seed_times)
    results["sign"] = {"signed_ms": signed * 1e3, "seed_ms": seed * 1e3,
                       "ratio": signed / seed}

    # 3. refresh
    seed_bytes = json.dumps(seed_topology.to_json()).encode()
    serial = [1]

    def documents():
        serial[0] += 1
        return [sign_topology(d, serial[0], T, mixnodes, gateways).to_bytes()
                for d in directories]

    def refresh(trust, docs):
        for doc in docs:
            trust.offer(doc, T)
        trust.topology(T)

    def seed_read():
        Topology.from_json(seed_bytes)
    cold, warm, floor = [], [], []
    for _ in range(args.rounds):
        trust = TrustedDirectories([d.public_key for d in directories], 2)
        first, second = documents(), documents()
        start = time.perf_counter()
        refresh(trust, first)
        cold.append(time.perf_counter() - start)
        floor.append(best(seed_read, 1, 1))
        start = time.perf_counter()
        refresh(trust, second)
        warm.append(time.perf_counter() - start)
    results["refresh"] = {"cold_ms": min(cold) * 1e3, "warm_ms": min(warm) * 1e3,
                          "seed_ms": min(floor) * 1e3,
                          "cold_ratio": min(cold) / min(floor),
                          "warm_ratio": min(warm) / min(floor)}
    results["nodes"] = args.nodes
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return
    a, s, r = results["announce"], results["sign"], results["refresh"]
    print(f"announce: signed {a['signed_us']:.0f} us, seed {a['seed_us']:.0f} us, "
          f"x{a['ratio']:.1f}")
    print(f"sign {args.nodes} nodes: {s['signed_ms']:.1f} ms, seed JSON {s['seed_ms']:.1f} ms, "
          f"x{s['ratio']:.1f}")
    print(f"refresh from 3 directories, {args.nodes} nodes: cold {r['cold_ms']:.1f} ms "
          f"(x{r['cold_ratio']:.1f}), warm {r['warm_ms']:.1f} ms (x{r['warm_ratio']:.1f}); "
          f"one seed topology {r['seed_ms']:.1f} ms")


if __name__ == "__main__":
    main()
