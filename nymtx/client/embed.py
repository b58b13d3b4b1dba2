"""The client for Twisted programs: ``MixnetClient`` and ``init_client``.

::

    config = await init_client(reactor, root, "Alice", "http://127.0.0.1:8080")
    client = MixnetClient(reactor, config)
    await client.start()
    await client.send(bob_address, b"hello")      # bytes: a binary message
    await client.send(bob_address, "hello")       # str: a text message
    client.on_message(print)                      # each message's bytes
    client.on_received(lambda m: print(m.kind, m.data))  # nymtx.message.Message
    await client.stop()
"""

import os
import random

import attrs
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.client.config import DEBUG_DEFAULTS, RELIABLE_DEFAULTS, ClientConfig, ConfigError, \
    is_initialised, parse_delay, parse_directory, parse_port, parse_socket_type
from nymtx.client.core import ClientCore, ClientStateError, CoreState, SendError
from nymtx.client.inbox import Inbox
from nymtx.client.outbox import Outbox, OutboxError
from nymtx.interfaces import IMixnetClient
from nymtx.keys import KeyFormatError, KeyPair, decode_key, encode_key
from nymtx.observer import OneShot


class InitError(Exception):
    """Initialisation failed (no gateway, registration refused, …); says why."""


def _default_directory(config, reactor):
    from nymtx.trust.wiring import client_directory
    # its reactor times requests out: tests with a Clock see no stray timers;
    # with keys pinned, a TrustedDirectoryClient over every directory
    from nymtx.trust.serials import SERIALS_NAME
    # the last serials survive a restart: an older topology is refused after it
    return client_directory(reactor, config.directory_urls, config.directory_keys,
                            config.directory_threshold,
                            serials=os.path.join(str(config.data_dir), SERIALS_NAME))


def _default_links(reactor):
    from nymtx.links import PacketLinks
    return PacketLinks(reactor)


def _default_gateway_link(reactor, gateway, keys):
    from nymtx.gateway.link import GatewayLink
    return GatewayLink(reactor, gateway.client_listener, keys, gateway.public_key)


def _default_register(reactor, address, keys, gateway_key):
    from nymtx.gateway.link import register
    return register(reactor, address, keys, gateway_key)


def init_client(reactor, root, client_id, directory_url, socket_type="none", port=0,
                gateway=None, force=False, directory=None, register=None,
                rng=None, more_directories=(), directory_keys=(), directory_threshold=0,
                **debug_ms):
    """Create keys, register at a gateway, write config.toml.

    *gateway* is a base58 gateway key; without it one is picked at random
    among the gateways of the topology (trying each in turn). A client that
    exists is refused unless *force*. Nothing on disk changes unless
    registration succeeds. Returns Deferred[ClientConfig]; fails with
    ConfigError (bad values, exists) or InitError (network).
    """
    try:
        allowed = tuple(DEBUG_DEFAULTS) + tuple(RELIABLE_DEFAULTS)
        unknown = sorted(set(debug_ms) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)};"
                              f" allowed: {', '.join(allowed)}")
        # [debug] delays may come as text (flags); [reliable] values are
        # checked by ClientConfig itself
        values = {name: parse_delay(v, name) if name in DEBUG_DEFAULTS else v
                  for name, v in debug_ms.items()}
        config = ClientConfig.new(
            root, client_id, directory_server=parse_directory(directory_url),
            socket_type=parse_socket_type(socket_type, "socket type"),
            listening_port=parse_port(port, "port"), more_directories=more_directories,
            directory_keys=directory_keys, directory_threshold=directory_threshold, **values)
        gateway_key = None
        if gateway:
            try:
                gateway_key = decode_key(gateway)
            except KeyFormatError as e:
                raise ConfigError(f"gateway: {e}")
        if not force and is_initialised(root, client_id):
            raise ConfigError(
                f"client {client_id!r} is already initialised at {config.config_path};"
                " overwrite it (its keys and gateway registration) with force=True"
                " (nym-client init --force)")
    except ConfigError as e:
        return fail(e)
    owned = directory is None
    directory = directory or _default_directory(config, reactor)
    register = register or _default_register
    rng = rng or random.SystemRandom()
    d = Deferred.fromCoroutine(
        _init(reactor, config, gateway_key, directory, register, rng))
    if owned:
        # a closed pool leaves no idle connection behind the init
        d.addBoth(lambda result: directory.close().addBoth(lambda _: result))
    return d


