"""The quick start: a local mixnet, Alice and Bob, and one message between them.

    python -m nymtx.quickstart [--home DIR] [--base-port 8080] [--alice-port 9001] [--bob-port 9002]

Starts a directory, three mixnodes and a gateway on 127.0.0.1, then the
clients Alice and Bob with websocket APIs, sends a message from Alice to Bob
through the mixnet over Alice's websocket, polls Bob's websocket until it
arrives, and keeps running so that you can talk to both.
"""

import types
import json
import os
import pathlib
import sys
import time

from twisted.application.service import MultiService
from twisted.python import usage
from twisted.internet import defer
from twisted.internet.task import deferLater

from nymtx import config as shared
from nymtx.cli import coerce
from nymtx.apiclient import connect_api
from nymtx.client import ClientConfig, ClientService, init_client
from nymtx.client.config import is_initialised
from nymtx.localnet import LocalNetwork, LocalNetError, describe, plan
from nymtx.runner import start_logging


def say(text=""):
    print(text, flush=True)


async def client_config(reactor, root, name, directory_url, port, say=say, network=None):
    # the client pins the network's directory keys (a signed network)
    trust = {}
    if network is not None and network.signed:
        from nymtx.trust.localnet import client_settings
        trust = client_settings(network)
        directory_url = trust.pop("directory_url")
    if not is_initialised(root, name):
        say(f"Initialising {name}: keys, and registration at the gateway …")
        config = await init_client(reactor, root, name, directory_url,
                                   socket_type="websocket", port=port, **trust)
    else:
        config = ClientConfig.load(root, name)
    # The network's directory may have moved since the client was made (and
    # a client made before the network signed pins its key from now on).
    return config.evolve(directory_server=directory_url, socket_type="WebSocket",
                         listening_port=port, **trust)


class QuickStart(MultiService):
    """The network and the two clients; stopping it stops the clients first."""

    def __init__(self, reactor, args, say=say, **client_settings):
        super().__init__()
        self.reactor = reactor
        self.args = args
        self.say = say
        self.client_settings = client_settings
        self.network = LocalNetwork(reactor, args.home, plan(1, 1, args.base_port))
        self.network.setServiceParent(self)
        self.clients = {}
        self.ports = {}

    async def run(self):
        """Start everything and send one message; Bob's answer to fetch."""
        reactor, args, say = self.reactor, self.args, self.say
        say("Starting a directory, three mixnodes and a gateway on 127.0.0.1 …")
        directory_url = await self.network.whenReady()
        topology = await self.network.wait_for_topology()
        say("A local mixnet is up:")
        for line in describe(topology, directory_url):
            say("  " + line)
        say("")

        configs = {}
        for name, port in (("Alice", args.alice_port), ("Bob", args.bob_port)):
            config = await client_config(reactor, args.home, name, directory_url, port, say,
                                         self.network)
            configs[name] = config.evolve(**self.client_settings)
        await self.network.wait_for_clients(
            [c.load_keys().public_key for c in configs.values()])
        for name, config in configs.items():
            service = ClientService(reactor, config)
            # services stop in reverse order: the clients before the network
            service.setServiceParent(self)
            self.clients[name] = service
            self.ports[name] = await service.whenListening()
            say(f"{name} is running: websocket API at ws://127.0.0.1:{self.ports[name]}/mix")

        alice = await connect_api(reactor, f"ws://127.0.0.1:{self.ports['Alice']}/mix")
        bob = await connect_api(reactor, f"ws://127.0.0.1:{self.ports['Bob']}/mix")
        try:
            return await self._converse(alice, bob)
        finally:
            await alice.close()
            await bob.close()

    async def _converse(self, alice, bob):
        reactor, say = self.reactor, self.say
        alice_address = await _ready_address(reactor, alice)
        bob_address = await _ready_address(reactor, bob)
        self.bob_address = bob_address
        say(f"Alice's address: {alice_address}")
        say(f"Bob's address:   {bob_address}")
        say("")
        text = (f"Hello Bob! Alice here, through three mixnodes and a gateway,"
                f" at {time.strftime('%H:%M:%S')}.")
        request = {"type": "send", "message": text, "recipient_address": bob_address}
        say(f"Alice sends: {json.dumps(request, ensure_ascii=False)}")
        answer = await alice.request(request)
        say(f"Alice's client answers: {json.dumps(answer, ensure_ascii=False)}")
        if answer.get("type") != "send":
            raise LocalNetError(f"Alice's client refused the message: {answer}")
        sent_at = reactor.seconds()
        say("Bob fetches every half second (the packet waits in Alice's sending stream, "
            "at each of the four hops, and at the gateway until Bob's client pulls it) …")
        received = []
        # Bob's inbox may still hold mail from an earlier run: wait for this one.
        while text not in received:
            if reactor.seconds() - sent_at > 60:
                raise LocalNetError("the message did not arrive within 60 s")
            await deferLater(reactor, 0.5, lambda: None)
            answer = await bob.request({"type": "fetch"})
            received.extend(answer.get("messages", []))
        say(f"Bob receives after {reactor.seconds() - sent_at:.1f} s:"
            f" {json.dumps(answer, ensure_ascii=False)}")
        return received


