"""The gateway as one Twisted service, assembled from parts built on their own.

:class:`Gateway` is the running gateway: two listeners (``ListeningService``
children, bound in ``privilegedStartService``), the mailbox store and the
final-hop handler they feed, and presence announcements once both are
bound. It opens nothing and builds none of its collaborators.
:func:`GatewayService` builds those parts from values (opening the store
under *data_dir*) and returns a Gateway: the constructor the local network,
the tap and embedders call.
"""

import os

from twisted.application.service import MultiService
from twisted.internet.task import LoopingCall
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

import nymtx
from nymtx.addressing import NodeAddress
from nymtx.gateway import mix, private_server
from nymtx.gateway.channel import HANDSHAKE_TIMEOUT
from nymtx.gateway.mix import FinalHopHandler
from nymtx.reliable.retransmit import GATEWAY_ACK_HOLD
from nymtx.gateway.private_server import PrivateClientFactory
from nymtx.gateway.store import MailboxStore, StoreError
from nymtx.keys import encode_key
from nymtx.links import PacketLinks
from nymtx.listening import ListenError, ListeningService, raise_fd_limit

DATABASE_NAME = "gateway.sqlite"
#: A registration not used (no connection proving its key) for this long
#: expires, with its mail: the ledger's places go to clients that use them.
REGISTRATION_IDLE = 7 * 24 * 3600.0
#: Seconds between two sweeps of idle registrations.
HOUSEKEEPING_INTERVAL = 600.0


