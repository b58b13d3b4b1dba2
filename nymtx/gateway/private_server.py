"""The gateway's side of the private link: register and pull inside the channel.

:class:`PrivateClientFactory` is a listener factory: each connection runs a
:class:`~nymtx.gateway.channel.Channel` (gateway side) and, once the
client's key is proven on that connection, a :class:`PrivateClientProtocol`
for that key. The protocol answers every 42-byte request with exactly one
4927-byte answer, in order (``docs/gateway-channel.md``): a pull deletes
the ids it acknowledges and answers with exactly ``PULL_SIZE`` slots,
holding the oldest messages not yet sent on this connection.

Not wired into the gateway service yet; ``nymtx/gateway/server.py`` serves
today's plaintext link.
"""

import collections
import os

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.addressing import encode_client_address
from nymtx.gateway import frames as F
from nymtx.gateway import padded as P
from nymtx.gateway.channel import HANDSHAKE_TIMEOUT, Channel, ChannelProtocol
from nymtx.gateway.store import StoreError
from nymtx.wire import BoundedFactory, IdleTimeout

#: Seconds without a request before a proven connection is cut; a client
#: pulls every second or so, and redials if it was only quiet.
IDLE_TIMEOUT = 300.0
MAX_CONNECTIONS = 10_000
#: Requests a client may have waiting while it does not read its answers;
#: past it the gateway stops reading from it (TCP then holds the rest).
MAX_QUEUED = 64


@implementer(IPushProducer)
class PrivateClientProtocol(IdleTimeout, Protocol):
    """The requests of one proven client key, inside the channel.

    The channel delivers one request per ``dataReceived`` and sends each
    ``write`` as one frame. Like today's server it is a streaming producer
    of its transport: when the client does not read its answers, it stops
    answering and stops reading, so unread answers cannot pile up in the
    gateway's memory.
    """

    log = Logger()

    def __init__(self, factory, client_key):
        self.factory = factory
        self.client_key = bytes(client_key)
        self.errors = 0
        self.paused = False
        #: the id of the last message sent on this connection
        self.cursor = 0
        self._touched = False
        self.closed = Deferred()
        self._pending = collections.deque()

    def connectionMade(self):
        self.factory.connections.add(self)
        self.transport.registerProducer(self, True)
        self.start_idle_timeout()

    def connectionLost(self, reason):
        self.setTimeout(None)
        self._pending.clear()
        self.factory.connections.discard(self)
        self.closed.callback(None)

    def dataReceived(self, data):
        self.resetTimeout()
        self._pending.append(data)
        if len(self._pending) >= MAX_QUEUED:
            self.transport.pauseProducing()
        self._answer()

    def _answer(self):
        pending = self._pending
        while pending and not self.paused:
            if self.transport.disconnecting:
                pending.clear()
                return
            answer = self.handle(pending.popleft())
            self.transport.write(P.encode_answer(answer))
            if isinstance(answer, P.Error):
                self.errors += 1
                if self.errors >= self.factory.max_errors:
                    self.log.info("closing the private link of {client} after {n} errors",
                                  client=self.address, n=self.errors)
                    self.transport.loseConnection()
                    pending.clear()
                    return

    @property
    def address(self):
        return encode_client_address(self.client_key)

    # IPushProducer, for the transport: the client is (not) reading

    def pauseProducing(self):
        self.paused = True
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.paused = False
        self._answer()
        if not self.paused and not self.transport.disconnecting \
                and len(self._pending) < MAX_QUEUED:
            self.transport.resumeProducing()

    def stopProducing(self):
        self.paused = True
        self._pending.clear()

    # ---- requests -------------------------------------------------------

    def handle(self, data):
        """The answer to one request's bytes."""
        try:
            request = P.parse_request(data)
            if isinstance(request, P.Register):
                return self.register()
            return self.pull(request.acks)
        except F.FrameError as e:
            return self._error(e.code, str(e))
        except StoreError as e:
            self.log.error("store failure answering {client}: {why}",
                           client=self.address, why=str(e))
            return self._error(F.E_INTERNAL, "the gateway cannot access its storage")

    def _error(self, code, message):
        self.factory.errors[F.ERROR_NAMES.get(code, str(code))] += 1
        return P.Error(code, message)

    def register(self):
        store = self.factory.store
        if not store.has_room(self.client_key):
            raise F.FrameError(
                F.E_FULL, f"this gateway is full: {store.max_clients} clients are registered")
        # The ledger still keeps a token hash for today's link; on this one
        # the key proven by the handshake is the credential, so the token is
        # drawn, hashed and forgotten.
        store.register(self.client_key, self.factory.randbytes(F.TOKEN_SIZE))
        self.log.info("registered client {client} on the private link", client=self.address)
        return P.Registered()

    def pull(self, acks):
        store = self.factory.store
        if not store.is_registered(self.client_key):
            raise F.FrameError(F.E_UNKNOWN_CLIENT, "this client key is not registered here")
        if not self._touched:
            # a registration in use does not expire (MailboxStore.expire_idle)
            store.touch(self.client_key)
            self._touched = True
        acked = store.ack(self.client_key, acks) if acks else 0
        messages = []
        # Once per connection: the channel loses nothing and reorders
        # nothing, so a message sent on it needs sending again only on the
        # next connection, if it was not acknowledged by then. That lets a
        # client keep several pulls in flight, acking each answer later.
        for ident, body in store.pull(self.client_key, P.PULL_SIZE, after=self.cursor):
            self.cursor = ident
            if len(body) > P.MESSAGE_ROOM:
                # Nothing from the mix network is this long; a message that
                # is stays stored rather than be cut or dropped.
                self.log.warn("message {id} of {client} is {n} bytes, over a slot: not sent",
                              id=ident, client=self.address, n=len(body))
                continue
            messages.append((ident, body))
        return P.Messages(tuple(messages), acked)


