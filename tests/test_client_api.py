"""The JSON dispatcher alone, and the websocket and TCP endpoints in memory."""

import json

from autobahn.twisted.testing import create_memory_agent, create_pumper, MemoryReactorClockResolver
from autobahn.twisted.websocket import WebSocketClientProtocol
from hypothesis import given, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from nymtx.client.api import ApiDispatcher
from nymtx.client.core import SendError, check_message, parse_recipient
from nymtx.client.tcp import JsonLinesFactory
from nymtx.client.websocket import MAX_FRAME, MixWebSocketFactory, MixWebSocketProtocol, \
    is_loopback
from nymtx.interfaces import IClientCore
from nymtx.keys import KeyPair

BOB = KeyPair.generate().public_text
STRANGER = KeyPair.generate().public_text


@implementer(IClientCore)
class FakeCore:
    """What the dispatcher needs of a ClientCore, recording what it was asked."""

    address = KeyPair.generate().public_text

    def __init__(self):
        self.sent = []
        self.inbox = []

    def send(self, recipient, message):
        message = check_message(message)
        key, _ = parse_recipient(recipient)
        if recipient == STRANGER:
            raise SendError(f"unknown recipient {recipient}: no gateway in the topology lists it")
        self.sent.append((recipient, message))
        return succeed(None)

    def fetch(self):
        out, self.inbox = self.inbox, []
        return out

    def peek(self, max_bytes=None):
        return list(enumerate(self.inbox))

    def delete(self, ids):
        ids = set(ids)
        self.inbox = [m for i, m in enumerate(self.inbox) if i not in ids]

    def clients(self):
        return [BOB]


def request(**fields):
    return json.dumps(fields)


class DispatcherTests(SynchronousTestCase):
    def setUp(self):
        self.core = FakeCore()
        self.api = ApiDispatcher(self.core)

    def ask(self, text):
        return self.api.handle_text(text)

    def assertError(self, response, *fragments):
        self.assertEqual(response["type"], "error", response)
        self.assertEqual(set(response), {"type", "message"})
        for fragment in fragments:
            self.assertIn(fragment, response["message"])

    def test_send(self):
        self.assertEqual(self.ask(request(type="send", message="hi ✓", recipient_address=BOB)),
                         {"type": "send"})
        self.assertEqual(self.core.sent, [(BOB, "hi ✓".encode())])

    def test_fetch_drains(self):
        self.core.inbox = [b"one", b"\xff\xfebad"]
        self.assertEqual(self.ask('{"type":"fetch"}'),
                         {"type": "fetch", "messages": ["one", "\ufffd\ufffdbad"]})
        self.assertEqual(self.ask('{"type":"fetch"}'), {"type": "fetch", "messages": []})

    def test_get_clients_and_own_details(self):
        self.assertEqual(self.ask('{"type":"getClients"}'), {"type": "getClients", "clients": [BOB]})
        self.assertEqual(self.ask('{"type":"ownDetails"}'),
                         {"type": "ownDetails", "address": FakeCore.address})

    def test_errors(self):
        self.assertError(self.ask("{nope"), "not valid JSON")
        self.assertError(self.ask("[1]"), "JSON object, not array")
        self.assertError(self.ask("{}"), "missing field 'type'")
        self.assertError(self.ask('{"type":3}'), "'type' must be a string, not number")
        self.assertError(self.ask('{"type":"dance"}'), "unknown request type 'dance'",
                         "send, fetch, getClients, ownDetails")
        self.assertError(self.ask(request(type="send", recipient_address=BOB)),
                         "missing field 'message'")
        self.assertError(self.ask(request(type="send", message="x")),
                         "missing field 'recipient_address'")
        self.assertError(self.ask(request(type="send", message=["x"], recipient_address=BOB)),
                         "'message' must be a string, not array")
        self.assertError(self.ask(request(type="send", message="x", recipient_address=None)),
                         "'recipient_address' must be a string, not null")
        self.assertError(self.ask(request(type="send", message="x", recipient_address="0OIl")),
                         "not base58")
        self.assertError(self.ask(request(type="send", message="x", recipient_address="abc")),
                         "decodes to")
        self.assertError(self.ask(request(type="send", message="x", recipient_address=STRANGER)),
                         "unknown recipient", STRANGER)
        self.assertEqual(
            self.ask(request(type="send", message="é" * 500, recipient_address=BOB))["message"],
            "message too long. Sent 1000 bytes, but the maximum is 975")
        self.assertError(self.ask('{"type":"send","message":"\\ud800","recipient_address":"%s"}'
                                  % BOB), "not valid Unicode")
        self.assertError(self.ask("[" * 100000), "received invalid request")
        self.assertError(self.api.handle_bytes(b"\xff{}"), "not UTF-8")
        self.assertEqual(self.core.sent, [])

    def test_get_clients_without_topology(self):
        def no_topology():
            raise SendError("the network topology is not known yet")
        self.core.clients = no_topology
        self.assertError(self.ask('{"type":"getClients"}'), "topology is not known yet")

    def test_internal_error_is_an_error_response(self):
        self.core.clients = lambda: 1 / 0
        self.assertError(self.ask('{"type":"getClients"}'), "internal error")
        self.flushLoggedErrors(ZeroDivisionError)

    @given(st.binary(max_size=300))
    def test_any_bytes_get_a_response(self, data):
        response = self.api.handle_bytes(data)
        self.assertIn(response["type"], ("error", "send", "fetch", "getClients", "ownDetails"))
        json.dumps(response)

    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                        lambda c: st.lists(c, max_size=3)
                        | st.dictionaries(st.sampled_from(
                            ["type", "message", "recipient_address", "x"]), c, max_size=4),
                        max_leaves=10))
    def test_any_json_gets_a_response(self, value):
        response = self.api.handle_text(json.dumps(value))
        self.assertIn(response["type"], ("error", "send", "fetch", "getClients", "ownDetails"))


