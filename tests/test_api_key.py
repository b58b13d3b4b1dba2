"""The socket API's optional key ([socket] api_key), over real sockets.

Without a key any program on this machine may use the client's API (nym's
behaviour, the default); with one, a websocket must show it in its
handshake and a TCP connection in its first line, or it gets nothing.
"""

import json

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.apiclient import ApiError, connect_api
from nymtx.client.api import ApiDispatcher
from nymtx.client.config import ClientConfig, ConfigError
from nymtx.client.service import api_factory

from .test_client_api import FakeCore

KEY = "k3y-that-is-long-enough-0123456789"


def coroutine(f):
    def test(self):
        return Deferred.fromCoroutine(f(self))
    test.__name__ = f.__name__
    return test


class _Lines(Protocol):
    """Writes its lines, collects every byte until the server closes."""

    def __init__(self, lines):
        self.lines = lines
        self.received = b""
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(b"".join(line + b"\n" for line in self.lines))

    def dataReceived(self, data):
        self.received += data
        if self.received.count(b"\n") >= len(self.lines):
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback([json.loads(x) for x in self.received.splitlines()])


class ApiKeyTests(TestCase):
    async def listen(self, socket_type, api_key=KEY):
        config = ClientConfig(id="K", root=self.mktemp(), socket_type=socket_type,
                              api_key=api_key)
        factory = api_factory(reactor, config, ApiDispatcher(FakeCore()))
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.addCleanup(factory.close_all)
        return port.getHost().port

    @coroutine
    async def test_websocket_with_the_key_in_a_header_is_served(self):
        port = await self.listen("WebSocket")
        api = await connect_api(reactor, f"ws://127.0.0.1:{port}/mix", api_key=KEY)
        self.addCleanup(api.close)
        answer = await api.request({"type": "ownDetails"})
        self.assertEqual(answer["type"], "ownDetails")

    @coroutine
    async def test_websocket_with_the_key_in_the_url_is_served(self):
        # what a browser page does: it cannot set headers on a websocket
        port = await self.listen("WebSocket")
        api = await connect_api(reactor, f"ws://127.0.0.1:{port}/mix?api_key={KEY}",
                                origin="null")
        self.addCleanup(api.close)
        self.assertEqual((await api.request({"type": "ownDetails"}))["type"], "ownDetails")

    @coroutine
    async def test_websocket_without_or_with_a_wrong_key_is_refused(self):
        port = await self.listen("WebSocket")
        for key in (None, KEY[:-1], KEY + "x", "Bearer"):
            with self.assertRaises(ApiError):
                await connect_api(reactor, f"ws://127.0.0.1:{port}/mix", api_key=key)

    @coroutine
    async def test_without_a_key_configured_any_program_is_served(self):
        port = await self.listen("WebSocket", api_key="")
        api = await connect_api(reactor, f"ws://127.0.0.1:{port}/mix")
        self.addCleanup(api.close)
        self.assertEqual((await api.request({"type": "ownDetails"}))["type"], "ownDetails")

    async def tcp(self, port, *lines):
        proto = _Lines([line if isinstance(line, bytes) else json.dumps(line).encode()
                        for line in lines])
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), proto)
        return await proto.done

    @coroutine
    async def test_tcp_authenticates_with_its_first_line(self):
        port = await self.listen("TCP")
        answers = await self.tcp(port, {"type": "auth", "api_key": KEY}, {"type": "ownDetails"})
        self.assertEqual([a["type"] for a in answers], ["auth", "ownDetails"])

    @coroutine
    async def test_tcp_without_the_key_gets_an_error_and_is_closed(self):
        port = await self.listen("TCP")
        for first in ({"type": "ownDetails"}, {"type": "auth", "api_key": "wrong"},
                      {"type": "auth"}, b"not json", {"type": "auth", "api_key": 7}):
            answers = await self.tcp(port, first, {"type": "ownDetails"})
            self.assertEqual(len(answers), 1, first)
            self.assertEqual(answers[0]["type"], "error")
            self.assertIn("needs its key", answers[0]["message"])


class ApiKeyDeadlineTests(SynchronousTestCase):
    """With a key, a TCP connection that does not show it in time is cut."""

    def test_a_silent_tcp_connection_is_cut_at_the_handshake_deadline(self):
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransportWithDisconnection
        from nymtx.client.service import HANDSHAKE_TIMEOUT
        clock = Clock()
        for api_key, cut in ((KEY, True), ("", False)):
            config = ClientConfig(id="K", root=self.mktemp(), socket_type="TCP",
                                  api_key=api_key)
            factory = api_factory(clock, config, ApiDispatcher(FakeCore()))
            proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
            transport = StringTransportWithDisconnection()
            transport.protocol = proto
            proto.makeConnection(transport)
            clock.advance(HANDSHAKE_TIMEOUT + 1)
            self.assertEqual(not transport.connected, cut, api_key)
            if transport.connected:
                transport.loseConnection()

    def test_shown_in_time_the_connection_stays(self):
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransportWithDisconnection
        from nymtx.client.service import HANDSHAKE_TIMEOUT
        clock = Clock()
        config = ClientConfig(id="K", root=self.mktemp(), socket_type="TCP", api_key=KEY)
        factory = api_factory(clock, config, ApiDispatcher(FakeCore()))
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = StringTransportWithDisconnection()
        transport.protocol = proto
        proto.makeConnection(transport)
        proto.dataReceived(json.dumps({"type": "auth", "api_key": KEY}).encode() + b"\n")
        clock.advance(HANDSHAKE_TIMEOUT + 1)
        self.assertTrue(transport.connected)
        self.assertIn(b'"auth"', transport.value())
        transport.loseConnection()


class ApiKeyConfigTests(SynchronousTestCase):
    def test_a_short_or_odd_key_is_refused(self):
        for bad in ("short", "has a space in it 0123", "ключ-ключ-ключ-ключ", 5):
            self.assertRaises(ConfigError, ClientConfig, id="K", root="/tmp/x", api_key=bad)

    def test_the_key_is_saved_and_loaded_and_kept_out_of_repr(self):
        root = self.mktemp()
        config = ClientConfig.new(root, "K", api_key=KEY)
        config.save()
        self.assertEqual(ClientConfig.load(root, "K").api_key, KEY)
        self.assertNotIn(KEY, repr(config))
