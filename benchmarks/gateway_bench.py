"""Gateway rates: messages committed, and pulled-and-acknowledged over loopback.

    python benchmarks/gateway_bench.py [--messages 20000] [--packets 2000] [--json]

- ``stored_per_s``: messages handed to the mailbox store in bursts of 100
  per reactor turn (as packets arrive off the mix links) until every one is
  committed by the store's batched commits on the real reactor. Floor: the
  same rows inserted with one ``executemany`` in one transaction, the most
  sqlite can do.
- ``pulled_per_s``: a GatewayLink on a loopback connection drains the
  mailbox through the real private link (Noise channel, padded frames of
  10 slots, acks riding on later pulls), 16 pulls in flight. Floor: pulls of
  10 and their acks called on the store directly, with no protocol, channel
  or socket.
- ``mix_stored_per_s``: 4-hop Sphinx packets' last hop written back to back
  on a loopback mix link, processed (Sphinx, replay cache, zero delay) and
  committed. Floor: ``process_packet`` alone on the same packets.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from nymtx import sphinx
from nymtx.addressing import NodeAddress
from nymtx.gateway import padded as P
from nymtx.gateway.link import GatewayLink, register
from nymtx.gateway.service import GatewayService
from nymtx.gateway.store import MailboxStore, open_database
from nymtx.keys import KeyPair

LOCAL = "tcp:0:interface=127.0.0.1"
BURST = 100
MESSAGE = os.urandom(975)


def turn():
    d = Deferred()
    reactor.callLater(0, d.callback, None)
    return d


async def until(predicate):
    while not predicate():
        await turn()


def store_floor(directory, n):
    db = open_database(os.path.join(directory, "floor.sqlite"))
    key = os.urandom(32)
    start = time.perf_counter()
    db.execute("BEGIN")
    db.executemany("INSERT INTO messages (client_key, body, received_at) VALUES (?, ?, 0)",
                   [(key, MESSAGE) for _ in range(n)])
    db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return n / elapsed


async def stored(directory, n):
    store = MailboxStore.open(reactor, os.path.join(directory, "stored.sqlite"),
                              quota_messages=n, quota_bytes=n * len(MESSAGE))
    key = os.urandom(32)
    store.register(key, os.urandom(32))
    start = time.perf_counter()
    for i in range(0, n, BURST):
        for _ in range(min(BURST, n - i)):
            store.add(key, MESSAGE)
        await turn()
    await until(lambda: store.stored == n)
    elapsed = time.perf_counter() - start
    store.close()
    return n / elapsed


def pull_floor(directory, n):
    store = MailboxStore.open(reactor, os.path.join(directory, "pullfloor.sqlite"),
                              quota_messages=n, quota_bytes=n * len(MESSAGE))
    key = os.urandom(32)
    store.register(key, os.urandom(32))
    for _ in range(n):
        store.add(key, MESSAGE)
    store.flush()
    start, got = time.perf_counter(), 0
    while True:
        batch = store.pull(key, P.PULL_SIZE)
        if not batch:
            break
        got += len(batch)
        store.ack(key, [i for i, _ in batch])
    elapsed = time.perf_counter() - start
    store.close()
    assert got == n, (got, n)
    return n / elapsed


async def pulled(directory, n):
    keys, client = KeyPair.generate(), KeyPair.generate()
    service = GatewayService(reactor, keys, os.path.join(directory, "pull"), LOCAL, LOCAL,
                             "127.0.0.1", quota_messages=n, quota_bytes=n * len(MESSAGE))
    service.startService()
    _, client_port = await service.whenListening()
    address = NodeAddress.parse(f"127.0.0.1:{client_port}")
    await register(reactor, address, client, keys.public_key)
    for _ in range(n):
        service.store.add(client.public_key, MESSAGE)
    service.store.flush()
    link = GatewayLink(reactor, address, client, keys.public_key)
    link.start()
    await link.when_ready()
    start, got = time.perf_counter(), 0
    while service.store.usage(client.public_key) != (0, 0):
        # each round's acks ride on the next round's pulls
        batches = [await d for d in [link.pull() for _ in range(16)]]
        for batch in batches:
            if batch:
                got += len(batch)
                link.ack([i for i, _ in batch])
    elapsed = time.perf_counter() - start
    await link.stop()
    await service.stopService()
    assert got == n, (got, n)
    return n / elapsed


class _Sender(Protocol):
    def connectionMade(self):
        self.closed = Deferred()

    def connectionLost(self, reason):
        self.closed.callback(None)


def make_packets(gateway_keys, gateway_address, client, count):
    mixes = [KeyPair.generate() for _ in range(3)]
    route = [sphinx.Hop(NodeAddress.parse(f"127.0.0.1:{2000 + i}").to_bytes(), k.public_key)
             for i, k in enumerate(mixes)]
    route.append(sphinx.Hop(gateway_address.to_bytes(), gateway_keys.public_key))
    packets = []
    for _ in range(count):
        packet = sphinx.build_packet(route, client.public_key, bytes(16), MESSAGE[:900],
                                     [0] * 4)
        for k in mixes:  # peel the mix layers here: the bench measures the gateway
            packet = sphinx.process_packet(k.private_key, packet).packet
        packets.append(packet)
    return packets


async def mix_stored(directory, count):
    keys, client = KeyPair.generate(), KeyPair.generate()
    service = GatewayService(reactor, keys, os.path.join(directory, "mix"), LOCAL, LOCAL,
                             "127.0.0.1", quota_messages=count, quota_bytes=count * 1000)
    service.startService()
    mix_port, _ = await service.whenListening()
    address = NodeAddress.parse(f"127.0.0.1:{mix_port}")
    service.store.register(client.public_key, os.urandom(32))
    packets = make_packets(keys, address, client, count)

    start = time.perf_counter()
    for p in packets:
        sphinx.process_packet(keys.private_key, p)
    floor = count / (time.perf_counter() - start)

    proto = await connectProtocol(HostnameEndpoint(reactor, address.host, address.port),
                                  _Sender())
    start = time.perf_counter()
    proto.transport.write(b"".join(packets))
    await until(lambda: service.store.stored == count)
    elapsed = time.perf_counter() - start
    proto.transport.loseConnection()
    await proto.closed
    dropped = dict(service.handler.dropped)
    await service.stopService()
    assert not dropped, dropped
    return count / elapsed, floor


async def run(args):
    directory = tempfile.mkdtemp(prefix="gateway-bench-")
    try:
        result = {}
        result["stored_floor_per_s"] = store_floor(directory, args.messages)
        result["stored_per_s"] = await stored(directory, args.messages)
        result["pulled_floor_per_s"] = pull_floor(directory, args.messages)
        result["pulled_per_s"] = await pulled(directory, args.messages)
        if args.packets:
            rate, floor = await mix_stored(directory, args.packets)
            result["mix_stored_per_s"] = rate
            result["mix_stored_floor_per_s"] = floor
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for name in ("stored", "pulled", "mix_stored"):
        if f"{name}_per_s" in result:
            result[f"{name}_ratio"] = result[f"{name}_per_s"] / result[f"{name}_floor_per_s"]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000,
                        help="messages stored, then pulled (default 20000)")
    parser.add_argument("--packets", type=int, default=2000,
                        help="Sphinx packets through the mix listener; 0 to skip")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    outcome = {}

    def done(result):
        outcome["result"] = result
        reactor.stop()

    def failed(f):
        outcome["error"] = f
        reactor.stop()

    reactor.callWhenRunning(
        lambda: ensureDeferred(run(args)).addCallbacks(done, failed))
    reactor.run()
    if "error" in outcome:
        outcome["error"].printTraceback()
        return 1
    result = outcome["result"]
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key in sorted(result):
            print(f"{key:>26}: {result[key]:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
