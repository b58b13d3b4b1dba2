"""The gateway's side of the private link: register and pull inside the channel.

:class:`PrivateClientFactory` is a listener factory: each connection runs a
:class:`~nymtx.gateway.channel.Channel` (gateway side) and, once the
client's key is proven on that connection, a :class:`PrivateClientProtocol`
for that key. The protocol answers every 42-byte request with exactly one
9852-byte answer, in order (``docs/gateway-channel.md``): a pull deletes
the ids it acknowledges and answers with exactly ``PULL_SIZE`` slots,
holding the oldest messages not yet sent on this connection; a take-none
pull deletes its acks and answers with no slots filled, the same size.

:func:`listener_factory` puts it inside the one limiting wrapper,
:class:`nymtx.listening.ConnectionLimit`: it is the gateway's client
listener. Registration inside the channel is rate-limited per source
address and in total (:class:`RegistrationLimit`); ``docs/decisions.md``
argues the choice.
"""

import collections
import ipaddress
import os

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.addressing import encode_client_address
from nymtx.gateway import frames as F
from nymtx.gateway import padded as P
from nymtx.gateway.channel import HANDSHAKE_TIMEOUT, Channel, ChannelProtocol
from nymtx.gateway.store import StoreError
from nymtx.listening import ConnectionLimit, handshake_done

log = Logger()

#: Seconds without a request before a proven connection is cut; a client
#: pulls every second or so, and redials if it was only quiet.
IDLE_TIMEOUT = 300.0
MAX_CONNECTIONS = 10_000
#: Requests a client may have waiting while it does not read its answers;
#: past it the gateway stops reading from it (TCP then holds the rest).
#: Seconds an answer waits for the gateway's next answer tick. Every
#: answer, of every connection, leaves at a tick, right after the tick has
#: committed the acknowledgements deleted since the last one: one commit
#: serves every pull of the tick, no answer says "acked" before its
#: deletions are on disk, and since all answers wait alike, how long one
#: waits says nothing about what its pull carried. 0: the tick is the end
#: of the reactor turn (a longer tick stalls a client's pipelined pulls:
#: measured in docs/performance.md, half the rate at 2 ms).
ANSWER_INTERVAL = 0.0
#: Answers one connection may have waiting for a tick; past it the
#: gateway answers no more of its requests until the tick.
MAX_HELD = 64
#: Requests a client may have waiting while it does not read its answers;
#: past it the gateway stops reading from it (TCP then holds the rest).
MAX_QUEUED = 64
#: A connection records that its client was seen at most this often: the
#: idle expiry counts in days, a write per pull would be wasted.
TOUCH_INTERVAL = 3600.0

#: New registrations (keys not yet in the ledger): per source address (an
#: IPv4 address, an IPv6 /64) a burst of this many, then one per
#: PER_SOURCE_SECONDS; in total a burst of TOTAL_BURST, then one per
#: TOTAL_SECONDS. A key already registered re-registers for free.
PER_SOURCE_BURST = 3
PER_SOURCE_SECONDS = 600.0
TOTAL_BURST = 20
TOTAL_SECONDS = 10.0
#: Sources remembered at most; past it the fullest buckets are forgotten.
MAX_SOURCES = 100_000


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens, at):
        self.tokens, self.at = tokens, at