class TcpTests(SynchronousTestCase):
    def connect(self, host="127.0.0.1"):
        self.core = FakeCore()
        factory = JsonLinesFactory(ApiDispatcher(self.core))
        proto = factory.buildProtocol(IPv4Address("TCP", host, 5555))
        if proto is None:
            return None, None
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def responses(self, transport):
        lines = transport.value().split(b"\n")
        self.assertEqual(lines[-1], b"")
        transport.clear()
        return [json.loads(line) for line in lines[:-1]]

    def test_lines(self):
        proto, transport = self.connect()
        proto.dataReceived(b'{"type":"ownDetails"}\r\n{"type":"getC')
        proto.dataReceived(b'lients"}\n\n{bad\n')
        out = self.responses(transport)
        self.assertEqual(out[0], {"type": "ownDetails", "address": FakeCore.address})
        self.assertEqual(out[1], {"type": "getClients", "clients": [BOB]})
        self.assertEqual(out[2]["type"], "error")
        self.assertEqual(len(out), 3)
        self.assertFalse(transport.disconnecting)

    def test_over_long_line_is_an_error_and_the_next_line_works(self):
        proto, transport = self.connect()
        proto.dataReceived(b"x" * (proto.MAX_LENGTH + 10))
        proto.dataReceived(b"y" * (proto.MAX_LENGTH + 10))
        proto.dataReceived(b'yyy\n{"type":"fetch"}\n')
        out = self.responses(transport)
        self.assertEqual(len(out), 2, out)
        self.assertIn("too long", out[0]["message"])
        self.assertEqual(out[1], {"type": "fetch", "messages": []})
        proto.dataReceived(b"z" * (proto.MAX_LENGTH + 10) + b'\n{"type":"fetch"}\n')
        out = self.responses(transport)
        self.assertEqual([o["type"] for o in out], ["error", "fetch"])

    def test_non_loopback_peer_refused(self):
        proto, _ = self.connect("10.1.2.3")
        self.assertIsNone(proto)

    @given(st.lists(st.binary(max_size=200), max_size=5))
    def test_any_bytes(self, chunks):
        proto, transport = self.connect()
        for chunk in chunks:
            proto.dataReceived(chunk)
        proto.dataReceived(b"\n")
        for line in transport.value().split(b"\n")[:-1]:
            self.assertIn(json.loads(line)["type"], ("error", "send", "fetch", "getClients",
                                                     "ownDetails"))


class LoopbackTests(SynchronousTestCase):
    def test_is_loopback(self):
        from twisted.internet.address import IPv6Address, UNIXAddress
        self.assertTrue(is_loopback(IPv4Address("TCP", "127.0.0.1", 1)))
        self.assertTrue(is_loopback(IPv4Address("TCP", "127.3.0.1", 1)))
        self.assertTrue(is_loopback(IPv6Address("TCP", "::1", 1)))
        self.assertFalse(is_loopback(IPv4Address("TCP", "192.168.1.1", 1)))
        self.assertFalse(is_loopback(UNIXAddress(b"/tmp/x")))
        self.assertFalse(is_loopback(None))


class Collector(WebSocketClientProtocol):
    def __init__(self):
        super().__init__()
        self.received = []
        self.waiting = []

    def onMessage(self, payload, isBinary):
        self.received.append(json.loads(payload))
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)

    def next_response(self):
        d = Deferred()
        self.waiting.append(d)
        return d