async def _ready_address(reactor, api):
    """The client's address, once it has a topology (getClients answers)."""
    for _ in range(200):
        if (await api.request({"type": "getClients"}))["type"] == "getClients":
            break
        await deferLater(reactor, 0.05, lambda: None)
    return (await api.request({"type": "ownDetails"}))["address"]


class Options(usage.Options):
    synopsis = "[--home DIR] [--base-port N] [--alice-port N] [--bob-port N] [--once]"
    longdesc = __doc__.splitlines()[0]

    def getSynopsis(self):
        return f"Usage: python -m nymtx.quickstart {self.synopsis}"
    optParameters = [
        ["home", None, ".quickstart", "where keys, configs and mailboxes live"],
        ["base-port", None, 8080, "the directory's port; the nodes' count up from it",
         coerce(shared.port, "--base-port")],
        ["alice-port", None, 9001, "Alice's websocket port", coerce(shared.port, "--alice-port")],
        ["bob-port", None, 9002, "Bob's websocket port", coerce(shared.port, "--bob-port")],
    ]
    optFlags = [["once", None, "stop after the message has arrived (for scripts)"]]


def main(argv=None):
    from twisted.internet import reactor

    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else list(argv))
    except usage.UsageError as e:
        print(f"quickstart: error: {e}\n{options}", file=sys.stderr)
        return 2
    args = types.SimpleNamespace(home=options["home"], base_port=options["base-port"],
                                 alice_port=options["alice-port"],
                                 bob_port=options["bob-port"], once=options["once"])
    start_logging("warn")
    outcome = {"code": 0}
    quick = QuickStart(reactor, args)

    def done(_):
        if args.once:
            reactor.stop()
            return
        a, b = quick.ports["Alice"], quick.ports["Bob"]
        say("")
        say("Both clients keep running. Talk to them with any websocket client, e.g.:")
        say(f"  .venv/bin/python -m nymtx.apiclient ws://127.0.0.1:{a}/mix "
            f"'{{\"type\": \"send\", \"message\": \"hi\", \"recipient_address\": "
            f"\"{quick.bob_address}\"}}'")
        say(f"  .venv/bin/python -m nymtx.apiclient ws://127.0.0.1:{b}/mix '{{\"type\": \"fetch\"}}'")
        say("  requests: send, fetch, getClients, ownDetails (docs/quickstart.md, docs/client.md)")
        page = os.path.abspath(os.path.join("examples", "chat", "index.html"))
        if os.path.exists(page):  # run from a checkout, as quickstart.sh does
            say("Or chat in your browser: open these two pages (docs/quickstart.md, section 5):")
            for port in (a, b):
                say(f"  {pathlib.Path(page).as_uri()}?port={port}")
        else:
            say("Or chat in your browser: examples/chat/index.html in the nymtx sources"
                " (docs/quickstart.md, section 5).")
        say(f"The directory's live page: {quick.network.directory_url}/")
        say("Press Ctrl-C to stop everything.")

    def failed(f):
        print(f"quickstart: error: {f.getErrorMessage()}", file=sys.stderr, flush=True)
        outcome["code"] = 1
        reactor.stop()

    def go():
        quick.startService()
        d = defer.Deferred.fromCoroutine(quick.run())
        d.addCallbacks(done, failed)

    reactor.callWhenRunning(go)
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: quick.stopService() if quick.running else None)
    reactor.run()
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main())
