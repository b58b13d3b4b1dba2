"""End to end: a whole network of real services on loopback, real websockets.

Every node listens on 127.0.0.1 port 0; the clients talk to their apps over
real Autobahn websockets. Delays are milliseconds so that the suite stays
fast; the mixing, the Poisson streams and the fetch loop are the real ones.
"""

import json

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from nymtx.addressing import encode_client_address
from nymtx.apiclient import connect_api
from nymtx.client import ClientService, init_client
from nymtx.localnet import LocalNetwork, Timing, plan

# milliseconds, as in config.toml's [debug]
FAST = dict(average_packet_delay=5, loop_cover_traffic_average_delay=100,
            message_sending_average_delay=10, fetch_message_delay=50,
            topology_refresh_rate=250)
TIMING = Timing(presence_interval=0.1, metrics_interval=0.5, expiry=1.0)


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


def coroutine(f):
    def test(self):
        return Deferred.fromCoroutine(f(self))
    test.__name__ = f.__name__
    return test


class Network:
    """A running local network and its clients, torn down by the test case."""

    def __init__(self, case, mixnodes_per_layer=1):
        self.case = case
        self.home = case.mktemp()
        self.net = LocalNetwork(reactor, self.home, plan(mixnodes_per_layer, 1, 0), timing=TIMING)
        self.clients = {}

    async def start(self):
        self.net.startService()
        self.case.addCleanup(self.net.stopService)
        self.url = await self.net.whenReady()
        return self

    async def init(self, *names):
        configs = {}
        for name in names:
            configs[name] = await init_client(reactor, self.home, name, self.url,
                                              socket_type="websocket", port=0, **FAST)
        keys = [c.load_keys().public_key for c in configs.values()]
        await self.net.wait_for_clients(keys)
        return configs

    async def run(self, config):
        service = ClientService(reactor, config)
        service.startService()
        self.case.addCleanup(service.stopService)
        port = await service.whenListening()
        api = await connect_api(reactor, f"ws://127.0.0.1:{port}/mix")
        self.case.addCleanup(api.close)
        self.clients[config.id] = (service, api)
        # Ready once it has a topology: until then getClients is an error.
        for _ in range(100):
            if (await api.request({"type": "getClients"}))["type"] == "getClients":
                break
            await sleep(0.05)
        return api


async def collect(api, count, timeout=20.0):
    """Fetch until *count* messages have come (or the time is up)."""
    received = []
    deadline = reactor.seconds() + timeout
    while len(received) < count and reactor.seconds() < deadline:
        answer = await api.request({"type": "fetch"})
        received.extend(answer["messages"])
        await sleep(0.05)
    return received


