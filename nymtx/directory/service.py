"""The directory as a service: its web site on one listening endpoint.

A :class:`nymtx.listening.ListeningService` around the site, so it binds in
``privilegedStartService`` (twistd fails at start-up when the port is
taken) and reports a failure to listen through ``whenListening()``, which
is how ``nymtx.runner.run_service`` turns it into one line and exit code 1.

Every node and client depends on the directory, so its connections are
bounded harder than twisted.web does alone: at most ``max_connections``;
the request line and headers of each request within ``header_timeout``
seconds (twisted.web's own timeout restarts on every byte, so a peer
dribbling a byte a minute held a connection for ever, and 1,024 of them
made the directory unreachable); and ``byte_budget`` bytes per request.
"""

from twisted.logger import Logger

from nymtx.listening import ConnectionLimit, HeaderDeadlineChannel, ListenError, \
    ListeningService, raise_fd_limit

__all__ = ["DirectoryService", "ListenError", "MAX_CONNECTIONS", "HEADER_TIMEOUT",
           "IDLE_TIMEOUT", "BYTE_BUDGET"]

#: HTTP connections open at once; past it an accepted socket is closed at once.
MAX_CONNECTIONS = 1024
#: Seconds from a connection (or the end of its previous answer) to the end
#: of its request's headers. Above the clients' 10 s topology refresh, so
#: that a kept-alive connection is reused, not aborted under their next
#: request; a connection that idles longer is closed and its pool dials again.
HEADER_TIMEOUT = 15.0
#: Seconds without a byte while a request's body arrives or its answer is made.
IDLE_TIMEOUT = 60.0
#: Bytes one request may take: headers (twisted.web: 16 KiB) and the largest
#: body the directory reads (1 MiB, answered 413 beyond), with room to spare.
BYTE_BUDGET = 2 << 20


class DirectoryService(ListeningService):
    """Serve *site* on *endpoint* (described by *description* in messages).

    ``registry`` is the directory's state, for whoever embeds the service.
    *clock* runs the deadlines (default: the global reactor).
    """

    log = Logger()

    def __init__(self, endpoint, site, description, registry=None, *,
                 max_connections=MAX_CONNECTIONS, fd_limit=raise_fd_limit,
                 header_timeout=HEADER_TIMEOUT, idle_timeout=IDLE_TIMEOUT,
                 byte_budget=BYTE_BUDGET, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.site = site
        # the channel tells the limit when each request's headers are complete
        site.protocol = HeaderDeadlineChannel
        self._factory = ConnectionLimit(site, clock, max_connections,
                                        handshake_timeout=header_timeout,
                                        idle_timeout=idle_timeout, byte_budget=byte_budget,
                                        name="the directory")
        super().__init__(endpoint, self._factory, "the directory", description=description,
                         fd_limit=fd_limit)
        self.registry = registry
