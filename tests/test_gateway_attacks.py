"""Bad input and attacks on the gateway's client listener, at the service level.

A real gateway (``GatewayService`` on tcp:0, its sqlite store on disk), raw
TCP peers speaking the channel by hand (``nymtx.gateway.channel.Channel``
on the client side), and a registered client, Alice, with mail waiting.
Each attack must close the attacker's connection with a logged reason,
hold no more of the attacker's bytes than one frame, and leave Alice's
mail where it was: she still pulls all of it afterwards.
"""

import struct

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from nymtx.addressing import NodeAddress
from nymtx.gateway import channel as C
from nymtx.gateway import padded as P
from nymtx.gateway.link import GatewayLink, register
from nymtx.gateway.service import GatewayService
from nymtx.keys import KeyPair
from tests.test_e2e import coroutine, sleep

LOCAL = "tcp:0:interface=127.0.0.1"
HANDSHAKE_TIMEOUT = 0.5


class Raw(Protocol):
    """A TCP peer that records what it gets and when it is closed."""

    def __init__(self):
        self.received = bytearray()
        self.lost = Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost.callback(None)


class Attacks(TestCase):
    timeout = 30

    @coroutine
    async def setUp(self):
        self.gateway_keys = KeyPair.generate()
        self.gateway = GatewayService(
            reactor, self.gateway_keys, self.mktemp(), LOCAL, LOCAL, "127.0.0.1",
            commit_interval=0.001, client_handshake_timeout=HANDSHAKE_TIMEOUT)
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        _, self.port = await self.gateway.whenListening()
        self.address = NodeAddress.parse(f"127.0.0.1:{self.port}")
        self.lines = []
        observer = self.lines.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.alice = KeyPair.generate()
        await register(reactor, self.address, self.alice, self.gateway_keys.public_key)
        self.mail = [b"alice's mail %d" % i for i in range(3)]
        for m in self.mail:
            self.assertIsNone(self.gateway.store.add(self.alice.public_key, m))
        self.gateway.store.flush()

    async def raw(self, data=b""):
        proto = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), Raw())
        if data:
            proto.transport.write(data)
        return proto

    async def closed(self, proto, within=5.0):
        timer = reactor.callLater(within, proto.transport.abortConnection)
        await proto.lost
        self.assertTrue(timer.active(), "the gateway did not close the connection")
        timer.cancel()

    def reasons(self):
        """Why the gateway closed connections, as it logged it."""
        out = []
        for e in self.lines:
            text = e.get("log_format", "")
            if "gateway channel with" in text:
                out.append(e["reason"])
            elif "closing the private link" in text:
                out.append(e["why"])
        return out

    def assertLogged(self, text):
        self.assertTrue(any(text in r for r in self.reasons()), self.reasons())

    async def assertMailIntact(self):
        self.assertEqual(self.gateway.store.usage(self.alice.public_key)[0], len(self.mail))
        link = GatewayLink(reactor, self.address, self.alice, self.gateway_keys.public_key)
        link.start()
        self.addCleanup(link.stop)
        await link.when_ready()
        self.assertEqual([m for _, m in await link.pull()], self.mail)
        factory = self.gateway.client_factory
        # the attackers' connections are gone: only Alice's remains
        self.assertEqual(len(factory.channels), 1)

    def handshake(self, keys, gateway_key=None):
        return C.Channel.client(keys, gateway_key or self.gateway_keys.public_key, reactor,
                                receive_sizes={P.ANSWER_SIZE}, send_sizes={P.REQUEST_SIZE})

    async def session(self, keys=None):
        """A raw peer through the handshake: (protocol, its Channel)."""
        channel = self.handshake(keys or self.alice)
        self.message1 = channel.start()
        proto = await self.raw(self.message1)
        for _ in range(100):
            if len(proto.received) >= 2 + C.MESSAGE2_SIZE:
                break
            await sleep(0.01)
        self.assertEqual(channel.receive(bytes(proto.received[:2 + C.MESSAGE2_SIZE])), [])
        del proto.received[:2 + C.MESSAGE2_SIZE]
        return proto, channel

    async def answer(self, proto, channel):
        size = C.frame_size(P.ANSWER_SIZE)
        for _ in range(200):
            if len(proto.received) >= size:
                break
            await sleep(0.01)
        (frame,) = channel.receive(bytes(proto.received[:size]))
        del proto.received[:size]
        return P.parse_answer(frame)

    # ---- the attacks -----------------------------------------------------

    @coroutine
    async def test_wrong_gateway_key(self):
        channel = self.handshake(self.alice, KeyPair.generate().public_key)
        proto = await self.raw(channel.start())
        await self.closed(proto)
        self.assertEqual(bytes(proto.received), b"")   # not even message 2
        self.assertLogged("handshake message 1 does not decrypt")
        await self.assertMailIntact()

    @coroutine
    async def test_a_client_key_that_is_not_registered(self):
        stranger = KeyPair.generate()
        proto, channel = await self.session(stranger)
        # until its first frame the gateway has answered exactly as for Alice
        proto.transport.write(channel.send(P.encode_request(P.Pull((1, 2, 3)))))
        answer = await self.answer(proto, channel)
        self.assertEqual(P.error_name(answer.code), "unknown-client")
        await self.closed(proto)
        self.assertLogged("not registered")
        self.assertFalse(self.gateway.store.is_registered(stranger.public_key))
        await self.assertMailIntact()

    @coroutine
    async def test_a_replayed_first_handshake_message(self):
        # Alice's real message 1 and first frame, recorded, sent again later
        proto, channel = await self.session()
        pull = channel.send(P.encode_request(P.Pull()))
        proto.transport.write(pull)
        self.assertEqual(len((await self.answer(proto, channel)).messages), 3)
        proto.transport.loseConnection()
        await proto.lost
        message1 = self.message1
        for replay in (message1, message1 + pull):
            proto = await self.raw(replay)
            await self.closed(proto, within=HANDSHAKE_TIMEOUT + 3)
            # message 2 at most: fresh, and useless without Alice's keys
            self.assertLessEqual(len(proto.received), 2 + C.MESSAGE2_SIZE)
        self.assertLogged("frame 0 does not decrypt")
        self.assertLogged("handshake not finished")
        await self.assertMailIntact()

    @coroutine
    async def test_a_replayed_transport_frame(self):
        proto, channel = await self.session()
        answer_ids = channel.send(P.encode_request(P.Pull()))
        proto.transport.write(answer_ids)
        self.assertEqual(len((await self.answer(proto, channel)).messages), 3)
        # the same frame again: under the next nonce it does not decrypt
        proto.transport.write(answer_ids)
        await self.closed(proto)
        self.assertLogged("frame 1 does not decrypt")
        await self.assertMailIntact()

    @coroutine
    async def test_truncated_and_bit_flipped_frames(self):
        for damage in ("truncated", "flipped", "cut short"):
            proto, channel = await self.session()
            frame = bytearray(channel.send(P.encode_request(P.Pull())))
            if damage == "truncated":
                # one byte shorter, its prefix saying so: not a size requests have
                frame = struct.pack(">H", len(frame) - 3) + frame[2:-1]
            elif damage == "flipped":
                frame[20] ^= 0x04
            else:
                # the body never completes: held until the idle timeout, one
                # frame at most; here the peer gives up and closes
                frame = frame[:-5]
            proto.transport.write(bytes(frame))
            if damage == "cut short":
                await sleep(0.1)
                self.assertEqual(proto.received, bytearray())
                proto.transport.loseConnection()
                await proto.lost
                continue
            await self.closed(proto)
        self.assertLogged("not one of the sizes")
        self.assertLogged("frame 0 does not decrypt")
        await self.assertMailIntact()

    @coroutine
    async def test_an_oversized_length(self):
        proto, channel = await self.session()
        # a prefix announcing 65,535 bytes: refused on the prefix, no body read
        proto.transport.write(b"\xff\xff")
        await self.closed(proto)
        self.assertLogged("announced as 65535 bytes")
        # and before the handshake too
        proto = await self.raw(b"\xff\xff" + b"x" * 100)
        await self.closed(proto)
        self.assertLogged("handshake message 1 announced as 65535 bytes")
        await self.assertMailIntact()

    @coroutine
    async def test_a_slow_handshake(self):
        channel = self.handshake(self.alice)
        message1 = channel.start()
        proto = await self.raw(message1[:10])
        await sleep(HANDSHAKE_TIMEOUT / 2)
        proto.transport.write(message1[10:20])   # dribbling does not extend it
        await self.closed(proto, within=HANDSHAKE_TIMEOUT + 3)
        self.assertLogged("handshake not finished within")
        await self.assertMailIntact()