class RegistrationLimit:
    """Token buckets on new registrations: one per source, one for all.

    A flood that registers keys to fill the ledger needs many source
    addresses to go faster than ``PER_SOURCE_SECONDS`` a key, and however
    many it has, it adds at most one key per ``TOTAL_SECONDS``; keys it
    stops using expire (``MailboxStore.expire_idle``), so holding the
    ledger full costs a live handshake per key per idle period.
    """

    def __init__(self, clock, per_source_burst=PER_SOURCE_BURST,
                 per_source_seconds=PER_SOURCE_SECONDS, total_burst=TOTAL_BURST,
                 total_seconds=TOTAL_SECONDS, max_sources=MAX_SOURCES):
        self.clock = clock
        self.per_source = (per_source_burst, per_source_seconds)
        self.total = (total_burst, total_seconds)
        self.max_sources = max_sources
        self._sources = {}
        self._all = _Bucket(total_burst, clock.seconds())

    @staticmethod
    def source(peer):
        """The bucket key of a peer address: an IPv4 host, an IPv6 /64."""
        host = getattr(peer, "host", None)
        try:
            address = ipaddress.ip_address(host)
        except (TypeError, ValueError):
            return str(host)
        if address.version == 6:
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return str(address)

    def _refill(self, bucket, burst, seconds, now):
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) / seconds)
        bucket.at = now

    def allow(self, peer):
        """None if a new registration from *peer* may go ahead (and is
        counted), else why not."""
        now = self.clock.seconds()
        key = self.source(peer)
        burst, seconds = self.per_source
        bucket = self._sources.get(key)
        if bucket is None:
            if len(self._sources) >= self.max_sources:
                self._forget(now)
            bucket = self._sources[key] = _Bucket(burst, now)
        self._refill(bucket, burst, seconds, now)
        self._refill(self._all, *self.total, now)
        if bucket.tokens < 1:
            return (f"too many new registrations from {key}: one per {seconds:g} s"
                    f" after {burst}")
        if self._all.tokens < 1:
            return f"too many new registrations: one per {self.total[1]:g} s at this gateway"
        bucket.tokens -= 1
        self._all.tokens -= 1
        return None

    def _forget(self, now):
        # full buckets are those a fresh source would get anyway
        burst, seconds = self.per_source
        for key in [k for k, b in self._sources.items()
                    if b.tokens + (now - b.at) / seconds >= burst]:
            del self._sources[key]
        while len(self._sources) >= self.max_sources:
            del self._sources[next(iter(self._sources))]


