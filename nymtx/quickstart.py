"""The quick start: a local mixnet, Alice and Bob, and one message between them.

    python -m nymtx.quickstart [--home DIR] [--base-port 8080] [--alice-port 9001] [--bob-port 9002]

Starts a directory, three mixnodes and a gateway on 127.0.0.1, then the
clients Alice and Bob with websocket APIs, sends a message from Alice to Bob
through the mixnet over Alice's websocket, polls Bob's websocket until it
arrives, and keeps running so that you can talk to both.
"""

import argparse
import sys
import time

from twisted.internet import defer
from twisted.internet.task import deferLater

from nymtx.apiclient import connect_api
from nymtx.client import ClientConfig, ClientService, init_client
from nymtx.client.config import is_initialised
from nymtx.localnet import LocalNetwork, LocalNetError, describe, plan
from nymtx.runner import start_logging


def say(text=""):
    print(text, flush=True)


async def start_client(reactor, root, name, directory_url, port):
    if not is_initialised(root, name):
        say(f"Initialising {name}: keys, and registration at the gateway …")
        config = await init_client(reactor, root, name, directory_url,
                                   socket_type="websocket", port=port)
    else:
        config = ClientConfig.load(root, name)
    # The network's directory may have moved since the client was made.
    config = config.evolve(directory_server=directory_url, socket_type="WebSocket",
                           listening_port=port)
    return config


async def demo(reactor, args):
    network = LocalNetwork(reactor, args.home, plan(1, 1, args.base_port))
    network.startService()
    reactor.addSystemEventTrigger("before", "shutdown", network.stopService)
    directory_url = await network.whenReady()
    topology = await network.wait_for_topology()
    say("A local mixnet is up:")
    for line in describe(topology, directory_url):
        say("  " + line)
    say()

    configs = {}
    for name, port in (("Alice", args.alice_port), ("Bob", args.bob_port)):
        configs[name] = await start_client(reactor, args.home, name, directory_url, port)
    keys = {name: c.load_keys().public_key for name, c in configs.items()}
    await network.wait_for_clients(keys.values())

    services = {}
    for name, config in configs.items():
        service = ClientService(reactor, config)
        service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
        await service.whenListening()
        services[name] = service
        say(f"{name} is running: websocket API at ws://127.0.0.1:{config.listening_port}/mix")

    alice = await connect_api(reactor, f"ws://127.0.0.1:{args.alice_port}/mix")
    bob = await connect_api(reactor, f"ws://127.0.0.1:{args.bob_port}/mix")
    alice_address = (await alice.request({"type": "ownDetails"}))["address"]
    bob_address = (await bob.request({"type": "ownDetails"}))["address"]
    say(f"Alice's address: {alice_address}")
    say(f"Bob's address:   {bob_address}")
    say()

    text = f"Hello Bob! Alice here, through three mixnodes and a gateway, at {time.strftime('%H:%M:%S')}."
    say(f'Alice sends: {{"type": "send", "message": "{text}", "recipient_address": "{bob_address[:8]}…"}}')
    answer = await alice.request({"type": "send", "message": text,
                                  "recipient_address": bob_address})
    say(f"Alice's client answers: {answer}")
    sent_at = reactor.seconds()
    say("Bob fetches every half second (the packet waits in Alice's sending stream, "
        "at each of the four hops, and at the gateway until Bob's client pulls it) …")
    while True:
        answer = await bob.request({"type": "fetch"})
        if answer.get("messages"):
            break
        if reactor.seconds() - sent_at > 60:
            raise LocalNetError("the message did not arrive within 60 s")
        await deferLater(reactor, 0.5, lambda: None)
    say(f"Bob receives after {reactor.seconds() - sent_at:.1f} s: {answer}")
    await alice.close()
    await bob.close()

    say()
    say("Both clients keep running. Talk to them with any websocket client, e.g.:")
    say(f"  .venv/bin/python -m nymtx.apiclient ws://127.0.0.1:{args.alice_port}/mix "
        f"'{{\"type\": \"send\", \"message\": \"hi\", \"recipient_address\": \"{bob_address}\"}}'")
    say(f"  .venv/bin/python -m nymtx.apiclient ws://127.0.0.1:{args.bob_port}/mix "
        "'{\"type\": \"fetch\"}'")
    say("  requests: send, fetch, getClients, ownDetails (docs/quickstart.md, docs/client.md)")
    say(f"The directory's live page: {directory_url}/")
    say("Press Ctrl-C to stop everything.")


def main(argv=None):
    from twisted.internet import reactor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=".quickstart",
                        help="where keys, configs and mailboxes live (default .quickstart)")
    parser.add_argument("--base-port", type=int, default=8080)
    parser.add_argument("--alice-port", type=int, default=9001)
    parser.add_argument("--bob-port", type=int, default=9002)
    parser.add_argument("--once", action="store_true",
                        help="stop after the message has arrived (for scripts)")
    args = parser.parse_args(argv)
    start_logging("warn")
    outcome = {"code": 0}

    def done(_):
        if args.once:
            reactor.stop()

    def failed(f):
        say(f"quickstart: error: {f.getErrorMessage()}")
        outcome["code"] = 1
        reactor.stop()

    def go():
        d = defer.Deferred.fromCoroutine(demo(reactor, args))
        d.addCallbacks(done, failed)

    reactor.callWhenRunning(go)
    reactor.run()
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main())
