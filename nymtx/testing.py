"""Fakes of nymtx's collaborators, for testing code that embeds nymtx.

Each fake provides the same interface as the real class (``nymtx.interfaces``;
``tests/test_interfaces.py`` verifies both against it), answers at once
(succeed/fail Deferreds) and records what it was asked, so a client driven
by a ``task.Clock`` can be checked without a network or real time::

    clock, network, links = Clock(), FakeNetwork(), FakeLinks()
    client = successResultOf(connect(
        clock, root, "Alice", "http://directory.invalid",
        directory=FakeDirectory(network.topology), register=network.register,
        links=links, gateway_link=FakeGatewayLink()))

``FakeNetwork.unwrap(packet)`` peels a packet the client sent (it holds the
mixnodes' and the gateway's keys) and returns (destination, payload, delays);
the payload is the end-to-end envelope (docs/message-format.md) that the
gateway stores, after the SURB-ACK it cuts off (docs/surb.md);
``FakeNetwork.ack_record(packet)`` is what the sender's gateway would hand
its client once the recipient's gateway has sent that SURB-ACK on (a
1040-byte record: put it in the sender's FakeGatewayLink's ``mail`` and the
fragment is acknowledged). The envelope is what
``messages_to(keys, packets)`` opens and reassembles into the messages a
recipient gets. ``mail_for(recipient, message)`` seals a message into the
``(id, payload)`` pairs a FakeGatewayLink's ``mail`` hands to a client.
docs/embedding.md, "Testing your code against it", shows the whole of it.
"""

from twisted.internet.defer import fail, succeed
from zope.interface import implementer

from nymtx.addressing import NodeAddress
from nymtx.directory.client import DirectoryError
from nymtx.interfaces import IDirectoryClient, IGatewayLink, IPacketLinks
from nymtx.keys import KeyPair, encode_key
from nymtx.sphinx import FinalHop, ForwardHop, process_packet
from nymtx.topology import GatewayInfo, MixNodeInfo, Topology

__all__ = ["FakeNetwork", "FakeDirectory", "FakeLinks", "FakeGatewayLink",
           "FakeRegistrationError"]


class FakeRegistrationError(Exception):
    """``FakeNetwork.register`` refused (``refuse_registrations`` is set)."""


class FakeNetwork:
    """Keys and a topology: one mixnode per layer, one gateway.

    ``clients`` are the client keys the gateway lists; ``register`` (the
    fake of ``nymtx.gateway.link.register``, for ``init_client`` and
    ``connect``) adds to them, and records each call in ``registrations``.
    """

    token = b"k" * 32

    def __init__(self, clients=()):
        self.mix_keys = [KeyPair.generate() for _ in range(3)]
        self.gateway_keys = KeyPair.generate()
        self.mixnodes = [
            MixNodeInfo(NodeAddress.parse(f"127.0.0.1:{2000 + i}"), k.public_key, i + 1)
            for i, k in enumerate(self.mix_keys)]
        self.clients = list(clients)
        self.registrations = []   # (client listener address, gateway key, client key)
        self.refuse_registrations = False

    @property
    def gateway(self):
        return GatewayInfo(
            NodeAddress.parse("127.0.0.1:3000"), NodeAddress.parse("127.0.0.1:3001"),
            self.gateway_keys.public_key, tuple(self.clients))

    def topology(self, clients=None, mixnodes=None):
        """The topology now (or with these *clients* and *mixnodes* instead)."""
        gateway = self.gateway
        if clients is not None:
            gateway = GatewayInfo(gateway.address, gateway.client_listener,
                                  gateway.public_key, tuple(clients))
        return Topology(self.mixnodes if mixnodes is None else mixnodes, [gateway])

    def add_client(self):
        """A new client registered at the gateway: its KeyPair."""
        keys = KeyPair.generate()
        self.clients.append(keys.public_key)
        return keys

    def register(self, reactor, address, keys, gateway_key=None):
        """Registers *keys* at the gateway; Deferred[token], as the real one."""
        self.registrations.append((address, gateway_key, keys.public_key))
        if self.refuse_registrations:
            return fail(FakeRegistrationError("registration refused"))
        if keys.public_key not in self.clients:
            self.clients.append(keys.public_key)
        return succeed(self.token)

    def client_config(self, root, client_id, **values):
        """(ClientConfig, KeyPair) of a client registered at this gateway.

        What ``init_client`` writes, without a directory: fresh keys saved
        in the client's data directory, this gateway and a token, no socket.
        """
        from nymtx.client.config import ClientConfig
        keys = self.add_client()
        values.setdefault("socket_type", "None")
        config = ClientConfig.new(
            root, client_id, provider_id=self.gateway_keys.public_text,
            provider_authtoken=encode_key(self.token), **values)
        config.save_keys(keys)
        return config, keys

    def unwrap_whole(self, packet):
        """Process *packet* through every hop: (destination, the whole Sphinx
        message, delays); the message is a SURB-ACK and the stored part."""
        delays = []
        for keys in self.mix_keys + [self.gateway_keys]:
            hop = process_packet(keys.private_key, packet)
            delays.append(hop.delay_ns)
            if isinstance(hop, FinalHop):
                return hop.destination, hop.message, delays
            assert isinstance(hop, ForwardHop)
            packet = hop.packet
        raise AssertionError("the route did not end at the gateway")

    def unwrap(self, packet):
        """Process *packet* through every hop: (destination, the stored part
        (the end-to-end envelope the gateway keeps), delays)."""
        from nymtx.reliable.inbound import gateway_record
        destination, message, delays = self.unwrap_whole(packet)
        return destination, gateway_record(FinalHop(destination, bytes(16), message, 0)).record, delays

    def ack_record(self, packet):
        """The record the sender's gateway stores for it when the gateway where
        *packet* ends sends its SURB-ACK on (through the three mixnodes back to
        the one gateway of this network): 1040 bytes, for the sender's
        FakeGatewayLink ``mail``."""
        from nymtx.reliable.ack import ack_packet, split_payload
        from nymtx.sphinx.surb import process_gateway_packet
        _, message, _ = self.unwrap_whole(packet)
        _, ack = ack_packet(split_payload(message)[0])
        for keys in self.mix_keys:
            hop = process_packet(keys.private_key, ack)
            assert isinstance(hop, ForwardHop)
            ack = hop.packet
        return process_gateway_packet(self.gateway_keys.private_key, ack).stored()

    def messages_to(self, keys, packets):
        """The data (bytes) of every whole message *packets* (``FakeLinks.packets``:
        (address, packet) pairs) carry to *keys* (a KeyPair), in completion order."""
        from nymtx.message import Reassembler, Receiver
        receiver = Receiver(keys.private_key, keys.public_key, Reassembler(lambda: 0.0))
        out = []
        for _, packet in packets:
            destination, payload, _ = self.unwrap(packet)
            if destination == keys.public_key:
                message = receiver.receive(payload)
                if message is not None:
                    out.append(message.data)
        return out

    @staticmethod
    def mail_for(recipient, message, first_id=1):
        """``(gateway id, payload)`` pairs that carry *message* (str: text, bytes:
        binary) to *recipient* (a KeyPair, a 32-byte key or a base58 address),
        ids from *first_id*: what a gateway would hand its client."""
        from nymtx.addressing import decode_client_address
        from nymtx.message import Message, fragment_message, seal_fragment
        if isinstance(recipient, KeyPair):
            recipient = recipient.public_key
        elif isinstance(recipient, str):
            recipient = decode_client_address(recipient)
        message = Message.from_text(message) if isinstance(message, str) \
            else Message.from_bytes(message)
        return [(first_id + i, seal_fragment(recipient, f))
                for i, f in enumerate(fragment_message(message, max_message_size=1 << 62))]