class Gateway(MultiService):
    """A complete gateway from its parts.

    *mix_listener* and *client_listener* are ListeningServices (the handler's
    and the client protocol's listeners); *store* is an open MailboxStore,
    closed when the gateway stops; *handler* its FinalHopHandler, whose held
    packets are stored at stop; *links* the outgoing mix links the handler
    sends acks on (into layer 1), stopped after the store's last commit; *client_factory* the PrivateClientFactory
    (its ``errors``). Every *housekeeping_interval* seconds registrations
    idle for *registration_idle* seconds expire (``store.expire_idle``). With *directory* (``announce_gateway(presence)``) the
    presence is announced every *presence_interval* seconds once both
    listeners are bound. *on_stop* are callables run last at stop (e.g.
    closing an HTTP pool).
    ``whenListening()`` fires with ``(mix_port, client_port)`` or fails with a
    ListenError naming the listener(s) that could not bind.
    """

    log = Logger()

    def __init__(self, clock, keys, store, handler, client_factory, mix_listener,
                 client_listener, announce_host, *, directory=None, presence_interval=1.5,
                 location=None, version=None, on_stop=(),
                 registration_idle=REGISTRATION_IDLE,
                 housekeeping_interval=HOUSEKEEPING_INTERVAL, links=None):
        super().__init__()
        if not registration_idle > 0 or not housekeeping_interval > 0:
            raise ValueError("registration_idle and housekeeping_interval must be positive")
        _host_port(announce_host, 1)  # a bad announce host fails here, not at each beat
        self.clock = clock
        self.keys = keys
        self.store = store
        self.handler = handler
        self.links = links
        self.client_factory = client_factory
        self.mix_listener = mix_listener
        self.client_listener = client_listener
        self.announce_host = announce_host
        self.directory = directory
        self.location = location
        self.version = version or getattr(nymtx, "__version__", "0.5.0")
        self.mix_port = self.client_port = None
        #: the client port the presence announces, if not the bound one (a
        #: port forwarded to this one; the capture test puts a relay there)
        self.announce_client_port = None
        self.registration_idle = registration_idle
        self._housekeeping = LoopingCall(self.housekeeping)
        self._housekeeping.clock = clock
        self.housekeeping_interval = housekeeping_interval
        self._on_stop = tuple(on_stop)
        mix_listener.setServiceParent(self)
        client_listener.setServiceParent(self)
        self.heartbeat = None
        if directory is not None:
            from nymtx.heartbeat import Heartbeat
            # started once bound: before that there is no port to announce
            self.heartbeat = Heartbeat(clock, presence_interval, self.announce,
                                       "gateway presence")

    @property
    def mix_endpoint(self):
        return self.mix_listener.description

    @property
    def client_endpoint(self):
        return self.client_listener.description

    # ---- listening ------------------------------------------------------

    def startService(self):
        super().startService()
        self._housekeeping.start(self.housekeeping_interval, now=True)
        self.whenListening().addCallbacks(self._listening, lambda _: None)

    def whenListening(self):
        """Fires with (mix_port, client_port), or fails if a listener cannot bind."""
        d = DeferredList([self.mix_listener.whenListening(),
                          self.client_listener.whenListening()], consumeErrors=True)
        return d.addCallback(self._both)

    def _both(self, results):
        problems = [value.getErrorMessage() for ok, value in results if not ok]
        if problems:
            return Failure(ListenError("; ".join(problems)))
        mix_port, client_port = (value.getHost().port for _, value in results)
        return (mix_port, client_port)

    def _listening(self, ports):
        if (self.mix_port, self.client_port) == ports:
            return
        self.mix_port, self.client_port = ports
        self.log.info("gateway {key} listening: mix port {mix}, client port {client}",
                      key=self.keys.public_text, mix=self.mix_port, client=self.client_port)
        if self.heartbeat is not None and self.running and not self.heartbeat.running:
            self.heartbeat.startService()

    # ---- housekeeping ---------------------------------------------------

    def housekeeping(self):
        """Expire the registrations idle for ``registration_idle`` seconds."""
        try:
            return self.store.expire_idle(self.registration_idle)
        except StoreError as e:
            # the next sweep tries again; the gateway goes on serving
            self.log.error("housekeeping failed: {why}", why=str(e))
            return []

    # ---- presence -------------------------------------------------------

    def presence(self):
        """The presence document announced to the directory."""
        if self.mix_port is None:
            raise RuntimeError("the gateway is not listening yet")
        mix_address = _host_port(self.announce_host, self.mix_port)
        return {
            "host": mix_address,
            "mixnetListener": mix_address,
            "clientListener": _host_port(self.announce_host,
                                         self.announce_client_port or self.client_port),
            "pubKey": self.keys.public_text,
            "registeredClients": [{"pubKey": encode_key(k)}
                                  for k in self.store.registered_clients()],
            "version": self.version,
            **({"location": self.location} if self.location else {}),
        }

    def announce(self):
        return self.directory.announce_gateway(self.presence())

    # ---- stopping -------------------------------------------------------

    def stopService(self):
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self):
        if self._housekeeping.running:
            self._housekeeping.stop()
        if self.heartbeat is not None and self.heartbeat.running:
            await maybeDeferred(self.heartbeat.stopService)
        # the listeners close their ports and connections
        await maybeDeferred(super().stopService)
        self.mix_port = self.client_port = None
        self.handler.release_all()
        # the last commit hands its acks to the links: they stop after it
        # (acks not yet written are lost; their senders send again)
        try:
            self.store.close()
        finally:
            if self.links is not None:
                await self.links.stop()
        for step in self._on_stop:
            await maybeDeferred(step)
        self.log.info("gateway stopped; {n} messages committed this run", n=self.store.stored)


def _open_store(reactor, path, **kwargs):
    try:
        return MailboxStore.open(reactor, path, **kwargs)
    except StoreError as e:
        raise StoreError(
            f"{e}. The gateway does not start on a store it cannot read. Restore the file"
            f" from a backup, or start with an empty store by moving it aside:"
            f" mv {path} {path}.unreadable (the mail in it is then not delivered; each"
            f" client's link registers its key again on its next connection)") from e


def check_store(reactor, data_dir):
    """Open (upgrading it if it is older) and close the store under
    *data_dir*: StoreError, saying what to run, if it cannot be read."""
    path = os.path.join(str(data_dir), DATABASE_NAME)
    if os.path.exists(path):
        _open_store(reactor, path).close()


