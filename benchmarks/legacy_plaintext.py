"""The plaintext client link of the release before the private link: a baseline only.

The gateway no longer speaks it: every byte of it, a token at login and
every message, crossed the wire in the clear (issue 10). Its server and a
client live here so that ``channel_bench.py`` can measure the private link
against it in the same run, as the issue asks; nothing in ``nymtx``
imports this module. The frames' pure codec is ``nymtx.gateway.frames``.
"""

import collections
import hmac
import os

from nacl.bindings import crypto_scalarmult
from nacl.exceptions import RuntimeError as NaclRuntimeError
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.addressing import encode_client_address
from nymtx.gateway.frames import (
    Ack, Acked, Authenticate, Authenticated, E_ALREADY, E_BAD_PROOF, E_BAD_TOKEN, E_FULL,
    E_INTERNAL, E_NOT_AUTHENTICATED, E_UNKNOWN_CLIENT, ERROR_NAMES, MAX_CLIENT_FRAME_SIZE,
    MAX_FRAME_SIZE, MAX_PULL, NONCE_SIZE, PROTOCOL_VERSION, TOKEN_SIZE, Error, FrameDecoder,
    FrameError, FrameTooLarge, Hello, Messages, Pull, Register, Registered, encode,
    parse_client_frame, parse_gateway_frame, registration_proof)
from nymtx.gateway.store import StoreError

# ---- the gateway side -------------------------------------------------------

@implementer(IPushProducer)
class ClientProtocol(Protocol):
    """One client connection.

    It is a streaming producer of its own transport: when the client does
    not read its answers and the transport's buffer fills, the protocol
    stops answering and stops reading, so the frames the client keeps
    sending wait in its socket, not in the gateway's memory. The rest is
    answered once the client has read enough.
    """

    log = Logger()

    def __init__(self, factory):
        self.factory = factory
        self.decoder = FrameDecoder(MAX_CLIENT_FRAME_SIZE)
        self.nonce = None
        self.client = None
        self.errors = 0
        self.closed = Deferred()
        self.paused = False
        # bodies read but not answered yet, and the oversized frame after them
        self._pending = collections.deque()
        self._too_large = None

    def connectionMade(self):
        self.transport.registerProducer(self, True)
        self.nonce = self.factory.randbytes(NONCE_SIZE)
        self.send(Hello(PROTOCOL_VERSION, self.factory.keys.public_key, self.nonce))

    def connectionLost(self, reason):
        self._pending.clear()
        self.closed.callback(None)

    def send(self, value):
        self.transport.write(encode(value))

    def dataReceived(self, data):
        try:
            bodies = self.decoder.feed(data)
        except FrameTooLarge as e:
            # The frames before it are answered first: one answer per request.
            bodies, self._too_large = e.bodies, e
            # The rest of the stream is the oversized frame's body: no resync.
            self.transport.pauseProducing()
        self._pending.extend(bodies)
        self._answer()

    def _answer(self):
        pending = self._pending
        while pending and not self.paused:
            if self.transport.disconnecting:
                pending.clear()
                return
            body = pending.popleft()
            try:
                self.handle(parse_client_frame(body))
            except FrameError as e:
                self.error(e.code, str(e))
            except StoreError as e:
                self.log.error("store failure answering a client: {why}", why=str(e))
                self.error(E_INTERNAL, "the gateway cannot access its storage")
        if pending:
            self.transport.pauseProducing()
            return
        too_large = self._too_large
        if too_large is not None and not self.transport.disconnecting:
            self._too_large = None
            self.factory.count_error(too_large.code)
            self.send(Error(too_large.code, str(too_large)))
            self.transport.loseConnection()

    # IPushProducer, for the transport: the client is (not) reading its answers

    def pauseProducing(self):
        self.paused = True
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.paused = False
        self._answer()
        if not self.paused and self._too_large is None and not self.transport.disconnecting:
            self.transport.resumeProducing()

    def stopProducing(self):
        self.paused = True
        self._pending.clear()

    def error(self, code, message):
        self.factory.count_error(code)
        self.errors += 1
        if self.errors >= self.factory.max_errors:
            message += f"; closing after {self.errors} errors"
            self.send(Error(code, message))
            self.transport.loseConnection()
        else:
            self.send(Error(code, message))

    def handle(self, request):
        if isinstance(request, Register):
            self.register(request)
        elif isinstance(request, Authenticate):
            self.authenticate(request)
        elif self.client is None:
            raise FrameError(E_NOT_AUTHENTICATED,
                               "authenticate before pulling or acknowledging")
        elif isinstance(request, Pull):
            self.pull(request.limit)
        elif isinstance(request, Ack):
            self.send(Acked(self.factory.store.ack(self.client, request.ids)))

    def register(self, request):
        nonce, self.nonce = self.nonce, None
        if nonce is None:
            raise FrameError(E_ALREADY,
                               "one registration per connection: reconnect for a fresh nonce")
        try:
            shared = crypto_scalarmult(self.factory.keys.private_key, request.client_key)
        except NaclRuntimeError:
            # a low-order point gives no shared secret: no proof can be right
            shared = None
        if shared is None or not hmac.compare_digest(
                registration_proof(shared, nonce, request.client_key), request.proof):
            raise FrameError(E_BAD_PROOF,
                               "registration proof does not match the client key and nonce")
        store = self.factory.store
        if not store.has_room(request.client_key):
            raise FrameError(
                E_FULL, f"this gateway is full: {store.max_clients} clients are registered")
        token = self.factory.randbytes(TOKEN_SIZE)
        store.register(request.client_key, token)
        self.log.info("registered client {address}",
                      address=encode_client_address(request.client_key))
        self.send(Registered(token))

    def authenticate(self, request):
        if self.client is not None:
            raise FrameError(E_ALREADY, "this connection is already authenticated")
        store = self.factory.store
        if not store.is_registered(request.client_key):
            raise FrameError(
                E_UNKNOWN_CLIENT,
                f"client {encode_client_address(request.client_key)} is not registered here")
        if not store.check_token(request.client_key, request.token):
            raise FrameError(E_BAD_TOKEN, "the token is not this client's current token")
        self.client = bytes(request.client_key)
        # a registration in use does not expire (MailboxStore.expire_idle)
        store.touch(self.client)
        # until it authenticates a connection costs the gateway and gives
        # nothing: the listener's handshake deadline holds until now
        self.send(Authenticated())

    def pull(self, limit):
        messages, size = [], 3
        for ident, body in self.factory.store.pull(
                self.client, min(limit, self.factory.max_pull)):
            size += 10 + len(body)
            if size > MAX_FRAME_SIZE:
                break
            messages.append((ident, body))
        self.send(Messages(tuple(messages)))