@implementer(IDirectoryClient)
class FakeDirectory:
    """Answers with ``topology``, records every announcement and report.

    ``topology`` is a Topology, a callable returning one (``network.topology``
    follows registrations), or None for a directory that cannot be reached.
    With ``up`` False every request fails with DirectoryError (after being
    recorded).
    """

    def __init__(self, topology=None):
        self.topology = topology
        self.up = True
        self.calls = 0                 # get_topology calls
        self.announced_mixnodes = []   # presences, in order
        self.announced_gateways = []
        self.metrics = []
        self.closed = False

    def _answer(self, value=None):
        if not self.up:
            return fail(DirectoryError("directory unreachable"))
        return succeed(value)

    def get_topology(self):
        self.calls += 1
        topology = self.topology() if callable(self.topology) else self.topology
        if topology is None:
            return fail(DirectoryError("directory unreachable"))
        return self._answer(topology)

    def announce_mixnode(self, presence):
        self.announced_mixnodes.append(presence)
        return self._answer()

    def announce_gateway(self, presence):
        self.announced_gateways.append(presence)
        return self._answer()

    def report_metrics(self, metrics):
        self.metrics.append(metrics)
        return self._answer()

    def get_metrics(self):
        return self._answer([])

    def close(self):
        self.closed = True
        return succeed(None)


@implementer(IPacketLinks)
class FakeLinks:
    """Every packet goes out at once: ``packets`` lists (address, packet) in
    order; ``sent``, ``dropped`` and ``evicted`` count as PacketLinks' do."""

    def __init__(self):
        self.packets = []
        self.sent = {}
        self.dropped = 0
        self.evicted = 0
        self.retired = 0
        self.expired = 0
        self.retained = []  # the address sets retain() was given, in order
        self.stopped = False

    def send(self, address, packet):
        self.packets.append((address, packet))
        self.sent[str(address)] = self.sent.get(str(address), 0) + 1

    def retain(self, addresses):
        self.retained.append(set(addresses))

    def state(self, address):
        from nymtx.links import PeerState
        return PeerState.CONNECTED if self.connected(address) else PeerState.CLOSED

    def queued(self, address):
        return 0

    def connected(self, address):
        return any(a == address for a, _ in self.packets)

    def stop(self):
        self.stopped = True
        return succeed(None)


@implementer(IGatewayLink)
class FakeGatewayLink:
    """Hands out ``mail`` on pull; records every pull and ack in ``events``.

    Pass a shared *events* list to see the pulls and acks interleaved with
    other records (the client tests add the inbox's commits to it).
    """

    def __init__(self, events=None):
        self.mail = []
        self.events = [] if events is None else events
        self.started = False
        self.fail_next_ack = False
        self.last_error = None

    @property
    def connected(self):
        return self.started

    @property
    def state(self):
        from nymtx.gateway.link import LinkState
        return LinkState.READY if self.started else LinkState.STOPPED

    def start(self):
        self.started = True

    def stop(self):
        self.started = False
        return succeed(None)

    def when_ready(self):
        return succeed(None)

    def pull(self, limit=100):
        self.events.append(("pull",))
        return succeed(list(self.mail[:limit]))

    def ack(self, ids):
        self.events.append(("ack", tuple(ids)))
        if self.fail_next_ack:
            self.fail_next_ack = False
            return fail(Exception("connection lost"))
        ids = set(ids)
        deleted = [i for i, _ in self.mail if i in ids]
        self.mail = [(i, m) for i, m in self.mail if i not in ids]
        return succeed(len(deleted))
