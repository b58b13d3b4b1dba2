"""Drives one running client through its websocket API, from inside its namespace.

``python -m tests.netns_driver ws://127.0.0.1:9001/mix PEER COUNT TAG`` waits
until the API answers and the client's topology lists PEER, sends COUNT
messages ``TAG #i`` to PEER, fetches until COUNT messages have come (and a
second longer, so that a duplicate would show), and prints one JSON line:
``{"address": own, "sent": [...], "received": [...], "errors": [...]}``.
tests/test_netns.py runs it under ``ip netns exec``.
"""

import json
import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater, react

from nymtx.apiclient import ApiError, connect_api


def sleep(reactor, seconds):
    return deferLater(reactor, seconds, lambda: None)


async def drive(reactor, url, peer, count, tag, timeout=40.0):
    deadline = reactor.seconds() + timeout
    errors = []
    while True:
        try:
            api = await connect_api(reactor, url)
            break
        except ApiError as e:
            if reactor.seconds() > deadline:
                raise SystemExit(f"netns_driver: {e}")
            await sleep(reactor, 0.1)
    try:
        own = (await api.request({"type": "ownDetails"}))["address"]
        while True:
            answer = await api.request({"type": "getClients"})
            if answer.get("type") == "getClients" and peer in answer["clients"]:
                break
            if reactor.seconds() > deadline:
                raise SystemExit(f"netns_driver: {peer} never listed: {answer}")
            await sleep(reactor, 0.1)
        sent = [f"{tag} #{i} ✓" for i in range(count)]
        for text in sent:
            answer = await api.request({"type": "send", "message": text,
                                        "recipient_address": peer})
            if answer.get("type") != "send":
                errors.append(answer)
        received = []
        while len(received) < count and reactor.seconds() < deadline:
            received.extend((await api.request({"type": "fetch"}))["messages"])
            await sleep(reactor, 0.1)
        await sleep(reactor, 1.0)
        received.extend((await api.request({"type": "fetch"}))["messages"])
    finally:
        await api.close()
    print(json.dumps({"address": own, "sent": sent, "received": received, "errors": errors}),
          flush=True)


def main(argv):
    url, peer, count, tag = argv
    react(lambda reactor: Deferred.fromCoroutine(drive(reactor, url, peer, int(count), tag)))


if __name__ == "__main__":
    main(sys.argv[1:])
