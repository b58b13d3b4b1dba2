"""Services that run a client: ``ClientService`` and ``ClientLauncher``.

``ClientService`` is a ready client (a MixnetClient) plus its socket
listener; ``ClientLauncher`` is what ``twistd -n nym`` and ``nym-client
run`` start: it initialises the id first if it is new, applies the flags
over config.toml, then runs a ClientService.
"""

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from nymtx.client.api import ApiDispatcher
from nymtx.client.config import ClientConfig, is_initialised
from nymtx.client.embed import MixnetClient, init_client
from nymtx.client.tcp import JsonLinesFactory
from nymtx.client.websocket import websocket_site
from nymtx.listening import ConnectionLimit, HeaderDeadlineChannel, ListeningService, \
    bound_port
from nymtx.observer import OneShot

_LISTENER_NAMES = {"WebSocket": "websocket", "TCP": "TCP"}

#: API connections at once. Applications open a few; 20,000 used to exhaust
#: the client's descriptors and lock its own application out.
MAX_CONNECTIONS = 1024
#: Seconds without a byte from an application before its connection is cut.
IDLE_TIMEOUT = 300.0
#: Seconds a websocket has for its HTTP upgrade request's headers.
HANDSHAKE_TIMEOUT = 10.0


def endpoint_of(config):
    """The socket API's endpoint string: ``listening_endpoint``, or
    ``tcp:<listening_port>:interface=127.0.0.1``."""
    return (getattr(config, "listening_endpoint", "")
            or f"tcp:{config.listening_port}:interface=127.0.0.1")


def api_factory(reactor, config, dispatcher, *, max_connections=MAX_CONNECTIONS,
                idle_timeout=IDLE_TIMEOUT, handshake_timeout=HANDSHAKE_TIMEOUT):
    """The socket API's protocol factory for *config*'s socket type, within
    the bounds of every nymtx listener (``nymtx.listening.ConnectionLimit``)."""
    if config.socket_type == "WebSocket":
        site = websocket_site(dispatcher, reactor, config.allowed_origins,
                              api_key=config.api_key)
        site.protocol = HeaderDeadlineChannel
        # autobahn writes every answer at once and never pauses: the
        # wrapper stops reading from a peer that does not read its answers
        return ConnectionLimit(site, reactor, max_connections, idle_timeout=idle_timeout,
                               handshake_timeout=handshake_timeout, backpressure=True,
                               name="websocket API")
    # with an API key, a connection has handshake_timeout to show it (its
    # first line): silent connections cannot hold the API's places for the
    # whole idle timeout
    return ConnectionLimit(JsonLinesFactory(dispatcher, api_key=config.api_key),
                           reactor, max_connections, idle_timeout=idle_timeout,
                           handshake_timeout=handshake_timeout if config.api_key else None,
                           name="TCP API")


class _ClientRunner(Service):
    """Starts the client once its API listens (at once without an API): a
    client whose API cannot listen must not authenticate and pull mail that
    no application will read."""

    log = Logger()

    def __init__(self, client, listener=None):
        self.client = client
        self.listener = listener
        self._started = None

    def startService(self):
        super().startService()
        ready = succeed(None) if self.listener is None else self.listener.whenListening()
        ready.addCallbacks(self._start, lambda _: None)

    def _start(self, port):
        if port is not None:
            address = port.getHost()
            # nym's own words, which scripts wait for
            self.log.info("Starting {kind} listener at {host}:{port}",
                          kind=self.listener.name.split()[0], host=address.host,
                          port=address.port)
        if self.running and self._started is None:
            self._started = self.client.start()
            self._started.addErrback(lambda f: self.log.failure("the client failed", f))

    def stopService(self):
        super().stopService()
        if self._started is None:
            return None
        self._started = None
        return self.client.stop()


