"""Which web pages get the websocket API, over real Autobahn handshakes.

A real listener on 127.0.0.1 port 0; a raw TCP handshake shows the status
autobahn answers with (no client library to hide a header), and the
autobahn client with an ``Origin`` header shows that an accepted page is
then served requests.
"""

import base64
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from nymtx.apiclient import ApiError, connect_api
from nymtx.client.api import ApiDispatcher
from nymtx.client.websocket import websocket_site

from .test_client_api import FakeCore


class _Handshake(Protocol):
    """Sends one opening handshake; fires with the response's status line."""

    def __init__(self, request):
        self.request = request
        self.buffer = b""
        self.status = Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.buffer += data
        if b"\r\n" in self.buffer and not self.status.called:
            self.status.callback(self.buffer.split(b"\r\n", 1)[0].decode("latin-1"))
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.status.called:
            self.status.callback(self.buffer.decode("latin-1"))


def coroutine(f):
    def test(self):
        return Deferred.fromCoroutine(f(self))
    test.__name__ = f.__name__
    return test


class OriginHandshakeTests(TestCase):
    async def listen(self, allowed_origins=()):
        site = websocket_site(ApiDispatcher(FakeCore()), reactor, allowed_origins)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def status(self, port, origin):
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET /mix HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        proto = _Handshake(request)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), proto)
        return await proto.status

    async def check(self, port, origin, served):
        status = await self.status(port, origin)
        if served:
            self.assertIn(" 101 ", status, origin)
            api = await connect_api(reactor, f"ws://127.0.0.1:{port}/mix", origin=origin)
            try:
                answer = await api.request({"type": "ownDetails"})
            finally:
                await api.close()
            self.assertEqual(answer, {"type": "ownDetails", "address": FakeCore.address})
        else:
            self.assertIn(" 403 ", status, origin)
            with self.assertRaises(ApiError):
                await connect_api(reactor, f"ws://127.0.0.1:{port}/mix", origin=origin)
        self.flushLoggedErrors()

    @coroutine
    async def test_file_pages_and_local_pages_are_served(self):
        port = await self.listen()
        # "null": a page opened from a file in Chromium or Firefox;
        # "file://": an Electron app
        for origin in (None, "null", "file://", "http://localhost:8000",
                       "http://127.0.0.1:25123", "http://[::1]:3000"):
            await self.check(port, origin, served=True)

    @coroutine
    async def test_other_pages_are_refused(self):
        port = await self.listen()
        for origin in ("https://evil.example", "http://localhost.evil.example",
                       "http://127.0.0.1.evil.example"):
            await self.check(port, origin, served=False)

    @coroutine
    async def test_listed_origin_is_served_and_no_other(self):
        port = await self.listen(("https://chat.example",))
        await self.check(port, "https://chat.example", served=True)
        await self.check(port, "https://evil.example", served=False)
        await self.check(port, "null", served=True)

    @coroutine
    async def test_star_is_any_origin(self):
        port = await self.listen(("*",))
        for origin in ("https://evil.example", "null", "file://", "http://localhost"):
            await self.check(port, origin, served=True)
