"""Issue 12's "Done when": a reply round trip through the websocket.

A real LocalNetwork on loopback (real mix links, real gateway store in
sqlite, real Sphinx), two real clients, each with its websocket API, and
the applications on real Autobahn websockets. Alice sends Bob a message
with ``sendAnonymous`` and 5 reply blocks; Bob's application gets it with a
sender tag and nothing of Alice's address; Bob replies twice with the tag;
Alice's application gets both replies, and they reached her through her
gateway as 1040-byte SURB deliveries (identifier 16 || block 1024).
"""

import base64
import json

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nymtx.addressing import encode_client_address
from nymtx.client.api import ApiDispatcher, Push
from nymtx.sphinx.surb import DELIVERY_SIZE
from tests import test_client_reliable
from tests.test_e2e import Network, coroutine, sleep


class AppWebSocket(WebSocketClientProtocol):
    """An application's websocket that keeps every frame it is sent: the
    answers and the pushed events, in the order they come."""

    def onOpen(self):
        self.frames = []
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.frames.append((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.called:
            self.factory.opened.errback(Exception(f"refused: {reason}"))

    def send_json(self, message):
        self.sendMessage(json.dumps(message).encode("utf-8"))

    def texts(self):
        return [json.loads(p) for p, binary in self.frames if not binary]

    async def wait_for(self, predicate, count=1, timeout=30.0):
        """The text frames for which *predicate* holds, once *count* came."""
        deadline = reactor.seconds() + timeout
        while reactor.seconds() < deadline:
            found = [t for t in self.texts() if predicate(t)]
            if len(found) >= count:
                return found
            await sleep(0.05)
        raise AssertionError(f"only {len(found)} of {count} frames came: {self.texts()}")


class StoreTap:
    """The gateway's store as its final-hop handler sees it, keeping a copy
    of each record added for *key* (the store's slots forbid wrapping a
    method in place)."""

    def __init__(self, store, key, records):
        self._store, self._key, self._records = store, bytes(key), records

    def add(self, destination, record, surb_ack=None):
        if bytes(destination) == self._key:
            self._records.append(bytes(record))
        return self._store.add(destination, record, surb_ack)

    def __getattr__(self, name):
        return getattr(self._store, name)


class ReplyStoreTap:
    """A client's ReplyStore, keeping the identifier of each record that it
    opened as a reply through one of its blocks."""

    def __init__(self, replies, claimed):
        self._replies, self._claimed = replies, claimed

    def claim(self, identifier):
        found = self._replies.claim(identifier)
        if found is not None:
            self._claimed.append(bytes(identifier))
        return found

    def __getattr__(self, name):
        return getattr(self._replies, name)


async def open_raw(port):
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/mix")
    factory.protocol = AppWebSocket
    factory.opened = Deferred()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    return await factory.opened


class ReplyRoundTripTests(TestCase):
    timeout = 120

    @coroutine
    async def test_alice_asks_with_five_blocks_bob_replies_twice(self):
        network = await Network(self).start()
        configs = await network.init("Alice", "Bob")
        await network.run(configs["Alice"])  # waits for its topology
        await network.run(configs["Bob"])
        alice_service = network.clients["Alice"][0]
        bob_service = network.clients["Bob"][0]
        alice = await open_raw(await alice_service.whenListening())
        self.addCleanup(alice.sendClose)
        bob = await open_raw(await bob_service.whenListening())
        self.addCleanup(bob.sendClose)
        alice_key = configs["Alice"].load_keys().public_key
        alice_address = encode_client_address(alice_key)
        bob_address = encode_client_address(configs["Bob"].load_keys().public_key)

        # What reaches the gateway's store for Alice, and which of those
        # records her client opened as replies (by their identifiers).
        gateway = network.net.node_services["gateway-1"]
        stored_for_alice = []
        gateway.handler.store = StoreTap(gateway.handler.store, alice_key,
                                               stored_for_alice)
        alice_core = alice_service.client.core
        claimed = []
        alice_core.replies = ReplyStoreTap(alice_core.replies, claimed)

        bob.send_json({"type": "subscribe"})
        alice.send_json({"type": "subscribe"})
        await bob.wait_for(lambda t: t == {"type": "subscribe"})
        await alice.wait_for(lambda t: t == {"type": "subscribe"})
        alice.send_json({"type": "sendAnonymous", "message": "who am I? ✓",
                         "recipient_address": bob_address, "replySurbs": 5,
                         "id": "ask-1"})
        await alice.wait_for(lambda t: t == {"type": "send"})
        [event] = await bob.wait_for(lambda t: t.get("type") == "received")
        self.assertEqual(event["message"], "who am I? ✓")
        tag = event["senderTag"]
        self.assertEqual(bob_core_blocks(bob_service, tag), 5)

        for n in (1, 2):
            bob.send_json({"type": "reply", "senderTag": tag, "message": f"reply {n}",
                           "id": f"reply-{n}"})
        await bob.wait_for(lambda t: t == {"type": "reply"}, count=2)
        replies = await alice.wait_for(lambda t: t.get("type") == "received", count=2)
        self.assertEqual(sorted(r["message"] for r in replies), ["reply 1", "reply 2"])
        # the replies come with the tag Alice's client sent for Bob
        self.assertEqual({r["senderTag"] for r in replies}, {tag})
        # both sides hear their messages were stored at the far gateway
        await alice.wait_for(lambda t: t == {"type": "delivered", "id": "ask-1"})
        await bob.wait_for(lambda t: t.get("type") == "delivered", count=2)

        # Nothing Bob's application was sent names Alice: not her address,
        # not her key in base58, hex, base64 or raw bytes.
        bob_bytes = b"".join(p for p, _ in bob.frames)
        for needle in (alice_address.encode(), alice_key.hex().encode(),
                       base64.b64encode(alice_key), bytes(alice_key)):
            self.assertNotIn(needle, bob_bytes)
        self.assertNotIn(alice_address, json.dumps(bob.texts()))

        # The replies went through the real gateway: each record Alice's
        # client opened as a reply was stored there for her, 1040 bytes.
        # (two replies, and the SURB requests Bob's client sent through his
        # blocks when fewer than 10 were left: those are replies too)
        self.assertGreaterEqual(len(claimed), 2)
        deliveries = {r[:16] for r in stored_for_alice if len(r) == DELIVERY_SIZE}
        self.assertEqual(DELIVERY_SIZE, 1040)
        for identifier in claimed:
            self.assertIn(identifier, deliveries)
        # a little longer: no reply comes twice
        await sleep(0.5)
        self.assertEqual(len([t for t in alice.texts() if t.get("type") == "received"]), 2)


def bob_core_blocks(service, tag):
    from nymtx.client.core import parse_sender_tag
    return service.client.core.reply_blocks(parse_sender_tag(tag))


class AnonymousOutcomeTests(SynchronousTestCase):
    """The bug the round trip found: a ``sendAnonymous`` with an ``id`` was
    sent and delivered, but its connection never heard ``delivered`` (only
    ``send`` with an id asked the connection's Push to watch the outcome)."""

    # the same two clients and fake gateway as the reply unit tests
    setUp = test_client_reliable.AnonymousReplyTests.setUp
    go = test_client_reliable.AnonymousReplyTests.go

    def test_send_anonymous_with_an_id_reports_its_outcome(self):
        alice, bob = self.alice.core, self.bob.core
        written = []
        push = Push(alice, lambda data, binary: written.append((data, binary)) or True)
        answer = ApiDispatcher(alice).answer_bytes(json.dumps(
            {"type": "sendAnonymous", "message": "ask", "replySurbs": 5, "id": "a-1",
             "recipient_address": bob.address}).encode(), push=push)
        answer.sent()
        self.assertEqual(answer.response, {"type": "send"})
        self.go(15)
        self.assertEqual([json.loads(d) for d, binary in written if not binary],
                         [{"type": "delivered", "id": "a-1"}])