class ClientService(MultiService):
    """A running client and its socket API (none for socket_type 'None').

    The API listens first (in ``privilegedStartService`` under twistd); the
    client starts only once it does. *api_endpoint* overrides the config's
    endpoint; *api_limits* are ``api_factory``'s keyword arguments.
    """

    log = Logger()

    def __init__(self, reactor, config, api_endpoint=None, api_limits=None, **collaborators):
        super().__init__()
        self.config = config
        self.client = MixnetClient(reactor, config, **collaborators)
        self.dispatcher = ApiDispatcher(self.client.core)
        self.listener = None
        if config.socket_type != "None":
            kind = _LISTENER_NAMES[config.socket_type]
            self.listener = ListeningService(
                api_endpoint or endpoint_of(config),
                api_factory(reactor, config, self.dispatcher, **(api_limits or {})),
                f"{kind} API", reactor=reactor)
            self.listener.setServiceParent(self)
        _ClientRunner(self.client, self.listener).setServiceParent(self)

    @property
    def port(self):
        """The bound port number of the socket API, or None."""
        return None if self.listener is None else bound_port(self.listener)

    def whenListening(self):
        """Deferred[int | None]: the bound port; fails (ListenError) if it cannot listen."""
        if self.listener is None:
            return succeed(None)
        return self.listener.whenListening().addCallback(lambda port: port.getHost().port)


class ClientLauncher(MultiService):
    """Initialise *client_id* if new, apply *overrides*, run a ClientService."""

    log = Logger()

    def __init__(self, reactor, root, client_id, overrides=None, init_options=None,
                 **collaborators):
        super().__init__()
        self.reactor = reactor
        self.root = root
        self.client_id = client_id
        self.overrides = dict(overrides or {})
        self.init_options = dict(init_options or {})
        self.collaborators = collaborators
        self.client_service = None
        self._listening = OneShot()

    def privilegedStartService(self):
        # twistd: an initialised client binds its API here, so that a port in
        # use stops twistd at start-up like every node; a new id binds once
        # initialised (init needs the network).
        super().privilegedStartService()
        if self.client_service is None and is_initialised(self.root, self.client_id):
            self._run(self._load())
            self.client_service.privilegedStartService()

    def startService(self):
        super().startService()
        if self.client_service is not None:
            return None
        d = Deferred.fromCoroutine(self._launch())
        d.addErrback(self._failed)
        return d

    def _load(self):
        config = ClientConfig.load(self.root, self.client_id)
        gateway = self.init_options.get("gateway")
        if gateway and gateway != config.provider_id:
            # Changing gateway means a new registration: that is init's job.
            self.log.warn(
                "--gateway {gateway} is ignored: client {id} is already registered at"
                " {current}; `nym-client init --id {id} --force --gateway KEY` moves it",
                gateway=gateway, id=self.client_id, current=config.provider_id)
        return config

    def _run(self, config):
        config = config.evolve(**self.overrides)
        service = ClientService(self.reactor, config, **self.collaborators)
        service.whenListening().addBoth(self._forward)
        self.client_service = service
        service.setServiceParent(self)  # starts it if we are running

    async def _launch(self):
        if is_initialised(self.root, self.client_id):
            config = self._load()
        else:
            self.log.info("client {id} was never initialised: initialising it now",
                          id=self.client_id)
            options = dict(self.init_options)
            options.setdefault("directory_url", self.overrides.get("directory_server"))
            options.setdefault("socket_type", self.overrides.get("socket_type", "websocket"))
            options.setdefault("port", self.overrides.get("listening_port", 9001))
            if options["directory_url"] is None:
                options["directory_url"] = ClientConfig.new(self.root, self.client_id).directory_server
            config = await init_client(self.reactor, self.root, self.client_id, **options)
        if not self.running:
            return
        self._run(config)

    def _forward(self, result):
        self._listening.fire(result)

    def _failed(self, failure):
        self.log.error("the client could not start: {why}", why=failure.getErrorMessage())
        self._listening.fire(failure)

    @property
    def port(self):
        return self.client_service.port if self.client_service else None

    def whenListening(self):
        return self._listening.when_fired()
