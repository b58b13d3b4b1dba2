"""The gateway's client-facing protocol: register, authenticate, pull, ack.

One connection serves one client at a time. Every frame gets exactly one
answer frame, in order, so a client can match answers to requests by
position. After ``max_errors`` error answers the connection is closed: a
peer that keeps sending garbage gets no more of the gateway's time.
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
from nymtx.gateway import frames as F
from nymtx.gateway.store import StoreError
from nymtx.listening import ConnectionLimit, handshake_done


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
        self.decoder = F.FrameDecoder(F.MAX_CLIENT_FRAME_SIZE)
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
        self.nonce = self.factory.randbytes(F.NONCE_SIZE)
        self.send(F.Hello(F.PROTOCOL_VERSION, self.factory.keys.public_key, self.nonce))

    def connectionLost(self, reason):
        self._pending.clear()
        self.closed.callback(None)

    def send(self, value):
        self.transport.write(F.encode(value))

    def dataReceived(self, data):
        try:
            bodies = self.decoder.feed(data)
        except F.FrameTooLarge as e:
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
                self.handle(F.parse_client_frame(body))
            except F.FrameError as e:
                self.error(e.code, str(e))
            except StoreError as e:
                self.log.error("store failure answering a client: {why}", why=str(e))
                self.error(F.E_INTERNAL, "the gateway cannot access its storage")
        if pending:
            self.transport.pauseProducing()
            return
        too_large = self._too_large
        if too_large is not None and not self.transport.disconnecting:
            self._too_large = None
            self.factory.count_error(too_large.code)
            self.send(F.Error(too_large.code, str(too_large)))
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
            self.send(F.Error(code, message))
            self.transport.loseConnection()
        else:
            self.send(F.Error(code, message))

    def handle(self, request):
        if isinstance(request, F.Register):
            self.register(request)
        elif isinstance(request, F.Authenticate):
            self.authenticate(request)
        elif self.client is None:
            raise F.FrameError(F.E_NOT_AUTHENTICATED,
                               "authenticate before pulling or acknowledging")
        elif isinstance(request, F.Pull):
            self.pull(request.limit)
        elif isinstance(request, F.Ack):
            self.send(F.Acked(self.factory.store.ack(self.client, request.ids)))

    def register(self, request):
        nonce, self.nonce = self.nonce, None
        if nonce is None:
            raise F.FrameError(F.E_ALREADY,
                               "one registration per connection: reconnect for a fresh nonce")
        try:
            shared = crypto_scalarmult(self.factory.keys.private_key, request.client_key)
        except NaclRuntimeError:
            # a low-order point gives no shared secret: no proof can be right
            shared = None
        if shared is None or not hmac.compare_digest(
                F.registration_proof(shared, nonce, request.client_key), request.proof):
            raise F.FrameError(F.E_BAD_PROOF,
                               "registration proof does not match the client key and nonce")
        store = self.factory.store
        if not store.has_room(request.client_key):
            raise F.FrameError(
                F.E_FULL, f"this gateway is full: {store.max_clients} clients are registered")
        token = self.factory.randbytes(F.TOKEN_SIZE)
        store.register(request.client_key, token)
        self.log.info("registered client {address}",
                      address=encode_client_address(request.client_key))
        self.send(F.Registered(token))

    def authenticate(self, request):
        if self.client is not None:
            raise F.FrameError(F.E_ALREADY, "this connection is already authenticated")
        store = self.factory.store
        if not store.is_registered(request.client_key):
            raise F.FrameError(
                F.E_UNKNOWN_CLIENT,
                f"client {encode_client_address(request.client_key)} is not registered here")
        if not store.check_token(request.client_key, request.token):
            raise F.FrameError(F.E_BAD_TOKEN, "the token is not this client's current token")
        self.client = bytes(request.client_key)
        # a registration in use does not expire (MailboxStore.expire_idle)
        store.touch(self.client)
        # until it authenticates a connection costs the gateway and gives
        # nothing: the listener's handshake deadline holds until now
        handshake_done(self.transport)
        self.send(F.Authenticated())

    def pull(self, limit):
        messages, size = [], 3
        for ident, body in self.factory.store.pull(
                self.client, min(limit, self.factory.max_pull)):
            size += 10 + len(body)
            if size > F.MAX_FRAME_SIZE:
                break
            messages.append((ident, body))
        self.send(F.Messages(tuple(messages)))


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
                 max_pull=F.MAX_PULL):
        self.store = store
        self.keys = keys
        self.randbytes = randbytes
        self.max_errors = max_errors
        self.max_pull = max_pull
        self.errors = collections.Counter()

    def buildProtocol(self, addr):
        return ClientProtocol(self)

    def count_error(self, code):
        self.errors[F.ERROR_NAMES.get(code, str(code))] += 1


def listener_factory(factory, max_connections=MAX_CONNECTIONS,
                     handshake_timeout=HANDSHAKE_TIMEOUT, idle_timeout=IDLE_TIMEOUT, clock=None):
    """The gateway's client listener factory: *factory* (a ClientServerFactory)
    within its bounds; a connection must authenticate within *handshake_timeout*."""
    if handshake_timeout is None or not handshake_timeout > 0:
        raise ValueError(f"handshake_timeout must be positive, not {handshake_timeout}")
    return ConnectionLimit(factory, factory.store.clock if clock is None else clock,
                           max_connections, idle_timeout=idle_timeout,
                           handshake_timeout=handshake_timeout,
                           name="gateway client listener")
