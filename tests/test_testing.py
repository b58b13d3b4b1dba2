"""nymtx.testing: the fakes work the way its docstring tells users to use them."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nymtx.client import ClientConfig, MixnetClient
from nymtx.keys import KeyPair, encode_key
from nymtx.testing import FakeDirectory, FakeGatewayLink, FakeLinks, FakeNetwork


class FakesTests(SynchronousTestCase):
    def test_an_embedded_client_on_a_clock(self):
        clock = Clock()
        keys = KeyPair.generate()
        network = FakeNetwork(clients=[keys.public_key])
        config = ClientConfig.new(
            self.mktemp(), "Alice", provider_id=encode_key(network.gateway_keys.public_key),
            provider_authtoken=encode_key(bytes(32)))
        config.save_keys(keys)
        links, gateway = FakeLinks(), FakeGatewayLink()
        client = MixnetClient(clock, config, directory=FakeDirectory(network.topology()),
                              links=links, gateway_link=gateway)
        self.successResultOf(client.start())
        sent = client.send(client.address, "hello")
        for _ in range(200):
            if sent.called:
                break
            clock.advance(0.05)
        self.successResultOf(sent)
        # every packet went to the first mixnode, and one of them is ours
        unwrapped = [network.unwrap(packet) for _, packet in links.packets]
        self.assertIn(keys.public_key, [d for d, _, _ in unwrapped])
        self.assertEqual(network.messages_to(keys, links.packets), [b"hello"])
        # and what the fake gateway hands back is opened and stored
        gateway.mail = network.mail_for(keys, "back")
        got = []
        for _ in range(300):   # pulls come on the client's Poisson clock (mean 1 s)
            got += client.fetch()
            if got:
                break
            clock.advance(0.1)
        self.assertEqual(got, [b"back"])
        self.assertTrue(gateway.started)
        self.successResultOf(client.stop())


class FakeBehaviourTests(SynchronousTestCase):
    """Each fake answers as the real class does (shapes and failures)."""

    def test_directory_follows_the_network_and_fails_as_the_real_one(self):
        from nymtx.directory.client import DirectoryError
        network = FakeNetwork()
        directory = FakeDirectory(network.topology)
        self.assertEqual(self.successResultOf(directory.get_topology()).clients(), [])
        bob = network.add_client()
        self.assertEqual(self.successResultOf(directory.get_topology()).clients(),
                         [bob.public_key])
        self.assertEqual(directory.calls, 2)
        directory.up = False
        self.failureResultOf(directory.announce_mixnode({"host": "x"}), DirectoryError)
        self.failureResultOf(directory.get_topology(), DirectoryError)
        self.assertEqual(directory.announced_mixnodes, [{"host": "x"}])   # recorded anyway
        self.failureResultOf(FakeDirectory(None).get_topology(), DirectoryError)

    def test_links_count_per_address_as_packet_links_do(self):
        from nymtx.addressing import NodeAddress
        links = FakeLinks()
        a, b = NodeAddress.parse("127.0.0.1:1"), NodeAddress.parse("127.0.0.1:2")
        links.send(a, b"1")
        links.send(a, b"2")
        links.send(b, b"3")
        self.assertEqual(links.sent, {"127.0.0.1:1": 2, "127.0.0.1:2": 1})
        self.assertEqual(links.packets, [(a, b"1"), (a, b"2"), (b, b"3")])
        self.assertEqual((links.queued(a), links.connected(a)), (0, True))
        self.assertFalse(links.connected(NodeAddress.parse("127.0.0.1:3")))

    def test_gateway_link_acks_say_how_many_were_deleted(self):
        link = FakeGatewayLink()
        link.mail = [(1, b"a"), (2, b"b")]
        self.assertEqual(self.successResultOf(link.pull(limit=1)), [(1, b"a")])
        self.assertEqual(self.successResultOf(link.ack([1, 7])), 1)
        self.assertEqual(link.mail, [(2, b"b")])
        self.assertEqual(link.events, [("pull",), ("ack", (1, 7))])

    def test_register_lists_the_client_or_refuses(self):
        from nymtx.testing import FakeRegistrationError
        network = FakeNetwork()
        keys = KeyPair.generate()
        gateway = network.gateway
        token = self.successResultOf(network.register(
            Clock(), gateway.client_listener, keys, gateway.public_key))
        self.assertEqual(len(token), 32)
        self.assertEqual(network.topology().gateway_for(keys.public_key), network.gateway)
        network.refuse_registrations = True
        self.failureResultOf(network.register(Clock(), gateway.client_listener,
                                              KeyPair.generate()), FakeRegistrationError)
        self.assertEqual(len(network.registrations), 2)
