"""Services that run a client: ``ClientService`` and ``ClientLauncher``.

``ClientService`` is a ready client (a MixnetClient) plus its socket
listener; ``ClientLauncher`` is what ``twistd -n nym`` and ``nym-client
run`` start: it initialises the id first if it is new, applies the flags
over config.toml, then runs a ClientService.
"""

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from nymtx.client.api import ApiDispatcher
from nymtx.client.config import ClientConfig, is_initialised
from nymtx.client.embed import MixnetClient, init_client
from nymtx.client.tcp import JsonLinesFactory
from nymtx.client.websocket import websocket_site
from nymtx.observer import OneShot

_LISTENER_NAMES = {"WebSocket": "websocket", "TCP": "TCP"}


class _ClientRunner(Service):
    def __init__(self, client):
        self.client = client

    def startService(self):
        super().startService()
        return self.client.start()

    def stopService(self):
        super().stopService()
        return self.client.stop()


class _ApiListener(Service):
    """Listens on 127.0.0.1 with the websocket or TCP API."""

    log = Logger()

    def __init__(self, reactor, config, dispatcher, listening):
        self.reactor = reactor
        self.config = config
        self.dispatcher = dispatcher
        self.listening = listening
        self.port = None

    def startService(self):
        super().startService()
        if self.config.socket_type == "WebSocket":
            factory = websocket_site(self.dispatcher, self.reactor, self.config.allowed_origins)
        else:
            factory = JsonLinesFactory(self.dispatcher)
        endpoint = serverFromString(
            self.reactor, f"tcp:{self.config.listening_port}:interface=127.0.0.1")
        d = endpoint.listen(factory)
        d.addCallbacks(self._listening, self._failed)

    def _listening(self, port):
        self.port = port
        kind = _LISTENER_NAMES[self.config.socket_type]
        address = port.getHost()
        self.log.info("Starting {kind} listener at {host}:{port}",
                      kind=kind, host=address.host, port=address.port)
        self.listening.fire(address.port)

    def _failed(self, failure):
        self.log.error("cannot listen on 127.0.0.1:{port}: {why}",
                       port=self.config.listening_port, why=failure.getErrorMessage())
        self.listening.fire(failure)

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()


class ClientService(MultiService):
    """A running client and its socket API (none for socket_type 'None')."""

    def __init__(self, reactor, config, **collaborators):
        super().__init__()
        self.config = config
        self.client = MixnetClient(reactor, config, **collaborators)
        self.dispatcher = ApiDispatcher(self.client.core)
        self._listening = OneShot()
        _ClientRunner(self.client).setServiceParent(self)
        self._listener = None
        if config.socket_type != "None":
            self._listener = _ApiListener(reactor, config, self.dispatcher, self._listening)
            self._listener.setServiceParent(self)
        else:
            self._listening.fire(None)

    @property
    def port(self):
        """The bound port number of the socket API, or None."""
        listener = self._listener
        if listener is None or listener.port is None:
            return None
        return listener.port.getHost().port

    def whenListening(self):
        """Deferred[int | None]: the bound port; fails if it cannot listen."""
        return self._listening.when_fired()


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

    def startService(self):
        super().startService()
        d = Deferred.fromCoroutine(self._launch())
        d.addErrback(self._failed)
        return d

    async def _launch(self):
        if is_initialised(self.root, self.client_id):
            config = ClientConfig.load(self.root, self.client_id)
            gateway = self.init_options.get("gateway")
            if gateway and gateway != config.provider_id:
                # Changing gateway means a new registration: that is init's job.
                self.log.warn(
                    "--gateway {gateway} is ignored: client {id} is already registered at"
                    " {current}; `nym-client init --id {id} --force --gateway KEY` moves it",
                    gateway=gateway, id=self.client_id, current=config.provider_id)
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
        config = config.evolve(**self.overrides)
        if not self.running:
            return
        service = ClientService(self.reactor, config, **self.collaborators)
        service.whenListening().addBoth(self._forward)
        self.client_service = service
        service.setServiceParent(self)  # starts it, since we are running

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
