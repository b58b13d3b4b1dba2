"""One way in for embedders: ``connect`` loads or initialises a client and starts it.

::

    client = await connect(reactor, root, "Alice", "http://127.0.0.1:8080")
    await client.send(bob_address, "hello")   # Bob may have registered a moment ago
    await client.stop()

A client that registered a moment ago is not in the topology yet: its
gateway lists it at its next presence, and the directory's answer reaches
the sender at its next refresh. So the client ``connect`` returns waits,
for a plain ``CLIENT`` address that no gateway lists, until one does
(fetching the topology again every ``resolve_poll`` seconds) or until
``resolve_timeout`` has passed, when the send fails with SendError saying
so. ``CLIENT@GATEWAY`` is sent at once, as before.
"""

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.client.config import DEBUG_DEFAULTS, DEFAULT_DIRECTORY, RELIABLE_DEFAULTS, ClientConfig, \
    ConfigError, is_initialised, parse_delay, parse_directory
from nymtx.client.core import ClientStopped, SendError, check_message, parse_recipient
from nymtx.client.embed import MixnetClient, init_client
from nymtx.interfaces import IMixnetClient

#: seconds a send to a plain address waits for the topology to list its recipient
RESOLVE_TIMEOUT = 10.0
#: seconds between topology fetches while a send waits
RESOLVE_POLL = 0.5

_COLLABORATORS = ("directory", "links", "gateway_link", "inbox", "outbox", "rng")


def connect(reactor, root, client_id, directory_url=None, *, gateway=None,
            resolve_timeout=RESOLVE_TIMEOUT, resolve_poll=RESOLVE_POLL, register=None,
            **options):
    """Load *client_id* under *root* (or initialise it), start it, return it.

    A new id is initialised as ``init_client`` does (keys, registration at
    *gateway* or a random one, config.toml; no socket API). An existing one
    is loaded; *directory_url*, when given, and the ``[debug]`` settings in
    *options* (milliseconds) apply to this run only. *options* may also
    hold the collaborators ``MixnetClient`` takes (``directory``, ``links``,
    ``gateway_link``, ``inbox``, ``outbox``, ``rng``); *register* replaces the gateway
    registration of a new id (``nymtx.testing.FakeNetwork.register``).

    Returns Deferred[MixnetClient] that fires once the client has started
    (its first topology fetch done); fails with ConfigError (bad values, an
    existing id asked to move to another *gateway*) or InitError (network).
    """
    collaborators = {name: options.pop(name) for name in _COLLABORATORS if name in options}
    try:
        settings_keys = tuple(DEBUG_DEFAULTS) + tuple(RELIABLE_DEFAULTS)
        unknown = sorted(set(options) - set(settings_keys))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)}; allowed: gateway, resolve_timeout,"
                f" resolve_poll, register, {', '.join(_COLLABORATORS + settings_keys)}")
        # [reliable] values are checked by ClientConfig (evolve, or init_client)
        settings = {name: parse_delay(value, name) if name in DEBUG_DEFAULTS else value
                    for name, value in options.items()}
        for name, value in (("resolve_timeout", resolve_timeout),
                            ("resolve_poll", resolve_poll)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) \
                    or not 0 < value < float("inf"):
                raise ConfigError(f"{name} must be a number of seconds > 0, not {value!r}")
    except ConfigError as e:
        return fail(e)
    return Deferred.fromCoroutine(_connect(
        reactor, root, client_id, directory_url, gateway, register, settings, collaborators,
        dict(resolve_timeout=resolve_timeout, resolve_poll=resolve_poll)))


