"""The client side of the gateway client link: the private link, kept open.

Every connection is a Noise IK channel (:mod:`nymtx.gateway.channel`): the
client knows the gateway's key from the topology, proves its own key in the
handshake, and then speaks the fixed-size requests of
:mod:`nymtx.gateway.padded` inside it (:mod:`nymtx.gateway.private_link`).
No bearer secret crosses the wire: a token in an old config.toml is never
sent (``docs/client.md``).

:func:`register` opens one connection, registers the proven key and closes.
:class:`GatewayLink` keeps one connection open and sends pulls over it;
acknowledgements ride on later pulls, in their fixed id slots, so an ack is
never a frame of its own. The lifecycle: reconnecting is
``twisted.application.internet.ClientService`` (Automat inside), with the
capped, jittered policy of :mod:`nymtx.backoff`; an attempt is the TCP
connect *and* the handshake and (re-)registration, so a gateway that
accepts connections but refuses the key backs off like one that is down.
The link is in one :class:`LinkState` at a time.
"""

import collections
import enum

from twisted.application.internet import ClientService
from twisted.internet.defer import (
    CancelledError, Deferred, DeferredList, TimeoutError, fail, succeed)
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, globalLogPublisher
from zope.interface import implementer

from nymtx.backoff import backoff_policy
from nymtx.gateway import padded as P
from nymtx.gateway.private_link import ClientChannel, GatewayLinkError, PrivateLink, connect
from nymtx.interfaces import IGatewayLink

__all__ = ["GatewayLink", "GatewayLinkError", "LinkState", "register"]


def _endpoint(reactor, address):
    return HostnameEndpoint(reactor, address.host, address.port)


class _QuietFactory(Factory):
    """connectProtocol's factory, without a log line per connection."""

    noisy = False

    def __init__(self, protocol):
        self._protocol = protocol

    def buildProtocol(self, addr):
        return self._protocol


def _connect(endpoint, protocol):
    return endpoint.connect(_QuietFactory(protocol))


def register(reactor, address, keys, gateway_key, timeout=10.0, endpoint=None):
    """Register *keys* at the gateway at *address* whose key is *gateway_key*,
    inside the channel; fires with None (there is no token: the key proven
    in each handshake is the credential)."""
    if gateway_key is None:
        return fail(GatewayLinkError(
            f"cannot register at gateway {address}: its public key is not known"))

    async def run():
        link = await connect(endpoint or _endpoint(reactor, address), keys, gateway_key,
                             reactor, address, handshake_timeout=timeout or 10.0)
        try:
            await link.register()
        finally:
            await link.close()

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

#: Seconds the handshake and the registration may take once TCP is up; a
#: gateway that accepts and then says nothing must not hold the link for ever.
HANDSHAKE_TIMEOUT = 10.0


class _Acks:
    """One ack() call: its ids not yet carried, and its Deferred."""

    __slots__ = ("ids", "done", "in_flight", "deleted")

    def __init__(self, ids):
        self.ids = collections.deque(ids)
        self.done = Deferred()
        self.in_flight = 0
        self.deleted = 0


class _Gate(Protocol):
    """The connection's protocol: the channel, plus the session once accepted.

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
    """What ClientService holds: one proven connection, by its PrivateLink."""

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
    """One private connection to a gateway, kept open while started.

    *gateway_key* is the gateway's public key (from the topology): the
    handshake fails with any other gateway.
    """

    log = Logger()

    def __init__(self, reactor, address, keys, gateway_key,
                 initial_backoff=0.1, maximum_backoff=30.0, *, endpoint=None,
                 retry_policy=None, handshake_timeout=HANDSHAKE_TIMEOUT, rng=None):
        if gateway_key is None or len(gateway_key) != 32:
            raise ValueError("a gateway link needs the gateway's 32-byte public key")
        self.reactor = reactor
        self.address = address
        self.keys = keys
        self.gateway_key = bytes(gateway_key)
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
        self._acks = collections.deque()   # _Acks not yet all carried by a pull
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
        outer = self._new_protocol()
        proto = outer.link
        gate = self._gate = _Gate(outer)
        try:
            await endpoint.connect(_QuietFactory(gate))
        except CancelledError:
            raise
        except Exception as e:
            self._failed(GatewayLinkError(f"cannot connect to gateway {self.address}: {e}"))
            raise self.last_error
        handshake = Deferred.fromCoroutine(self._authenticate(outer))
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

    # What the link uses of a connection: the channel protocol (outer),
    # whose .link is the PrivateLink: pull(acks, take), register(), closed
    # (fired on connectionLost before the requests fail), error, _lost.
    def _new_protocol(self):
        return ClientChannel(self.keys, self.gateway_key, self.reactor,
                             PrivateLink(self.address),
                             handshake_timeout=self.handshake_timeout or 10.0)

    async def _authenticate(self, outer):
        link = await outer.established
        # On every connection: a key already registered is only touched
        # (its registration does not expire); one whose registration
        # expired, or a client initialised against an old gateway, is
        # registered again, inside the channel.
        await link.register()

    def _failed(self, error):
        self.last_error = error

    def _ready(self, proto):
        if self.state is not LinkState.CONNECTING or proto._lost:
            return
        self._to(LinkState.READY)
        self._protocol = proto
        self.last_error = None
        self.log.info("private link to gateway {address} up", address=str(self.address))
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
        acks, self._acks = self._acks, collections.deque()
        for entry in acks:
            if not entry.done.called:
                entry.done.errback(GatewayLinkError(
                    "the gateway link was stopped before these acks were carried"))
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

    def pull(self, limit=P.PULL_SIZE):
        """One pull: the oldest stored messages not yet sent on this
        connection, as (id, message), at most PULL_SIZE (none if *limit* is
        0: a pull that only acknowledges, the same size on the wire). It
        carries up to PULL_SIZE ids of earlier ack() calls."""
        if self._protocol is None:
            return self._not_connected()
        entry, ids = self._carry()
        d = self._protocol.pull(ids, take=limit > 0)

        def answered(reply):
            if entry is not None:
                entry.in_flight -= 1
                entry.deleted += reply.acked
                self._settle(entry)
            return list(reply.messages)

        def failed(failure):
            if entry is not None:
                entry.in_flight -= 1
                # not carried after all: the ids go back, for the next connection
                entry.ids.extendleft(reversed(ids))
                if entry not in self._acks:
                    self._acks.appendleft(entry)
            return failure
        return d.addCallbacks(answered, failed)

    def _carry(self):
        # One ack() call per pull: the answer's acked count is then that
        # call's alone. The core acks what one pull brought, at most
        # PULL_SIZE ids, so a pull carries every id it has to.
        while self._acks:
            entry = self._acks[0]
            if entry.ids:
                ids = [entry.ids.popleft() for _ in range(min(P.PULL_SIZE, len(entry.ids)))]
                if not entry.ids:
                    self._acks.popleft()
                entry.in_flight += 1
                return entry, ids
            self._acks.popleft()
        return None, []

    def _settle(self, entry):
        if not entry.ids and entry.in_flight == 0 and not entry.done.called:
            entry.done.callback(entry.deleted)

    def ack(self, ids):
        """Delete the messages *ids* at the gateway: they ride on the next
        pulls. Fires with how many were deleted once every id was carried
        (never before the next pull: do not wait for it to pull again)."""
        ids = [int(i) for i in ids]
        if not ids:
            return succeed(0)
        if self._protocol is None:
            return self._not_connected()
        entry = _Acks(ids)
        self._acks.append(entry)
        return entry.done
