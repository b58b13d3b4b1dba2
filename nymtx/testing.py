"""Fakes of the client's collaborators, for testing code that embeds nymtx.

Each has the methods docs/internals.md gives the real one, answers at once
(succeed/fail Deferreds), and records what it was asked, so a ClientCore or
MixnetClient driven by a ``task.Clock`` can be checked without a network::

    network = FakeNetwork(clients=[my_keys.public_key])
    client = MixnetClient(clock, config, directory=FakeDirectory(network.topology()),
                          links=FakeLinks(), gateway_link=FakeGatewayLink())

``FakeNetwork.unwrap(packet)`` peels a packet the client sent (it holds the
mixnodes' and the gateway's keys) and returns (destination, message, delays).
"""

from twisted.internet.defer import fail, succeed

from nymtx.addressing import NodeAddress
from nymtx.directory.client import DirectoryError
from nymtx.keys import KeyPair
from nymtx.sphinx import FinalHop, ForwardHop, process_packet
from nymtx.topology import GatewayInfo, MixNodeInfo, Topology

__all__ = ["FakeNetwork", "FakeDirectory", "FakeLinks", "FakeGatewayLink"]


class FakeNetwork:
    """Keys and a topology: one mixnode per layer, one gateway."""

    def __init__(self, clients=()):
        self.mix_keys = [KeyPair.generate() for _ in range(3)]
        self.gateway_keys = KeyPair.generate()
        self.mixnodes = [
            MixNodeInfo(NodeAddress.parse(f"127.0.0.1:{2000 + i}"), k.public_key, i + 1)
            for i, k in enumerate(self.mix_keys)]
        self.gateway = GatewayInfo(
            NodeAddress.parse("127.0.0.1:3000"), NodeAddress.parse("127.0.0.1:3001"),
            self.gateway_keys.public_key, tuple(clients))

    def topology(self, clients=None, mixnodes=None):
        gateway = self.gateway
        if clients is not None:
            gateway = GatewayInfo(gateway.address, gateway.client_listener,
                                  gateway.public_key, tuple(clients))
        return Topology(self.mixnodes if mixnodes is None else mixnodes, [gateway])

    def unwrap(self, packet):
        """Process *packet* through every hop: (destination, message, delays)."""
        delays = []
        for keys in self.mix_keys + [self.gateway_keys]:
            hop = process_packet(keys.private_key, packet)
            delays.append(hop.delay_ns)
            if isinstance(hop, FinalHop):
                return hop.destination, hop.message, delays
            assert isinstance(hop, ForwardHop)
            packet = hop.packet
        raise AssertionError("the route did not end at the gateway")


class FakeDirectory:
    def __init__(self, topology=None):
        self.topology = topology
        self.calls = 0

    def get_topology(self):
        self.calls += 1
        if self.topology is None:
            return fail(DirectoryError("directory unreachable"))
        return succeed(self.topology)


class FakeLinks:
    def __init__(self):
        self.sent = []

    def send(self, address, packet):
        self.sent.append((address, packet))

    def stop(self):
        return succeed(None)


class FakeGatewayLink:
    """Hands out ``mail`` on pull; records every pull, ack and inbox commit."""

    def __init__(self, events=None):
        self.mail = []
        self.events = [] if events is None else events
        self.started = False
        self.fail_next_ack = False

    def start(self):
        self.started = True

    def stop(self):
        self.started = False
        return succeed(None)

    def pull(self, limit=100):
        self.events.append(("pull",))
        return succeed(list(self.mail[:limit]))

    def ack(self, ids):
        self.events.append(("ack", tuple(ids)))
        if self.fail_next_ack:
            self.fail_next_ack = False
            return fail(Exception("connection lost"))
        self.mail = [(i, m) for i, m in self.mail if i not in ids]
        return succeed(None)