async def _connect(reactor, root, client_id, directory_url, gateway, register, settings,
                   collaborators, resolving):
    if is_initialised(root, client_id):
        config = ClientConfig.load(root, client_id)
        if gateway and gateway != config.provider_id:
            raise ConfigError(
                f"client {client_id!r} is registered at gateway {config.provider_id}, not"
                f" {gateway}; init_client(..., gateway=KEY, force=True) moves it")
        if directory_url is not None:
            settings["directory_server"] = parse_directory(directory_url)
        config = config.evolve(**settings)
    else:
        config = await init_client(
            reactor, root, client_id, directory_url or DEFAULT_DIRECTORY, socket_type="none",
            gateway=gateway, directory=collaborators.get("directory"), register=register,
            rng=collaborators.get("rng"), **settings)
    client = ResolvingClient(reactor, config, **collaborators, **resolving)
    try:
        await client.start()
    except BaseException:
        try:
            await client.stop()
        except Exception:
            client.log.failure("stopping a client that could not start")
        raise
    return client


@implementer(IMixnetClient)
@attrs.define(eq=False)
class ResolvingClient(MixnetClient):
    """A MixnetClient whose ``send`` to a plain address waits (bounded) for
    the topology to list the recipient; what ``connect`` returns."""

    log = Logger()

    resolve_timeout: float = RESOLVE_TIMEOUT
    resolve_poll: float = RESOLVE_POLL
    _waits: set = attrs.field(factory=set, init=False)
    _refreshing: object = attrs.field(default=None, init=False)
    _halted: bool = attrs.field(default=False, init=False)

    def start(self):
        self._halted = False
        return super().start()

    def stop(self):
        # A send waiting for its recipient fails now, and leaves no timer.
        self._halted = True
        for d in list(self._waits):
            d.cancel()
        return super().stop()

    def send(self, recipient, message, id=None, delivered=False):
        """As MixnetClient.send; fails with SendError also when a plain
        recipient is still unlisted after resolve_timeout."""
        try:
            check_message(message, self.config.maximum_message_size)
            client_key, gateway_key = parse_recipient(recipient)
        except SendError as e:
            return fail(e)
        if gateway_key is not None or self._halted or self._listed(client_key):
            return super().send(recipient, message, id=id, delivered=delivered)
        return Deferred.fromCoroutine(self._send_when_listed(recipient, client_key, message,
                                                             id, delivered))

    def _listed(self, client_key):
        topology = self.core.topology
        return topology is not None and topology.gateway_for(client_key) is not None

    async def _send_when_listed(self, recipient, client_key, message, id=None,
                                delivered=False):
        deadline = self.reactor.seconds() + self.resolve_timeout
        while not self._listed(client_key):
            remaining = deadline - self.reactor.seconds()
            if remaining <= 0:
                raise self._unresolved(recipient)
            try:
                await self._wait(deferLater(self.reactor, min(self.resolve_poll, remaining),
                                            lambda: None))
                await self._wait(self._refresh())
            except CancelledError:
                raise ClientStopped("the client stopped before the message was sent")
        return await super().send(recipient, message, id=id, delivered=delivered)

    def _wait(self, d):
        self._waits.add(d)
        d.addBoth(lambda result: (self._waits.discard(d), result)[1])
        return d

    def _refresh(self):
        # One fetch at a time, however many sends wait; each waits on its own
        # Deferred, so that stop() can cancel the waits but not the fetch.
        waiter = Deferred()
        if self._refreshing is not None:
            self._refreshing.append(waiter)
            return waiter
        self._refreshing = [waiter]
        d = maybeDeferred(self.core.refresh_topology)
        d.addErrback(lambda f: self.log.warn("topology refresh failed: {why}",
                                             why=f.getErrorMessage()))
        d.addBoth(self._refreshed)
        return waiter

    def _refreshed(self, _):
        waiters, self._refreshing = self._refreshing, None
        for waiter in waiters:
            if not waiter.called:  # a cancelled one has been
                waiter.callback(None)

    def _unresolved(self, recipient):
        if self.core.topology is None:
            return SendError(
                f"the network topology is not known yet: the directory at"
                f" {self.config.directory_server} has not answered within"
                f" {self.resolve_timeout:g} s")
        return SendError(
            f"unknown recipient {recipient}: no gateway in the topology listed it within"
            f" {self.resolve_timeout:g} s (a client that registered just now is listed at"
            " its gateway's next presence; give it as CLIENT@GATEWAY to send at once)")
