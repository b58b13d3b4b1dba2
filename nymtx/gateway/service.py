"""The gateway as one Twisted service: mix listener, client listener, store, presence."""

import os

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, fail, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure

import nymtx
from nymtx.addressing import NodeAddress
from nymtx.gateway import mix, server
from nymtx.gateway.mix import FinalHopHandler, MixListenerFactory
from nymtx.gateway.server import ClientServerFactory
from nymtx.gateway.store import MailboxStore
from nymtx.keys import encode_key
from nymtx.observer import OneShot
from nymtx.wire import connection_budget, raise_fd_limit

DATABASE_NAME = "gateway.sqlite"


class GatewayService(MultiService):
    """A complete gateway.

    ``data_dir`` holds the sqlite database (``:memory:`` is not offered: the
    point of a gateway is that its mail survives it). ``whenListening()``
    fires with ``(mix_port, client_port)`` once both listeners are bound, or
    fails naming the listener that could not bind.
    """

    log = Logger()

    def __init__(self, reactor, keys, data_dir, mix_endpoint, client_endpoint,
                 announce_host, directory_url=None, *, quota_messages=1000,
                 quota_bytes=1_000_000, commit_interval=0.0, commit_batch=512,
                 max_clients=1000,
                 max_pull=200, max_delay=300.0, presence_interval=1.5,
                 location=None, version=None, directory=None, treq=None,
                 randbytes=os.urandom, mix_max_connections=mix.MAX_CONNECTIONS,
                 mix_idle_timeout=mix.IDLE_TIMEOUT,
                 client_max_connections=server.MAX_CONNECTIONS,
                 client_handshake_timeout=server.HANDSHAKE_TIMEOUT,
                 client_idle_timeout=server.IDLE_TIMEOUT, fd_limit=raise_fd_limit):
        super().__init__()
        self.reactor = reactor
        self.keys = keys
        self.data_dir = str(data_dir)
        self.mix_endpoint = mix_endpoint
        self.client_endpoint = client_endpoint
        _host_port(announce_host, 1)  # a bad announce host fails here, not at each beat
        self.announce_host = announce_host
        self.directory_url = directory_url
        self.version = version or getattr(nymtx, "__version__", "0.5.0")
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        self.store = MailboxStore.open(
            reactor, os.path.join(self.data_dir, DATABASE_NAME),
            quota_messages=quota_messages, quota_bytes=quota_bytes,
            commit_interval=commit_interval, commit_batch=commit_batch,
            max_clients=max_clients)
        self.handler = FinalHopHandler(reactor, keys.private_key, self.store,
                                       max_delay=max_delay)
        self.mix_factory = MixListenerFactory(
            self.handler, mix_max_connections, mix_idle_timeout)
        self.client_factory = ClientServerFactory(
            self.store, keys, randbytes=randbytes, max_pull=max_pull,
            max_connections=client_max_connections,
            handshake_timeout=client_handshake_timeout, idle_timeout=client_idle_timeout)
        self._fd_limit = fd_limit
        self.mix_port = self.client_port = None
        self._ports = []
        self._listening = None
        self._outcome = OneShot()
        self.location = location
        self.heartbeat = None
        self._pool = None
        if directory is None and directory_url:
            from nymtx.directory.client import DirectoryClient, quiet_pool
            if treq is None:
                # our own pool, so that stopping closes our keep-alive
                # connections instead of leaving them to the global one
                from treq.client import HTTPClient
                from twisted.web.client import Agent
                self._pool = quiet_pool(reactor)
                treq = HTTPClient(Agent(reactor, pool=self._pool))
            directory = DirectoryClient(directory_url, treq=treq, reactor=reactor)
        self.directory = directory
        if directory is not None:
            from nymtx.heartbeat import Heartbeat
            # started once bound: before that there is no port to announce
            self.heartbeat = Heartbeat(reactor, presence_interval, self.announce,
                                       "gateway presence")

    # ---- listening ------------------------------------------------------

    def startService(self):
        super().startService()
        self._listening = Deferred.fromCoroutine(self._listen())
        self._listening.addBoth(self._settle)

    def _fit_fd_limit(self):
        """Lower the listeners' maximums to what the open-files limit can hold."""
        limit = self._fd_limit()
        mix_f, client_f = self.mix_factory, self.client_factory
        mix_budget = connection_budget(mix_f.max_connections, 0, limit // 4)
        client_budget = connection_budget(client_f.max_connections, mix_budget, limit)
        for factory, budget in ((mix_f, mix_budget), (client_f, client_budget)):
            if budget < factory.max_connections:
                self.log.warn(
                    "the open-files limit is {limit}: the {kind} accepts {budget}"
                    " connections, not the configured {wanted} (raise the limit with"
                    " ulimit -n or LimitNOFILE=)", limit=limit, kind=factory.kind,
                    budget=budget, wanted=factory.max_connections)
                factory.max_connections = budget

    async def _listen(self):
        self._fit_fd_limit()
        attempts = []
        for name, spec, factory in (("mix", self.mix_endpoint, self.mix_factory),
                                    ("client", self.client_endpoint, self.client_factory)):
            try:
                attempts.append(serverFromString(self.reactor, spec).listen(factory))
            except (ValueError, TypeError, KeyError) as e:
                attempts.append(fail(RuntimeError(
                    f"not a server endpoint ({e}); e.g. tcp:1789:interface=0.0.0.0")))
        results = await DeferredList(attempts, consumeErrors=True)
        problems = []
        for (ok, value), name, spec in zip(
                results, ("mix", "client"), (self.mix_endpoint, self.client_endpoint)):
            if ok:
                self._ports.append(value)
            else:
                problems.append(f"{name} listener {spec}: {value.getErrorMessage()}")
        if problems:
            await gatherResults([maybeDeferred(p.stopListening) for p in self._ports])
            self._ports = []
            raise RuntimeError("; ".join(problems))
        self.mix_port = self._ports[0].getHost().port
        self.client_port = self._ports[1].getHost().port
        self.log.info("gateway {key} listening: mix port {mix}, client port {client}",
                      key=self.keys.public_text, mix=self.mix_port, client=self.client_port)
        return (self.mix_port, self.client_port)

    def _settle(self, result):
        if isinstance(result, Failure):
            self.log.error("gateway could not start: {why}", why=result.getErrorMessage())
        elif self.heartbeat is not None and self.running:
            self.heartbeat.startService()
        self._outcome.fire(result)

    def whenListening(self):
        """Fires with (mix_port, client_port), or fails if a listener cannot bind."""
        return self._outcome.when_fired()

    # ---- presence -------------------------------------------------------

    def presence(self):
        """The presence document announced to the directory."""
        if self.mix_port is None:
            raise RuntimeError("the gateway is not listening yet")
        mix = _host_port(self.announce_host, self.mix_port)
        return {
            "host": mix,
            "mixnetListener": mix,
            "clientListener": _host_port(self.announce_host, self.client_port),
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
        await maybeDeferred(super().stopService)
        if self._listening is not None and not self._listening.called:
            await self._listening
        if self.heartbeat is not None and self.heartbeat.running:
            await maybeDeferred(self.heartbeat.stopService)
        if self._pool is not None:
            await self._pool.closeCachedConnections()
        await gatherResults([maybeDeferred(p.stopListening) for p in self._ports])
        self._ports = []
        await gatherResults([self.mix_factory.close_all(), self.client_factory.close_all()])
        self.handler.release_all()
        self.store.close()
        self.log.info("gateway stopped; {n} messages committed this run", n=self.store.stored)


def _host_port(host, port):
    return str(NodeAddress.parse(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"))
