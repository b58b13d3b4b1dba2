"""The client's socket API on the listening lifecycle: its endpoint, its
start-up order, its bounds and backpressure, over real loopback sockets."""

import json
import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.client.config import ClientConfig, ConfigError
from nymtx.client.service import ClientLauncher, ClientService, endpoint_of
from nymtx.keys import KeyPair, encode_key
from nymtx.listening import FEED_SLICE, ListenError
from nymtx.testing import FakeDirectory, FakeGatewayLink, FakeLinks, FakeNetwork


def taken_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


def make_config(case, client_id="Alice", **values):
    """A saved, initialised client config (keys on disk) and its network."""
    network = FakeNetwork()
    keys = KeyPair.generate()
    values.setdefault("socket_type", "TCP")
    values.setdefault("listening_port", 0)
    config = ClientConfig.new(case.mktemp(), client_id,
                              provider_id=encode_key(network.gateway_keys.public_key),
                              provider_authtoken=encode_key(bytes(32)), **values)
    config.save_keys(keys)
    config.save()
    return config, network


class EndpointTests(SynchronousTestCase):
    def test_listening_port_becomes_a_loopback_endpoint(self):
        config, _ = make_config(self, listening_port=9123)
        self.assertEqual(endpoint_of(config), "tcp:9123:interface=127.0.0.1")

    def test_an_endpoint_string_wins_and_survives_the_file(self):
        config, _ = make_config(self, listening_endpoint=r"tcp6:0:interface=\:\:1")
        self.assertEqual(endpoint_of(config), r"tcp6:0:interface=\:\:1")
        again = ClientConfig.load(config.root, "Alice")
        self.assertEqual(again.listening_endpoint, r"tcp6:0:interface=\:\:1")

    def test_a_bad_endpoint_string_is_a_config_error(self):
        e = self.assertRaises(ConfigError, make_config, self, listening_endpoint="bogus:1")
        self.assertIn("[socket] listening_endpoint must be a server endpoint", str(e))
        self.assertIn("'bogus:1'", str(e))


class StartOrderTests(TestCase):
    """A client whose API cannot listen never reaches its gateway."""

    async def test_api_port_taken_means_no_gateway_and_no_pull(self):
        sock, port = taken_port()
        self.addCleanup(sock.close)
        config, network = make_config(self, listening_port=port)
        link = FakeGatewayLink()
        service = ClientService(reactor, config, directory=FakeDirectory(network.topology()),
                                links=FakeLinks(), gateway_link=link)
        service.startService()
        self.addCleanup(service.stopService)
        with self.assertRaises(ListenError) as e:
            await service.whenListening()
        self.assertIn(f"TCP API cannot listen on tcp:{port}:interface=127.0.0.1",
                      str(e.exception))
        await deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(link.started)
        self.assertEqual(link.events, [])

    def test_twistd_binds_an_initialised_clients_api_before_starting(self):
        sock, port = taken_port()
        self.addCleanup(sock.close)
        config, network = make_config(self, listening_port=port)
        link = FakeGatewayLink()
        launcher = ClientLauncher(reactor, config.root, "Alice",
                                  directory=FakeDirectory(network.topology()),
                                  links=FakeLinks(), gateway_link=link)
        self.assertRaises(ListenError, launcher.privilegedStartService)
        self.assertFalse(link.started)

    async def test_the_client_starts_once_the_api_listens(self):
        config, network = make_config(self)
        link = FakeGatewayLink()
        service = ClientService(reactor, config, directory=FakeDirectory(network.topology()),
                                links=FakeLinks(), gateway_link=link)
        service.startService()
        port = await service.whenListening()
        self.assertEqual(port, service.port)
        self.assertTrue(link.started)
        await service.stopService()
        self.assertFalse(link.started)


class Peer(Protocol):
    """A TCP API peer that reads only when told to."""

    def __init__(self):
        self.received = bytearray()
        self.lost = Deferred()

    def connectionMade(self):
        self.reading = True

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost.callback(None)

    def answers(self):
        return [json.loads(line) for line in bytes(self.received).splitlines()]