class WebSocketTests(TestCase):
    def setUp(self):
        self.core = FakeCore()
        self.reactor = MemoryReactorClockResolver()
        self.pumper = create_pumper()
        self.pumper.start()
        self.addCleanup(self.pumper.stop)
        factory = MixWebSocketFactory(ApiDispatcher(self.core), self.reactor)

        def server():
            proto = MixWebSocketProtocol()
            proto.factory = factory
            return proto
        self.agent = create_memory_agent(self.reactor, self.pumper, server)

    async def open(self):
        return await self.agent.open("ws://127.0.0.1:9001/mix", {}, protocol_class=Collector)

    async def ask(self, proto, payload, binary=False):
        d = proto.next_response()
        proto.sendMessage(payload, isBinary=binary)
        await d
        return proto.received[-1]

    async def test_requests_and_errors_on_one_connection(self):
        proto = await self.open()
        self.assertEqual(await self.ask(proto, b'{"type":"ownDetails"}'),
                         {"type": "ownDetails", "address": FakeCore.address})
        r = await self.ask(proto, b"\x00\x01", binary=True)
        self.assertEqual(r["type"], "error")
        self.assertIn("binary", r["message"])
        r = await self.ask(proto, b"not json")
        self.assertEqual(r["type"], "error")
        r = await self.ask(proto, json.dumps(
            {"type": "send", "message": "x" * 976, "recipient_address": BOB}).encode())
        self.assertEqual(r, {"type": "error",
                             "message": "message too long. Sent 976 bytes, but the maximum is 975"})
        r = await self.ask(proto, json.dumps(
            {"type": "send", "message": "hello", "recipient_address": BOB}).encode())
        self.assertEqual(r, {"type": "send"})
        self.core.inbox = [b"back"]
        self.assertEqual(await self.ask(proto, b'{"type":"fetch"}'),
                         {"type": "fetch", "messages": ["back"]})
        self.assertEqual(self.core.sent, [(BOB, b"hello")])
        proto.sendClose()
        await proto.is_closed

    async def test_oversized_message_gets_a_close_frame_saying_why(self):
        # A message over 64 KiB cannot be answered (it was never buffered),
        # so the connection ends, but with 1009 and a reason, not a bare reset.
        proto = await self.open()
        proto.sendMessage(b"[" * (MAX_FRAME + 1))
        await proto.is_closed
        # the close frame the server sent (a dropped connection has none)
        self.assertEqual(proto.remoteCloseCode, 1009)
        self.assertIn("exceeds payload limit", proto.remoteCloseReason)


class WebSocketPeerTests(SynchronousTestCase):
    def test_non_loopback_peer_refused_in_on_connect(self):
        from autobahn.websocket.types import ConnectionDeny
        proto = MixWebSocketProtocol()
        proto.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 4000))
        with self.assertRaises(ConnectionDeny):
            proto.onConnect(None)
        proto.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 4000))
        self.assertIsNone(proto.onConnect(None))


class OriginTests(SynchronousTestCase):
    """A page in the user's browser must not get at their client unasked."""

    def test_programs_and_local_pages_are_served(self):
        from nymtx.client.websocket import origin_allowed
        for origin in (None, "", "http://localhost:3000", "https://127.0.0.1",
                       "http://[::1]:8080", "file://", "HTTP://LOCALHOST"):
            self.assertTrue(origin_allowed(origin), origin)

    def test_other_pages_are_refused_unless_listed(self):
        from nymtx.client.websocket import origin_allowed
        for origin in ("https://evil.example", "http://localhost.evil.example",
                       "http://127.0.0.1.evil.example", "chrome-extension://abc"):
            self.assertFalse(origin_allowed(origin), origin)
        self.assertTrue(origin_allowed("https://chat.example", ("https://chat.example",)))
        self.assertTrue(origin_allowed("https://chat.example/", ("https://chat.example",)))
        self.assertFalse(origin_allowed("https://other.example", ("https://chat.example",)))
        self.assertTrue(origin_allowed("https://any.example", ("*",)))

    def test_handshake_from_a_foreign_page_is_denied(self):
        from autobahn.websocket.types import ConnectionDeny
        proto = MixWebSocketProtocol()
        proto.factory = MixWebSocketFactory(ApiDispatcher(FakeCore()), None,
                                            allowed_origins=("https://chat.example",))
        proto.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 4000))

        class Request:
            origin = "https://evil.example"
        with self.assertRaises(ConnectionDeny):
            proto.onConnect(Request())
        self.flushLoggedErrors()
        Request.origin = "https://chat.example"
        self.assertIsNone(proto.onConnect(Request()))
