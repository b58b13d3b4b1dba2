"""The one listening lifecycle of every nymtx listener.

The directory, the mixnode, both gateway ports and the client API all
listen the same way, with two pieces:

- :class:`ConnectionLimit` wraps a listener's protocol factory and bounds
  its peers: a number of connections at once (past it an accepted socket is
  closed at once), a handshake deadline (a new connection must finish its
  handshake within so many seconds, however it dribbles its bytes), an idle
  timeout after the handshake, and optionally a byte budget per request.
  Every timer runs on the injected clock. The wrapped protocol says when
  its handshake is done, and (if it judges activity itself) when it made
  progress, through :func:`handshake_done`, :func:`await_handshake` and
  :func:`activity`, which do nothing on a transport that is not limited.
- :class:`ListeningService` binds an endpoint in ``privilegedStartService``
  (so that a port in use stops twistd at start-up), fits the connection
  limit to the open-files limit, reports the port or a :class:`ListenError`
  naming the listener through ``whenListening()``, and on stop closes the
  port and every connection.
"""

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer, \
    IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web import http
from zope.interface import Attribute, Interface, implementer

from nymtx.observer import OneShot

#: Bytes handed to a wrapped protocol at a time under backpressure.
FEED_SLICE = 2048

#: File descriptors a node keeps for itself besides its listeners' connections
#: (outgoing links, the database, log files, the directory client).
FD_RESERVE = 64