#: Client connections at once: every client keeps one open.
MAX_CONNECTIONS = 10_000
#: Seconds a connection may take to authenticate (or register) from its hello.
HANDSHAKE_TIMEOUT = 30.0
#: Seconds without a request before an authenticated connection is cut; a
#: client pulls every few seconds, and its link redials if it was only quiet.
IDLE_TIMEOUT = 300.0


class ClientServerFactory(Factory):
    """Builds a :class:`ClientProtocol` per client connection (unbounded:
    :func:`listener_factory` puts the bounds around it)."""

    noisy = False

    def __init__(self, store, keys, randbytes=os.urandom, max_errors=5,
                 max_pull=MAX_PULL):
        self.store = store
        self.keys = keys
        self.randbytes = randbytes
        self.max_errors = max_errors
        self.max_pull = max_pull
        self.errors = collections.Counter()

    def buildProtocol(self, addr):
        return ClientProtocol(self)

    def count_error(self, code):
        self.errors[ERROR_NAMES.get(code, str(code))] += 1



# ---- a client: connect, register, authenticate, pull and ack ---------------

class PlaintextClient(Protocol):
    """The old client link on one connection, for the benchmark."""

    def __init__(self):
        self.decoder = FrameDecoder(MAX_FRAME_SIZE)
        self.hello = Deferred()
        self.waiting = collections.deque()

    def dataReceived(self, data):
        for body in self.decoder.feed(data):
            value = parse_gateway_frame(body)
            if not self.hello.called:
                self.hello.callback(value)
                continue
            d = self.waiting.popleft()
            if isinstance(value, Error):
                d.errback(FrameError(value.code, value.message))
            else:
                d.callback(value)

    def request(self, value):
        d = Deferred()
        self.waiting.append(d)
        self.transport.write(encode(value))
        return d

    async def login(self, keys):
        hello = await self.hello
        shared = crypto_scalarmult(keys.private_key, hello.gateway_key)
        reply = await self.request(Register(
            keys.public_key, registration_proof(shared, hello.nonce, keys.public_key)))
        await self.request(Authenticate(keys.public_key, reply.token))
