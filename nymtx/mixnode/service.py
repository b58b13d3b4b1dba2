"""A whole mixnode as one Twisted service, assembled from parts built on their own.

- :class:`MixnodeParts` holds a mixnode's in-memory parts: its outgoing mix
  links (an IPacketLinks), the packet path (:class:`nymtx.mixnode.node.Mixnode`,
  with its replay cache and, with ``workers`` >= 2, its worker processes)
  and the packet listener (a ListeningService around the node's
  ConnectionLimit factory). :func:`build_parts` builds them from values;
  each can be given instead (``links=``, ``replay_cache=``), so that what
  the trust layer adds (authenticated mix links, key rotation, the replay
  log kept across restarts) replaces one part without touching the others.
- :class:`MixnodeServer` runs given parts: it binds in
  ``privilegedStartService``, starts and stops the node, and once bound
  announces its presence and reports its counters to a directory. It opens
  nothing and builds none of its collaborators.
- :func:`MixnodeService` builds both from values (and a DirectoryClient
  from a URL): what the local network, the tests, the benchmarks and
  embedders call. The tap (``nymtx.mixnode.tap.service_from_config``)
  assembles the same parts from config.toml.
"""

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger

import nymtx
from nymtx.addressing import NodeAddress
from nymtx.heartbeat import Heartbeat
from nymtx.links import PacketLinks
from nymtx.listening import ListenError, ListeningService, raise_fd_limit
from nymtx.mixnode.node import IDLE_TIMEOUT, MAX_CONNECTIONS, Mixnode, listener_factory
from nymtx.sphinx import ReplayCache

DEFAULT_PORT = 1789


class MixnodeError(ListenError):
    """The mixnode cannot start; the message says why."""


@attrs.frozen
class MixnodeParts:
    """A mixnode's parts: *links* (IPacketLinks) carry what *node* (a
    Mixnode) forwards; *listener* (a ListeningService) feeds *node* the
    packets of its peers. Nothing here runs until a MixnodeServer starts it."""

    links: object
    node: Mixnode
    listener: ListeningService

    @property
    def factory(self):
        """The listener's ConnectionLimit (the trust layer wraps what it limits)."""
        return self.listener.factory

    @property
    def replay_cache(self):
        return self.node.replay_cache


def build_parts(reactor, keys, listen_endpoint, *, links=None, replay_cache=None,
                replay_cache_size=1 << 20, max_in_flight=32768, max_delay=300.0,
                queue_size=1024, initial_backoff=0.1, maximum_backoff=30.0,
                max_connections=MAX_CONNECTIONS, idle_timeout=IDLE_TIMEOUT,
                fd_limit=raise_fd_limit, workers=1, spawn_worker=None):
    """The parts of a mixnode that unwraps with *keys* and listens on
    *listen_endpoint* (an endpoint string, bound when the server starts).

    *links* (default: PacketLinks with *queue_size* and the backoffs) and
    *replay_cache* (default: an in-memory ReplayCache of *replay_cache_size*
    tags) may be given built; the rest are the node's and the listener's
    bounds. With *workers* >= 2 the Sphinx unwrap runs in that many worker
    processes (nymtx.mixnode.workers), started by *spawn_worker* (tests give
    a fake one).
    """
    if links is None:
        links = PacketLinks(reactor, queue_size=queue_size, initial_backoff=initial_backoff,
                            maximum_backoff=maximum_backoff)
    if replay_cache is None:
        replay_cache = ReplayCache(replay_cache_size)
    node = Mixnode(reactor, keys.private_key, links, replay_cache,
                   max_in_flight=max_in_flight, max_delay=max_delay,
                   workers=workers, spawn=spawn_worker)
    # every next hop is a descriptor too: the listener must leave room for
    # them, or a flood of incoming connections stops the forwarding
    listener = ListeningService(
        listen_endpoint, listener_factory(node, max_connections, idle_timeout),
        "mixnode packet listener", reactor=reactor,
        reserved=lambda: getattr(links, "max_peers", 0), fd_limit=fd_limit,
        error=MixnodeError)
    return MixnodeParts(links=links, node=node, listener=listener)