class TcpApiTests(TestCase):
    async def start(self, **limits):
        config, network = make_config(self)
        # many clients: every getClients answer is large, and fills buffers fast
        clients = [KeyPair.generate().public_key for _ in range(40)]
        service = ClientService(reactor, config,
                                directory=FakeDirectory(network.topology(clients=clients)),
                                links=FakeLinks(), gateway_link=FakeGatewayLink(),
                                api_limits=limits or None)
        service.startService()
        self.addCleanup(service.stopService)
        port = await service.whenListening()
        while not service.dispatcher.handle({"type": "getClients"})["clients"]:
            await deferLater(reactor, 0.01, lambda: None)
        return service, port

    async def connect(self, port):
        peer = Peer()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)
        self.addCleanup(lambda: peer.transport.abortConnection() if peer.transport else None)
        return peer

    async def test_answers_a_peer_that_half_closes_after_its_request(self):
        service, port = await self.start()
        for request in (b'{"type":"ownDetails"}\n', b'{"type":"ownDetails"}'):
            peer = await self.connect(port)
            peer.transport.write(request)
            peer.transport.loseWriteConnection()
            await peer.lost
            self.assertEqual(peer.answers(), [{"type": "ownDetails",
                                               "address": service.client.address}])

    async def test_a_peer_that_does_not_read_is_paused_not_buffered(self):
        service, port = await self.start()
        peer = await self.connect(port)
        peer.transport.pauseProducing()  # it stops reading its answers
        requests = 5000
        peer.transport.write(b'{"type":"getClients"}\n' * requests)
        [server] = list(service.listener.factory.connections)
        api = server.wrappedProtocol
        for _ in range(100):
            await deferLater(reactor, 0.01, lambda: None)
            if api.paused:
                break
        self.assertTrue(api.paused, "the API never stopped reading")
        answer_size = len(json.dumps(service.dispatcher.handle({"type": "getClients"})))
        await deferLater(reactor, 0.2, lambda: None)
        buffered = len(server.transport.dataBuffer) + sum(
            len(b) for b in server.transport._tempDataBuffer)
        # what the client holds is bounded by its transport's buffer, not by
        # the 5000 requests (about 9 MB of answers)
        self.assertLess(buffered, server.transport.bufferSize + 2 * answer_size)
        self.assertLess(len(api._buffer), 2 * 65536)
        peer.transport.resumeProducing()
        while len(peer.received.splitlines()) < requests:
            await deferLater(reactor, 0.01, lambda: None)
        answers = peer.answers()
        self.assertEqual(len(answers), requests)
        self.assertEqual({a["type"] for a in answers}, {"getClients"})

    async def test_connections_past_the_limit_are_closed_at_once(self):
        service, port = await self.start(max_connections=2)
        kept = [await self.connect(port) for _ in range(2)]
        third = await self.connect(port)
        await third.lost
        self.assertEqual(service.listener.factory.refused, 1)
        for peer in kept:
            peer.transport.write(b'{"type":"ownDetails"}\n')
        while not all(peer.received for peer in kept):
            await deferLater(reactor, 0.01, lambda: None)


class WebsocketBoundsTests(SynchronousTestCase):
    """The websocket API gets the same wrapper: its upgrade request must
    arrive in time, and an idle websocket is cut."""

    def factory(self, **limits):
        from nymtx.client.api import ApiDispatcher
        from tests.test_client_api import FakeCore
        from nymtx.client.service import api_factory
        config, network = make_config(self, socket_type="WebSocket")
        self.clock = Clock()
        dispatcher = ApiDispatcher(FakeCore())
        return api_factory(self.clock, config, dispatcher, **limits)

    def connect(self, factory):
        from twisted.internet.address import IPv4Address
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        proto.makeConnection(transport)

        def lose():
            # a StringTransport never reports the loss: twisted.web's own
            # timer (on the global reactor) would outlive the test
            if proto.wrappedProtocol is not None:
                proto.connectionLost(Failure(ConnectionDone()))
        self.addCleanup(lose)
        return proto, transport

    def test_a_dribbled_upgrade_request_is_cut_at_the_deadline(self):
        factory = self.factory(handshake_timeout=10, idle_timeout=300)
        proto, transport = self.connect(factory)
        for byte in b"GET /mix HTTP/1.1\r\n"[:9]:
            self.clock.advance(1)
            proto.dataReceived(bytes([byte]))
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_an_open_websocket_gets_the_idle_timeout(self):
        factory = self.factory(handshake_timeout=10, idle_timeout=300)
        proto, transport = self.connect(factory)
        proto.dataReceived(
            b"GET /mix HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n")
        self.assertIn(b"101 Switching Protocols", transport.value())
        self.clock.advance(299)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_past_the_limit_a_websocket_is_refused(self):
        factory = self.factory(max_connections=1)
        self.connect(factory)
        self.assertIsNone(factory.buildProtocol(None))