@implementer(IPushProducer)
class PrivateClientProtocol(Protocol):
    """The requests of one proven client key, inside the channel.

    The channel delivers one request per ``dataReceived`` and sends each
    ``write`` as one frame. Like today's server it is a streaming producer
    of its transport: when the client does not read its answers, it stops
    answering and stops reading, so unread answers cannot pile up in the
    gateway's memory.
    """

    log = Logger()

    def __init__(self, factory, client_key):
        self.factory = factory
        self.client_key = bytes(client_key)
        self.errors = 0
        self.paused = False
        #: answers of this connection waiting for the factory's next tick
        self.held = 0
        #: the id of the last message sent on this connection
        self.cursor = 0
        self._touched_at = None
        self.closed = Deferred()
        self._pending = collections.deque()

    def connectionMade(self):
        self.factory.connections.add(self)
        self.transport.registerProducer(self, True)

    def connectionLost(self, reason):
        self._pending.clear()
        self.factory.connections.discard(self)
        self.closed.callback(None)

    def dataReceived(self, data):
        self._pending.append(data)
        if len(self._pending) >= MAX_QUEUED:
            self.transport.pauseProducing()
        self._answer()

    def _answer(self):
        pending = self._pending
        factory = self.factory
        while pending and not self.paused and self.held < MAX_HELD:
            if self.transport.disconnecting:
                pending.clear()
                return
            answer = self.handle(pending.popleft())
            factory.hold(self, P.encode_answer(answer))
            if isinstance(answer, P.Error):
                self.errors += 1
                why = None
                if answer.code == F.E_UNKNOWN_CLIENT:
                    # a proven key with no registration asked for mail: it
                    # has nothing here (a real client registers first)
                    why = answer.message
                elif self.errors >= factory.max_errors:
                    why = f"after {self.errors} errors"
                if why is not None:
                    # its parting words leave now, before the close
                    factory.release(resume=False)
                    self.log.info("closing the private link of {client}: {why}",
                                  client=self.address, why=why)
                    self.transport.loseConnection()
                    pending.clear()
                    return

    @property
    def address(self):
        return encode_client_address(self.client_key)

    # IPushProducer, for the transport: the client is (not) reading

    def pauseProducing(self):
        self.paused = True
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.paused = False
        self._answer()
        if not self.paused and not self.transport.disconnecting \
                and len(self._pending) < MAX_QUEUED:
            self.transport.resumeProducing()

    def stopProducing(self):
        self.paused = True
        self._pending.clear()

    # ---- requests -------------------------------------------------------

    def handle(self, data):
        """The answer to one request's bytes."""
        try:
            request = P.parse_request(data)
            if isinstance(request, P.Register):
                return self.register()
            return self.pull(request.acks, request.take)
        except F.FrameError as e:
            return self._error(e.code, str(e))
        except StoreError as e:
            self.log.error("store failure answering {client}: {why}",
                           client=self.address, why=str(e))
            return self._error(F.E_INTERNAL, "the gateway cannot access its storage")

    def _error(self, code, message):
        self.factory.errors[F.ERROR_NAMES.get(code, str(code))] += 1
        return P.Error(code, message)

    def register(self):
        store = self.factory.store
        if store.is_registered(self.client_key):
            # the client's link registers on every connection: for a key
            # already in the ledger that is only a sign of life
            self._touch(force=True)
            return P.Registered()
        if not store.has_room(self.client_key):
            raise F.FrameError(
                F.E_FULL, f"this gateway is full: {store.max_clients} clients are registered")
        why = self.factory.admission.allow(self.transport.getPeer())
        if why is not None:
            raise F.FrameError(F.E_RATE_LIMITED, why)
        # The ledger keeps a token hash for the schema's sake; the key the
        # handshake proved is the credential, so the token is drawn, hashed
        # and forgotten: no bearer secret exists to be sent or stolen.
        store.register(self.client_key, self.factory.randbytes(F.TOKEN_SIZE))
        self._touched_at = self.factory.clock.seconds()
        self.log.info("registered client {client} on the private link", client=self.address)
        return P.Registered()

    def _touch(self, force=False):
        now = self.factory.clock.seconds()
        if force or self._touched_at is None \
                or now - self._touched_at >= self.factory.touch_interval:
            # a registration in use does not expire (MailboxStore.expire_idle)
            self.factory.store.touch(self.client_key)
            self._touched_at = now

    def pull(self, acks, take=True):
        store = self.factory.store
        if not store.is_registered(self.client_key):
            raise F.FrameError(F.E_UNKNOWN_CLIENT, "this client key is not registered here")
        self._touch()
        acked = store.ack(self.client_key, acks) if acks else 0
        if not take:
            return P.Messages((), acked)
        messages = []
        # Once per connection: the channel loses nothing and reorders
        # nothing, so a message sent on it needs sending again only on the
        # next connection, if it was not acknowledged by then. That lets a
        # client keep several pulls in flight, acking each answer later.
        for ident, body in store.pull(self.client_key, P.PULL_SIZE, after=self.cursor):
            self.cursor = ident
            if len(body) > P.MESSAGE_ROOM:
                # Nothing from the mix network is this long; a message that
                # is stays stored rather than be cut or dropped.
                self.log.warn("message {id} of {client} is {n} bytes, over a slot: not sent",
                              id=ident, client=self.address, n=len(body))
                continue
            messages.append((ident, body))
        return P.Messages(tuple(messages), acked)


