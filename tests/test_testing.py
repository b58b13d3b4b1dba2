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
        self.assertIn((keys.public_key, b"hello"), [(d, m) for d, m, _ in unwrapped])
        self.assertTrue(gateway.started)
        self.successResultOf(client.stop())