def ws_frame(text):
    """A masked client text frame (a zero mask: masking leaves it as it is)."""
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def ws_messages(data):
    """The text payloads of the server's (unmasked) frames in *data*."""
    out, i = [], 0
    while i + 2 <= len(data):
        length, head = data[i + 1] & 0x7F, 2
        if length == 126:
            length, head = int.from_bytes(data[i + 2:i + 4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(data[i + 2:i + 10], "big"), 10
        if i + head + length > len(data):
            break
        out.append(data[i + head:i + head + length])
        i += head + length
    return out


class WebsocketBackpressureTests(TestCase):
    connect = TcpApiTests.connect

    async def start(self, **limits):
        config, network = make_config(self, socket_type="WebSocket")
        clients = [KeyPair.generate().public_key for _ in range(40)]
        service = ClientService(reactor, config,
                                directory=FakeDirectory(network.topology(clients=clients)),
                                links=FakeLinks(), gateway_link=FakeGatewayLink())
        service.startService()
        self.addCleanup(service.stopService)
        port = await service.whenListening()
        while not service.dispatcher.handle({"type": "getClients"})["clients"]:
            await deferLater(reactor, 0.01, lambda: None)
        return service, port

    async def upgrade(self, port):
        peer = await self.connect(port)
        peer.transport.write(
            b"GET /mix HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n")
        while b"\r\n\r\n" not in peer.received:
            await deferLater(reactor, 0.01, lambda: None)
        head, _, rest = bytes(peer.received).partition(b"\r\n\r\n")
        self.assertIn(b"101", head.split(b"\r\n")[0])
        peer.received = bytearray(rest)
        return peer

    async def test_a_peer_that_does_not_read_is_paused_not_buffered(self):
        service, port = await self.start()
        peer = await self.upgrade(port)
        peer.transport.pauseProducing()  # it stops reading its answers
        requests = 5000
        peer.transport.write(ws_frame('{"type":"getClients"}') * requests)
        [server] = list(service.listener.factory.connections)
        for _ in range(200):
            await deferLater(reactor, 0.01, lambda: None)
            if server._reading_paused:
                break
        self.assertTrue(server._reading_paused, "the API never stopped reading")
        answer_size = len(json.dumps(service.dispatcher.handle({"type": "getClients"})))
        await deferLater(reactor, 0.2, lambda: None)
        buffered = len(server.transport.dataBuffer) + sum(
            len(b) for b in server.transport._tempDataBuffer)
        # bounded by the transport's buffer and the answers to one slice of
        # requests, not by the 5000 requests (about 9 MB of answers)
        frame = len(ws_frame('{"type":"getClients"}'))
        slice_answers = (FEED_SLICE // frame + 1) * (answer_size + 4)
        self.assertLess(buffered, server.transport.bufferSize + slice_answers)
        self.assertLess(len(server._unfed), 2 * 65536)
        peer.transport.resumeProducing()
        while len(ws_messages(peer.received)) < requests:
            await deferLater(reactor, 0.01, lambda: None)
        answers = [json.loads(m) for m in ws_messages(peer.received)]
        self.assertEqual({a["type"] for a in answers}, {"getClients"})