def raise_fd_limit(resource_module=None):
    """Raise the soft limit on open files to the hard one; returns the soft limit.

    The usual soft limit (1024) is far below what a busy node needs, and the
    hard limit is what the operator allowed; a process may raise its own.
    """
    if resource_module is None:
        import resource as resource_module
    soft, hard = resource_module.getrlimit(resource_module.RLIMIT_NOFILE)
    if hard == resource_module.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource_module.RLIM_INFINITY else hard
        try:
            resource_module.setrlimit(resource_module.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_budget(wanted, reserved, fd_limit):
    """How many connections a listener may take with *fd_limit* descriptors.

    *reserved* are the descriptors the node needs for everything else. A
    listener never gets less than half the limit, so a node configured with
    more peers than descriptors still accepts connections.
    """
    return max(1, min(wanted, max(fd_limit - reserved - FD_RESERVE, fd_limit // 2)))


class ListenError(RuntimeError):
    """A listener could not listen; the message names it, the endpoint and why."""


class ILimitedTransport(Interface):
    """The transport a :class:`ConnectionLimit` gives its wrapped protocols."""

    handshaking = Attribute("True until handshakeDone(), and again after awaitHandshake()")

    def handshakeDone():
        """The handshake is complete: the idle timeout applies from now."""

    def awaitHandshake():
        """A new handshake starts (e.g. the next HTTP request): deadline and budget again."""

    def activity():
        """The peer made progress: restart the idle timeout."""


def handshake_done(transport):
    limited = ILimitedTransport(transport, None)
    if limited is not None:
        limited.handshakeDone()


def await_handshake(transport):
    limited = ILimitedTransport(transport, None)
    if limited is not None:
        limited.awaitHandshake()


def activity(transport):
    limited = ILimitedTransport(transport, None)
    if limited is not None:
        limited.activity()


@implementer(IPushProducer)
class _WriteBuffer:
    """Registered with the real transport for a ``backpressure`` limit: it
    says when the transport's send buffer is full and when it drained."""

    def __init__(self, connection):
        self.connection = connection

    def pauseProducing(self):
        self.connection._write_buffer_full(True)

    def resumeProducing(self):
        self.connection._write_buffer_full(False)

    def stopProducing(self):
        downstream = self.connection._downstream
        if downstream is not None:
            downstream.stopProducing()


@implementer(ILimitedTransport, IHalfCloseableProtocol)
class _Limited(ProtocolWrapper):
    """One connection of a :class:`ConnectionLimit`."""

    log = Logger()

    def __init__(self, factory, wrapped):
        super().__init__(factory, wrapped)
        self._timer = None
        self._received = 0
        self.handshaking = factory.handshake_timeout is not None
        self._closed = Deferred()
        # backpressure: the wrapped protocol's producer, and why reading is paused
        self._downstream = None
        self._wrapped_paused = self._buffer_full = self._reading_paused = False
        self._unfed = bytearray()
        self._feeding = self._read_closed_pending = False

    # -- backpressure (factory.backpressure) ---------------------------

    def registerProducer(self, producer, streaming):
        if not self.factory.backpressure:
            return self.transport.registerProducer(producer, streaming)
        self._downstream = producer

    def unregisterProducer(self):
        if not self.factory.backpressure:
            return self.transport.unregisterProducer()
        self._downstream = None

    def pauseProducing(self):
        """The wrapped protocol stops reading (it is its transport)."""
        if not self.factory.backpressure:
            return self.transport.pauseProducing()
        self._wrapped_paused = True
        self._update_reading()

    def resumeProducing(self):
        if not self.factory.backpressure:
            return self.transport.resumeProducing()
        self._wrapped_paused = False
        self._update_reading()

    def _write_buffer_full(self, full):
        self._buffer_full = full
        self._update_reading()
        if not full:
            self._feed()
        downstream = self._downstream
        if downstream is not None:
            if full:
                downstream.pauseProducing()
            else:
                downstream.resumeProducing()

    def _update_reading(self):
        # reading stops while the peer leaves its answers unread, whatever
        # the wrapped protocol does (autobahn, once upgraded, never pauses)
        paused = self._wrapped_paused or self._buffer_full
        if paused != self._reading_paused and self.transport is not None:
            self._reading_paused = paused
            if paused:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()
        if not paused:
            self._feed()

    def _feed(self):
        # What one read brought goes to the wrapped protocol a slice at a
        # time, and waits here once the send buffer is full: a protocol that
        # answers every request of a chunk at once would otherwise answer
        # thousands of them into the buffer.
        # Not re-entered (a resumeProducing from inside dataReceived, as
        # autobahn's upgrade does): the next slice must go to the protocol
        # in charge once this one has been handled.
        if self._feeding:
            return
        unfed = self._unfed
        self._feeding = True
        try:
            while unfed and not (self._buffer_full or self._wrapped_paused):
                if self.wrappedProtocol is None or self.transport.disconnecting:
                    unfed.clear()
                    return
                chunk = bytes(unfed[:FEED_SLICE])
                del unfed[:FEED_SLICE]
                self.wrappedProtocol.dataReceived(chunk)
        finally:
            self._feeding = False
        if not unfed and self._read_closed_pending:
            self._read_closed_pending = False
            self.readConnectionLost()

    # -- the timers ---------------------------------------------------

    def _arm(self, seconds, why):
        self._disarm()
        if seconds is not None:
            self._timer = self.factory.clock.callLater(seconds, self._expire, why)

    def _disarm(self):
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _expire(self, why):
        self._timer = None
        self.log.debug("{name}: closing a connection from {peer}: {why}",
                       name=self.factory.name, peer=str(self.getPeer()), why=why)
        self.factory.timed_out += 1
        # aborted, not closed: a peer that stalls may also never read, and
        # a graceful close would wait on it for ever
        self.transport.abortConnection()

    def _start_handshake(self):
        self.handshaking = self.factory.handshake_timeout is not None
        self._received = 0
        if self.handshaking:
            self._arm(self.factory.handshake_timeout, "no handshake in time")
        else:
            self._arm(self.factory.idle_timeout, "idle")

    # -- ILimitedTransport -------------------------------------------

    def handshakeDone(self):
        if self.handshaking:
            self.handshaking = False
            self._arm(self.factory.idle_timeout, "idle")

    def awaitHandshake(self):
        if self.transport is not None:
            self._start_handshake()

    def activity(self):
        if not self.handshaking and self._timer is not None:
            self._timer.reset(self.factory.idle_timeout)

    # -- the transport side -------------------------------------------

    @property
    def disconnecting(self):
        return self.transport is None or bool(self.transport.disconnecting)

    def loseConnection(self):
        self.transport.loseConnection()

    # -- the protocol side --------------------------------------------

    def makeConnection(self, transport):
        self._start_handshake()
        if self.factory.backpressure:
            transport.registerProducer(_WriteBuffer(self), True)
        super().makeConnection(transport)

    def dataReceived(self, data):
        budget = self.factory.byte_budget
        if budget is not None:
            self._received += len(data)
            if self._received > budget:
                self._disarm()
                self._expire(f"more than {budget} bytes for one request")
                return
        if not self.handshaking and not getattr(
                self.wrappedProtocol, "reports_activity", False):
            self.activity()
        if self.factory.backpressure:
            self._unfed += data
            self._feed()
        else:
            self.wrappedProtocol.dataReceived(data)

    def readConnectionLost(self):
        if self._unfed:
            self._read_closed_pending = True
            return
        # The peer half-closed: a protocol that can answer still does; for
        # any other the write side is closed once what it wrote is sent
        # (Twisted would otherwise drop the unsent answers).
        half = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if half is not None:
            half.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self):
        half = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if half is not None:
            half.writeConnectionLost()

    def connectionLost(self, reason):
        self._disarm()
        self._unfed.clear()
        self._downstream = None
        super().connectionLost(reason)
        self._closed.callback(None)


class ConnectionLimit(WrappingFactory):
    """Wraps *wrapped* (a protocol factory) with a listener's bounds.

    ``max_connections`` at once (past it ``buildProtocol`` returns None and
    Twisted closes the accepted socket straight away, so the descriptor is
    free again before the next accept; the bound is logged once each time
    it is reached, not per refused peer). ``handshake_timeout`` seconds from
    the connection (or from ``await_handshake``) to ``handshake_done``,
    absolute: bytes dribbled in do not extend it. ``idle_timeout`` seconds
    without a byte after the handshake (without an ``activity()`` call, for
    a wrapped protocol whose ``reports_activity`` is true). ``byte_budget``
    bytes at most from one handshake to the next. None disables each.

    With ``backpressure`` the wrapper is the transport's streaming producer:
    while the peer leaves the send buffer full it stops reading from it
    (and tells the producer the wrapped protocol registered, if any), so a
    peer that sends requests without reading its answers cannot grow the
    process's memory, even when the wrapped protocol never pauses itself.
    """

    protocol = _Limited
    noisy = False
    log = Logger()

    def __init__(self, wrapped, clock, max_connections, *, idle_timeout=None,
                 handshake_timeout=None, byte_budget=None, backpressure=False,
                 name="listener"):
        super().__init__(wrapped)
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        for what, value in (("idle_timeout", idle_timeout),
                            ("handshake_timeout", handshake_timeout),
                            ("byte_budget", byte_budget)):
            if value is not None and not value > 0:
                raise ValueError(f"{what} must be positive, not {value}")
        self.clock = clock
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.byte_budget = byte_budget
        self.backpressure = backpressure
        self.name = name
        #: connections closed at once because the listener was full
        self.refused = 0
        #: connections cut by a deadline, a timeout or the byte budget
        self.timed_out = 0
        self._full = False

    @property
    def connections(self):
        """The open connections (their wrappers)."""
        return self.protocols.keys()

    def buildProtocol(self, addr):
        if len(self.protocols) >= self.max_connections:
            self.refused += 1
            if not self._full:
                self._full = True
                self.log.warn("{name} has {n} connections, its maximum: refusing new ones"
                              " until some close", name=self.name, n=self.max_connections)
            return None
        self._full = False
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)

    def close_all(self, abort=False):
        """Close every open connection; fires once all are closed."""
        waits = []
        for p in list(self.protocols):
            waits.append(p._closed)
            if abort:
                p.transport.abortConnection()
            else:
                p.transport.loseConnection()
        return DeferredList(waits).addCallback(lambda _: None)


class HeaderDeadlineChannel(http.HTTPChannel):
    """An HTTP channel that tells its ConnectionLimit when headers are complete.

    With a handshake deadline on the limit, the request line and headers of
    every request (the first, and each next one on a persistent connection)
    must arrive within it: twisted.web's own timeout restarts on every
    byte, so a peer that sends one byte a minute would hold the connection
    for ever.
    """

    def allHeadersReceived(self):
        handshake_done(self.transport)
        super().allHeadersReceived()

    def requestDone(self, request):
        # before the buffered next request is parsed, which may finish its headers
        if self.persistent:
            await_handshake(self.transport)
        super().requestDone(request)


class ListeningService(Service):
    """Listens on *endpoint* with *factory*; *name* says which listener in messages.

    *endpoint* is an endpoint string (parsed with *reactor* when binding) or
    an IStreamServerEndpoint (then *description* names it). If *factory*
    has ``max_connections`` (a :class:`ConnectionLimit`), it is lowered to
    what the open-files limit (``fd_limit()``) can hold besides *reserved*
    descriptors (an int, or a callable giving one when binding).
    ``error`` is the ListenError subclass raised and failed with. Stopping
    closes every connection of a ConnectionLimit factory (aborts them, with
    *abort*: a peer that never reads would otherwise hold the stop).
    """

    log = Logger()

    def __init__(self, endpoint, factory, name, *, reactor=None, description=None,
                 reserved=0, fd_limit=raise_fd_limit, error=ListenError, abort=False):
        if isinstance(endpoint, str):
            description = endpoint if description is None else description
        elif not IStreamServerEndpoint.providedBy(endpoint):
            raise TypeError(f"{name}: {endpoint!r} is neither an endpoint string nor an"
                            " IStreamServerEndpoint")
        self.endpoint = endpoint
        self.factory = factory
        self.name = name
        self.description = description or repr(endpoint)
        self.reactor = reactor
        self.reserved = reserved
        self._fd_limit = fd_limit
        self._error = error
        self.abort = abort
        self.port = None
        self._outcome = None
        self._binding = None
        self._failure = None

    def privilegedStartService(self):
        super().privilegedStartService()
        if self._binding is None:
            self._bind()
        if self._outcome.fired and self.port is None:
            # twistd calls this before startService: raising stops it at
            # start-up with the reason, instead of a node with no listener
            self._failure.raiseException()

    def startService(self):
        super().startService()
        if self._binding is None:
            self._bind()

    def whenListening(self):
        """Deferred firing with the IListeningPort, or failing with ListenError."""
        if self._outcome is None:
            self._outcome = OneShot()
        return self._outcome.when_fired()

    def stopService(self):
        """Stop listening and close every connection; fires once all are closed."""
        super().stopService()
        port, self.port = self.port, None
        self._binding = None
        self._outcome = None
        stopped = []
        if port is not None:
            self.log.info("{name} stops listening on {address}", name=self.name,
                          address=str(port.getHost()))
            stopped.append(maybeDeferred(port.stopListening))
        if isinstance(self.factory, ConnectionLimit):
            stopped.append(self.factory.close_all(abort=self.abort))
        return DeferredList(stopped).addCallback(lambda _: None)

    # -- binding ------------------------------------------------------

    def _fit_fd_limit(self):
        wanted = getattr(self.factory, "max_connections", None)
        if wanted is None:
            return
        limit = self._fd_limit()
        reserved = self.reserved() if callable(self.reserved) else self.reserved
        budget = connection_budget(wanted, reserved, limit)
        if budget < wanted:
            self.log.warn(
                "the open-files limit is {limit}: the {name} accepts {budget} connections,"
                " not the configured {wanted} (raise the limit with ulimit -n or"
                " LimitNOFILE=)", limit=limit, name=self.name, budget=budget, wanted=wanted)
            self.factory.max_connections = budget

    def _bind(self):
        if self._outcome is None or self._outcome.fired:
            self._outcome = OneShot()
        self._failure = None
        endpoint = self.endpoint
        if isinstance(endpoint, str):
            reactor = self.reactor
            if reactor is None:
                from twisted.internet import reactor
            try:
                endpoint = serverFromString(reactor, endpoint)
            except (ValueError, TypeError, KeyError) as e:
                self._failed(Failure(self._error(
                    f"{self.name}: listening endpoint {self.description!r} is not valid"
                    f" (e.g. tcp:1789:interface=127.0.0.1): {e}")))
                return
        self._fit_fd_limit()
        binding = self._binding = object()
        try:
            d = endpoint.listen(self.factory)
        except Exception:
            d = fail()
        d.addCallbacks(self._listened, self._not_listened, (binding,), None, (binding,))

    def _listened(self, port, binding):
        if binding is not self._binding:
            # stopped while binding: give the port straight back
            return port.stopListening()
        self.port = port
        self.log.info("{name} listening on {address}", name=self.name,
                      address=str(port.getHost()))
        self._outcome.fire(port)

    def _not_listened(self, failure, binding):
        if binding is not self._binding:
            return None
        error = failure.value
        if isinstance(error, CannotListenError) and error.socketError is not None:
            why = getattr(error.socketError, "strerror", None) or str(error.socketError)
        else:
            why = failure.getErrorMessage() or failure.type.__name__
        self._failed(Failure(self._error(
            f"{self.name} cannot listen on {self.description}: {why}")))

    def _failed(self, failure):
        self._failure = failure
        self.log.critical("{why}", why=failure.getErrorMessage())
        self._outcome.fire(failure)


def bound_port(service):
    """The port number *service* (a ListeningService) is bound to, or None."""
    port = service.port
    return None if port is None else port.getHost().port


__all__ = ["ConnectionLimit", "HeaderDeadlineChannel", "ILimitedTransport", "ListenError",
           "ListeningService", "activity", "await_handshake", "bound_port",
           "connection_budget", "handshake_done", "raise_fd_limit"]
