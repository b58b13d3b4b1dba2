"""The client core: topology, the two Poisson streams, and the fetch loop.

Real messages wait in a queue until the sending stream fires; only then is
the route drawn from the current topology and the packet built, so a
message queued while the network changes still takes a live route. When no
route can be built the message stays queued (the log says why) instead of
being dropped, which is what nym v0.5 did.
"""

import collections
import enum
import random

import attrs
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.addressing import AddressError, NodeAddress, decode_client_address, \
    encode_client_address
from nymtx.client.cover import LoopCover
from nymtx.interfaces import IClientCore
from nymtx.links import LogThrottle
from nymtx.observer import OneShot
from nymtx.keys import KeyFormatError, decode_key, encode_key
from nymtx.poisson import PoissonLoop
from nymtx.sphinx import MAX_MESSAGE_SIZE, SphinxError, build_packet, sample_delays
from nymtx.topology import TopologyError

#: Loop cover and real messages alike carry a zero SURB identifier, as in nym v0.5.
IDENTIFIER = bytes(16)


class SendError(ValueError):
    """A message that cannot be sent: too long, or to an unknown recipient."""


class ClientStopped(Exception):
    """The client stopped before the message left."""


class ClientStateError(RuntimeError):
    """start() on a client that is running, stopping or stopped (no restart)."""


class CoreState(enum.Enum):
    """Where a client core is in its life; one at a time, in this order."""

    NEW = "new"              # made, not started: send() queues, nothing leaves
    STARTING = "starting"    # loops started, the first topology fetch under way
    RUNNING = "running"
    STOPPING = "stopping"    # loops stopped, waiting for a pull or ack in flight
    STOPPED = "stopped"      # for good: a stopped client is not started again


def parse_recipient(text):
    """``CLIENT`` or ``CLIENT@GATEWAY`` (base58 both) → (client_key, gateway_key | None)."""
    if not isinstance(text, str):
        raise SendError(
            f"recipient_address must be a base58 string, not {type(text).__name__}")
    client_text, at, gateway_text = text.partition("@")
    try:
        client_key = decode_client_address(client_text)
    except AddressError as e:
        raise SendError(f"invalid recipient_address: {e}")
    if not at:
        return client_key, None
    try:
        gateway_key = decode_key(gateway_text)
    except KeyFormatError as e:
        raise SendError(f"invalid gateway in recipient_address: {e}")
    return client_key, gateway_key


def check_message(message):
    if isinstance(message, str):
        message = message.encode("utf-8")
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise SendError(f"a message is bytes or text, not {type(message).__name__}")
    message = bytes(message)
    if len(message) > MAX_MESSAGE_SIZE:
        raise SendError(f"message too long. Sent {len(message)} bytes,"
                        f" but the maximum is {MAX_MESSAGE_SIZE}")
    return message


@attrs.define(eq=False)
class _Outgoing:
    recipient: bytes
    gateway_key: object
    message: bytes
    sent: Deferred


