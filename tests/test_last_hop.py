"""Issue 10's done-when test: the client–gateway link as a passive observer sees it.

A real local network in this process (directory, three mixnodes, a gateway
on loopback), real clients with their websocket API, and a small TCP relay
this test starts itself between the clients and the gateway: the gateway's
presence announces the relay as its client listener, so every byte the
clients and the gateway exchange (registration included) passes through
it and is recorded. The capture must show no message text, no cover
marker, no key and no token; one size for every frame the gateway sends
after the handshake, one for every request; and a second connection that
replays a recorded session must get no mail and delete none.
"""

import struct

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Protocol
from twisted.protocols import portforward
from twisted.trial.unittest import TestCase

from nymtx.directory.client import DirectoryClient
from nymtx.gateway import channel as C
from nymtx.gateway import padded as P
from tests.test_e2e import Network, collect, coroutine, sleep


class Tap:
    """A TCP relay to *port* that records each connection's bytes, by direction."""

    def __init__(self, port):
        self.sessions = []   # [{"up": [bytes], "down": [bytes]}] in connection order
        tap = self

        class Client(portforward.ProxyClient):
            def dataReceived(self, data):
                self.peer.session["down"].append(data)
                super().dataReceived(data)

        class ClientFactory(portforward.ProxyClientFactory):
            protocol = Client
            noisy = False

        class Server(portforward.ProxyServer):
            clientProtocolFactory = ClientFactory

            def connectionMade(self):
                self.session = {"up": [], "down": []}
                tap.sessions.append(self.session)
                super().connectionMade()

            def dataReceived(self, data):
                self.session["up"].append(data)
                super().dataReceived(data)

        self.factory = portforward.ProxyFactory("127.0.0.1", port)
        self.factory.protocol = Server
        self.factory.noisy = False

    async def listen(self):
        self.port = await serverFromString(
            reactor, "tcp:0:interface=127.0.0.1").listen(self.factory)
        return self.port.getHost().port

    def wire(self):
        return b"".join(b"".join(s["up"] + s["down"]) for s in self.sessions)


def channel_messages(chunks):
    """The length-prefixed channel messages of one direction of one session."""
    stream, out = b"".join(chunks), []
    while len(stream) >= 2:
        (n,) = struct.unpack_from(">H", stream)
        out.append(stream[:2 + n])
        stream = stream[2 + n:]
    assert not stream, "a capture ends inside a message"
    return out


MESSAGE_1 = 2 + C.MESSAGE1_SIZE
MESSAGE_2 = 2 + C.MESSAGE2_SIZE
REQUEST = C.frame_size(P.REQUEST_SIZE)
ANSWER = C.frame_size(P.ANSWER_SIZE)


class CapturedLastHop(TestCase):
    timeout = 120

    @coroutine
    async def test_a_capture_of_the_client_gateway_link(self):
        network = await Network(self).start()
        gateway = network.net.node_services["gateway-1"]
        tap = Tap(gateway.client_port)
        relay_port = await tap.listen()
        self.addCleanup(tap.port.stopListening)
        gateway.announce_client_port = relay_port
        # until the directory lists the relay, a client would dial the gateway
        directory = DirectoryClient(network.url, reactor=reactor)
        self.addCleanup(directory.close)
        for _ in range(200):
            topology = await directory.get_topology()
            if [g.client_listener.port for g in topology.gateways] == [relay_port]:
                break
            await sleep(0.05)
        else:
            self.fail("the directory never listed the relay as the client listener")

        # what the gateway stores, to look for it on the wire afterwards: a
        # temporary trigger copies every stored body aside, in its own sqlite
        db = gateway.store.db
        db.execute("CREATE TEMP TABLE seen (body BLOB)")
        db.execute("CREATE TEMP TRIGGER keep AFTER INSERT ON main.messages"
                   " BEGIN INSERT INTO seen VALUES (NEW.body); END")

        configs = await network.init("Alice", "Bob")
        alice = await network.run(configs["Alice"])
        bob = await network.run(configs["Bob"])
        bob_address = (await bob.request({"type": "ownDetails"}))["address"]
        sent = [f"secret {i}: the text no observer of the last hop may read" for i in range(8)]
        for text in sent:
            await alice.request({"type": "send", "message": text,
                                 "recipient_address": bob_address})
        received = await collect(bob, len(sent))
        self.assertEqual(sorted(received), sorted(sent))
        await sleep(0.5)   # more pulls, cover and empty ones among them

        # Bob goes away; mail for him waits at the gateway
        bob_service = network.clients["Bob"][0]
        await bob_service.stopService()
        bob_key = configs["Bob"].load_keys().public_key
        store = gateway.store
        waiting = [f"for later {i}" for i in range(3)]
        for text in waiting:
            await alice.request({"type": "send", "message": text,
                                 "recipient_address": bob_address})
        for _ in range(400):
            if store.usage(bob_key)[0] >= len(waiting):
                break
            await sleep(0.05)
        store.flush()
        held = {i for i, _ in store.pull(bob_key, 10_000)}
        self.assertGreaterEqual(len(held), len(waiting))

        # -- what the observer saw ------------------------------------------
        stored_bodies = [bytes(b) for (b,) in db.execute("SELECT body FROM temp.seen")]
        self.assertGreaterEqual(len(tap.sessions), 4)  # two inits, two clients
        wire = tap.wire()
        keys = []
        for config in configs.values():
            k = config.load_keys()
            keys += [k.public_key, k.private_key]
        keys.append(gateway.keys.public_key)
        for text in sent + waiting:
            self.assertNotIn(text.encode("utf-8"), wire)
            self.assertNotIn(text.encode("utf-8")[:12], wire)
        # every payload the gateway stored (cover and real, end-to-end
        # envelopes) crosses the link only inside the channel: no run of
        # 16 bytes of any of them shows on the wire
        for body in stored_bodies:
            for at in range(0, len(body) - 16, 97):
                self.assertNotIn(body[at:at + 16], wire)
        self.assertGreater(len(stored_bodies), len(sent))
        for key in keys:
            self.assertNotIn(key[:8], wire)
        for config in configs.values():
            # the private link has no token; an old config's never leaves
            if config.provider_authtoken:
                self.assertNotIn(config.token[:8], wire)
        pulls = answers = 0
        for session in tap.sessions:
            up, down = channel_messages(session["up"]), channel_messages(session["down"])
            self.assertEqual(len(up[0]), MESSAGE_1)
            self.assertEqual(set(len(m) for m in up[1:]) - {REQUEST}, set())
            if down:
                self.assertEqual(len(down[0]), MESSAGE_2)
                self.assertEqual(set(len(m) for m in down[1:]) - {ANSWER}, set())
            pulls += len(up) - 1
            answers += len(down) - 1
        self.assertGreater(pulls, 20)
        self.assertGreater(answers, 20)

        # -- a replay of Bob's recorded session -----------------------------
        bob_sessions = [s for s in tap.sessions if len(channel_messages(s["up"])) > 3]
        recorded = b"".join(bob_sessions[-1]["up"])
        for target in (gateway.client_port, relay_port):
            got = []

            class Replayer(Protocol):
                def dataReceived(self, data):
                    got.append(data)

                def connectionLost(self, reason):
                    lost.callback(None)
            lost = Deferred()
            proto = await connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", target), Replayer())
            proto.transport.write(recorded)
            await lost
            # message 2 at most (fresh, useless without the client's keys)
            self.assertLessEqual(len(b"".join(got)), MESSAGE_2)
            # nothing deleted (Bob's cover still in the mixnet may add more)
            store.flush()
            self.assertLessEqual(held, {i for i, _ in store.pull(bob_key, 10_000)})
        for session in tap.sessions:
            for chunk in session["down"]:
                for text in waiting:
                    self.assertNotIn(text.encode("utf-8"), chunk)