class EndToEndTests(TestCase):
    timeout = 90

    @coroutine
    async def test_twenty_messages_arrive_exactly_once(self):
        network = await Network(self).start()
        configs = await network.init("Alice", "Bob")
        alice = await network.run(configs["Alice"])
        bob = await network.run(configs["Bob"])
        bob_address = (await bob.request({"type": "ownDetails"}))["address"]
        sent = [f"message {i} from Alice: ünïcode ✓" for i in range(20)]
        for text in sent:
            answer = await alice.request({"type": "send", "message": text,
                                          "recipient_address": bob_address})
            self.assertEqual(answer, {"type": "send"})
        received = await collect(bob, len(sent))
        # a little longer: nothing may come twice
        await sleep(0.5)
        received.extend((await bob.request({"type": "fetch"}))["messages"])
        self.assertEqual(sorted(received), sorted(sent))
        # Alice's own loop cover never shows up as a message
        self.assertEqual((await alice.request({"type": "fetch"}))["messages"], [])

    @coroutine
    async def test_clients_details_and_unknown_recipient(self):
        network = await Network(self).start()
        configs = await network.init("Alice", "Bob")
        alice = await network.run(configs["Alice"])
        own = await alice.request({"type": "ownDetails"})
        expected = encode_client_address(configs["Alice"].load_keys().public_key)
        self.assertEqual(own, {"type": "ownDetails", "address": expected})
        clients = await alice.request({"type": "getClients"})
        self.assertEqual(clients["type"], "getClients")
        self.assertEqual(sorted(clients["clients"]), sorted(
            encode_client_address(c.load_keys().public_key) for c in configs.values()))
        unknown = encode_client_address(bytes(range(32)))
        answer = await alice.request({"type": "send", "message": "hello?",
                                      "recipient_address": unknown})
        self.assertEqual(answer["type"], "error")
        self.assertIn(unknown, answer["message"])
        # the connection lives on after the error
        self.assertEqual((await alice.request({"type": "ownDetails"}))["address"], expected)

    @coroutine
    async def test_stopped_mixnode_is_routed_around(self):
        network = await Network(self, mixnodes_per_layer=2).start()
        configs = await network.init("Alice", "Bob")
        alice = await network.run(configs["Alice"])
        bob = await network.run(configs["Bob"])
        bob_address = (await bob.request({"type": "ownDetails"}))["address"]
        await network.net.stop_node("mix-2-1")
        # the directory forgets it after its expiry, the client at its next refresh
        await sleep(TIMING.expiry + 2 * FAST["topology_refresh_rate"] / 1000 + 0.3)
        alice_core = network.clients["Alice"][0].client.core
        self.assertEqual(len([m for m in alice_core.topology.mixnodes if m.layer == 2]), 1)
        sent = [f"after the failure {i}" for i in range(10)]
        for text in sent:
            await alice.request({"type": "send", "message": text,
                                 "recipient_address": bob_address})
        self.assertEqual(sorted(await collect(bob, len(sent))), sorted(sent))

    @coroutine
    async def test_gateway_restart_loses_no_stored_message(self):
        network = await Network(self).start()
        configs = await network.init("Alice", "Bob")
        alice = await network.run(configs["Alice"])
        bob_key = configs["Bob"].load_keys().public_key
        sent = [f"stored {i}" for i in range(8)]
        for text in sent:
            await alice.request({"type": "send", "message": text,
                                 "recipient_address": encode_client_address(bob_key)})
        # Bob is not running: the messages wait at the gateway, committed.
        gateway = network.net.node_services["gateway-1"]
        deadline = reactor.seconds() + 20
        while gateway.store.usage(bob_key)[0] < len(sent) and reactor.seconds() < deadline:
            await sleep(0.05)
        self.assertEqual(gateway.store.usage(bob_key)[0], len(sent))
        await network.net.stop_node("gateway-1")
        await network.net.start_node("gateway-1")
        await network.net.wait_for_clients([bob_key])
        bob = await network.run(configs["Bob"])
        self.assertEqual(sorted(await collect(bob, len(sent))), sorted(sent))


class RawApi(WebSocketClientProtocol):
    """The app's side of a websocket, frames as they come (text or binary)."""

    def onOpen(self):
        self.frames = []
        self.waiting = []
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.frames.append((payload, isBinary))
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.called:
            self.factory.opened.errback(Exception(f"refused: {reason}"))

    async def ask(self, payload, binary=False):
        """Send a frame; the next frame that comes back (raw bytes)."""
        d = Deferred()
        self.waiting.append(d)
        self.sendMessage(payload, isBinary=binary)
        await d
        return self.frames[-1][0]

    async def until(self, condition, timeout):
        deadline = reactor.seconds() + timeout
        while not condition() and reactor.seconds() < deadline:
            await sleep(0.05)
        return condition()


async def open_raw(port):
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/mix")
    factory.protocol = RawApi
    factory.opened = Deferred()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    return await factory.opened


def leaks(plaintext, stored):
    """Whether *stored* holds any 31-byte run of *plaintext*: each such run
    holds one of its 16-byte-aligned chunks, and every 16-byte window of
    *stored* is looked up among them."""
    chunks = {plaintext[i:i + 16] for i in range(0, len(plaintext) - 15, 16)}
    return any(stored[i:i + 16] in chunks for i in range(len(stored) - 15))