def GatewayService(reactor, keys, data_dir, mix_endpoint, client_endpoint,
                   announce_host, directory_url=None, *, quota_messages=20_000,
                   quota_bytes=20_000_000, commit_interval=0.0, commit_batch=512,
                   max_clients=1000, max_pull=None, max_delay=300.0, presence_interval=1.5,
                   location=None, version=None, directory=None, treq=None,
                   randbytes=os.urandom, mix_max_connections=mix.MAX_CONNECTIONS,
                   mix_idle_timeout=mix.IDLE_TIMEOUT,
                   client_max_connections=private_server.MAX_CONNECTIONS,
                   client_handshake_timeout=HANDSHAKE_TIMEOUT,
                   client_idle_timeout=private_server.IDLE_TIMEOUT, fd_limit=raise_fd_limit,
                   registration_idle=REGISTRATION_IDLE,
                   housekeeping_interval=HOUSEKEEPING_INTERVAL, admission=None,
                   ack_hold=GATEWAY_ACK_HOLD, rng=None):
    """Build a :class:`Gateway` from values: open ``<data_dir>/gateway.sqlite``
    (StoreError if unusable), build the handler, the protocol factories
    within their bounds, the two listeners and (given *directory_url*) a
    directory client on its own HTTP pool.

    ``:memory:`` is not offered: the point of a gateway is that its mail
    survives it. *max_pull* is accepted for old configurations and unused:
    every pull on the private link is answered with exactly
    ``nymtx.gateway.padded.PULL_SIZE`` slots. *ack_hold* is the mean
    hold on every ack in seconds and *rng* what draws it (FinalHopHandler).
    """
    _host_port(announce_host, 1)  # before the store is opened
    data_dir = str(data_dir)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    store = _open_store(
        reactor, os.path.join(data_dir, DATABASE_NAME),
        quota_messages=quota_messages, quota_bytes=quota_bytes,
        commit_interval=commit_interval, commit_batch=commit_batch,
        max_clients=max_clients)
    # the acks of stored messages leave on mix links to layer-1 mixnodes,
    # the first hop each SURB-ACK names (docs/surb.md §2.2)
    links = PacketLinks(reactor)
    handler = FinalHopHandler(reactor, keys.private_key, store, max_delay=max_delay,
                              links=links, public_key=keys.public_key, randbytes=randbytes,
                              ack_hold=ack_hold, rng=rng)
    client_factory = PrivateClientFactory(store, keys, clock=reactor, randbytes=randbytes,
                                          handshake_timeout=client_handshake_timeout,
                                          admission=admission,
                                          # a client connected for longer than the
                                          # idle time must not expire under it
                                          touch_interval=min(private_server.TOUCH_INTERVAL,
                                                             registration_idle / 4))
    mix_listener = ListeningService(
        mix_endpoint, mix.listener_factory(handler, mix_max_connections, mix_idle_timeout),
        "gateway mix listener", reactor=reactor,
        # the mix side gets at most a quarter of the descriptors; clients the rest
        fd_limit=lambda: fd_limit() // 4, abort=True)
    client_listener = ListeningService(
        client_endpoint,
        private_server.listener_factory(client_factory, client_max_connections,
                                        client_idle_timeout),
        "gateway client listener", reactor=reactor,
        reserved=lambda: mix_listener.factory.max_connections, fd_limit=fd_limit, abort=True)
    on_stop = []
    if directory is None and directory_url:
        from nymtx.directory.client import DirectoryClient, quiet_pool
        if treq is None:
            # our own pool, so that stopping closes our keep-alive
            # connections instead of leaving them to the global one
            from treq.client import HTTPClient
            from twisted.web.client import Agent
            pool = quiet_pool(reactor)
            on_stop.append(pool.closeCachedConnections)
            treq = HTTPClient(Agent(reactor, pool=pool))
        directory = DirectoryClient(directory_url, treq=treq, reactor=reactor)
    gateway = Gateway(reactor, keys, store, handler, client_factory, mix_listener,
                      client_listener, announce_host, directory=directory,
                      presence_interval=presence_interval, location=location,
                      version=version, on_stop=on_stop,
                      registration_idle=registration_idle,
                      housekeeping_interval=housekeeping_interval, links=links)
    gateway.data_dir = data_dir
    gateway.directory_url = directory_url
    return gateway


def _host_port(host, port):
    return str(NodeAddress.parse(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"))
