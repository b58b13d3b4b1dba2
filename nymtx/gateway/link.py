"""The client side of the gateway client link: register once, then pull and ack.

:func:`register` opens a connection, proves possession of the client key
and returns the token. :class:`GatewayLink` keeps one authenticated
connection open, reconnecting with exponential backoff, and sends pull and
ack requests over it; the gateway answers every request in order, so
answers are matched to requests by position.
"""

import collections

from nacl.bindings import crypto_scalarmult
from nacl.exceptions import CryptoError
from twisted.internet.defer import (
    CancelledError, Deferred, fail, gatherResults, succeed)
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.gateway import frames as F
from nymtx.interfaces import IGatewayLink


class GatewayLinkError(Exception):
    """Not connected, refused, or an error frame; the message says which."""


def _refusal(error):
    name = F.ERROR_NAMES.get(error.code, f"code {error.code}")
    return GatewayLinkError(f"gateway refused the request ({name}): {error.message}")


class _LinkProtocol(Protocol):
    """Waits for the gateway's hello, then matches answers to requests."""

    def __init__(self, address, gateway_key=None):
        self.address = address
        self.gateway_key = gateway_key
        self.decoder = F.FrameDecoder(F.MAX_FRAME_SIZE)
        self.hello = Deferred()
        self.waiting = collections.deque()
        self.closed = Deferred()
        self._lost = False

    def dataReceived(self, data):
        try:
            for body in self.decoder.feed(data):
                self._frame(F.parse_gateway_frame(body))
        except (F.FrameError, GatewayLinkError) as e:
            self._abort(GatewayLinkError(
                f"gateway {self.address} broke the protocol: {e}"))

    def _frame(self, value):
        if not self.hello.called:
            if not isinstance(value, F.Hello):
                raise GatewayLinkError(f"expected hello, got {type(value).__name__}")
            if value.version != F.PROTOCOL_VERSION:
                raise GatewayLinkError(
                    f"protocol version {value.version}, this client speaks {F.PROTOCOL_VERSION}")
            if self.gateway_key is not None and value.gateway_key != self.gateway_key:
                raise GatewayLinkError("its public key is not the one expected")
            self.hello.callback(value)
            return
        if not self.waiting:
            if isinstance(value, F.Error):
                # the gateway's parting words before it closes the connection
                self.error = _refusal(value)
                return
            raise GatewayLinkError(f"unrequested {type(value).__name__} frame")
        d = self.waiting.popleft()
        if isinstance(value, F.Error):
            d.errback(_refusal(value))
        else:
            d.callback(value)

    def _abort(self, error):
        self.error = error
        self._fail_all(error)
        self.transport.abortConnection()

    def _fail_all(self, error):
        if not self.hello.called:
            self.hello.errback(error)
        while self.waiting:
            self.waiting.popleft().errback(error)

    def request(self, value):
        if self._lost:
            return fail(GatewayLinkError(f"connection to gateway {self.address} is closed"))
        d = Deferred()
        self.waiting.append(d)
        self.transport.write(F.encode(value))
        return d

    def connectionLost(self, reason):
        self._lost = True
        self.error = getattr(self, "error", None) or GatewayLinkError(
            f"connection to gateway {self.address} lost: {reason.getErrorMessage()}")
        # closed first: the link forgets this connection before any caller
        # whose request failed can ask it for another one
        self.closed.callback(None)
        self._fail_all(self.error)


def _endpoint(reactor, address):
    return HostnameEndpoint(reactor, address.host, address.port)


def _proof(keys, hello):
    try:
        shared = crypto_scalarmult(keys.private_key, hello.gateway_key)
    except CryptoError:
        raise GatewayLinkError("the gateway's public key is not usable for X25519")
    return F.registration_proof(shared, hello.nonce, keys.public_key)


class _QuietFactory(Factory):
    """connectProtocol's factory, without a log line per connection."""

    noisy = False

    def __init__(self, protocol):
        self._protocol = protocol

    def buildProtocol(self, addr):
        return self._protocol


def _connect(endpoint, protocol):
    return endpoint.connect(_QuietFactory(protocol))


def register(reactor, address, keys, gateway_key=None, timeout=10.0):
    """Register *keys* at the gateway at *address*; fires with the 32-byte token."""

    async def run():
        try:
            proto = await _connect(_endpoint(reactor, address),
                                   _LinkProtocol(address, gateway_key))
        except Exception as e:
            raise GatewayLinkError(f"cannot connect to gateway {address}: {e}") from e
        try:
            hello = await proto.hello
            reply = await proto.request(F.Register(keys.public_key, _proof(keys, hello)))
            return reply.token
        finally:
            proto.transport.loseConnection()
            await proto.closed

    d = Deferred.fromCoroutine(run())
    if timeout is not None:
        d.addTimeout(timeout, reactor)
    return d