class PrivateClientFactory(BoundedFactory):
    """The gateway's private client listener: channel, then requests.

    ``buildProtocol`` gives a :class:`ChannelProtocol`; its ``accept`` is
    :meth:`accept`, which admits every key the handshake proved (an
    unregistered key may only register), and so answers the same for
    registered and unknown keys until the key is proven.
    """

    kind = "gateway private client listener"

    def __init__(self, store, keys, clock=None, randbytes=os.urandom, max_errors=5,
                 max_connections=MAX_CONNECTIONS, handshake_timeout=HANDSHAKE_TIMEOUT,
                 idle_timeout=IDLE_TIMEOUT):
        super().__init__(store.clock if clock is None else clock, max_connections,
                         idle_timeout)
        self.store = store
        self.keys = keys
        self.randbytes = randbytes
        self.max_errors = max_errors
        self.handshake_timeout = handshake_timeout
        self.errors = collections.Counter()
        #: channel connections, proven or not
        self.channels = set()

    def makeProtocol(self, addr):
        channel = Channel.gateway(self.keys, self.clock, receive_sizes={P.REQUEST_SIZE},
                                  send_sizes={P.ANSWER_SIZE})
        proto = _CountedChannel(channel, self.accept, self.clock, self.handshake_timeout)
        proto.factory = self
        return proto

    def buildProtocol(self, addr):
        # Bounded on channels, not on proven clients: a handshake holds a
        # socket as much as a session does.
        if len(self.channels) >= self.max_connections:
            self.refused += 1
            if not self._full:
                self._full = True
                self.log.warn("{kind} has {n} connections, its maximum: refusing new ones"
                              " until some close", kind=self.kind, n=self.max_connections)
            return None
        self._full = False
        return self.makeProtocol(addr)

    def accept(self, client_key):
        return PrivateClientProtocol(self, client_key)

    def close_all(self):
        """Close every connection; fires once all are closed."""
        waits = [p.closed for p in self.channels]
        for p in list(self.channels):
            p.transport.abortConnection()
        return gatherResults(waits)


class _CountedChannel(ChannelProtocol):
    """A ChannelProtocol its factory counts from accept to close, so the
    connection bound covers handshakes too."""

    def connectionMade(self):
        self.closed = Deferred()
        self.factory.channels.add(self)
        super().connectionMade()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.channels.discard(self)
        self.closed.callback(None)
