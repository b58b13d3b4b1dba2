"""The directory as a service: its web site on one listening endpoint.

Like ``strports.service`` it binds in ``privilegedStartService``, so that
twistd fails at start-up when the port is taken; unlike it, a failure to
listen is kept and reported through ``whenListening()``, which is how
``nymtx.runner.run_service`` turns it into one line and exit code 1.
"""

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory

from nymtx.wire import connection_budget, raise_fd_limit


#: HTTP connections open at once; past it an accepted socket is closed at once.
MAX_CONNECTIONS = 1024


class _Tracking(WrappingFactory):
    """Knows every open connection, so that stopping can close them all.

    It also bounds them (``max_connections``): without a bound, idle or
    slow connections (twisted.web closes a connection only after 60 s
    without a byte) could use up the process's file descriptors.
    """

    log = Logger()

    def __init__(self, wrapped, max_connections=MAX_CONNECTIONS):
        super().__init__(wrapped)
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self.max_connections = max_connections
        self.refused = 0
        self._full = False
        self._closed = {}

    def buildProtocol(self, addr):
        if len(self.protocols) >= self.max_connections:
            self.refused += 1
            if not self._full:
                self._full = True
                self.log.warn("the directory has {n} connections, its maximum: refusing"
                              " new ones until some close", n=self.max_connections)
            # Twisted closes the accepted socket at once
            return None
        self._full = False
        return super().buildProtocol(addr)

    def unregisterProtocol(self, p):
        super().unregisterProtocol(p)
        for d in self._closed.pop(p, []):
            d.callback(None)

    def close_all(self):
        """Deferred firing once every connection open now is closed."""
        waits = []
        for p in list(self.protocols):
            d = Deferred()
            self._closed.setdefault(p, []).append(d)
            waits.append(d)
            p.transport.loseConnection()
        return DeferredList(waits)


class ListenError(Exception):
    """The directory could not listen on its endpoint; the message says where and why."""


class DirectoryService(Service):
    """Serve *site* on *endpoint* (described by *description* in messages).

    ``registry`` is the directory's state, for whoever embeds the service.
    """

    log = Logger()

    def __init__(self, endpoint, site, description, registry=None, *,
                 max_connections=MAX_CONNECTIONS, fd_limit=raise_fd_limit):
        self.endpoint = endpoint
        self.site = site
        self._factory = _Tracking(site, max_connections)
        self._fd_limit = fd_limit
        self.description = description
        self.registry = registry
        self.port = None
        self._failure = None
        self._listening = None
        self._waiters = []

    def privilegedStartService(self):
        super().privilegedStartService()
        self._listen()
        if self._failure is not None:
            self._failure.raiseException()

    def startService(self):
        super().startService()
        if self._listening is None:
            self._listen()

    def whenListening(self):
        """Deferred firing with the listening port, or failing with ListenError."""
        if self.port is not None:
            return succeed(self.port)
        if self._failure is not None:
            return fail(self._failure)
        d = Deferred()
        self._waiters.append(d)
        return d

    def stopService(self):
        """Stop listening and close every open connection (persistent HTTP
        connections would otherwise outlive the service by a minute)."""
        super().stopService()
        port, self.port = self.port, None
        self._listening = None
        self._failure = None
        if port is None:
            return self._factory.close_all()
        self.log.info("directory stops listening on {address}", address=port.getHost())
        d = port.stopListening()
        d.addCallback(lambda _: self._factory.close_all())
        return d

    def _listen(self):
        self._failure = None
        limit = self._fd_limit()
        budget = connection_budget(self._factory.max_connections, 0, limit)
        if budget < self._factory.max_connections:
            self.log.warn(
                "the open-files limit is {limit}: accepting {budget} connections, not the"
                " configured {wanted} (raise the limit with ulimit -n or LimitNOFILE=)",
                limit=limit, budget=budget, wanted=self._factory.max_connections)
            self._factory.max_connections = budget
        self._listening = self.endpoint.listen(self._factory)
        self._listening.addCallbacks(self._listened, self._not_listened)

    def _listened(self, port):
        self.port = port
        self.log.info("directory listening on {address}", address=port.getHost())
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(port)

    def _not_listened(self, failure):
        error = failure.value
        if isinstance(error, CannotListenError) and error.socketError is not None:
            why = getattr(error.socketError, "strerror", None) or str(error.socketError)
        else:
            why = failure.getErrorMessage() or failure.type.__name__
        try:
            raise ListenError(f"the directory cannot listen on {self.description}: {why}")
        except ListenError:
            from twisted.python.failure import Failure
            self._failure = Failure()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(self._failure)
