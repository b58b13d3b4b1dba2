"""A whole mixnode as one Twisted service, built from values, not files.

The tap and the CLI build it from config.toml; the local network and the
tests build it directly. It listens, mixes, and (given a directory) says
it is alive every ``presence_interval`` and reports its counters every
``metrics_interval``.
"""

from twisted.application.service import MultiService
from twisted.internet.defer import DeferredList
from twisted.logger import Logger

import nymtx
from nymtx.addressing import NodeAddress
from nymtx.links import PacketLinks
from nymtx.listening import ListenError, ListeningService, raise_fd_limit
from nymtx.mixnode.node import IDLE_TIMEOUT, MAX_CONNECTIONS, Mixnode, listener_factory
from nymtx.sphinx import ReplayCache

DEFAULT_PORT = 1789


class MixnodeError(ListenError):
    """The mixnode cannot start; the message says why."""


class MixnodeService(MultiService):
    """Listens on *listen_endpoint* and mixes with *keys*.

    ``whenListening()`` fires with the IListeningPort once bound (or fails
    with MixnodeError, e.g. when the port is in use); ``port`` holds it.
    With *workers* >= 2 the Sphinx unwrap runs in that many worker
    processes (nymtx.mixnode.workers). The announced address is
    ``announce_host:announce_port``, the port
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
                 location="unknown", version=None, fd_limit=raise_fd_limit, workers=1,
                 spawn_worker=None):
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
                            max_in_flight=max_in_flight, max_delay=max_delay,
                            workers=workers, spawn=spawn_worker)
        self.factory = listener_factory(self.node, max_connections, idle_timeout)
        # every next hop is a descriptor too: the listener must leave room
        # for them, or a flood of incoming connections stops the forwarding
        self.listener = ListeningService(
            listen_endpoint, self.factory, "mixnode packet listener", reactor=reactor,
            reserved=lambda: self.links.max_peers, fd_limit=fd_limit, error=MixnodeError)
        self.announce_address = None

    @property
    def port(self):
        """The IListeningPort once bound, else None."""
        return self.listener.port

    def whenListening(self):
        return self.listener.whenListening().addCallback(self._listened)

    def privilegedStartService(self):
        # twistd calls this before startService. Binding here makes a port in
        # use stop twistd at start-up with the reason (as nym-directory does)
        # instead of leaving a node that runs without a listener.
        self.listener.privilegedStartService()

    def startService(self):
        # Children (the heartbeats) start once the port is known, not here.
        self.running = 1
        self.node.start()
        if not self.listener.running:
            self.listener.startService()
        self.whenListening().addCallbacks(self._start_heartbeats, lambda _: None)

    def _listened(self, port):
        if self.announce_address is None:
            bound = port.getHost().port
            self.announce_address = NodeAddress.parse(
                _join(self.announce_host, self.announce_port or bound))
            self.log.info(
                "mixnode layer {layer} listening on {port}, announced as {address},"
                " key {key}", layer=self.layer, port=bound,
                address=str(self.announce_address), key=self.keys.public_text)
        return port

    def _start_heartbeats(self, _=None):
        if self.directory is None or not self.running:
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
        stopped = [super().stopService(), self.listener.stopService()]
        self.announce_address = None
        dropped = self.node.stop()
        if dropped:
            self.log.info("stopped with {n} packets still held; they are dropped", n=dropped)
        stopped.append(self.node.stop_workers())
        stopped.append(self.links.stop())
        if self._owns_directory:
            # after the heartbeats stopped (super() above): no request is in flight
            stopped.append(self.directory.close())
        return DeferredList(stopped).addCallback(lambda _: None)


def _join(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