class MessageLayerEndToEndTests(TestCase):
    """Issue 11, done when: 1 MiB of random bytes and a 100 KiB text message
    from Alice to Bob arrive intact and exactly once, through real sockets,
    real mixnodes and a real gateway, and the gateway's database never held
    a plaintext byte of either."""

    timeout = 400

    @coroutine
    async def test_a_mebibyte_and_a_100_kib_text_arrive_once_as_ciphertext_only(self):
        import os
        import random
        import string
        network = await Network(self).start()
        rates = dict(FAST, message_sending_average_delay=20)
        alice_config = await init_client(reactor, network.home, "Alice", network.url,
                                         socket_type="websocket", port=0, **rates)
        # Bob only receives: his stream sends drop cover at a slower pace
        bob_config = await init_client(reactor, network.home, "Bob", network.url,
                                       socket_type="websocket", port=0,
                                       **dict(rates, message_sending_average_delay=200))
        bob_key = bob_config.load_keys().public_key
        await network.net.wait_for_clients([alice_config.load_keys().public_key, bob_key])
        await network.run(alice_config)
        await network.run(bob_config)
        alice = await open_raw(network.clients["Alice"][0].port)
        bob = await open_raw(network.clients["Bob"][0].port)
        self.addCleanup(alice.transport.loseConnection)
        self.addCleanup(bob.transport.loseConnection)

        rng = random.Random(11)
        binary = rng.randbytes(1 << 20)
        text = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(100 << 10))
        self.assertEqual(await bob.ask(b'{"type":"subscribe"}'), b'{"type":"subscribe"}')
        self.assertEqual(await alice.ask(json.dumps(
            {"type": "send", "message": text,
             "recipient_address": encode_client_address(bob_key)}).encode()),
            b'{"type":"send"}')
        self.assertEqual(await alice.ask(b"\x00" + bob_key + binary, binary=True),
                         b'{"type":"send"}')

        def arrived():
            return len(bob.frames) >= 3   # the subscribe answer, then the two
        self.assertTrue(await bob.until(arrived, 300), f"{len(bob.frames)} frames")
        await sleep(1.0)   # a little longer: nothing may come twice
        events = bob.frames[1:]
        self.assertEqual(len(events), 2, [e[0][:60] for e in events])
        texts = [json.loads(f) for f, is_binary in events if not is_binary]
        self.assertEqual(texts, [{"type": "received", "message": text}])
        self.assertEqual([f for f, is_binary in events if is_binary], [b"\x01" + binary])
        self.assertEqual(await bob.ask(b'{"type":"fetch"}'), b'{"type":"fetch","messages":[]}')
        bob_core = network.clients["Bob"][0].client.core
        self.assertEqual(bob_core.reassembly.stats.completed, 2)
        self.assertEqual(bob_core.reassembly.partial_sets, 0)

        # Every byte the gateway's sqlite ever held: the file, its WAL, its shm
        # (deleted rows stay in free pages and in the WAL).
        gateway = network.net.node_services["gateway-1"]
        stored = b""
        for name in os.listdir(gateway.data_dir):
            with open(os.path.join(gateway.data_dir, name), "rb") as f:
                stored += f.read()
        self.assertGreater(len(stored), (1 << 20) + (100 << 10))   # it did hold them
        plain = text.encode()
        self.assertTrue(leaks(plain, b"x" + plain[5000:5031] + b"y"))  # the check can fail
        self.assertFalse(leaks(binary, stored))
        self.assertFalse(leaks(plain, stored))

    @coroutine
    async def test_the_seed_requests_answer_byte_for_byte_as_before(self):
        network = await Network(self).start()
        configs = await network.init("Alice", "Bob")
        await network.run(configs["Alice"])
        api = await open_raw(network.clients["Alice"][0].port)
        self.addCleanup(api.transport.loseConnection)
        alice = encode_client_address(configs["Alice"].load_keys().public_key)
        bob = encode_client_address(configs["Bob"].load_keys().public_key)
        self.assertEqual(await api.ask(b'{"type":"ownDetails"}'),
                         b'{"type":"ownDetails","address":"%s"}' % alice.encode())
        clients = json.loads(await api.ask(b'{"type":"getClients"}'))
        self.assertEqual(sorted(clients["clients"]), sorted([alice, bob]))
        self.assertEqual(json.dumps(clients, separators=(",", ":")).encode(),
                         b'{"type":"getClients","clients":["%s","%s"]}'
                         % tuple(c.encode() for c in clients["clients"]))
        self.assertEqual(await api.ask(b'{"type":"fetch"}'), b'{"type":"fetch","messages":[]}')
        self.assertEqual(await api.ask(b'{"type":"send","message":"hi","recipient_address":"%s"}'
                                       % bob.encode()), b'{"type":"send"}')
        self.assertEqual(await api.ask(b'{"type":"send","recipient_address":"%s"}'
                                       % bob.encode()),
                         b'{"type":"error","message":"received invalid request. err:'
                         b' missing field \'message\'"}')
        # a text frame arrives for each: no pushed event for a seed client
        await sleep(0.5)
        self.assertEqual(len(api.frames), 5)