class PrivateClientFactory(Factory):
    """The gateway's private client listener: channel, then requests.

    ``buildProtocol`` gives a :class:`ChannelProtocol`; its ``accept`` is
    :meth:`accept`, which admits every key the handshake proved (an
    unregistered key may only register), and so answers the same for
    registered and unknown keys until the key is proven. Unbounded:
    :func:`listener_factory` puts the bounds around it.
    """

    noisy = False

    def __init__(self, store, keys, clock=None, randbytes=os.urandom, max_errors=5,
                 handshake_timeout=HANDSHAKE_TIMEOUT, admission=None,
                 touch_interval=TOUCH_INTERVAL, answer_interval=ANSWER_INTERVAL):
        self.store = store
        self.keys = keys
        self.clock = store.clock if clock is None else clock
        self.randbytes = randbytes
        self.max_errors = max_errors
        self.handshake_timeout = handshake_timeout
        #: seconds between two records of a live connection's client as seen
        self.touch_interval = touch_interval
        self.admission = admission if admission is not None else RegistrationLimit(self.clock)
        self.errors = collections.Counter()
        if not answer_interval >= 0:
            raise ValueError(f"answer_interval must be 0 or more, not {answer_interval}")
        self.answer_interval = answer_interval
        self._held = []     # (protocol, answer bytes) waiting for the tick
        self._tick = None
        self._rollbacks = getattr(store, "ack_rollbacks", 0)
        #: proven client connections (their inner protocols)
        self.connections = set()
        #: channel connections, proven or not
        self.channels = set()

    def buildProtocol(self, addr):
        channel = Channel.gateway(self.keys, self.clock, receive_sizes={P.REQUEST_SIZE},
                                  send_sizes={P.ANSWER_SIZE})
        proto = _CountedChannel(channel, self.accept, self.clock, self.handshake_timeout)
        proto.factory = self
        return proto

    def accept(self, client_key):
        return PrivateClientProtocol(self, client_key)

    # ---- the answer tick ------------------------------------------------

    def hold(self, protocol, answer):
        """Keep *answer* of *protocol* for the next tick."""
        self._held.append((protocol, answer))
        protocol.held += 1
        if self._tick is None:
            self._tick = self.clock.callLater(self.answer_interval, self.release)

    def release(self, resume=True):
        """The tick: commit the acknowledgements deleted since the last one,
        then send every answer held, in order; then let connections that
        stopped at MAX_HELD answer on (unless *resume* is false)."""
        tick, self._tick = self._tick, None
        if tick is not None and tick.active():
            tick.cancel()
        held, self._held = self._held, []
        try:
            self.store.commit_acks()
        except StoreError:
            pass  # logged below, with what it means
        rollbacks = getattr(self.store, "ack_rollbacks", 0)
        if rollbacks != self._rollbacks:
            # Acks rolled back (this commit, or the store's own earlier in
            # the turn): the held answers would say "acked" for messages
            # still stored. Unsent, their connections close: the client's
            # acks of those pulls fail, and it sends them again on its next
            # connection, where the messages come again too.
            self._rollbacks = rollbacks
            log.error("committing acknowledgements failed: closing the {n} connection(s)"
                      " whose answers waited for it", n=len({id(p) for p, _ in held}))
            for protocol, _ in held:
                protocol.held -= 1
                if protocol.transport is not None and not protocol.transport.disconnecting:
                    protocol._pending.clear()
                    protocol.transport.loseConnection()
            return
        stopped = []
        for protocol, answer in held:
            protocol.held -= 1
            transport = protocol.transport
            if transport is None or transport.disconnecting:
                continue  # gone meanwhile: nobody to answer
            transport.write(answer)
            if protocol._pending and (not stopped or stopped[-1] is not protocol):
                stopped.append(protocol)
        if resume:
            for protocol in dict.fromkeys(stopped):
                if protocol.transport is not None and not protocol.paused:
                    protocol._answer()


def listener_factory(factory, max_connections=MAX_CONNECTIONS, idle_timeout=IDLE_TIMEOUT,
                     clock=None):
    """The gateway's client listener factory: *factory* (a PrivateClientFactory)
    within its bounds. Channels count, proven or not: a handshake holds a
    socket as much as a session does. The handshake deadline is the
    channel's own (it logs why it closes); the idle timeout runs from the
    proven handshake."""
    return ConnectionLimit(factory, factory.clock if clock is None else clock,
                           max_connections, idle_timeout=idle_timeout,
                           handshake_timeout=factory.handshake_timeout + 1.0,
                           name="gateway client listener")


class _CountedChannel(ChannelProtocol):
    """A ChannelProtocol its factory counts from accept to close, so the
    connection bound covers handshakes too."""

    def connectionMade(self):
        self.closed = Deferred()
        self.factory.channels.add(self)
        super().connectionMade()

    def proven(self):
        # the limiting wrapper's idle timeout applies from now
        handshake_done(self.transport)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.channels.discard(self)
        self.closed.callback(None)
