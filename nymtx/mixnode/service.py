"""A whole mixnode as one Twisted service, built from values, not files.

The tap and the CLI build it from config.toml; the local network and the
tests build it directly. It listens, mixes, and (given a directory) says
it is alive every ``presence_interval`` and reports its counters every
``metrics_interval``.
"""

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

import nymtx
from nymtx.addressing import NodeAddress
from nymtx.links import PacketLinks
from nymtx.mixnode.node import IDLE_TIMEOUT, MAX_CONNECTIONS, Mixnode, MixnodeFactory
from nymtx.sphinx import ReplayCache
from nymtx.wire import connection_budget, raise_fd_limit

DEFAULT_PORT = 1789


class MixnodeError(Exception):
    """The mixnode cannot start; the message says why."""


class MixnodeService(MultiService):
    """Listens on *listen_endpoint* and mixes with *keys*.

    ``whenListening()`` fires with the IListeningPort once bound (or fails
    with MixnodeError, e.g. when the port is in use); ``port`` holds it.
    The announced address is ``announce_host:announce_port``, the port
    defaulting to the bound one. With neither *directory_url* nor
    *directory* (a DirectoryClient or a fake of one) it announces nothing.
    """

    log = Logger()

    def __init__(self, reactor, keys, layer, listen_endpoint, announce_host,
                 directory_url=None, *, announce_port=None, directory=None,
                 presence_interval=1.5, metrics_interval=1.0,
                 replay_cache_size=1 << 20, max_in_flight=32768, max_delay=300.0,
                 queue_size=1024, initial_backoff=0.1, maximum_backoff=30.0,
                 max_connections=MAX_CONNECTIONS, idle_timeout=IDLE_TIMEOUT,
                 location="unknown", version=None, fd_limit=raise_fd_limit):
        super().__init__()
        self.reactor = reactor
        self.keys = keys
        self.layer = layer
        self.listen_endpoint = listen_endpoint
        self.announce_host = announce_host
        self.announce_port = announce_port
        self.location = location
        self.version = version or nymtx.__version__
        self.presence_interval = presence_interval
        self.metrics_interval = metrics_interval
        self._owns_directory = directory is None and bool(directory_url)
        if self._owns_directory:
            from nymtx.directory.client import DirectoryClient
            directory = DirectoryClient(directory_url, reactor=reactor)
        self.directory = directory
        self.links = PacketLinks(reactor, queue_size=queue_size,
                                 initial_backoff=initial_backoff,
                                 maximum_backoff=maximum_backoff)
        self.node = Mixnode(reactor, keys.private_key, self.links,
                            ReplayCache(replay_cache_size),
                            max_in_flight=max_in_flight, max_delay=max_delay)
        self.factory = MixnodeFactory(self.node, max_connections, idle_timeout)
        self._fd_limit = fd_limit
        self.port = None
        self.announce_address = None
        self._listening = None
        self._waiters = []

    def whenListening(self):
        if self.port is not None:
            return succeed(self.port)
        if isinstance(self._listening, BaseException):
            return fail(self._listening)
        d = Deferred()
        self._waiters.append(d)
        return d

    def privilegedStartService(self):
        # twistd calls this before startService. Binding here makes a port in
        # use stop twistd at start-up with the reason (as nym-directory does)
        # instead of leaving a node that runs without a listener.
        self._bind()
        if isinstance(self._listening, BaseException):
            raise self._listening

    def startService(self):
        # Children (the heartbeats) start once the port is known, not here.
        self.running = 1
        self.node.start()
        if self._listening is None:
            self._bind()
        elif self.port is not None:
            self._start_heartbeats()

    def _bind(self):
        self._listening = True
        limit = self._fd_limit()
        # every next hop is a descriptor too: the listener must leave room
        # for them, or a flood of incoming connections stops the forwarding
        budget = connection_budget(self.factory.max_connections, self.links.max_peers, limit)
        if budget < self.factory.max_connections:
            self.log.warn(
                "the open-files limit is {limit}: accepting {budget} connections, not"
                " the configured {wanted} (raise it with ulimit -n or LimitNOFILE=)",
                limit=limit, budget=budget, wanted=self.factory.max_connections)
            self.factory.max_connections = budget
        try:
            endpoint = serverFromString(self.reactor, self.listen_endpoint)
        except (ValueError, TypeError, KeyError) as e:
            self._listened(MixnodeError(
                f"listening endpoint {self.listen_endpoint!r} is not valid: {e}"))
            return
        d = endpoint.listen(self.factory)
        d.addCallbacks(self._listened, lambda f: self._listened(MixnodeError(
            f"could not listen on {self.listen_endpoint!r}: {f.getErrorMessage()}")))

    def _listened(self, result):
        waiters, self._waiters = self._waiters, []
        if isinstance(result, BaseException):
            self._listening = result
            self.log.critical("{why}", why=str(result))
            for d in waiters:
                d.errback(result)
            return
        if self._listening is None:
            # Stopped while binding: give the port straight back.
            result.stopListening()
            return
        self.port = result
        bound = result.getHost().port
        self.announce_address = NodeAddress.parse(
            _join(self.announce_host, self.announce_port or bound))
        self.log.info(
            "mixnode layer {layer} listening on {port}, announced as {address},"
            " key {key}", layer=self.layer, port=bound,
            address=str(self.announce_address), key=self.keys.public_text)
        if self.running:
            self._start_heartbeats()
        for d in waiters:
            d.callback(result)

    def _start_heartbeats(self):
        if self.directory is None:
            return
        if not list(self):
            from nymtx.heartbeat import Heartbeat
            Heartbeat(self.reactor, self.presence_interval, self.announce,
                      "presence announcement").setServiceParent(self)
            Heartbeat(self.reactor, self.metrics_interval, self.report_metrics,
                      "metrics report").setServiceParent(self)
        for heartbeat in self:  # a restart after stopService
            if not heartbeat.running:
                heartbeat.startService()

    def presence(self):
        return {"host": str(self.announce_address), "pubKey": self.keys.public_text,
                "layer": self.layer, "version": self.version,
                "location": self.location}

    def announce(self):
        return self.directory.announce_mixnode(self.presence())

    def report_metrics(self):
        metrics = self.node.take_metrics()
        d = self.directory.report_metrics(dict(metrics, pubKey=self.keys.public_text))

        def not_reported(failure):
            # the directory being down must not lose the counts of that time
            self.node.return_metrics(metrics)
            return failure
        return d.addErrback(not_reported)

    def stopService(self):
        """Stops announcing, listening and mixing; fires once every socket is closed."""
        stopped = [super().stopService()]
        self._listening = None
        if self.port is not None:
            stopped.append(maybeDeferred(self.port.stopListening))
            self.port = None
        stopped.append(self.factory.close_all())
        dropped = self.node.stop()
        if dropped:
            self.log.info("stopped with {n} packets still held; they are dropped", n=dropped)
        stopped.append(self.links.stop())
        if self._owns_directory:
            # after the heartbeats stopped (super() above): no request is in flight
            stopped.append(self.directory.close())
        return DeferredList(stopped).addCallback(lambda _: None)


def _join(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