async def _init(reactor, config, gateway_key, directory, register, rng):
    log = Logger(namespace="nymtx.client.init")
    try:
        topology = await directory.get_topology()
    except Exception as e:
        raise InitError(f"cannot fetch the topology from {config.directory_server}: {e}")
    if gateway_key is not None:
        chosen = topology.gateway_by_key(gateway_key)
        if chosen is None:
            raise InitError(f"gateway {encode_key(gateway_key)} is not in the topology")
        candidates = [chosen]
    else:
        candidates = list(topology.gateways)
        if not candidates:
            raise InitError("the topology lists no gateway to register at")
        rng.shuffle(candidates)
    keys = KeyPair.generate()
    failures = []
    for candidate in candidates:
        try:
            token = await register(reactor, candidate.client_listener, keys,
                                   candidate.public_key)
        except Exception as e:
            log.warn("registration at {gateway} failed: {why}",
                     gateway=str(candidate.client_listener), why=str(e))
            failures.append(f"{candidate.client_listener}: {e}")
            continue
        break
    else:
        raise InitError("could not register at any gateway: " + "; ".join(failures))
    # The private link has no token (the key proven in each handshake is
    # the credential); a registration that still returns one keeps it.
    config = config.evolve(provider_id=encode_key(candidate.public_key),
                           provider_authtoken=encode_key(token) if token else "")
    # Keys go to disk only now: a failed --force init leaves the old client whole.
    config.save_keys(keys)
    config.save()
    log.info("client {id} initialised: address {address}, gateway {gateway}",
             id=config.id, address=keys.public_text, gateway=config.provider_id)
    return config


async def _run_all(steps):
    first = None
    for step in steps:
        try:
            await maybeDeferred(step)
        except Exception as e:
            first = first or e
    if first is not None:
        raise first