class MixnodeServer(MultiService):
    """Runs the mixnode *parts* (MixnodeParts) of layer *layer* with *keys*.

    ``whenListening()`` fires with the IListeningPort once bound (or fails
    with MixnodeError, e.g. when the port is in use); ``port`` holds it.
    The announced address is ``announce_host:announce_port``, the port
    defaulting to the bound one. Given *directory* (an IDirectoryClient),
    once bound it announces the presence every *presence_interval* seconds
    and reports the node's counters every *metrics_interval*; with
    *owns_directory* it closes the directory when it stops. Children added
    to it (the trust layer's) start and stop with it.
    """

    log = Logger()

    def __init__(self, clock, keys, layer, parts, announce_host, *, announce_port=None,
                 directory=None, owns_directory=False, presence_interval=1.5,
                 metrics_interval=1.0, location="unknown", version=None):
        super().__init__()
        self.clock = self.reactor = clock
        self.keys = keys
        self.layer = layer
        self.parts = parts
        self.announce_host = announce_host
        self.announce_port = announce_port
        self.location = location
        self.version = version or nymtx.__version__
        self.presence_interval = presence_interval
        self.metrics_interval = metrics_interval
        self.directory = directory
        # the attribute nymtx.trust.wiring.hand_over sets
        self._owns_directory = owns_directory
        self.announce_address = None
        # a child: twistd's privilegedStartService binds it, stopping closes it
        parts.listener.setServiceParent(self)
        self.heartbeats = ()
        if directory is not None:
            # started once bound: before that there is no address to announce
            self.heartbeats = (
                Heartbeat(clock, presence_interval, self.announce, "presence announcement"),
                Heartbeat(clock, metrics_interval, self.report_metrics, "metrics report"))

    @property
    def node(self):
        return self.parts.node

    @property
    def links(self):
        return self.parts.links

    @property
    def listener(self):
        return self.parts.listener

    @property
    def factory(self):
        return self.parts.factory

    @property
    def listen_endpoint(self):
        return self.parts.listener.description

    @property
    def port(self):
        """The IListeningPort once bound, else None."""
        return self.parts.listener.port

    def whenListening(self):
        return self.parts.listener.whenListening().addCallback(self._listened)

    def startService(self):
        # the node first: packets may arrive as soon as the listener starts
        self.node.start()
        # binds the listener, if privilegedStartService did not (outside twistd)
        super().startService()
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
        if not self.running:
            return
        for heartbeat in self.heartbeats:
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
        # the heartbeats cancel a request in flight as they stop
        stopped = [maybeDeferred(h.stopService) for h in self.heartbeats if h.running]
        stopped.append(super().stopService())   # the listener and any other child
        self.announce_address = None
        dropped = self.node.stop()
        if dropped:
            self.log.info("stopped with {n} packets still held; they are dropped", n=dropped)
        stopped.append(self.node.stop_workers())
        stopped.append(self.links.stop())
        if self._owns_directory:
            # after the heartbeats stopped (above): no request is in flight
            stopped.append(self.directory.close())
        return DeferredList(stopped).addCallback(lambda _: None)


def MixnodeService(reactor, keys, layer, listen_endpoint, announce_host,
                   directory_url=None, *, announce_port=None, directory=None,
                   presence_interval=1.5, metrics_interval=1.0, location="unknown",
                   version=None, **parts):
    """A :class:`MixnodeServer` built from values: :func:`build_parts` with
    *listen_endpoint* and the keyword arguments it takes (*parts*), and with
    neither *directory* (an IDirectoryClient, or a fake) nor *directory_url*
    a node that announces nothing; from *directory_url* it builds (and at
    stop closes) a DirectoryClient.
    """
    owns_directory = directory is None and bool(directory_url)
    if owns_directory:
        from nymtx.directory.client import DirectoryClient
        directory = DirectoryClient(directory_url, reactor=reactor)
    return MixnodeServer(
        reactor, keys, layer, build_parts(reactor, keys, listen_endpoint, **parts),
        announce_host, announce_port=announce_port, directory=directory,
        owns_directory=owns_directory, presence_interval=presence_interval,
        metrics_interval=metrics_interval, location=location, version=version)


def _join(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