class PreviousRelease(TestCase):
    """A client initialised by the release before the private link: its
    config.toml holds ``provider_authtoken`` and the gateway's ledger its key."""

    timeout = 30

    @coroutine
    async def test_an_old_config_keeps_working_and_its_token_never_leaves(self):
        import os

        from nymtx.addressing import NodeAddress
        from nymtx.client.config import ClientConfig
        from nymtx.client.embed import MixnetClient
        from nymtx.gateway.service import GatewayService
        from nymtx.keys import KeyPair, encode_key
        from nymtx.testing import FakeDirectory, FakeLinks, FakeNetwork
        from nymtx.topology import GatewayInfo, Topology

        gateway_keys = KeyPair.generate()
        gateway = GatewayService(reactor, gateway_keys, self.mktemp(), "tcp:0:interface=127.0.0.1",
                                 "tcp:0:interface=127.0.0.1", "127.0.0.1", commit_interval=0.001)
        gateway.startService()
        self.addCleanup(gateway.stopService)
        mix_port, client_port = await gateway.whenListening()
        # what the old release's registration left behind, at both ends
        keys, token = KeyPair.generate(), os.urandom(32)
        gateway.store.register(keys.public_key, token)
        root = self.mktemp()
        old = ClientConfig.new(root, "Old", provider_id=gateway_keys.public_text,
                               provider_authtoken=encode_key(token), socket_type="None")
        old.save_keys(keys)
        old.save()
        with open(old.config_path, encoding="utf-8") as f:
            self.assertIn(f'provider_authtoken = "{encode_key(token)}"', f.read())
        # mail waiting for it, sealed as this release's senders seal it (the
        # previous release's plaintext mail is not readable by this client:
        # docs/client.md, "Upgrading")
        from nymtx.message import Message, fragment_message, seal_fragment
        [fragment] = fragment_message(Message.from_text("kept from before the upgrade"))
        self.assertIsNone(gateway.store.add(keys.public_key,
                                            seal_fragment(keys.public_key, fragment)))
        gateway.store.flush()

        tap = Tap(client_port)
        relay = await tap.listen()
        self.addCleanup(tap.port.stopListening)
        topology = Topology(FakeNetwork().mixnodes, [GatewayInfo(
            NodeAddress.parse(f"127.0.0.1:{mix_port}"), NodeAddress.parse(f"127.0.0.1:{relay}"),
            gateway_keys.public_key, (keys.public_key,))])
        client = MixnetClient(reactor, ClientConfig.load(root, "Old"),
                              directory=FakeDirectory(topology), links=FakeLinks())
        await client.start()
        self.addCleanup(client.stop)
        got = []
        for _ in range(200):
            got += client.core.fetch()
            if got and gateway.store.usage(keys.public_key) == (0, 0):
                break
            await sleep(0.05)
        self.assertEqual(got, [b"kept from before the upgrade"])
        self.assertEqual(gateway.store.usage(keys.public_key), (0, 0))   # acked
        wire = tap.wire()
        self.assertGreater(len(wire), C.MESSAGE1_SIZE)
        for secret in (token, token[:8], encode_key(token).encode(), keys.public_key[:8]):
            self.assertNotIn(secret, wire)
