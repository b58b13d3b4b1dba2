"""Nothing leaves the inbox until the application has it (issue 9).

A websocket fetch of 75 messages of 975 bytes is over 64 KiB: autobahn
refused to send it and dropped the connection, after the messages had been
taken out of the inbox. Now an answer holds what fits and the messages leave
only once the transport has taken it.
"""

import json

from hypothesis import given, settings, strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.apiclient import connect_api
from nymtx.client.api import MAX_ANSWER, ApiDispatcher
from nymtx.client.inbox import Inbox
from nymtx.client.tcp import JsonLinesFactory
from nymtx.client.websocket import MAX_FRAME, websocket_site
from nymtx.gateway.frames import MAX_MESSAGE

from .test_client_api import FakeCore

BODIES = [(b"%02d" % i) + b"m" * 973 for i in range(75)]  # 975 bytes each, the maximum


class InboxCore(FakeCore):
    """The one fake of IClientCore (tests.test_client_api.FakeCore), its
    inbox a real sqlite one."""

    def __init__(self, inbox):
        super().__init__()
        self.inbox = inbox

    def peek(self, max_bytes=None):
        return self.inbox.peek(max_bytes)

    def delete(self, ids):
        self.inbox.delete(ids)

    def fetch(self):  # what the dispatcher used before: took everything out
        return self.inbox.take_all()

    def clients(self):
        return []


def core_with(case, bodies):
    inbox = Inbox(case.mktemp(), Clock())
    case.addCleanup(inbox.close)
    inbox.store([(None, b) for b in bodies])
    return InboxCore(inbox)


class WebSocketFetch(TestCase):
    async def test_seventy_five_full_messages_all_arrive(self):
        core = core_with(self, BODIES)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            websocket_site(ApiDispatcher(core), reactor))
        self.addCleanup(port.stopListening)
        api = await connect_api(reactor, f"ws://127.0.0.1:{port.getHost().port}/mix")
        got, answers = [], 0
        while True:
            answer = await api.request({"type": "fetch"})
            if not answer["messages"]:
                break
            answers += 1
            self.assertLessEqual(len(json.dumps(answer, ensure_ascii=False,
                                                separators=(",", ":")).encode()), MAX_FRAME)
            got += answer["messages"]
        self.assertEqual(got, [b.decode() for b in BODIES])
        # the frame limit holds one largest message (1 MiB), escaped: all 75 at once
        self.assertEqual(answers, 1)
        self.assertEqual(len(core.inbox), 0)
        await api.close()

    async def test_a_mebibyte_message_of_the_costliest_bytes_is_fetched_whole(self):
        # \x01 is the costliest byte in JSON text (\u0001): 6 bytes for 1, so a
        # 1 MiB message takes a 6 MiB answer, which the websocket must carry
        body = b"\x01" * (1 << 20)
        core = core_with(self, [body, b"after"])
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            websocket_site(ApiDispatcher(core), reactor))
        self.addCleanup(port.stopListening)
        api = await connect_api(reactor, f"ws://127.0.0.1:{port.getHost().port}/mix")
        first = await api.request({"type": "fetch"})
        self.assertEqual(first["messages"][0], body.decode())
        got = first["messages"][1:] or (await api.request({"type": "fetch"}))["messages"]
        self.assertEqual(got, ["after"])
        self.assertEqual(len(core.inbox), 0)
        await api.close()


class _Lines(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def connectionMade(self):
        self.answers = []
        self.waiting = []

    def lineReceived(self, line):
        self.answers.append(json.loads(line))
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)

    def ask(self, request):
        d = Deferred()
        self.waiting.append(d)
        self.sendLine(json.dumps(request).encode())
        return d


class TcpFetch(TestCase):
    async def test_seventy_five_full_messages_all_arrive(self):
        core = core_with(self, BODIES)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            JsonLinesFactory(ApiDispatcher(core)))
        self.addCleanup(port.stopListening)
        proto = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(_Lines))
        got = []
        while True:
            await proto.ask({"type": "fetch"})
            messages = proto.answers[-1]["messages"]
            if not messages:
                break
            got += messages
        self.assertEqual(got, [b.decode() for b in BODIES])
        self.assertEqual(len(core.inbox), 0)
        proto.transport.loseConnection()


class NotSentNotDeleted(SynchronousTestCase):
    def test_an_answer_not_handed_over_deletes_nothing(self):
        core = core_with(self, BODIES[:3])
        api = ApiDispatcher(core)
        answer = api.answer_bytes(b'{"type":"fetch"}')
        self.assertEqual(len(answer.response["messages"]), 3)
        self.assertEqual(len(core.inbox), 3)  # not sent yet
        again = api.answer_bytes(b'{"type":"fetch"}')
        self.assertEqual(again.response, answer.response)
        again.sent()
        self.assertEqual(len(core.inbox), 0)

    def test_websocket_closing_before_the_answer_keeps_the_messages(self):
        from autobahn.exception import Disconnected
        from nymtx.client.websocket import MixWebSocketFactory, MixWebSocketProtocol
        core = core_with(self, BODIES[:3])
        proto = MixWebSocketProtocol()
        proto.factory = MixWebSocketFactory(ApiDispatcher(core))

        def closed(payload, isBinary=False):
            raise Disconnected("Attempt to send on a closed protocol")
        proto.sendMessage = closed
        proto.onMessage(b'{"type":"fetch"}', False)
        self.assertEqual(len(core.inbox), 3)

    def test_one_message_of_the_largest_worst_size_fits_alone(self):
        # \x01 is the costliest byte in JSON text (\u0001): 6 bytes for 1
        core = core_with(self, [b"\x01" * (1 << 20), b"x"])
        answer = ApiDispatcher(core).answer_bytes(b'{"type":"fetch"}')
        self.assertLessEqual(len(answer.data), MAX_ANSWER)
        self.assertEqual(len(answer.response["messages"]), 2)
        # and at the seed's 64 KiB limit, 66 of the 975-byte messages fit
        core = core_with(self, BODIES)
        answer = ApiDispatcher(core).answer_bytes(b'{"type":"fetch"}', 64 * 1024)
        self.assertEqual(len(answer.response["messages"]), 66)

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.binary(max_size=MAX_MESSAGE), max_size=60),
           st.integers(min_value=7000, max_value=MAX_ANSWER))
    def test_every_message_once_in_order_and_every_answer_fits(self, bodies, limit):
        inbox = Inbox(":memory:", Clock())
        try:
            inbox.store([(None, b) for b in bodies])
            api = ApiDispatcher(InboxCore(inbox))
            got = []
            for _ in range(len(bodies) + 1):
                answer = api.answer_bytes(b'{"type":"fetch"}', limit)
                self.assertLessEqual(len(answer.data), limit)
                answer.sent()
                if not answer.response["messages"]:
                    break
                got += answer.response["messages"]
            self.assertEqual(got, [b.decode("utf-8", errors="replace") for b in bodies])
            self.assertEqual(len(inbox), 0)
        finally:
            inbox.close()
