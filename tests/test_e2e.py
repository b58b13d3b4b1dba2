"""End to end: a whole network of real services on loopback, real websockets.

Every node listens on 127.0.0.1 port 0; the clients talk to their apps over
real Autobahn websockets. Delays are milliseconds so that the suite stays
fast; the mixing, the Poisson streams and the fetch loop are the real ones.
"""

from twisted.internet import reactor
from twisted.internet.defer import Deferred
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