@attrs.define(eq=False)
class _PoissonRuns:
    """Runs ``action`` at the events of a Poisson process of mean ``interval`` s.

    The fetch loop's clock: the gaps are the client's own, drawn from *rng*,
    and nothing the gateway sends or the client does moves them (a run is
    scheduled before the one before it has finished, as PoissonLoop does),
    so the times of the pulls carry no information (docs/decisions.md).
    Runs may overlap (the private link pipelines its pulls); at most
    ``max_in_flight`` at once, past it a run is skipped, which only says the
    gateway is slow to the gateway itself. Failures are logged as
    :class:`_Periodic` logs them; a run not finished after ``stall_after``
    seconds (default ten intervals, at least 30 s) is said once, and again
    when it finishes.
    """

    log = Logger()

    clock: object
    interval: float
    action: object
    name: str = "periodic task"
    rng: object = None
    max_in_flight: int = 8
    stall_after: float = None
    failures: int = 0
    skipped: int = 0
    _loop: object = None
    _in_flight: dict = attrs.field(factory=dict)   # Deferred -> its stall watch
    _quiet: object = None
    _stalled: bool = False

    def start(self):
        """Start (a first run now); fires when that run has finished."""
        self._loop = PoissonLoop(self._tick, self.interval, self.clock, self.rng)
        self._loop.start(now=True)
        return self._after(list(self._in_flight))

    def _tick(self):
        if len(self._in_flight) >= self.max_in_flight:
            self.skipped += 1
            return
        limit = self.stall_after or max(30.0, 10 * self.interval)
        d = maybeDeferred(self.action)
        if d.called:
            d.addErrback(self._failed)
            return
        self._in_flight[d] = self.clock.callLater(limit, self._stall, limit)
        d.addErrback(self._failed)
        d.addBoth(self._done, d)

    def _stall(self, limit):
        if not self._stalled:
            self._stalled = True
            self.log.warn("the client's {name} has not finished after {limit:g} s",
                          name=self.name, limit=limit)

    def _failed(self, failure):
        self.failures += 1
        if self._quiet is None:
            self._quiet = LogThrottle(self.clock)
        count = self._quiet.allow("failed")
        if count:
            self.log.failure("the client's {name} failed ({count} time(s) since the last"
                             " such line); it runs again on its schedule", failure,
                             name=self.name, count=count)

    def _done(self, result, d):
        watch = self._in_flight.pop(d, None)
        if watch is not None and watch.active():
            watch.cancel()
        if self._stalled and not self._in_flight:
            self._stalled = False
            self.log.info("the client's {name} finished at last", name=self.name)
        return result

    @staticmethod
    def _after(deferreds):
        async def wait():
            for d in deferreds:
                out = Deferred()
                d.addBoth(lambda r, out=out: (out.callback(None), r)[1])
                await out
        return Deferred.fromCoroutine(wait())

    def stop(self):
        """Stop scheduling; fires once the runs in flight have finished."""
        if self._loop is not None:
            self._loop.stop()
        return self._after(list(self._in_flight))


@attrs.define(eq=False)
class _Periodic:
    """Runs ``action`` now and every ``interval`` s after it finishes, never overlapping.

    The actions handle the failures they expect (a directory or gateway
    down) themselves; anything else that reaches here is a bug or a broken
    collaborator (a closed inbox, say), and a loop that fails on every run
    must be heard: it is logged with its traceback, the first time and then
    at most once a minute with a count, and the loop goes on. A run that
    does not finish stalls the loop (runs never overlap): that is said too,
    once ``stall_after`` seconds have passed (default: ten intervals, at
    least 30 s), and again when it finishes.
    """

    log = Logger()

    clock: object
    interval: float
    action: object
    name: str = "periodic task"
    _call: object = None
    _running: bool = False
    _busy: object = None
    _soon: object = None
    failures: int = 0
    stall_after: float = None
    _quiet: object = None
    _watch: object = None
    _stalled: bool = False

    def start(self):
        """Start; the Deferred fires when the first run has finished."""
        self._running = True
        self._run()
        return self._after_busy()

    def _after_busy(self):
        if self._busy is None:
            return succeed(None)
        d = Deferred()
        self._busy.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def _run(self):
        self._call = None
        limit = self.stall_after or max(30.0, 10 * self.interval)
        self._watch = self.clock.callLater(limit, self._stall, limit)
        self._busy = maybeDeferred(self.action)
        self._busy.addErrback(self._failed)
        self._busy.addBoth(self._done)

    def _stall(self, limit):
        self._watch = None
        self._stalled = True
        self.log.warn("the client's {name} has not finished after {limit:g} s: the loop"
                      " waits for it and does not run again until it does",
                      name=self.name, limit=limit)

    def _failed(self, failure):
        self.failures += 1
        if self._quiet is None:
            self._quiet = LogThrottle(self.clock)
        count = self._quiet.allow("failed")
        if count:
            self.log.failure("the client's {name} failed ({count} time(s) since the last"
                             " such line); it runs again in {interval:g} s", failure,
                             name=self.name, count=count, interval=self.interval)

    def _done(self, _):
        self._busy = None
        if self._watch is not None:
            if self._watch.active():
                self._watch.cancel()
            self._watch = None
        if self._stalled:
            self._stalled = False
            self.log.info("the client's {name} finished at last; the loop goes on",
                          name=self.name)
        if self._running:
            delay, self._soon = min(self.interval, self._soon or self.interval), None
            self._call = self.clock.callLater(delay, self._run)

    def soon(self, delay):
        """Run again within *delay* seconds (or at the usual time, if sooner)."""
        if self._call is None or not self._call.active():
            self._soon = delay  # a run is in flight: it schedules the next one
        elif self._call.getTime() > self.clock.seconds() + delay:
            self._call.reset(delay)

    def stop(self):
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        # Wait for an action in flight: stopping must not cut a store/ack in two.
        return self._after_busy()


