"""The client side of the gateway client link: register once, then pull and ack.

:func:`register` opens a connection, proves possession of the client key
and returns the token. :class:`GatewayLink` keeps one authenticated
connection open and sends pull and ack requests over it; the gateway
answers every request in order, so answers are matched to requests by
position.

Two layers, kept apart so that another channel (an encrypted one) can
replace the first without touching the second:

- ``_LinkProtocol``: the framing, the hello and matching answers to
  requests, on one connection. It knows nothing of reconnecting.
- ``GatewayLink``: the lifecycle. Reconnecting is
  ``twisted.application.internet.ClientService`` (Automat inside), with the
  capped, jittered policy of :mod:`nymtx.backoff`; an attempt is the TCP
  connect *and* the hello and authentication, so a gateway that accepts
  connections but refuses the token backs off like one that is down. The
  link is in one :class:`LinkState` at a time.
"""

import collections
import enum

from nacl.bindings import crypto_scalarmult
from nacl.exceptions import CryptoError
from twisted.application.internet import ClientService
from twisted.internet.defer import (
    CancelledError, Deferred, DeferredList, TimeoutError, fail, gatherResults, succeed)
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, globalLogPublisher
from zope.interface import implementer

from nymtx.backoff import backoff_policy
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
        self.error = None
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
        if d.called:
            return  # cancelled (a handshake that timed out): its answer is dropped
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
            d = self.waiting.popleft()
            if not d.called:
                d.errback(error)

    def request(self, value):
        if self._lost:
            return fail(GatewayLinkError(f"connection to gateway {self.address} is closed"))
        d = Deferred()
        self.waiting.append(d)
        self.transport.write(F.encode(value))
        return d

    def connectionLost(self, reason):
        self._lost = True
        self.error = self.error or GatewayLinkError(
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


class LinkState(enum.Enum):
    """Where a :class:`GatewayLink` is in its life; one at a time."""

    STOPPED = "stopped"        # not started, or stopped and closed
    CONNECTING = "connecting"  # a TCP connect, the hello or the authentication under way
    READY = "ready"            # authenticated: pull and ack go through
    WAITING = "waiting"        # between two attempts, for the backoff
    STOPPING = "stopping"      # stop() called: waiting for the connection to close


_TRANSITIONS = {
    LinkState.STOPPED: {LinkState.CONNECTING},
    LinkState.CONNECTING: {LinkState.READY, LinkState.WAITING, LinkState.STOPPING},
    LinkState.READY: {LinkState.WAITING, LinkState.STOPPING},
    LinkState.WAITING: {LinkState.CONNECTING, LinkState.STOPPING},
    LinkState.STOPPING: {LinkState.STOPPED},
}

#: Seconds the hello and the authentication may take once TCP is up; a
#: gateway that accepts and then says nothing must not hold the link for ever.
HANDSHAKE_TIMEOUT = 10.0


class _Gate(Protocol):
    """The connection's protocol: the link protocol, plus the session once accepted.

    ClientService must hear of a connection only once it is authenticated
    (it resets its backoff then) and of its loss only if it had heard of
    it: it has no transition for the loss of a connection it never saw.
    """

    def __init__(self, inner):
        self.inner = inner
        self.session = None
        self.closed = Deferred()

    def makeConnection(self, transport):
        Protocol.makeConnection(self, transport)
        self.inner.makeConnection(transport)

    def dataReceived(self, data):
        self.inner.dataReceived(data)

    def connectionLost(self, reason):
        try:
            self.inner.connectionLost(reason)
        finally:
            session, self.session = self.session, None
            if session is not None:
                session.connectionLost(reason)
            self.closed.callback(None)


class _Session(Protocol):
    """What ClientService holds: one authenticated connection, by its link protocol."""

    def __init__(self, inner):
        self.inner = inner


class _SessionFactory(Factory):
    noisy = False

    def __init__(self):
        self.next = None

    def buildProtocol(self, addr):
        inner, self.next = self.next, None
        return _Session(inner)


@implementer(IStreamClientEndpoint)
class _AuthenticatingEndpoint:
    """An endpoint whose connections ClientService sees only once authenticated."""

    def __init__(self, link, endpoint):
        self._link = link
        self._endpoint = endpoint

    def connect(self, factory):
        return self._link._attempt(self._endpoint, factory)

    def __repr__(self):
        return f"<gateway {self._link.address}>"


def _without_retry_lines(event):
    # ClientService logs each retry at info level, without the reason; the
    # link logs one line with it (GatewayLink._retry_delay).
    if not event.get("log_format", "").startswith("Scheduling retry"):
        globalLogPublisher(event)


class _Reconnector(ClientService):
    _log = Logger(namespace="nymtx.gateway.link", observer=_without_retry_lines)


@implementer(IGatewayLink)
class GatewayLink:
    """One authenticated connection to a gateway, kept open while started."""

    log = Logger()

    def __init__(self, reactor, address, keys, token, gateway_key=None,
                 initial_backoff=0.1, maximum_backoff=30.0, *, endpoint=None,
                 retry_policy=None, handshake_timeout=HANDSHAKE_TIMEOUT, rng=None):
        self.reactor = reactor
        self.address = address
        self.keys = keys
        self.token = token
        self.gateway_key = gateway_key
        self.initial_backoff = initial_backoff
        self.maximum_backoff = maximum_backoff
        self.handshake_timeout = handshake_timeout
        self.last_error = None
        self.state = LinkState.STOPPED
        self._policy = retry_policy or backoff_policy(
            initial_backoff, maximum_backoff, rng=rng)
        self._protocol = None      # the authenticated link protocol, in READY
        self._gate = None          # the connection of the current attempt or session
        self._ready_waiters = []
        self._stopped = None       # Deferred of the stop under way, in STOPPING
        if endpoint is None:
            endpoint = _endpoint(reactor, address)
        self._sessions = _SessionFactory()
        self._service = _Reconnector(
            _AuthenticatingEndpoint(self, endpoint), self._sessions,
            retryPolicy=self._retry_delay, clock=reactor)

    def _to(self, state):
        if state is self.state:
            return
        if state not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"gateway link: no transition from {self.state.value}"
                               f" to {state.value}")
        self.state = state

    # ---- connection management ---------------------------------------

    @property
    def running(self):
        """Started and not stopped (connected or not)."""
        return self.state in (LinkState.CONNECTING, LinkState.READY, LinkState.WAITING)

    def start(self):
        """Connect, and keep reconnecting until stop(). Started already: nothing."""
        if self.running:
            return
        if self.state is LinkState.STOPPING:
            raise RuntimeError("the gateway link is still stopping: start it again"
                               " once stop()'s Deferred has fired")
        self._to(LinkState.CONNECTING)
        self._service.startService()

    def _attempt(self, endpoint, factory):
        # ClientService calls this for every attempt, from inside its state
        # machine: the result is handed back through *outer*, and what
        # follows an authentication runs only once ClientService has taken it.
        self._to(LinkState.CONNECTING)
        attempt = Deferred.fromCoroutine(self._open(endpoint, factory))
        outer = Deferred(lambda _: attempt.cancel())

        def opened(session):
            if outer.called:  # cancelled while it was finishing
                session.transport.abortConnection()
                return
            outer.callback(session)
            self._ready(session.inner)

        def failed(failure):
            if not outer.called:
                outer.errback(failure)
        attempt.addCallbacks(opened, failed)
        return outer

    async def _open(self, endpoint, factory):
        proto = self._new_protocol()
        gate = self._gate = _Gate(proto)
        try:
            await endpoint.connect(_QuietFactory(gate))
        except CancelledError:
            raise
        except Exception as e:
            self._failed(GatewayLinkError(f"cannot connect to gateway {self.address}: {e}"))
            raise self.last_error
        handshake = Deferred.fromCoroutine(self._authenticate(proto))
        if self.handshake_timeout is not None:
            handshake.addTimeout(self.handshake_timeout, self.reactor)
        try:
            await handshake
        except BaseException as e:
            gate.transport.abortConnection()
            if isinstance(e, CancelledError):
                raise
            if isinstance(e, TimeoutError):
                e = GatewayLinkError(f"gateway {self.address} did not complete the"
                                     f" handshake within {self.handshake_timeout:g} s")
            elif not isinstance(e, GatewayLinkError):
                e = GatewayLinkError(str(e))
            self._failed(e)
            raise e
        if proto._lost:
            e = proto.error or GatewayLinkError(f"gateway {self.address} closed the connection")
            self._failed(e)
            raise e
        proto.closed.addCallback(lambda _: self._closed(proto))
        self._sessions.next = proto
        session = factory.buildProtocol(gate.transport.getPeer())
        gate.session = session
        session.makeConnection(gate.transport)
        return session

    # The two places another channel plugs in. What the link uses of the
    # protocol: request(frame) -> Deferred of the answer, closed (a Deferred
    # fired on connectionLost before the requests fail), error (why it
    # closed), _lost, transport; and whatever _authenticate awaits.
    def _new_protocol(self):
        return _LinkProtocol(self.address, self.gateway_key)

    async def _authenticate(self, proto):
        await proto.hello
        await proto.request(F.Authenticate(self.keys.public_key, self.token))

    def _failed(self, error):
        self.last_error = error

    def _ready(self, proto):
        if self.state is not LinkState.CONNECTING or proto._lost:
            return
        self._to(LinkState.READY)
        self._protocol = proto
        self.last_error = None
        self.log.info("authenticated at gateway {address}", address=str(self.address))
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    def _closed(self, proto):
        # The link protocol fires closed before it fails its requests: the
        # link forgets this connection before any caller whose request
        # failed can ask it for another one.
        if self._protocol is proto:
            self._protocol = None
            self.last_error = proto.error or GatewayLinkError(
                f"connection to gateway {self.address} lost")
            # ClientService, told next, always waits before it redials
            self._to(LinkState.WAITING)

    def _retry_delay(self, attempt):
        # ClientService asks for the wait after each failure (attempt is the
        # count in a row, reset by an authentication): a named state and one
        # line saying why.
        delay = self._policy(attempt)
        self._to(LinkState.WAITING)
        self.log.warn("gateway link: {why}; retrying in {delay:.1f}s (attempt {attempt})",
                      why=str(self.last_error), delay=delay, attempt=attempt)
        return delay

    def stop(self):
        """Close the link; fires once the connection is closed."""
        if self.state is LinkState.STOPPED:
            return succeed(None)
        if self.state is LinkState.STOPPING:
            return self._after(self._stopped)
        self._to(LinkState.STOPPING)
        self._protocol = None
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(GatewayLinkError("the gateway link was stopped"))
        waits = [self._service.stopService()]
        gate = self._gate
        # a connection that is up (or was aborted) closes later: wait for it;
        # a TCP connect under way was cancelled and has no connection to wait for
        if gate is not None and gate.transport is not None and not gate.closed.called:
            gate.transport.loseConnection()
            waits.append(gate.closed)
        stopped = self._stopped = DeferredList(waits, consumeErrors=True)
        stopped.addCallback(self._stop_done)
        return self._after(stopped)

    def _stop_done(self, _):
        self._gate = None
        self._stopped = None
        self._to(LinkState.STOPPED)

    @staticmethod
    def _after(d):
        out = Deferred()
        d.addBoth(lambda r: (out.callback(None), r)[1])
        return out

    @property
    def connected(self):
        return self.state is LinkState.READY

    def when_ready(self):
        """Fires when the link is (or next becomes) authenticated; fails if stopped first."""
        if self.state is LinkState.READY:
            return succeed(None)
        d = Deferred()
        self._ready_waiters.append(d)
        return d

    # ---- requests ------------------------------------------------------

    def _not_connected(self):
        why = f": {self.last_error}" if self.last_error else ""
        return fail(GatewayLinkError(
            f"not connected to gateway {self.address} ({self.state.value}){why}"))

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
