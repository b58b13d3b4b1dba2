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

import base64

from nymtx.client.api import ApiDispatcher, Push, parse_binary_request
from nymtx.client.core import SendError, check_message, parse_recipient
from nymtx.client.tcp import JsonLinesFactory
from nymtx.client.websocket import MAX_FRAME, MixWebSocketFactory, MixWebSocketProtocol, \
    is_loopback
from nymtx.interfaces import IClientCore
from nymtx.keys import KeyPair
from nymtx.message import Message

BOB = KeyPair.generate().public_text
STRANGER = KeyPair.generate().public_text


@implementer(IClientCore)
class FakeCore:
    """What the dispatcher needs of a ClientCore, recording what it was asked."""

    address = KeyPair.generate().public_text
    max_message_size = 1 << 20

    def __init__(self):
        self.sent = []
        self.inbox = []    # Messages, or bytes for text
        self._next = 0
        self.watchers = []

    def send(self, recipient, message):
        message = check_message(message, self.max_message_size)
        key, _ = parse_recipient(recipient)
        if recipient.partition("@")[0] == STRANGER:
            raise SendError(f"unknown recipient {recipient}: no gateway in the topology lists it")
        self.sent.append((recipient, message))
        return succeed(None)

    def fetch(self):
        out, self.inbox = self.inbox, []
        return out

    def add(self, *messages):
        """Messages arrive: the inbox observers hear of it, as from the core."""
        self.inbox.extend(messages)
        for watcher in list(self.watchers):
            watcher()

    def watch_inbox(self, callback):
        self.watchers.append(callback)
        return lambda: self.watchers.remove(callback)

    def peek(self, max_bytes=None):
        return [(id(m), m if isinstance(m, Message) else Message.from_text(m.decode("utf-8",
                 "replace"))) for m in self.inbox]

    def delete(self, ids):
        ids = set(ids)
        self.inbox = [m for m in self.inbox if id(m) not in ids]

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
        self.assertEqual(self.core.sent, [(BOB, Message.from_text("hi ✓"))])

    def test_send_binary_as_base64_data(self):
        data = bytes(range(256)) * 3
        self.assertEqual(self.ask(request(type="send", data=base64.b64encode(data).decode(),
                                          recipient_address=BOB)), {"type": "send"})
        self.assertEqual(self.core.sent, [(BOB, Message.from_bytes(data))])
        self.assertError(self.ask(request(type="send", data="not base64!",
                                          recipient_address=BOB)), "'data' is not base64")
        self.assertError(self.ask(request(type="send", data="AA==", message="x",
                                          recipient_address=BOB)), "not both")
        self.assertError(self.ask(request(type="send", data=3, recipient_address=BOB)),
                         "'data' must be a string")

    def test_a_message_may_be_as_long_as_the_maximum_and_the_error_names_it(self):
        text = "x" * (1 << 20)
        self.assertEqual(self.ask(request(type="send", message=text, recipient_address=BOB)),
                         {"type": "send"})
        self.assertEqual(
            self.ask(request(type="send", message=text + "é", recipient_address=BOB)),
            {"type": "error",
             "message": "message too long. Sent 1048578 bytes, but the maximum is 1048576"})

    def test_seed_answers_byte_for_byte(self):
        # The exact bytes the seed's dispatcher answered (checked against main).
        def raw(text):
            answer = self.api.answer_bytes(text.encode())
            answer.sent()
            return answer.data
        self.assertEqual(raw(request(type="send", message="hi ✓", recipient_address=BOB)),
                         b'{"type":"send"}')
        self.core.inbox = [b"one", "two ✓".encode(), b"\xff\xfebad", b'q"\\\n']
        self.assertEqual(raw('{"type":"fetch"}'), '{"type":"fetch","messages":["one","two ✓",'
                         '"\ufffd\ufffdbad","q\\"\\\\\\n"]}'.encode())
        self.assertEqual(raw('{"type":"fetch"}'), b'{"type":"fetch","messages":[]}')
        self.assertEqual(raw('{"type":"getClients"}'),
                         b'{"type":"getClients","clients":["%s"]}' % BOB.encode())
        self.assertEqual(raw('{"type":"ownDetails"}'),
                         b'{"type":"ownDetails","address":"%s"}' % FakeCore.address.encode())
        self.assertEqual(raw('{}'),
                         b'{"type":"error","message":"received invalid request. err:'
                         b' missing field \'type\'"}')
        self.assertEqual(raw(request(type="send", message="x", recipient_address=STRANGER)),
                         b'{"type":"error","message":"unknown recipient %s: no gateway in the'
                         b' topology lists it"}' % STRANGER.encode())

    def test_binary_frames(self):
        bob_key = parse_recipient(BOB)[0]
        gateway = KeyPair.generate()
        self.assertEqual(parse_binary_request(b"\x00" + bob_key + b"data"), (BOB, b"data"))
        self.assertEqual(parse_binary_request(b"\x01" + bob_key + gateway.public_key + b"d"),
                         (f"{BOB}@{gateway.public_text}", b"d"))
        self.assertEqual(parse_binary_request(b"\x00" + bob_key), (BOB, b""))
        for bad, words in [(b"", "empty"), (b"\x00" + bob_key[:31], "too short"),
                           (b"\x01" + bob_key, "too short"), (b"\x07", "unknown binary")]:
            e = self.assertRaises(ValueError, parse_binary_request, bad)
            self.assertIn(words, str(e))
        answer = self.api.answer_binary(b"\x00" + bob_key + b"\x00\xffbytes")
        self.assertEqual(answer.data, b'{"type":"send"}')
        self.assertEqual(self.core.sent, [(BOB, Message.from_bytes(b"\x00\xffbytes"))])
        self.assertError(self.api.answer_binary(b"\x09").response, "unknown binary request")

    def test_the_documented_binary_vectors(self):
        # docs/client.md, "Binary frames"
        self.assertEqual(parse_binary_request(bytes.fromhex("00" + bytes(range(1, 33)).hex()
                                                            + "6869")),
                         ("4wBqpZM9xaSheZzJSMawUKKwhdpChKbZ5eu5ky4Vigw", b"hi"))
        from nymtx.client.api import received_event
        self.assertEqual(received_event(Message.from_bytes(b"hi"), True), (b"\x01hi", True))
        self.assertEqual(received_event(Message.from_bytes(b"hi"), False),
                         (b'{"type":"received","data":"aGk="}', False))

    def test_a_binary_reply_to_a_core_that_cannot_reply_is_an_error_not_a_failure(self):
        # found by the fuzz below: the refusal escaped as an internal error
        # and logged a traceback
        answer = self.api.answer_binary(b"\x04" + b"t" * 16 + b"data")
        self.assertError(answer.response, "cannot reply")
        self.assertEqual(self.flushLoggedErrors(), [])

    @given(st.binary(max_size=120))
    def test_any_binary_frame_gets_a_response(self, frame):
        answer = self.api.answer_binary(frame)
        # reply frames (0x04) are refused by a core that cannot reply
        self.assertIn(answer.response["type"], ("send", "reply", "error"))
        json.loads(answer.data)

    def test_subscribe_pushes_each_message_once_after_the_answer(self):
        out = []
        push = Push(self.core, lambda data, binary: out.append((data, binary)) or True,
                    binary_frames=True)
        self.core.inbox = [Message.from_text("waiting")]
        answer = self.api.answer_bytes(b'{"type":"subscribe"}', push=push)
        self.assertEqual(answer.data, b'{"type":"subscribe"}')
        self.assertEqual(out, [])           # nothing before the answer is out
        answer.sent()
        self.core.add(Message.from_bytes(b"\x00bin"), Message.from_text("two"))
        self.assertEqual(out, [(b'{"type":"received","message":"waiting"}', False),
                               (b"\x01\x00bin", True),
                               (b'{"type":"received","message":"two"}', False)])
        self.assertEqual(self.core.inbox, [])
        self.api.answer_bytes(b'{"type":"unsubscribe"}', push=push).sent()
        self.core.add(Message.from_text("kept"))
        self.assertEqual(len(out), 3)
        self.assertEqual(len(self.core.inbox), 1)

    def test_a_push_that_cannot_be_written_leaves_the_message_in_the_inbox(self):
        push = Push(self.core, lambda data, binary: False)
        self.core.inbox = [Message.from_text("stays")]
        push.start()
        self.assertEqual(self.core.inbox, [Message.from_text("stays")])
        self.assertFalse(push.active)

    def test_a_subscriber_that_does_not_read_gets_no_more_until_it_does(self):
        from twisted.internet.task import Clock
        from nymtx.client.api import buffered
        clock, unread, out = Clock(), [0], []

        def write(data, binary):
            out.append(data)
            unread[0] += len(data)
            return True
        push = Push(self.core, write, binary_frames=True, backlog=lambda: unread[0],
                    clock=clock, high_water=10_000)
        push.start()
        self.core.add(*[Message.from_bytes(bytes(4000)) for _ in range(10)])
        # three events take it over the mark; the other seven wait in the inbox
        self.assertEqual((len(out), len(self.core.inbox)), (3, 7))
        clock.advance(1)
        self.assertEqual(len(out), 3)
        unread[0] = 0          # the application read them
        clock.advance(0.1)
        self.assertEqual((len(out), len(self.core.inbox)), (6, 4))
        push.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

        class Transport:   # what a Twisted TCP transport holds unwritten
            dataBuffer, offset, _tempDataLen = b"x" * 100, 30, 5
        self.assertEqual(buffered(Transport()), 75)
        self.assertEqual(buffered(object()), 0)

    def test_binary_push_as_base64_json_without_binary_frames(self):
        out = []
        push = Push(self.core, lambda data, binary: out.append((data, binary)) or True)
        self.core.inbox = [Message.from_bytes(b"\xff\x00")]
        push.start()
        self.assertEqual(out, [(b'{"type":"received","data":"/wA="}', False)])

    def test_subscribe_without_a_connection_is_an_error(self):
        self.assertError(self.ask('{"type":"subscribe"}'), "connection that can push")

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
                         "send, fetch, getClients, ownDetails, subscribe")
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
        self.assertLessEqual(len(self.api.answer_bytes(data).data), self.api.max_frame)

    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                        lambda c: st.lists(c, max_size=3)
                        | st.dictionaries(st.sampled_from(
                            ["type", "message", "recipient_address", "data", "x"]), c, max_size=4),
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

    def test_binary_over_json_lines_and_pushed_events(self):
        proto, transport = self.connect()
        data = bytes(range(256)) * 1000
        proto.dataReceived(json.dumps({"type": "send", "recipient_address": BOB,
                                       "data": base64.b64encode(data).decode()}).encode()
                           + b"\n" + b'{"type":"subscribe"}\n')
        self.assertEqual(self.responses(transport), [{"type": "send"}, {"type": "subscribe"}])
        self.assertEqual(self.core.sent, [(BOB, Message.from_bytes(data))])
        self.core.add(Message.from_bytes(data), Message.from_text("x" * 200_000))
        self.assertEqual(self.responses(transport), [
            {"type": "received", "data": base64.b64encode(data).decode()},
            {"type": "received", "message": "x" * 200_000}])
        self.assertEqual(self.core.inbox, [])
        proto.connectionLost(None)
        self.assertEqual(self.core.watchers, [])

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
        self.received.append(payload if isBinary else json.loads(payload))
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
        self.assertIn("binary send frame", r["message"])
        r = await self.ask(proto, b"not json")
        self.assertEqual(r["type"], "error")
        r = await self.ask(proto, json.dumps(
            {"type": "send", "message": "x" * ((1 << 20) + 1),
             "recipient_address": BOB}).encode())
        self.assertEqual(r, {"type": "error", "message":
                             "message too long. Sent 1048577 bytes, but the maximum is 1048576"})
        r = await self.ask(proto, json.dumps(
            {"type": "send", "message": "hello", "recipient_address": BOB}).encode())
        self.assertEqual(r, {"type": "send"})
        self.core.inbox = [b"back"]
        self.assertEqual(await self.ask(proto, b'{"type":"fetch"}'),
                         {"type": "fetch", "messages": ["back"]})
        self.assertEqual(self.core.sent, [(BOB, Message.from_text("hello"))])
        proto.sendClose()
        await proto.is_closed

    async def test_binary_send_and_pushed_events(self):
        proto = await self.open()
        bob_key = parse_recipient(BOB)[0]
        data = bytes(range(256)) * 4000       # ~1 MiB, far over the seed's 64 KiB frames
        self.assertEqual(await self.ask(proto, b"\x00" + bob_key + data, binary=True),
                         {"type": "send"})
        self.assertEqual(self.core.sent, [(BOB, Message.from_bytes(data))])
        self.assertEqual(await self.ask(proto, b'{"type":"subscribe"}'), {"type": "subscribe"})
        d = proto.next_response()
        self.core.add(Message.from_bytes(data))
        await d
        self.assertEqual(proto.received[-1], b"\x01" + data)
        d = proto.next_response()
        self.core.add(Message.from_text("é" * 300_000))
        await d
        self.assertEqual(proto.received[-1], {"type": "received", "message": "é" * 300_000})
        self.assertEqual(self.core.inbox, [])
        proto.sendClose()
        await proto.is_closed
        from twisted.internet import reactor
        from twisted.internet.task import deferLater
        for _ in range(100):   # the server side hears of the close a pump later
            if not self.core.watchers:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.core.watchers, [])   # a closed connection stops watching

    async def test_oversized_message_gets_a_close_frame_saying_why(self):
        # A message over the frame limit cannot be answered (it was never buffered),
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