#: seconds between topology fetches while this client is not yet listed
OWN_LISTING_RECHECK = 1.0


@implementer(IClientCore)
@attrs.define(eq=False)
class ClientCore:
    """One client's traffic; its collaborators are passed in (see docs/internals.md)."""

    log = Logger()

    reactor: object
    config: object          # nymtx.client.config.ClientConfig
    keys: object            # nymtx.keys.KeyPair
    directory: object       # .get_topology() -> Deferred[Topology]
    links: object           # .send(NodeAddress, packet)
    gateway_link: object    # .pull() / .ack(ids) -> Deferred; .start() / .stop(); or None
    inbox: object           # nymtx.client.inbox.Inbox
    # (GatewayInfo) -> link: the gateway's client listener is known only from
    # the topology, so without a link one is made when the topology lists it.
    connect_gateway: object = None
    rng: random.Random = attrs.field(factory=random.SystemRandom)
    #: real messages waiting for the sending stream; past it send() refuses,
    #: since the stream drains only one every message_sending_average_delay
    max_queued: int = 1000
    #: messages kept for the app; past it the fetch loop's pulls take nothing
    #: (same schedule, same frames) and the mail waits at the gateway
    #: (whose per-client quota then applies)
    max_inbox: int = 10000
    topology: object = None
    sent_real: int = 0
    sent_cover: int = 0
    skipped_cover: int = 0
    _queue: collections.deque = attrs.field(factory=collections.deque)
    _listeners: list = attrs.field(factory=list)
    _cover: LoopCover = attrs.field(init=False)
    _sending: PoissonLoop = attrs.field(init=False)
    _looping: PoissonLoop = attrs.field(init=False)
    _refresh: _Periodic = attrs.field(init=False)
    _fetching: _PoissonRuns = attrs.field(init=False)
    _blocked: object = None
    _directory_down: bool = False
    _gateway_down: bool = False
    _inbox_full: bool = False
    state: CoreState = CoreState.NEW
    _stopping: object = None   # stop()'s OneShot, from STOPPING on

    def __attrs_post_init__(self):
        c = self.config
        self._cover = LoopCover(self.keys.private_key)
        self._sending = PoissonLoop(self._sending_tick, c.message_sending_average_delay / 1000,
                                    self.reactor, self.rng)
        self._looping = PoissonLoop(self._cover_tick, c.loop_cover_traffic_average_delay / 1000,
                                    self.reactor, self.rng)
        self._refresh = _Periodic(self.reactor, c.topology_refresh_rate / 1000,
                                  self.refresh_topology, "topology refresh")
        self._fetching = _PoissonRuns(self.reactor, c.fetch_message_delay / 1000,
                                      self.fetch_from_gateway, "fetch from the gateway",
                                      rng=self.rng)

    @property
    def address(self):
        return encode_client_address(self.keys.public_key)

    @property
    def queued(self):
        return len(self._queue)

    # -- life cycle -----------------------------------------------------------

    @property
    def running(self):
        """Started and not stopped."""
        return self.state in (CoreState.STARTING, CoreState.RUNNING)

    def start(self):
        """Start every loop; the Deferred fires after the first topology fetch.

        Only once: ClientStateError if it was started before. A stopped
        client has closed what it owned; make a new one instead.
        """
        if self.state is not CoreState.NEW:
            raise ClientStateError(
                f"the client is {self.state.value}: a client starts only once;"
                " make a new one (the same config gives the same keys and inbox)")
        self.state = CoreState.STARTING
        if self.gateway_link is not None:
            self.gateway_link.start()
        first = self._refresh.start()
        self._sending.start()
        self._looping.start()
        self._fetching.start()

        def started(result):
            if self.state is CoreState.STARTING:
                self.state = CoreState.RUNNING
            return result
        return first.addCallback(started)

    def stop(self):
        """Stop every loop; fail the Deferreds of messages that never left.

        Fires once a pull or ack in flight is done and the gateway link is
        closed. Stopping a stopped (or never started) client does nothing more.
        """
        if self._stopping is not None:  # STOPPING or STOPPED: the same answer
            return self._stopping.when_fired()
        was_new = self.state is CoreState.NEW
        self.state = CoreState.STOPPING
        self._stopping = OneShot()
        self._sending.stop()
        self._looping.stop()
        waits = [self._refresh.stop(), self._fetching.stop()]
        queue, self._queue = self._queue, collections.deque()
        for item in queue:
            item.sent.errback(ClientStopped("the client stopped before the message was sent"))
        d = Deferred.fromCoroutine(self._wait(waits))
        if not was_new:
            d.addCallback(lambda _: self.gateway_link.stop() if self.gateway_link else None)

        def stopped(result):
            self.state = CoreState.STOPPED
            return result
        d.addBoth(stopped)
        d.addBoth(self._stopping.fire)
        return self._stopping.when_fired()

    @staticmethod
    async def _wait(deferreds):
        for d in deferreds:
            await d

    # -- topology -------------------------------------------------------------

    def refresh_topology(self):
        d = self.directory.get_topology()
        d.addCallbacks(self._got_topology, self._no_topology)
        return d

    def _got_topology(self, topology):
        if self._directory_down or self.topology is None:
            self.log.info("topology: {mixnodes} mixnodes, {gateways} gateways",
                          mixnodes=len(topology.mixnodes), gateways=len(topology.gateways))
        self._directory_down = False
        self.topology = topology
        # A mixnode that left the topology is never the first hop again:
        # its link must not redial it for as long as packets wait there.
        self.links.retain(m.address for m in topology.mixnodes)
        if self.keys.public_key not in topology.clients():
            # Just registered: the gateway lists us at its next presence
            # (every 1.5 s), and until the topology does, no client (this one
            # included) can write to us without the CLIENT@GATEWAY form.
            self._refresh.soon(OWN_LISTING_RECHECK)
        if self.gateway_link is None and self.connect_gateway is not None and self.running:
            gateway = topology.gateway_by_key(self.config.gateway_key or b"")
            if gateway is None:
                self.log.warn("my gateway {key} is not in the topology",
                              key=self.config.provider_id)
            else:
                self.gateway_link = self.connect_gateway(gateway)
                self.gateway_link.start()

    def _no_topology(self, failure):
        if not self._directory_down:
            self.log.warn("cannot fetch the topology ({why}); keeping the last one",
                          why=failure.getErrorMessage())
        self._directory_down = True

    def clients(self):
        """Every client registered at any gateway, base58.

        Before the first topology arrives this is an error, not an empty
        list: "nobody is registered" would be a wrong answer.
        """
        if self.topology is None:
            raise SendError("the network topology is not known yet: the directory at "
                            f"{self.config.directory_server} has not answered")
        return [encode_client_address(key) for key in self.topology.clients()]

    # -- sending --------------------------------------------------------------

    def send(self, recipient, message):
        """Queue *message* for the sending stream.

        Raises SendError at once for a bad message or recipient; returns a
        Deferred that fires when the packet is handed to the first mixnode's
        link, or fails with ClientStopped (the client stopped before it
        left, or had stopped already).
        """
        message = check_message(message)
        client_key, gateway_key = parse_recipient(recipient)
        if self.state in (CoreState.STOPPING, CoreState.STOPPED):
            return fail(ClientStopped("the client has stopped: the message was not queued"))
        if self.topology is not None:
            if gateway_key is None and self.topology.gateway_for(client_key) is None:
                raise SendError(
                    f"unknown recipient {recipient}: no gateway in the topology lists it"
                    " (give it as CLIENT@GATEWAY)")
            if gateway_key is not None and self.topology.gateway_by_key(gateway_key) is None:
                raise SendError(
                    f"unknown gateway {encode_key(gateway_key)} in {recipient}:"
                    " it is not in the topology")
        if len(self._queue) >= self.max_queued:
            raise SendError(
                f"the send queue is full: {len(self._queue)} messages wait for the sending"
                f" stream, which sends one every {self.config.message_sending_average_delay}"
                " ms on average; try again later")
        item = _Outgoing(client_key, gateway_key, message, Deferred())
        self._queue.append(item)
        return item.sent

    def _sending_tick(self):
        if not self._send_real():
            self._send_cover()

    def _cover_tick(self):
        self._send_cover()

    def _send_real(self):
        if not self._queue:
            return False
        if self.topology is None:
            return self._blocked_by("no topology yet")
        for item in self._queue:
            if item.gateway_key is not None:
                gateway = self.topology.gateway_by_key(item.gateway_key)
            else:
                gateway = self.topology.gateway_for(item.recipient)
            if gateway is not None:
                break
        else:
            return self._blocked_by("no recipient of a queued message is in the topology")
        try:
            self._send_packet(gateway, item.recipient, item.message)
        except (TopologyError, SphinxError, AddressError) as e:
            return self._blocked_by(f"no route: {e}")
        self._queue.remove(item)
        self._blocked = None
        self.sent_real += 1
        item.sent.callback(None)
        return True

    def _blocked_by(self, why):
        # Log a reason when it changes, not on every tick of the stream.
        if why != self._blocked:
            self.log.warn("{n} real message(s) stay queued: {why}", n=len(self._queue), why=why)
            self._blocked = why
        return False

    def _send_cover(self):
        gateway = None
        if self.topology is not None and self.config.gateway_key is not None:
            gateway = self.topology.gateway_by_key(self.config.gateway_key)
        if gateway is None:
            self.skipped_cover += 1
            return
        try:
            self._send_packet(gateway, self.keys.public_key, self._cover.make())
        except (TopologyError, SphinxError, AddressError) as e:
            self.log.debug("loop cover skipped: {why}", why=str(e))
            self.skipped_cover += 1
            return
        self.sent_cover += 1

    def _send_packet(self, gateway, destination, message):
        route = self.topology.route(gateway, self.rng)
        delays = sample_delays(len(route), self.config.average_packet_delay / 1000, self.rng)
        packet = build_packet(route, destination, IDENTIFIER, message, delays)
        self.links.send(NodeAddress.from_bytes(route[0].address), packet)

    # -- receiving ------------------------------------------------------------

    def on_message(self, callback):
        """Push mode: *callback(body: bytes)* for each message, which then
        leaves the inbox (``fetch`` will not return it)."""
        self._listeners.append(callback)
        self._deliver()

    def fetch(self):
        """Remove and return every stored message, oldest first."""
        return self.inbox.take_all()

    def peek(self, max_bytes=None):
        """Stored ``(id, body)`` pairs, oldest first, bodies adding up to at
        most *max_bytes*; they stay in the inbox until ``delete(ids)``."""
        return self.inbox.peek(max_bytes)

    def delete(self, ids):
        """The application has these messages (from ``peek``): forget them."""
        self.inbox.delete(ids)

    def fetch_from_gateway(self):
        """One pull, on the fetch loop's Poisson clock. With the inbox full
        it takes nothing, but still goes out and still carries acks: the
        schedule and the frames stay the same whatever the inbox holds."""
        if self.gateway_link is None:
            return None
        take = len(self.inbox) < self.max_inbox
        if not take and not self._inbox_full:
            self.log.warn("the inbox holds {n} messages: pulls take nothing from the gateway"
                          " until the application fetches some", n=len(self.inbox))
        self._inbox_full = not take
        d = self.gateway_link.pull() if take else self.gateway_link.pull(0)
        d.addCallbacks(self._pulled, self._pull_failed)
        d.addErrback(self._store_failed)
        return d

    def _store_failed(self, failure):
        # Nothing is lost (the ack goes only after the commit), but the
        # application must hear why its mail stays at the gateway.
        self.log.failure("cannot store pulled messages in the inbox; they stay at the"
                         " gateway and are pulled again", failure)

    def _pulled(self, pulled):
        if self._gateway_down:
            self.log.info("gateway reachable again")
        self._gateway_down = False
        if not pulled:
            return None
        real = [(i, body) for i, body in pulled if not self._cover.is_own_cover(body)]
        # Commit first: the gateway deletes what we ack, so an ack before the
        # commit could lose a message in a crash.
        stored = self.inbox.store(real)
        ids = [i for i, _ in pulled]
        self.log.debug("stored {n} message(s), {c} loop cover discarded",
                       n=len(stored), c=len(pulled) - len(real))
        self._deliver()
        # The ack rides on the next pull: waiting for it here would wait for
        # that pull (the fetch loop does not wait anyway; see _PoissonRuns).
        d = self.gateway_link.ack(ids)
        d.addCallback(lambda _: self.inbox.acked(ids))
        d.addErrback(self._pull_failed)
        return None

    def _pull_failed(self, failure):
        if not self._gateway_down:
            self.log.warn("cannot fetch from the gateway: {why}", why=failure.getErrorMessage())
        self._gateway_down = True

    def _deliver(self):
        if not self._listeners:
            return
        for body in self.inbox.take_all():
            for callback in list(self._listeners):
                try:
                    callback(body)
                except Exception:
                    self.log.failure("message callback {cb!r} failed", cb=callback)