class Admission(TestCase):
    """Registrations expire when unused, cost a flood, and tell nothing early."""

    timeout = 30

    async def start(self, **kw):
        self.gateway_keys = KeyPair.generate()
        kw.setdefault("commit_interval", 0.001)
        self.gateway = GatewayService(reactor, self.gateway_keys, self.mktemp(), LOCAL, LOCAL,
                                      "127.0.0.1", **kw)
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        _, port = await self.gateway.whenListening()
        self.address = NodeAddress.parse(f"127.0.0.1:{port}")
        self.port = port

    def register(self, keys):
        return register(reactor, self.address, keys, self.gateway_keys.public_key)

    @coroutine
    async def test_unused_registrations_expire_used_ones_do_not(self):
        await self.start(registration_idle=0.6, housekeeping_interval=0.1)
        idle, used = KeyPair.generate(), KeyPair.generate()
        await self.register(idle)
        await self.register(used)
        self.gateway.store.add(idle.public_key, b"mail nobody fetches")
        link = GatewayLink(reactor, self.address, used, self.gateway_keys.public_key)
        link.start()
        self.addCleanup(link.stop)
        await link.when_ready()
        for _ in range(30):   # 1.5 s: the idle time twice and more
            await link.pull()
            await sleep(0.05)
        store = self.gateway.store
        self.assertFalse(store.is_registered(idle.public_key))
        self.assertEqual(store.usage(idle.public_key), (0, 0))
        # a live connection keeps its client registered, past the idle time
        self.assertTrue(store.is_registered(used.public_key))

    @coroutine
    async def test_a_registration_flood_is_rate_limited_per_source(self):
        await self.start()
        keys = [KeyPair.generate() for _ in range(4)]
        for k in keys[:3]:
            await self.register(k)
        e = await self.assertFailure(self.register(keys[3]), Exception)
        self.assertIn("rate-limited", str(e))
        self.assertIn("127.0.0.1", str(e))
        self.assertFalse(self.gateway.store.is_registered(keys[3].public_key))
        # a key already registered re-registers (its link does so on every
        # connection) without spending anything
        for _ in range(5):
            await self.register(keys[0])

    @coroutine
    async def test_registered_and_unknown_keys_look_the_same_until_proven(self):
        await self.start()
        alice, stranger = KeyPair.generate(), KeyPair.generate()
        await self.register(alice)
        seen = []
        for keys in (alice, stranger):
            channel = C.Channel.client(keys, self.gateway_keys.public_key, reactor)
            proto = await connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), Raw())
            proto.transport.write(channel.start())
            await sleep(0.3)
            seen.append(len(proto.received))
            # message 2 decrypts for both: the gateway proved itself to both
            self.assertEqual(channel.receive(bytes(proto.received)), [])
            self.assertFalse(proto.lost.called)
            proto.transport.loseConnection()
            await proto.lost
        self.assertEqual(seen, [2 + C.MESSAGE2_SIZE] * 2)
