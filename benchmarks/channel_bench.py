"""The gateway channel's CPU cost: handshakes, and padded frames.

    python benchmarks/channel_bench.py [--rounds 15] [--handshakes 200] [--frames 2000] [--json]

- ``handshakes_per_s``: the gateway's side of one Noise IK handshake on a
  fresh :class:`Channel` (read message 1, write message 2: the same work
  for a replayed message 1 as for a fresh one, so one recorded message 1
  serves every run). Floor: the X25519 operations the pattern needs at the
  responder, each one libsodium ``crypto_scalarmult``: the ephemeral key
  (``crypto_scalarmult_base``), then ``es``, ``ss`` (reading message 1),
  ``ee``, ``se`` (writing message 2) — five in all. Target ≥ 0.5.
- ``answer_us`` / ``request_us``: one padded frame (10502 / 82 bytes)
  through ``Channel.send`` on one side and ``Channel.receive`` on the
  other. Floor: ChaCha20-Poly1305 encrypt + decrypt of the same bytes with
  a ready cipher object, nothing else.
- ``pull_us``: one whole pull as the link will run it: request encoded,
  sent, received, parsed; answer of 10 full slots encoded, sent, received,
  parsed. Floor: the two frames' ChaCha20-Poly1305 alone.
- ``pulled_per_s``: messages pulled and acknowledged over a loopback TCP
  connection through the private link (``PrivateClientFactory`` and
  ``private_link.connect``: channel, padding, sqlite), ``--window`` pulls
  in flight, each answer's ids acked in a later pull. Baseline: today's
  plaintext link of the release before (``legacy_plaintext.py``: its
  server, and a client that logs in and then pulls 100 messages and acks
  them, as that release's link did). The issue's target: ≥ 0.5 of the baseline and ≥ 20,000/s.
  ``--answer-interval`` sets the gateway's answer tick (default: the
  gateway's own, ``private_server.ANSWER_INTERVAL``).

Each measure runs A B A B for ``--rounds`` rounds; the ratio is the median
of the rounds' floor/actual time ratios, so a slow moment of the machine
hits both sides.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.task import Clock, react

from nymtx.gateway import padded as P
from nymtx.gateway.channel import Channel
from nymtx.gateway.private_link import connect
from nymtx.gateway.private_server import ANSWER_INTERVAL, PrivateClientFactory, listener_factory
from nymtx.gateway.store import MailboxStore
from nymtx.keys import KeyPair

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import legacy_plaintext as L  # noqa: E402

LOCAL = "tcp:0:interface=127.0.0.1"
MESSAGE = os.urandom(975)

GATEWAY = KeyPair.generate()
CLIENT = KeyPair.generate()


def timed(fn, n):
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def interleaved(actual, floor, n, rounds):
    """(median seconds per actual, per floor, median floor/actual ratio)."""
    a, b, ratios = [], [], []
    for _ in range(rounds):
        ta = timed(actual, n)
        tb = timed(floor, n)
        a.append(ta)
        b.append(tb)
        ratios.append(tb / ta)
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def open_pair(clock):
    c = Channel.client(CLIENT, GATEWAY.public_key, clock, send_sizes={P.REQUEST_SIZE},
                       receive_sizes={P.ANSWER_SIZE})
    g = Channel.gateway(GATEWAY, clock, send_sizes={P.ANSWER_SIZE},
                        receive_sizes={P.REQUEST_SIZE})
    g.receive(c.start())
    c.receive(g.take_output())
    return c, g


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--link-rounds", type=int, default=5)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--answer-interval", type=float, default=ANSWER_INTERVAL,
                        help="the gateway's answer tick in seconds (default: the gateway's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    clock = Clock()
    results = {}

    # ---- handshakes at the gateway --------------------------------------
    message1 = Channel.client(CLIENT, GATEWAY.public_key, clock).start()

    def handshake():
        g = Channel.gateway(GATEWAY, clock)
        g.receive(message1)
        g.take_output()

    private, public = GATEWAY.private_key, CLIENT.public_key

    def x25519_floor():
        crypto_scalarmult_base(os.urandom(32))       # the ephemeral key
        crypto_scalarmult(private, public)           # es
        crypto_scalarmult(private, public)           # ss
        crypto_scalarmult(private, public)           # ee
        crypto_scalarmult(private, public)           # se

    handshake()
    t, f, ratio = interleaved(handshake, x25519_floor, args.handshakes, args.rounds)
    results["handshakes_per_s"] = {"rate": 1 / t, "floor": 1 / f, "ratio": ratio,
                                   "target_ratio": 0.5}

    # ---- padded frames --------------------------------------------------
    c, g = open_pair(clock)
    answer = P.encode_answer(P.Messages(tuple((i, os.urandom(975)) for i in range(1, P.PULL_SIZE + 1)),
                        P.PULL_SIZE))
    request = P.encode_request(P.Pull(tuple(range(1, P.PULL_SIZE + 1))))
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)

    def raw(plaintext):
        def run():
            aead.decrypt(nonce, aead.encrypt(nonce, plaintext, None), None)
        return run

    def answer_frame():
        c.receive(g.send(answer))

    def request_frame():
        g.receive(c.send(request))

    for name, actual, floor in (("answer_us", answer_frame, raw(b"\x00" + answer)),
                                ("request_us", request_frame, raw(b"\x00" + request))):
        t, f, ratio = interleaved(actual, floor, args.frames, args.rounds)
        results[name] = {"us": t * 1e6, "floor_us": f * 1e6, "ratio": ratio}

    messages = P.Messages(tuple((i, os.urandom(975)) for i in range(1, P.PULL_SIZE + 1)),
                        P.PULL_SIZE)

    def pull():
        [req] = g.receive(c.send(P.encode_request(P.Pull(tuple(range(1, P.PULL_SIZE + 1))))))
        P.parse_request(req)
        [ans] = c.receive(g.send(P.encode_answer(messages)))
        P.parse_answer(ans)

    answer_floor, request_floor = raw(b"\x00" + answer), raw(b"\x00" + request)

    def pull_floor():
        request_floor()
        answer_floor()

    t, f, ratio = interleaved(pull, pull_floor, args.frames, args.rounds)
    results["pull_us"] = {"us": t * 1e6, "floor_us": f * 1e6, "ratio": ratio,
                          "per_message_us": t * 1e6 / P.PULL_SIZE,
                          "full_messages_per_s": P.PULL_SIZE / t}

    if args.link_rounds:
        # react() ends the process when its Deferred fires: report from inside
        async def run(reactor):
            await links(reactor, args, results)
            report(args, results)
        react(lambda reactor: ensureDeferred(run(reactor)))
    report(args, results)


def report(args, results):
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return
    h = results["handshakes_per_s"]
    print(f"handshakes at the gateway: {h['rate']:,.0f}/s; five X25519 operations:"
          f" {h['floor']:,.0f}/s; ratio {h['ratio']:.2f} (target >= 0.5)")
    for name, what in (("answer_us", f"answer frame ({P.ANSWER_SIZE} B)"),
                       ("request_us", f"request frame ({P.REQUEST_SIZE} B)"),
                       ("pull_us", f"whole pull (request + {P.PULL_SIZE}-slot answer)")):
        r = results[name]
        print(f"{what}: {r['us']:.1f} us; ChaCha20-Poly1305 alone {r['floor_us']:.1f} us;"
              f" ratio {r['ratio']:.2f}")
    print(f"  = {results['pull_us']['full_messages_per_s']:,.0f} full messages/s per core"
          f" through the channel's crypto and parsing")
    if "pulled_per_s" in results:
        r = results["pulled_per_s"]
        print(f"pulled and acked over loopback: private link {r['rate']:,.0f}/s"
              f" (window {args.window}); the old plaintext link {r['baseline']:,.0f}/s;"
              f" ratio {r['ratio']:.2f} (target >= 0.5 and >= 20,000/s)")


def filled_store(reactor, path, n, client):
    store = MailboxStore.open(reactor, path, quota_messages=n, quota_bytes=n * len(MESSAGE))
    store.register(client.public_key, os.urandom(32))
    for _ in range(n):
        store.add(client.public_key, MESSAGE)
    store.flush()
    return store


async def listening(reactor, factory):
    return await serverFromString(reactor, LOCAL).listen(factory)


async def private_round(reactor, directory, n, window, answer_interval=ANSWER_INTERVAL):
    client = KeyPair.generate()
    store = filled_store(reactor, os.path.join(directory, f"p{os.getpid()}{time.time()}"),
                         n, client)
    factory = PrivateClientFactory(store, GATEWAY, clock=reactor,
                                   answer_interval=answer_interval)
    limited = listener_factory(factory, clock=reactor)
    port = await listening(reactor, limited)
    link = await connect(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
                         client, GATEWAY.public_key, reactor)
    to_ack, done = [], Deferred()
    state = {"in_flight": 0, "acked": 0}

    def answered(answer):
        state["in_flight"] -= 1
        state["acked"] += answer.acked
        to_ack.extend(i for i, _ in answer.messages)
        if state["acked"] == n:
            # every message acked: let the pulls still in flight come back
            if state["in_flight"] == 0:
                done.callback(None)
            return
        fill()

    def fill():
        while state["in_flight"] < window:
            acks = tuple(to_ack[:P.PULL_SIZE])
            del to_ack[:P.PULL_SIZE]
            state["in_flight"] += 1
            link.pull(acks).addCallback(answered)

    start = time.perf_counter()
    fill()
    await done
    elapsed = time.perf_counter() - start
    assert store.usage(client.public_key) == (0, 0), store.usage(client.public_key)
    await link.close()
    await limited.close_all()
    await port.stopListening()
    store.close()
    return n / elapsed


async def plaintext_round(reactor, directory, n):
    client = KeyPair.generate()
    store = filled_store(reactor, os.path.join(directory, f"t{os.getpid()}{time.time()}"),
                         n, client)
    factory = L.ClientServerFactory(store, GATEWAY)
    port = await listening(reactor, factory)
    proto = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), L.PlaintextClient())
    await proto.login(client)
    start, got = time.perf_counter(), 0
    while True:
        batch = (await proto.request(L.Pull(100))).messages
        if not batch:
            break
        got += len(batch)
        await proto.request(L.Ack(tuple(i for i, _ in batch)))
    elapsed = time.perf_counter() - start
    assert got == n, (got, n)
    proto.transport.loseConnection()
    await port.stopListening()
    store.close()
    return n / elapsed


async def links(reactor, args, results):
    directory = tempfile.mkdtemp(prefix="channel-bench-")
    try:
        private, plain, ratios = [], [], []
        for _ in range(args.link_rounds):
            a = await private_round(reactor, directory, args.messages, args.window,
                                    args.answer_interval)
            b = await plaintext_round(reactor, directory, args.messages)
            private.append(a)
            plain.append(b)
            ratios.append(a / b)
        results["pulled_per_s"] = {
            "rate": statistics.median(private), "baseline": statistics.median(plain),
            "ratio": statistics.median(ratios), "target_ratio": 0.5, "target_rate": 20000,
            "window": args.window}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