@implementer(IMixnetClient)
@attrs.define(eq=False)
class MixnetClient:
    """A running client inside a Twisted program.

    Collaborators default to the real ones; tests pass fakes with the same
    methods (see docs/internals.md).
    """

    reactor: object
    config: ClientConfig
    directory: object = None
    links: object = None
    gateway_link: object = None
    inbox: object = None
    #: the durable send queue (docs/surb.md §4); default: outbox.sqlite beside the inbox
    outbox: object = None
    rng: object = None
    core: ClientCore = attrs.field(default=None, init=False)
    _owns_links: bool = attrs.field(default=False, init=False)
    _owns_directory: bool = attrs.field(default=False, init=False)
    _stopped: object = attrs.field(default=None, init=False)

    def __attrs_post_init__(self):
        # Fail here, not at start(), on an uninitialised or unreadable client.
        if not self.config.provider_id:
            raise ConfigError(
                f"client {self.config.id!r} has no gateway: run nym-client init first")
        keys = self.config.load_keys()
        if self.directory is None:
            self.directory = _default_directory(self.config, self.reactor)
            self._owns_directory = True
        if self.links is None:
            self.links = _default_links(self.reactor)
            self._owns_links = True
        if self.inbox is None:
            self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.inbox = Inbox(self.config.inbox_path, self.reactor)
        if self.outbox is None:
            self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                self.outbox = Outbox.open(self.config.outbox_path, self.reactor)
            except OutboxError as e:
                raise ConfigError(str(e)) from e
        self.core = ClientCore(
            self.reactor, self.config, keys, self.directory, self.links,
            self.gateway_link, self.inbox, outbox=self.outbox,
            rng=self.rng or random.SystemRandom(),
            connect_gateway=lambda gw: _default_gateway_link(self.reactor, gw, keys))

    @property
    def address(self):
        """This client's base58 address."""
        return self.core.address

    @property
    def full_address(self):
        """``CLIENT@GATEWAY``: reachable even before the gateway's presence lists it."""
        return f"{self.core.address}@{self.config.provider_id}"

    @property
    def state(self):
        """The core's CoreState: new, starting, running, stopping or stopped."""
        return self.core.state

    def start(self):
        """Start; the Deferred fires once the first topology fetch is done.

        A client starts once: ClientStateError if it was started (or
        stopped) before. stop() closed its inbox and links; to run again,
        make a new MixnetClient from the same config (same keys, same inbox).
        """
        if self.core.state is not CoreState.NEW:
            raise ClientStateError(
                f"this MixnetClient is {self.core.state.value}: a client starts only"
                " once; to run it again make a new MixnetClient(reactor, config)"
                " (the same config gives the same keys and inbox)")
        return self.core.start()

    def stop(self):
        """Stop the client and close its links, directory pool and inbox.

        Each is closed even if an earlier step fails (a gateway link that
        cannot stop must not leave the inbox open); the Deferred then fails
        with the first error. A second stop() waits for the first.
        """
        if self._stopped is None:
            steps = [self.core.stop]
            if self._owns_links:
                steps.append(self.links.stop)
            if self._owns_directory:
                steps.append(self.directory.close)
            steps.append(self.inbox.close)
            steps.append(self.outbox.close)
            self._stopped = OneShot()
            d = Deferred.fromCoroutine(_run_all(steps))
            d.addBoth(self._stopped.fire)
        return self._stopped.when_fired()

    def send(self, recipient, message, id=None, delivered=False):
        """Send *message*: bytes (a binary message) or str (a text message), up
        to ``[message] maximum_message_size`` bytes, in fragments through the
        sending stream. The Deferred fires when its last fragment leaves;
        fails with SendError (too long, unknown recipient, send queue or
        outbox full: the error names the bound).

        With *delivered* True it fires with ``"delivered"`` once every
        fragment is acknowledged instead, and fails with
        nymtx.client.core.DeliveryFailed after the last retransmission. The
        message waits in the outbox until then, across restarts; *id* names
        it in ``on_outcome`` events."""
        try:
            return self.core.send(recipient, message, id=id, delivered=delivered)
        except SendError as e:
            return fail(e)

    def fetch(self):
        """Remove and return the messages received so far (bytes; a text
        message as its UTF-8)."""
        return self.core.fetch()

    def fetch_messages(self):
        """Remove and return the messages received so far as
        nymtx.message.Message (``kind``: KIND_TEXT or KIND_BINARY, ``data``)."""
        return self.core.fetch_messages()

    def on_message(self, callback):
        """Call *callback(message: bytes)* for each message: those the inbox holds
        now, then each one as it arrives. They leave the inbox (``fetch`` will
        not return them)."""
        self.core.on_message(callback)

    def on_received(self, callback):
        """As on_message, with a nymtx.message.Message: text and binary told apart."""
        self.core.on_received(callback)

    def send_anonymous(self, recipient, message, reply_surbs=5, id=None, delivered=False):
        """As send, with *reply_surbs* reply blocks and this client's sender tag
        for *recipient*: it can ``reply`` without learning this address."""
        try:
            return self.core.send_anonymous(recipient, message, reply_surbs, id=id,
                                            delivered=delivered)
        except SendError as e:
            return fail(e)

    def reply(self, sender_tag, message, id=None, delivered=False):
        """Reply to a message that came with *sender_tag* (``Message.sender_tag``),
        through the reply blocks its sender attached; fails with SendError
        when too few are held for the reply's fragments (621 bytes each)."""
        try:
            return self.core.reply(sender_tag, message, id=id, delivered=delivered)
        except SendError as e:
            return fail(e)

    def on_outcome(self, callback):
        """Call *callback(id, outcome)* ("delivered" or "failed") for each
        message sent, those from the outbox after a restart included."""
        return self.core.on_outcome(callback)

    def clients(self):
        return self.core.clients()
