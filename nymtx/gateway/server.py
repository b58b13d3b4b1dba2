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
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from nymtx.addressing import encode_client_address
from nymtx.gateway import frames as F
from nymtx.gateway.store import StoreError


class ClientProtocol(Protocol):
    log = Logger()

    def __init__(self, factory):
        self.factory = factory
        self.decoder = F.FrameDecoder(F.MAX_FRAME_SIZE)
        self.nonce = None
        self.client = None
        self.errors = 0
        self.closed = Deferred()

    def connectionMade(self):
        self.factory.protocols.add(self)
        self.nonce = self.factory.randbytes(F.NONCE_SIZE)
        self.send(F.Hello(F.PROTOCOL_VERSION, self.factory.keys.public_key, self.nonce))

    def connectionLost(self, reason):
        self.factory.protocols.discard(self)
        self.closed.callback(None)

    def send(self, value):
        self.transport.write(F.encode(value))

    def dataReceived(self, data):
        too_large = None
        try:
            bodies = self.decoder.feed(data)
        except F.FrameTooLarge as e:
            # The frames before it are answered first: one answer per request.
            bodies, too_large = e.bodies, e
        self._answer(bodies)
        if too_large is not None and not self.transport.disconnecting:
            # The rest of the stream is the oversized frame's body: no resync.
            self.factory.count_error(too_large.code)
            self.send(F.Error(too_large.code, str(too_large)))
            self.transport.loseConnection()

    def _answer(self, bodies):
        for body in bodies:
            if self.transport.disconnecting:
                return
            try:
                self.handle(F.parse_client_frame(body))
            except F.FrameError as e:
                self.error(e.code, str(e))
            except StoreError as e:
                self.log.error("store failure answering a client: {why}", why=str(e))
                self.error(F.E_INTERNAL, "the gateway cannot access its storage")

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


class ClientServerFactory(Factory):
    """Builds a :class:`ClientProtocol` per client connection."""

    noisy = False

    log = Logger()

    def __init__(self, store, keys, randbytes=os.urandom, max_errors=5,
                 max_pull=F.MAX_PULL):
        self.store = store
        self.keys = keys
        self.randbytes = randbytes
        self.max_errors = max_errors
        self.max_pull = max_pull
        self.protocols = set()
        self.errors = collections.Counter()

    def buildProtocol(self, addr):
        return ClientProtocol(self)

    def count_error(self, code):
        self.errors[F.ERROR_NAMES.get(code, str(code))] += 1

    def close_all(self):
        """Close every client connection; fires once all are closed."""
        waits = [p.closed for p in self.protocols]
        for p in list(self.protocols):
            p.transport.abortConnection()
        return gatherResults(waits)