class PushBackpressureTests(TestCase):
    """A real TCP subscriber that stops reading: the client stops pushing."""

    async def test_a_subscriber_that_stops_reading_leaves_the_rest_in_the_inbox(self):
        await self.stalled_subscriber(wrapped=False)

    async def test_the_same_behind_the_listeners_connection_limit(self):
        # as nymtx.client.service.api_factory serves it: the transport is the
        # wrapper, which passes the write buffer's state through
        await self.stalled_subscriber(wrapped=True)

    async def stalled_subscriber(self, wrapped):
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
        from twisted.internet.protocol import Factory
        from twisted.internet.task import deferLater
        from twisted.protocols.basic import LineReceiver
        from nymtx.client.api import PUSH_HIGH_WATER, buffered

        core = FakeCore()
        factory = JsonLinesFactory(ApiDispatcher(core), reactor=reactor)
        servers = []
        build = factory.buildProtocol
        factory.buildProtocol = lambda addr: servers.append(build(addr)) or servers[-1]
        listening = factory
        if wrapped:
            from nymtx.listening import ConnectionLimit
            listening = ConnectionLimit(factory, reactor, 16, backpressure=True)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(listening)
        self.addCleanup(port.stopListening)

        class Reader(LineReceiver):
            delimiter = b"\n"
            MAX_LENGTH = 10 << 20

            def connectionMade(self):
                self.lines = []

            def lineReceived(self, line):
                self.lines.append(json.loads(line))

        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(Reader))
        self.addCleanup(client.transport.loseConnection)
        client.sendLine(b'{"type":"subscribe"}')
        while not client.lines:
            await deferLater(reactor, 0.01, lambda: None)
        client.transport.pauseProducing()   # the application stops reading
        data = bytes(1 << 20)
        core.add(*[Message.from_bytes(data) for _ in range(40)])   # 56 MB of base64 events
        await deferLater(reactor, 0.5, lambda: None)
        waiting = len(core.inbox)
        self.assertGreater(waiting, 0)
        # what the client holds for the reader: at most the mark and one event
        self.assertLessEqual(buffered(servers[0].transport), PUSH_HIGH_WATER + 1_500_000)
        client.transport.resumeProducing()
        for _ in range(600):
            if len(client.lines) == 41:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(client.lines), 41)
        self.assertEqual(core.inbox, [])
        self.assertTrue(all(base64.b64decode(e["data"]) == data for e in client.lines[1:]))