@implementer(IGatewayLink)
class GatewayLink:
    """One authenticated connection to a gateway, kept open while started."""

    log = Logger()

    def __init__(self, reactor, address, keys, token, gateway_key=None,
                 initial_backoff=0.1, maximum_backoff=30.0):
        self.reactor = reactor
        self.address = address
        self.keys = keys
        self.token = token
        self.gateway_key = gateway_key
        self.initial_backoff = initial_backoff
        self.maximum_backoff = maximum_backoff
        self.last_error = None
        self.running = False
        self._protocol = None      # authenticated connection, when there is one
        self._connecting = None
        self._handshaking = None
        self._retry = None
        self._attempts = 0
        self._ready_waiters = []

    # ---- connection management ---------------------------------------

    def start(self):
        if self.running:
            return
        self.running = True
        self._connect()

    def _connect(self):
        self._retry = None
        self._connecting = Deferred.fromCoroutine(self._session())
        self._connecting.addErrback(lambda f: f.trap(CancelledError))

    async def _session(self):
        try:
            proto = await _connect(_endpoint(self.reactor, self.address),
                                   _LinkProtocol(self.address, self.gateway_key))
        except CancelledError:
            raise
        except Exception as e:
            self._lost(GatewayLinkError(f"cannot connect to gateway {self.address}: {e}"))
            return
        self._handshaking = proto
        try:
            await proto.hello
            await proto.request(F.Authenticate(self.keys.public_key, self.token))
        except BaseException as e:
            proto.transport.loseConnection()
            if isinstance(e, CancelledError):
                raise
            await proto.closed
            self._handshaking = None
            self._lost(e if isinstance(e, GatewayLinkError) else GatewayLinkError(str(e)))
            return
        self._handshaking = None
        self._connecting = None
        self._attempts = 0
        self.last_error = None
        self._protocol = proto
        self.log.info("authenticated at gateway {address}", address=str(self.address))
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)
        await proto.closed
        self._protocol = None
        self._lost(getattr(proto, "error", None) or GatewayLinkError(
            f"connection to gateway {self.address} lost"))

    def _lost(self, error):
        self._connecting = None
        self.last_error = error
        if not self.running:
            return
        delay = min(self.maximum_backoff, self.initial_backoff * 2 ** self._attempts)
        self._attempts += 1
        self.log.warn("gateway link: {why}; retrying in {delay:.1f}s",
                      why=str(error), delay=delay)
        self._retry = self.reactor.callLater(delay, self._connect)

    def stop(self):
        """Close the link; fires once the connection is closed."""
        self.running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(GatewayLinkError("the gateway link was stopped"))
        proto = self._protocol or self._handshaking
        self._protocol = self._handshaking = None
        if proto is None:
            return succeed(None)
        proto.transport.loseConnection()
        return proto.closed

    @property
    def connected(self):
        return self._protocol is not None

    def when_ready(self):
        """Fires when the link is (or next becomes) authenticated."""
        if self._protocol is not None:
            return succeed(None)
        d = Deferred()
        self._ready_waiters.append(d)
        return d

    # ---- requests ------------------------------------------------------

    def _not_connected(self):
        why = f": {self.last_error}" if self.last_error else ""
        return fail(GatewayLinkError(f"not connected to gateway {self.address}{why}"))

    def pull(self, limit=100):
        """Up to *limit* stored messages as (id, message), oldest first."""
        if self._protocol is None:
            return self._not_connected()
        limit = max(1, min(int(limit), F.MAX_PULL))
        d = self._protocol.request(F.Pull(limit))
        d.addCallback(lambda reply: list(reply.messages))
        return d

    def ack(self, ids):
        """Delete the messages *ids* at the gateway; fires with how many were deleted."""
        ids = list(ids)
        if not ids:
            return succeed(0)
        if self._protocol is None:
            return self._not_connected()
        proto = self._protocol
        ds = [proto.request(F.Ack(tuple(ids[i:i + F.MAX_ACK])))
              for i in range(0, len(ids), F.MAX_ACK)]
        d = gatherResults(ds, consumeErrors=True)
        d.addCallback(lambda replies: sum(r.deleted for r in replies))
        d.addErrback(lambda f: f.value.subFailure if hasattr(f.value, "subFailure") else f)
        return d
