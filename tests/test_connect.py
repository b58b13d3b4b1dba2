"""nymtx.client.connect: load or initialise, start, and send to a client that
registered a moment ago; on a Clock with the fakes of nymtx.testing, then
on a real local network (which also runs examples/embed.py)."""

import importlib.util
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.client import ClientConfig, ClientStopped, ConfigError, InitError, MixnetClient, \
    SendError, connect
from nymtx.client.config import is_initialised
from nymtx.interfaces import IMixnetClient
from nymtx.keys import KeyPair
from nymtx.testing import FakeDirectory, FakeGatewayLink, FakeLinks, FakeNetwork

EXAMPLE = Path(__file__).parent.parent / "examples" / "embed.py"


def advance_until(clock, d, step=0.05, most=2000):
    for _ in range(most):
        if d.called:
            return
        clock.advance(step)


class ConnectOnAClock(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.root = self.mktemp()
        self.network = FakeNetwork()
        self.directory = FakeDirectory(self.network.topology)
        self.links = FakeLinks()

    def connect(self, client_id="Alice", **options):
        options.setdefault("directory", self.directory)
        options.setdefault("links", self.links)
        options.setdefault("gateway_link", FakeGatewayLink())
        options.setdefault("register", self.network.register)
        return connect(self.clock, self.root, client_id, "http://directory.invalid", **options)

    def connected(self, client_id="Alice", **options):
        client = self.successResultOf(self.connect(client_id, **options))
        self.addCleanup(lambda: client.stop())
        return client

    def delivered_to(self, keys):
        return self.network.messages_to(keys, self.links.packets)

    def test_a_new_id_is_initialised_and_started(self):
        client = self.connected()
        self.assertIsInstance(client, MixnetClient)
        self.assertTrue(IMixnetClient.providedBy(client))
        self.assertTrue(is_initialised(self.root, "Alice"))
        self.assertEqual(len(self.network.registrations), 1)
        self.assertEqual(client.config, ClientConfig.load(self.root, "Alice"))
        self.assertEqual(client.config.socket_type, "None")
        self.assertTrue(client.gateway_link.started)
        self.assertIsNotNone(client.core.topology)

    def test_an_existing_id_is_loaded_with_this_runs_settings(self):
        first = self.connected()
        self.successResultOf(first.stop())
        saved = ClientConfig.load(self.root, "Alice")
        again = self.connected(fetch_message_delay=20)
        self.assertEqual(len(self.network.registrations), 1)   # not registered again
        self.assertEqual(again.address, first.address)
        self.assertEqual(again.config.fetch_message_delay, 20)
        self.assertEqual(ClientConfig.load(self.root, "Alice"), saved)  # the file unchanged

    def test_an_existing_id_is_not_moved_to_another_gateway(self):
        self.successResultOf(self.connected().stop())
        other = KeyPair.generate().public_text
        f = self.failureResultOf(self.connect(gateway=other), ConfigError)
        self.assertIn("force=True", str(f.value))

    def test_bad_options_are_config_errors(self):
        for options, fragment in [({"fetch_messages_delay": 5}, "unknown option"),
                                  ({"fetch_message_delay": -1}, "fetch_message_delay"),
                                  ({"resolve_timeout": 0}, "resolve_timeout"),
                                  ({"resolve_poll": "soon"}, "resolve_poll")]:
            f = self.failureResultOf(self.connect(**options), ConfigError)
            self.assertIn(fragment, str(f.value))
        self.assertFalse(is_initialised(self.root, "Alice"))

    def test_no_directory_is_an_init_error_and_writes_nothing(self):
        self.directory.topology = None
        f = self.failureResultOf(self.connect(), InitError)
        self.assertIn("cannot fetch the topology", str(f.value))
        self.assertFalse(is_initialised(self.root, "Alice"))

    def test_a_send_to_a_client_not_listed_yet_waits_for_it(self):
        client = self.connected(resolve_poll=0.5)
        bob = KeyPair.generate()
        sent = client.send(bob.public_text, "hi Bob")
        calls = self.directory.calls
        self.clock.advance(0.5)
        self.clock.advance(0.5)
        self.assertNoResult(sent)
        self.assertEqual(self.directory.calls, calls + 2)   # polled every 0.5 s
        self.network.clients.append(bob.public_key)        # Bob's gateway lists him now
        self.clock.advance(0.5)
        advance_until(self.clock, sent)
        self.successResultOf(sent)
        self.assertEqual(self.delivered_to(bob), [b"hi Bob"])

    def test_a_plain_send_on_a_bare_mixnet_client_fails_at_once(self):
        # what connect's client fixes: the same send on MixnetClient is refused
        client = self.connected()
        bob = KeyPair.generate()
        f = self.failureResultOf(MixnetClient.send(client, bob.public_text, "hi"), SendError)
        self.assertIn("CLIENT@GATEWAY", str(f.value))

    def test_a_recipient_never_listed_fails_after_the_timeout(self):
        client = self.connected(resolve_timeout=3)
        stranger = KeyPair.generate().public_text
        sent = client.send(stranger, "anyone?")
        self.clock.advance(2.9)
        self.assertNoResult(sent)
        self.clock.advance(0.2)
        f = self.failureResultOf(sent, SendError)
        self.assertIn(f"unknown recipient {stranger}", str(f.value))
        self.assertIn("within 3 s", str(f.value))
        self.assertEqual(self.delivered_to(KeyPair.generate()), [])

    def test_no_topology_at_all_fails_after_the_timeout_saying_so(self):
        self.successResultOf(self.connected().stop())
        self.directory.topology = None   # the directory is down at the next start
        client = self.connected(resolve_timeout=2)
        sent = client.send(KeyPair.generate().public_text, "hello?")
        self.clock.advance(2.5)
        f = self.failureResultOf(sent, SendError)
        self.assertIn("topology is not known yet", str(f.value))
        self.assertIn("http://directory.invalid", str(f.value))

    def test_at_gateway_and_listed_recipients_go_at_once(self):
        client = self.connected()
        bob = self.network.add_client()
        carol = KeyPair.generate()
        self.successResultOf(client.core.refresh_topology())  # Bob is in it now
        calls = self.directory.calls
        listed = client.send(bob.public_text, "to Bob")
        explicit = client.send(f"{carol.public_text}@{self.network.gateway_keys.public_text}",
                               "to Carol")
        self.assertEqual(client.core.queued, 2)   # queued without waiting
        advance_until(self.clock, listed)
        advance_until(self.clock, explicit)
        self.successResultOf(listed)
        self.successResultOf(explicit)
        self.assertEqual(self.directory.calls, calls)
        self.assertEqual(self.delivered_to(carol), [b"to Carol"])

    def test_bad_messages_fail_at_once(self):
        client = self.connected()
        bob = KeyPair.generate().public_text
        f = self.failureResultOf(client.send(bob, b"x" * ((1 << 20) + 1)), SendError)
        self.assertIn("message too long", str(f.value))
        self.failureResultOf(client.send("not an address", "hi"), SendError)

    def test_stop_fails_waiting_sends_and_leaves_no_timer(self):
        client = self.successResultOf(self.connect())
        sent = client.send(KeyPair.generate().public_text, "hi")
        self.clock.advance(0.1)
        self.successResultOf(client.stop())
        self.failureResultOf(sent, ClientStopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waiting_sends_share_one_topology_fetch(self):
        client = self.connected(resolve_poll=0.5)
        pending = []

        def slow_topology():
            self.directory.calls += 1
            d = Deferred()
            pending.append(d)
            return d
        self.directory.get_topology = slow_topology
        bob = KeyPair.generate()
        first = client.send(bob.public_text, "one")
        second = client.send(bob.public_text, "two")
        self.clock.advance(0.5)
        self.assertEqual(len(pending), 1)
        self.network.clients.append(bob.public_key)
        pending.pop().callback(self.network.topology())
        advance_until(self.clock, first)
        advance_until(self.clock, second)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(sorted(self.delivered_to(bob)), [b"one", b"two"])


def _load_example():
    spec = importlib.util.spec_from_file_location("nymtx_example_embed", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# milliseconds, as config.toml's [debug]
FAST = dict(average_packet_delay=5, loop_cover_traffic_average_delay=100,
            message_sending_average_delay=10, fetch_message_delay=50)


class ConnectOnALocalNetwork(TestCase):
    """Real nodes on loopback tcp:0 ports, real clients, real time."""

    timeout = 60

    async def network(self):
        from nymtx.localnet import LocalNetwork, Timing, plan
        self.home = self.mktemp()
        net = LocalNetwork(reactor, self.home, plan(1, 1, 0),
                           timing=Timing(presence_interval=0.1, metrics_interval=0.5,
                                         expiry=1.0))
        net.startService()
        self.addCleanup(net.stopService)
        return await net.whenReady()

    def test_the_embedding_example_runs(self):
        async def run():
            url = await self.network()
            said = []
            text = await _load_example().main(reactor, url, root=self.home,
                                              say=lambda *words: said.append(words))
            self.assertEqual(text, "hello through the mixnet")
            self.assertEqual(said[-1], ("received:", "hello through the mixnet"))
            # a second run loads the client it made the first time
            config = ClientConfig.load(self.home, "embed-example")
            await _load_example().main(reactor, url, root=self.home, say=lambda *w: None)
            self.assertEqual(ClientConfig.load(self.home, "embed-example"), config)
        return Deferred.fromCoroutine(run())

    def test_a_client_registered_a_moment_ago_gets_a_plain_address_message(self):
        async def run():
            url = await self.network()
            # Alice refreshes her topology only every 30 s: once she is listed
            # herself, only connect's resolution can learn of Bob in time.
            alice = await connect(reactor, self.home, "Alice", url,
                                  topology_refresh_rate=30000, **FAST)
            self.addCleanup(alice.stop)
            while alice.address not in alice.clients():
                await deferLater(reactor, 0.05, lambda: None)
            bob = await connect(reactor, self.home, "Bob", url, **FAST)
            self.addCleanup(bob.stop)
            received = Deferred()
            bob.on_message(lambda m: received.called or received.callback(m))
            self.assertNotIn(bob.address, alice.clients())
            await alice.send(bob.address, "hello, new Bob")
            self.assertEqual(await received, b"hello, new Bob")
        return Deferred.fromCoroutine(run())
