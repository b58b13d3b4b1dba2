"""The client core: topology, the two Poisson streams, and the fetch loop.

Every payload that leaves is a SURB-ACK back to this client's own gateway
and an end-to-end envelope (nymtx.message, docs/message-format.md), 975
bytes whatever it carries (docs/surb.md). Each message the application
hands over is kept in the outbox (sqlite) until every fragment has been
acknowledged; a fragment whose ack does not come back in time is sent
again, in a slot of the sending stream, up to the configured cap; the
application learns ``delivered`` or ``failed`` for each message. After a
restart on the same files, what the outbox holds is sent again. Messages of any
size up to ``[message] maximum_message_size`` wait in a bounded SendQueue
as fragments; each tick of the sending stream (``SendingStream.tick``)
sends the next fragment or, with none queued, drop cover to a gateway that
discards it. Loop cover has its own independent stream, sealed to this
client and routed back to it. So what a client sends, and what comes back
to it, does not depend on whether it is sending (Loopix; docs/decisions.md).

The route is drawn from the current topology only when a tick sends, so a
message queued while the network changes still takes a live route. When no
route can be built the fragment stays queued (the log says why) and the
tick sends drop cover instead, rather than dropping the message as nym
v0.5 did.

Each pulled payload is opened by a ``Receiver``: what is not for this key,
and cover, is discarded; fragments are reassembled in bounded memory; whole
messages are committed to the inbox with their kind before the gateway is
told to delete what was pulled.
"""

import enum
import hashlib
import random
import uuid

import attrs
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.addressing import AddressError, NodeAddress, decode_client_address, \
    encode_client_address
from nymtx.interfaces import IClientCore
from nymtx.links import LogThrottle
from nymtx.observer import OneShot
from nymtx.keys import KeyFormatError, decode_key, encode_key
from nymtx.poisson import PoissonLoop
from nymtx.message import (
    DEFAULT_MAX_MESSAGE_SIZE, FRAGMENT_DATA_SIZE, KIND_BINARY, KIND_TEXT, MessageLayerError,
    Message, Outgoing,
    QueueFull, Reassembler, Receiver, SendingStream, SendQueue, drop_gateway, fragment_count,
    loop_cover_payload)
from nymtx.message.envelope import check_recipient_key
from nymtx.client.outbox import Outbox, OutboxError
from nymtx.client.replystore import ReplyStore
from nymtx.message import seal_fragment
from nymtx.message.errors import PlaintextError
from nymtx.message.fragment import KIND_REPLIABLE, KIND_TOP_UP
from nymtx.message.payload import (
    REPLY_DATA_SIZE, Fragment, decode_reply_fragment, encode_reply_fragment)
from nymtx.reliable import replies as reply_layer
from nymtx.reliable.ack import COVER, AckError, ack_packet, build_surb_ack, compose_payload
from nymtx.reliable.inbound import Ack, Envelope, Reply, classify_record
from nymtx.sphinx.surb import SurbError, use_surb
from nymtx.reliable.health import RouteHealth
from nymtx.reliable.retransmit import DELIVERED, GATEWAY_ACK_HOLD, Retransmitter
from nymtx.sphinx import SphinxError, build_packet, sample_delays
from nymtx.sphinx.surb import DELIVERY_SIZE
from nymtx.topology import TopologyError

#: Every packet carries a zero SURB identifier, as in nym v0.5.
IDENTIFIER = bytes(16)
#: seconds between sweeps of reassembly sets that stopped receiving fragments
EXPIRE_INTERVAL = 10.0
#: how long an outbox row outlives its reported outcome (see ClientCore._outcome)
REPORT_GRACE = 1.0


class SendError(ValueError):
    """A message that cannot be sent: too long, to an unknown recipient, or
    the send queue is full (the message says which bound)."""


class ClientStopped(Exception):
    """The client stopped before the message left (or was acknowledged); it
    stays in the outbox and goes out again when a client starts on its files."""


class DeliveryFailed(Exception):
    """No acknowledgement came back for a fragment of the message after its
    last retransmission ([reliable] maximum_retransmissions)."""


#: the longest message id the application may give
MAX_ID_LENGTH = 200
_SET_ID_PERSON = b"nymtx-set-id"


def _recipient_blob(client_key, gateway_key):
    """What the outbox keeps as the recipient: client key || gateway key (if given)."""
    return bytes(client_key) + (bytes(gateway_key) if gateway_key is not None else b"")


def set_id_of(ack_key, number, reply=False):
    """The fragment set id of outbox message *number*: derived under the
    outbox's secret key, so a restarted client sends the same set (the
    recipient reassembles retries and first sends together) and the set id
    still looks random to the recipient. 4 bytes (version 2's header), or 8
    for a reply (its wide header): docs/message-format.md "Fragment"."""
    return hashlib.blake2b(number.to_bytes(8, "big"), digest_size=8 if reply else 4, key=ack_key,
                           person=_SET_ID_PERSON).digest()


#: fetch intervals added to the ack wait: an ack waits at this client's
#: gateway for the next pull, an exponential wait of mean fetch_message_delay,
#: which passes 5 means with probability e^-5 < 1 %: so few retries are
#: spurious (an ack that was only waiting to be fetched)
FETCH_WAITS = 5


def ack_wait_addition(config):
    """The Retransmitter's addition, in seconds: ``[reliable] ack_wait_addition``
    (the gateways' commit) plus FETCH_WAITS fetch intervals, plus as many
    means of the recipient gateway's exponential hold on the ack (its
    setting is not announced: the default, GATEWAY_ACK_HOLD). Both waits
    pass 5 means together only if one does: at most 2 e^-5, 1.3 %."""
    return ((config.ack_wait_addition + FETCH_WAITS * config.fetch_message_delay) / 1000
            + FETCH_WAITS * GATEWAY_ACK_HOLD)


#: seconds a reply block this client builds is valid: nymtx nodes keep
#: their keys (there are no key epochs yet), so this bounds only how long
#: its keys are kept and how long a replier may hold it
REPLY_SURB_LIFETIME = 24 * 3600.0
#: seconds before a replier asks again for blocks it asked for and did not get
ASK_AGAIN_AFTER = 60.0
#: at most this many reply blocks with one message or top-up (nym's cap)
MAX_REPLY_SURBS = reply_layer.MAX_SURBS_PER_MESSAGE


def _join_reply(pieces):
    """A reply's data (ReplyData or SurbRequest) from its pieces."""
    try:
        return reply_layer.decode_reply(b"".join(pieces))
    except reply_layer.ReplyError as e:
        raise PlaintextError(str(e)) from None


def parse_sender_tag(text):
    """A sender tag in the API (base58 of 16 bytes) as bytes, or SendError."""
    import base58
    if not isinstance(text, str):
        raise SendError(f"a sender tag is a base58 string, not {type(text).__name__}")
    try:
        tag = base58.b58decode(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise SendError(f"invalid sender tag: not base58 ({e})")
    if len(tag) != reply_layer.TAG_SIZE:
        raise SendError(f"invalid sender tag: {len(tag)} bytes, not {reply_layer.TAG_SIZE}")
    return tag


def encode_sender_tag(tag):
    import base58
    return base58.b58encode(bytes(tag)).decode("ascii")


@attrs.define(eq=False)
class _Tracked:
    """A message the outbox holds that this run sends, retries and reports."""

    number: int
    id: str
    recipient_key: bytes
    gateway_key: object
    framed: bytes
    count: int
    set_id: bytes
    sent: object = None      # Deferred: the last fragment left (first sends)
    outcome: object = None   # Deferred: delivered / DeliveryFailed, if asked for
    #: a reply: the sender tag whose reply blocks carry it (no recipient key)
    reply_tag: object = None
    #: a reply's fragments not yet sent once (replies do not use the SendQueue)
    next_index: int = 0
    #: from the outbox of an earlier run: nobody in this run asked for it
    restored: bool = False

    @property
    def room(self):
        return REPLY_DATA_SIZE if self.reply_tag is not None else FRAGMENT_DATA_SIZE

    def fragment(self, index):
        room = self.room
        start = index * room
        return Fragment(self.set_id, index, self.count, self.framed[start:start + room], room)


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


def to_message(message):
    """A Message from what an application hands over: text (str) is a text
    message, bytes a binary one, a Message itself. SendError otherwise."""
    if isinstance(message, Message):
        if message.kind not in (KIND_TEXT, KIND_BINARY) or not isinstance(message.data, bytes):
            raise SendError(f"unknown message kind {message.kind!r}")
        return message
    if isinstance(message, str):
        try:
            return Message.from_text(message)
        except UnicodeEncodeError:
            raise SendError("the message holds text that is not valid Unicode")
    if isinstance(message, (bytes, bytearray, memoryview)):
        return Message.from_bytes(bytes(message))
    raise SendError(f"a message is bytes or text, not {type(message).__name__}")


def check_message(message, max_size=DEFAULT_MAX_MESSAGE_SIZE):
    """to_message(*message*), refused with the seed's words past *max_size* bytes."""
    message = to_message(message)
    if len(message.data) > max_size:
        raise SendError(f"message too long. Sent {len(message.data)} bytes,"
                        f" but the maximum is {max_size}")
    return message


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
        if d in self._in_flight:
            return   # the same operation still running (one Deferred handed back twice)
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
    #: nymtx.client.outbox.Outbox; None: one in memory (nothing survives a restart)
    outbox: object = None
    # (GatewayInfo) -> link: the gateway's client listener is known only from
    # the topology, so without a link one is made when the topology lists it.
    connect_gateway: object = None
    rng: random.Random = attrs.field(factory=random.SystemRandom)
    #: messages kept for the app; past it the fetch loop's pulls take nothing
    #: (same schedule, same frames) and the mail waits at the gateway
    #: (whose per-client quota then applies)
    max_inbox: int = 10000
    topology: object = None
    #: packets of real fragments sent
    sent_real: int = 0
    #: whole messages whose last fragment has left
    sent_messages: int = 0
    #: cover packets sent: loop cover (sent_loop) and drop cover (sent_drop)
    sent_cover: int = 0
    sent_loop: int = 0
    sent_drop: int = 0
    skipped_cover: int = 0
    #: payloads pulled from the gateway, and how many were this client's own loops
    pulled: int = 0
    loops_returned: int = 0
    #: fragments sent again (their ack was late), acks received, records that
    #: were for nothing of ours (cover acks, stale or forged)
    sent_retries: int = 0
    acks_received: int = 0
    unreadable: int = 0
    #: messages whose outcome is known
    delivered: int = 0
    failed: int = 0
    _owns_outbox: bool = False
    _tracked: dict = attrs.field(factory=dict, init=False)
    _rtx: Retransmitter = attrs.field(init=False)
    _health: RouteHealth = attrs.field(init=False)
    _outcome_listeners: list = attrs.field(factory=list, init=False)
    #: the listeners of every outcome (not of chosen ids), and the outcomes of
    #: restored messages that came while there was none (see on_outcome)
    _every_listeners: list = attrs.field(factory=list, init=False)
    _unheard: list = attrs.field(factory=list, init=False)
    #: outbox rows of messages whose outcome was reported, removed after a grace
    _removals: dict = attrs.field(factory=dict, init=False)
    #: anonymous replies: the store (in the outbox's file), the replies not
    #: yet sent once, and the SURB-ACKs of replies we received, to send on
    replies: object = attrs.field(default=None, init=False)
    _replyq: list = attrs.field(factory=list, init=False)
    _reply_acks: list = attrs.field(factory=list, init=False)
    _reply_reassembler: object = attrs.field(default=None, init=False)
    _asked: dict = attrs.field(factory=dict, init=False)  # tag -> when we asked for more
    #: replies received, reply acks sent on, reply blocks received
    replies_received: int = 0
    reply_acks_sent: int = 0
    _listeners: list = attrs.field(factory=list)
    _observers: list = attrs.field(factory=list)
    _sendq: SendQueue = attrs.field(init=False)
    _stream: SendingStream = attrs.field(init=False)
    _receiver: Receiver = attrs.field(init=False)
    _unstored: list = attrs.field(factory=list, init=False)
    _sending: PoissonLoop = attrs.field(init=False)
    _looping: PoissonLoop = attrs.field(init=False)
    _refresh: _Periodic = attrs.field(init=False)
    _fetching: _PoissonRuns = attrs.field(init=False)
    _expiring: _Periodic = attrs.field(init=False)
    _blocked: object = None
    _directory_down: bool = False
    # why no signed topology is current (TopologyExpired), else None
    _expired: object = None
    _gateway_down: bool = False
    _inbox_full: bool = False
    state: CoreState = CoreState.NEW
    _stopping: object = None   # stop()'s OneShot, from STOPPING on

    def __attrs_post_init__(self):
        c = self.config
        if self.outbox is None:
            self.outbox = Outbox.open(":memory:", self.reactor)
            self._owns_outbox = True
        self.replies = ReplyStore(self.outbox.db, self.reactor)
        self._reply_reassembler = Reassembler(self.reactor,
                                              max_message_size=c.maximum_message_size,
                                              join=_join_reply)
        self._rtx = Retransmitter(self.reactor, self._outcome,
                                  multiplier=c.ack_wait_multiplier / 100,
                                  addition=ack_wait_addition(c),
                                  max_retransmissions=c.maximum_retransmissions,
                                  on_timeout=self._ack_overdue)
        self._health = RouteHealth(self.reactor)
        self._sendq = SendQueue(max_message_size=c.maximum_message_size,
                                max_messages=c.send_queue_messages,
                                max_bytes=c.send_queue_bytes)
        self._stream = SendingStream(self._sendq, self._send_real, self._send_drop,
                                     on_sent=self._message_sent, sendable=self._gateway_of,
                                     send_retry=self._send_retry)
        self._receiver = Receiver(
            self.keys.private_key, self.keys.public_key,
            Reassembler(self.reactor, max_message_size=c.maximum_message_size),
            on_loop=self._loop_returned)
        self._sending = PoissonLoop(self._sending_tick, c.message_sending_average_delay / 1000,
                                    self.reactor, self.rng)
        self._looping = PoissonLoop(self._cover_tick, c.loop_cover_traffic_average_delay / 1000,
                                    self.reactor, self.rng)
        self._refresh = _Periodic(self.reactor, c.topology_refresh_rate / 1000,
                                  self.refresh_topology, "topology refresh")
        self._fetching = _PoissonRuns(self.reactor, c.fetch_message_delay / 1000,
                                      self.fetch_from_gateway, "fetch from the gateway",
                                      rng=self.rng)
        self._expiring = _Periodic(self.reactor, EXPIRE_INTERVAL,
                                   self._receiver.reassembler.expire, "reassembly expiry")

    @property
    def address(self):
        return encode_client_address(self.keys.public_key)

    @property
    def queued(self):
        """Messages waiting (wholly or in part) for the sending stream."""
        return len(self._sendq)

    @property
    def queued_bytes(self):
        """Bytes of queued messages not sent yet."""
        return self._sendq.queued_bytes

    @property
    def max_message_size(self):
        return self.config.maximum_message_size

    @property
    def receive_stats(self):
        """nymtx.message.ReceiveStats: what the pulled payloads were."""
        return self._receiver.stats

    @property
    def reassembly(self):
        """The Reassembler (its stats, partial_sets, buffered_bytes)."""
        return self._receiver.reassembler

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
        self._restore()
        if self.gateway_link is not None:
            self.gateway_link.start()
        first = self._refresh.start()
        self._sending.start()
        self._looping.start()
        self._fetching.start()
        self._expiring.start()

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
        waits = [self._refresh.stop(), self._fetching.stop(), self._expiring.stop()]
        self._sendq.clear()
        # a clean stop: the events are out, the reported rows can go now
        removals, self._removals = self._removals, {}
        for number, call in removals.items():
            if call.active():
                call.cancel()
            self.outbox.remove(number)
        tracked, self._tracked = self._tracked, {}
        for t in tracked.values():
            self._rtx.cancel(t.number)
            if t.sent is not None and not t.sent.called:
                t.sent.errback(ClientStopped(
                    "the client stopped before the message was sent (it stays in the outbox"
                    " and goes out when a client starts on the same files)"))
            if t.outcome is not None and not t.outcome.called:
                t.outcome.errback(ClientStopped(
                    "the client stopped before the message was acknowledged (it stays in the"
                    " outbox and goes out again when a client starts on the same files)"))
        d = Deferred.fromCoroutine(self._wait(waits))
        if not was_new:
            d.addCallback(lambda _: self.gateway_link.stop() if self.gateway_link else None)

        def stopped(result):
            self.state = CoreState.STOPPED
            if self._owns_outbox:
                self.outbox.close()
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
            self.log.info("topology: {mixnodes}, {gateways}",
                          mixnodes=_count(len(topology.mixnodes), "mixnode"),
                          gateways=_count(len(topology.gateways), "gateway"))
        self._directory_down = False
        self._expired = None
        self.topology = topology
        self._advance_topology()
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

    def _advance_topology(self):
        """Route with the keys in use now: a node's announced next key from
        its start on (Topology.at), even between two refreshes."""
        topology = self.topology
        switch_at = getattr(topology, "switch_at", 0)
        if switch_at:
            now = int(self.reactor.seconds() * 1e9)
            if now >= switch_at:
                self.topology = topology.at(now)

    def _no_topology(self, failure):
        from nymtx.trust.client import TopologyExpired
        if failure.check(TopologyExpired):
            # the last good signed topology is too old to route on
            if self._expired is None:
                self.log.error("no current signed topology ({why}): the client stops"
                               " sending until its directories agree again",
                               why=failure.getErrorMessage())
            self._expired = failure.getErrorMessage()
            self.topology = None
            self._directory_down = True
            return
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

    def send(self, recipient, message, id=None, delivered=False):
        """Queue *message* for the sending stream: text (str) or bytes (binary),
        or a nymtx.message.Message. It is kept in the outbox until every
        fragment is acknowledged, and sent again after a restart.

        Raises SendError at once for a bad message, recipient or *id*, a
        message over ``[message] maximum_message_size``, or a full send queue
        or outbox (the error names the bound). Returns a Deferred that fires
        when the last fragment is handed to the first mixnode's link, or,
        with *delivered* True, with ``"delivered"`` once every fragment is
        acknowledged (failing with DeliveryFailed after the last retry).
        Either fails with ClientStopped if the client stops first.

        *id* (a string of 1 to MAX_ID_LENGTH characters, unique among the
        messages not yet delivered) names the message in outcome events
        (``on_outcome``); without one, a random id is made.
        """
        message = check_message(message, self.config.maximum_message_size)
        client_key, gateway_key = parse_recipient(recipient)
        id = self._check_id(id)
        if self.state in (CoreState.STOPPING, CoreState.STOPPED):
            return fail(ClientStopped("the client has stopped: the message was not queued"))
        self._check_recipient(recipient, client_key, gateway_key)
        return self._submit(client_key, gateway_key, message, id, delivered)

    def send_anonymous(self, recipient, message, reply_surbs=5, id=None, delivered=False):
        """As ``send``, with *reply_surbs* reply blocks (0 to 500) and this
        client's sender tag for *recipient*, who can then ``reply`` without
        learning this client's address (docs/surb.md §5)."""
        message = check_message(message, self.config.maximum_message_size)
        client_key, gateway_key = parse_recipient(recipient)
        id = self._check_id(id)
        if not isinstance(reply_surbs, int) or isinstance(reply_surbs, bool) \
                or not 0 <= reply_surbs <= MAX_REPLY_SURBS:
            raise SendError(f"replySurbs is a whole number from 0 to {MAX_REPLY_SURBS},"
                            f" not {reply_surbs!r}")
        if self.state in (CoreState.STOPPING, CoreState.STOPPED):
            return fail(ClientStopped("the client has stopped: the message was not queued"))
        self._check_recipient(recipient, client_key, gateway_key)
        tag = self.replies.sender_tag(client_key)
        blocks = self._make_reply_blocks(tag, reply_surbs)
        framed = reply_layer.encode_repliable(tag, blocks, message.kind, message.data)
        if len(framed) - 1 > self.config.maximum_message_size:
            raise SendError(f"message too long with its reply blocks: {len(framed) - 1} bytes,"
                            f" but the maximum is {self.config.maximum_message_size}")
        return self._submit(client_key, gateway_key, Message(KIND_REPLIABLE, framed[1:]), id,
                            delivered)

    def reply(self, sender_tag, message, id=None, delivered=False):
        """Reply to the sender of a message that came with *sender_tag* (16
        bytes, ``Message.sender_tag``), through the reply blocks it sent: one
        block per fragment of 621 bytes, so the reply can be no longer than
        the blocks held allow. When few blocks are left, more are asked for.
        Returns a Deferred as ``send`` does; SendError without enough blocks."""
        message = check_message(message, self.config.maximum_message_size)
        if not isinstance(sender_tag, (bytes, bytearray)) or \
                len(sender_tag) != reply_layer.TAG_SIZE:
            raise SendError(f"a sender tag is {reply_layer.TAG_SIZE} bytes")
        id = self._check_id(id)
        if self.state in (CoreState.STOPPING, CoreState.STOPPED):
            return fail(ClientStopped("the client has stopped: the reply was not queued"))
        framed = reply_layer.encode_reply(message.kind, message.data)
        return self._submit_reply(bytes(sender_tag), framed, id, delivered)

    def reply_blocks(self, sender_tag):
        """How many unexpired reply blocks this client holds for *sender_tag*."""
        return self.replies.count(bytes(sender_tag))

    def _check_id(self, id):
        if id is None:
            return uuid.uuid4().hex
        if not isinstance(id, str) or not 1 <= len(id) <= MAX_ID_LENGTH:
            raise SendError(f"a message id is a string of 1 to {MAX_ID_LENGTH} characters")
        return id

    def _check_recipient(self, recipient, client_key, gateway_key):
        if self._expired is not None:
            raise SendError(f"no current signed topology: {self._expired}")
        if self.topology is not None:
            if gateway_key is None and self.topology.gateway_for(client_key) is None:
                raise SendError(
                    f"unknown recipient {recipient}: no gateway in the topology lists it"
                    " (give it as CLIENT@GATEWAY)")
            if gateway_key is not None and self.topology.gateway_by_key(gateway_key) is None:
                raise SendError(
                    f"unknown gateway {encode_key(gateway_key)} in {recipient}:"
                    " it is not in the topology")

    def _make_reply_blocks(self, tag, n):
        """*n* fresh reply blocks back to this client, their keys remembered
        under *tag*; SendError without a route to its own gateway."""
        if n == 0:
            return []
        own = None
        if self.topology is not None and self.config.gateway_key is not None:
            own = self.topology.gateway_by_key(self.config.gateway_key)
        if own is None:
            raise SendError("reply blocks need a route to this client's own gateway, which"
                            " the topology does not list (yet)")
        self._advance_topology()
        topology = self.topology
        own = topology.gateway_by_key(self.config.gateway_key) or own
        lifetime = int(self.reactor.seconds() + REPLY_SURB_LIFETIME)

        def expires(route):
            # no later than the first key of its route stops being used
            # (docs/surb.md 5.6): a block past it would fail at that node
            until = topology.key_until(route) // 1_000_000_000
            return min(lifetime, until) if until else lifetime
        mean = self.config.average_packet_delay / 1000
        try:
            made = reply_layer.build_reply_surbs(
                n, lambda: topology.route(own, self.rng), self.keys.public_key, expires,
                lambda k: sample_delays(k, mean, self.rng))
        except (TopologyError, SphinxError, SurbError) as e:
            raise SendError(f"cannot build reply blocks: {e}")
        for block, keys in made:
            self.replies.remember(keys, tag, block.expires_at)
        return [block for block, _ in made]

    def _submit_reply(self, tag, framed, id, delivered=False, check_blocks=True):
        count = -(-len(framed) // REPLY_DATA_SIZE)
        # blocks are taken as the fragments leave: those queued are spoken for
        queued = sum(t.count - t.next_index for t in self._replyq if t.reply_tag == tag)
        held = self.replies.count(tag) - queued
        if check_blocks and held < count:
            raise SendError(f"a reply of {count} fragment(s) needs as many reply blocks;"
                            f" {held} are held for this sender tag")
        try:
            number = self.outbox.add(id, b"", framed[1:], framed[0], count, reply_tag=tag)
        except OutboxError as e:
            raise SendError(str(e))
        tracked = _Tracked(number, id, None, None, framed, count,
                           set_id_of(self.outbox.ack_key, number, reply=True), sent=Deferred(),
                           reply_tag=tag)
        self._tracked[number] = tracked
        self._replyq.append(tracked)
        self._rtx.track(number, count)
        if check_blocks:
            self._ask_for_more(tag, held - count)
        if delivered:
            tracked.outcome = Deferred()
            return tracked.outcome
        return tracked.sent

    def _ask_for_more(self, tag, left):
        """With few blocks left (and at least one to ask with), ask the
        sender for more: a SURB request, itself a reply."""
        low, want = self.replies.low_water, self.replies.request
        if not 1 <= left < low:
            return
        asked = self._asked.get(tag)
        if asked is not None and self.reactor.seconds() < asked + ASK_AGAIN_AFTER:
            return  # one request at a time, until its blocks come (or it was lost)
        self._asked[tag] = self.reactor.seconds()
        try:
            self._submit_reply(tag, reply_layer.encode_surb_request(want), uuid.uuid4().hex,
                               check_blocks=False).addErrback(lambda f: None)
        except SendError as e:
            self.log.debug("no SURB request: {why}", why=str(e))

    def _submit(self, client_key, gateway_key, message, id, delivered):
        count = fragment_count(len(message.data))
        try:
            check_recipient_key(client_key)
            number = self.outbox.add(id, _recipient_blob(client_key, gateway_key),
                                     message.data, message.kind, count)
        except OutboxError as e:  # full, or a duplicate id: the message says which
            raise SendError(str(e))
        except MessageLayerError as e:  # a recipient key nothing can be sealed to
            raise SendError(f"invalid recipient_address: {e}")
        tracked = _Tracked(number, id, client_key, gateway_key,
                           bytes((message.kind,)) + message.data, count,
                           set_id_of(self.outbox.ack_key, number), sent=Deferred())
        try:
            self._sendq.enqueue(client_key, message, destination=gateway_key, context=tracked,
                                set_id=tracked.set_id)
        except (QueueFull, MessageLayerError) as e:
            self.outbox.remove(number)
            if isinstance(e, QueueFull):
                raise SendError(f"{e} (the sending stream sends one fragment of"
                                f" {FRAGMENT_DATA_SIZE} bytes every"
                                f" {self.config.message_sending_average_delay} ms on average)")
            raise SendError(f"invalid recipient_address: {e}")
        self._tracked[number] = tracked
        self._rtx.track(number, count)
        if delivered:
            tracked.outcome = Deferred()
            return tracked.outcome
        return tracked.sent

    def _remove_reported(self, number):
        self._removals.pop(number, None)
        self.outbox.remove(number)

    def on_outcome(self, callback, every=True):
        """Call *callback(id, outcome)* for each message whose outcome is known:
        ``"delivered"`` (every fragment acknowledged) or ``"failed"`` (a
        fragment's last retry went unacknowledged), restored messages
        included. Returns a function that stops the calls.

        A restored message's outcome may come before the application is
        back (its acks wait at the gateway and come with the first pull):
        such outcomes are kept, and the first *every* listener (one that
        wants every outcome, not a connection watching its own ids) gets
        them at once."""
        self._outcome_listeners.append(callback)
        if every:
            self._every_listeners.append(callback)
            unheard, self._unheard = self._unheard, []
            for message_id, outcome in unheard:
                try:
                    callback(message_id, outcome)
                except Exception:
                    self.log.failure("outcome callback {cb!r} failed", cb=callback)

        def cancel():
            if callback in self._outcome_listeners:
                self._outcome_listeners.remove(callback)
            if callback in self._every_listeners:
                self._every_listeners.remove(callback)
        return cancel

    @property
    def unacknowledged(self):
        """Messages in the outbox: sent or queued, not yet delivered or failed
        (rows kept only for the grace after their outcome do not count)."""
        return len(self.outbox) - len(self._removals)

    def _restore(self):
        """Pick up what the outbox holds from an earlier run: every fragment not
        acknowledged is due at once and goes out through the stream's slots
        (one per tick, never a burst), each afresh."""
        for p in self.outbox.pending():
            if p.number in self._tracked:
                continue
            client_key = p.recipient[:32] or None
            gateway_key = p.recipient[32:64] or None
            reply_tag = p.reply_tag if client_key is None else None
            self._tracked[p.number] = _Tracked(
                p.number, p.id, client_key, gateway_key, bytes((p.kind,)) + p.body,
                p.fragments, set_id_of(self.outbox.ack_key, p.number, reply_tag is not None),
                reply_tag=reply_tag, next_index=p.fragments, restored=True)
            self._rtx.track(p.number, p.fragments, acked=p.acked, attempts=p.attempts)
        if self._tracked:
            self.log.info("{n} message(s) from the outbox go out again", n=len(self._tracked))

    def _outcome(self, number, outcome):
        tracked = self._tracked.pop(number, None)
        if tracked is None:
            self.outbox.remove(number)
            return
        # The row goes REPORT_GRACE s after its event, not with it: the
        # event is only in the API transport's buffer now, and a client
        # killed before it is written would otherwise lose it for good. A
        # client killed in the grace finds the row on restart (every
        # fragment acked, or at the cap) and reports it again: an outcome
        # is heard at least once.
        self._removals[number] = self.reactor.callLater(
            REPORT_GRACE, self._remove_reported, number)
        if outcome == DELIVERED:
            self.delivered += 1
        else:
            self.failed += 1
            self._sendq.discard(tracked)
            if tracked in self._replyq:
                self._replyq.remove(tracked)
            self.log.warn("message {id} failed: no acknowledgement after"
                          " {n} retransmission(s)", id=tracked.id,
                          n=self.config.maximum_retransmissions)
        if tracked.outcome is not None and not tracked.outcome.called:
            if outcome == DELIVERED:
                tracked.outcome.callback(outcome)
            else:
                tracked.outcome.errback(DeliveryFailed(
                    f"message {tracked.id}: no acknowledgement after"
                    f" {self.config.maximum_retransmissions} retransmission(s)"))
        if tracked.restored and not self._every_listeners:
            # at most what the outbox held: each restored message ends once
            self._unheard.append((tracked.id, outcome))
        for listener in list(self._outcome_listeners):
            try:
                listener(tracked.id, outcome)
            except Exception:
                self.log.failure("outcome callback {cb!r} failed", cb=listener)

    def _gateway_of(self, outgoing):
        """The gateway a queued message (an Outgoing or a _Tracked) goes to, or
        None (not in the topology)."""
        if self.topology is None:
            return None
        destination = getattr(outgoing, "destination", None) if isinstance(
            outgoing, Outgoing) else outgoing.gateway_key
        if destination is not None:
            return self.topology.gateway_by_key(destination)
        return self.topology.gateway_for(outgoing.recipient_key)

    def _sending_tick(self):
        if len(self._sendq):
            if self.topology is None:
                self._blocked_by(self._expired or "no topology yet")
            elif self._sendq.peek(self._gateway_of) is None:
                self._blocked_by("no recipient of a queued message is in the topology")
        self._stream.tick()

    def _cover_tick(self):
        gateway = None
        if self.topology is not None and self.config.gateway_key is not None:
            gateway = self.topology.gateway_by_key(self.config.gateway_key)
        if gateway is None:
            self.skipped_cover += 1
            return
        try:
            self._send_packet(gateway, self.keys.public_key,
                              loop_cover_payload(self.keys.public_key))
        except (TopologyError, SphinxError, AddressError, AckError) as e:
            self.log.debug("loop cover skipped: {why}", why=str(e))
            self.skipped_cover += 1
            return
        self.sent_loop += 1
        self.sent_cover += 1

    def _send_real(self, outgoing, payload):
        gateway = self._gateway_of(outgoing)
        if gateway is None:
            return self._blocked_by("no recipient of a queued message is in the topology")
        tracked, index = outgoing.context, outgoing.next_index
        try:
            round_trip = self._send_packet(gateway, outgoing.recipient_key, payload,
                                           tracked.number, index, 0)
        except (TopologyError, SphinxError, AddressError, AckError) as e:
            return self._blocked_by(f"no route: {e}")
        self._blocked = None
        self.sent_real += 1
        self._rtx.sent(tracked.number, index, round_trip)
        self.outbox.sent(tracked.number, index)
        return True

    def _send_retry(self):
        """What a slot that would carry drop cover carries instead, one packet:
        the ack of a reply we received (docs/surb.md §5.4), else a reply's
        next fragment, else a due retransmission; False when there is none
        or it cannot leave now (the tick then sends drop cover)."""
        while self._reply_acks:
            surb_ack = self._reply_acks.pop(0)
            try:
                first_hop, packet = ack_packet(surb_ack)
            except AckError as e:
                self.log.debug("a reply's SURB-ACK is unusable: {why}", why=str(e))
                continue
            self.links.send(first_hop, packet)
            self.reply_acks_sent += 1
            return True
        for tracked in list(self._replyq):
            if tracked.next_index >= tracked.count:
                self._replyq.remove(tracked)
                continue
            if self._send_reply_fragment(tracked, tracked.next_index, 0):
                tracked.next_index += 1
                if tracked.next_index >= tracked.count:
                    self._replyq.remove(tracked)
                    self.sent_messages += 1
                    if tracked.sent is not None and not tracked.sent.called:
                        tracked.sent.callback(None)
                return True
        if self._gateway_down:
            # the acks come through our own gateway: while we cannot pull from
            # it, no retry can be acknowledged, and sending one would only
            # burn it (a restarted gateway would fail messages through the
            # cap). The due ones wait, queued, and go once a pull succeeds.
            return False
        retry = self._rtx.take()
        if retry is None:
            return False
        tracked = self._tracked.get(retry.message)
        if tracked is None:  # pragma: no cover - every tracked message is in _tracked
            self._rtx.cancel(retry.message)
            return False
        if tracked.reply_tag is not None:
            if tracked.next_index <= retry.index:
                return False  # not sent once yet: the reply queue sends it first
            if self._send_reply_fragment(tracked, retry.index, retry.attempt):
                self.sent_retries += 1
                return True
            return False
        gateway = self._gateway_of(tracked)
        if gateway is None:
            return self._blocked_by("the recipient of a message to send again is not in"
                                    " the topology")
        payload = seal_fragment(tracked.recipient_key, tracked.fragment(retry.index))
        try:
            round_trip = self._send_packet(gateway, tracked.recipient_key, payload,
                                           tracked.number, retry.index, retry.attempt)
        except (TopologyError, SphinxError, AddressError, AckError) as e:
            return self._blocked_by(f"no route: {e}")
        self._blocked = None
        self.sent_retries += 1
        self._rtx.sent(tracked.number, retry.index, round_trip)
        self.outbox.sent(tracked.number, retry.index)
        return True

    def _send_reply_fragment(self, tracked, index, attempt):
        """Fragment *index* of a reply through a fresh reply block (single
        use), with our own SURB-ACK inside; False without a block or route."""
        self._advance_topology()
        own = None
        if self.topology is not None and self.config.gateway_key is not None:
            own = self.topology.gateway_by_key(self.config.gateway_key)
        if own is None:
            return self._blocked_by("a reply's ack needs a route to my own gateway")
        block = self.replies.take(tracked.reply_tag)
        if block is None:
            return self._blocked_by("no reply block left for a reply")
        c = self.config
        try:
            ack_route = self.topology.route(own, self.rng)
            ack_delays = sample_delays(len(ack_route), c.average_ack_delay / 1000, self.rng)
            surb_ack = build_surb_ack(ack_route, self.keys.public_key, self.outbox.ack_key,
                                      tracked.number, index, attempt, ack_delays)
            body = encode_reply_fragment(tracked.fragment(index))
            packet = use_surb(block.surb, reply_layer.reply_message(surb_ack, body))
            first_hop = NodeAddress.from_bytes(block.surb.first_hop)
        except (TopologyError, SphinxError, SurbError, AckError, AddressError,
                reply_layer.ReplyError) as e:
            return self._blocked_by(f"cannot send a reply: {e}")
        self.links.send(first_hop, packet)
        self._blocked = None
        self.sent_real += 1
        # The block's delays are its builder's: take ours as the estimate, and
        # the builder's fetch and sending waits before it sends our ack on.
        forward = 4 * c.average_packet_delay / 1000
        waits = FETCH_WAITS * (c.fetch_message_delay + c.message_sending_average_delay) / 1000
        self._rtx.sent(tracked.number, index, forward + sum(ack_delays) / 1e9 + waits)
        self.outbox.sent(tracked.number, index)
        return True

    def _message_sent(self, outgoing):
        self.sent_messages += 1
        sent = outgoing.context.sent
        if sent is not None and not sent.called:
            sent.callback(None)

    def _send_drop(self, seal):
        gateway = drop_gateway(self.topology, self.rng) if self.topology is not None else None
        if gateway is None:
            self.skipped_cover += 1
            return
        try:
            self._send_packet(gateway, gateway.public_key, seal(gateway.public_key))
        except (TopologyError, SphinxError, AddressError, AckError) as e:
            self.log.debug("drop cover skipped: {why}", why=str(e))
            self.skipped_cover += 1
            return
        self.sent_drop += 1
        self.sent_cover += 1

    def _blocked_by(self, why):
        # Log a reason when it changes, not on every tick of the stream.
        if why != self._blocked:
            self.log.warn("{n} real message(s) stay queued: {why}", n=len(self._sendq), why=why)
            self._blocked = why
        return False

    def _send_packet(self, gateway, destination, payload, number=COVER, index=None,
                     attempt=None):
        """Build and send one packet: *payload* (the 608-byte envelope) after a
        SURB-ACK for (*number*, *index*, *attempt*) through three mixnodes back
        to this client's own gateway. Returns the sum of the delays drawn for
        both routes, in seconds (the Retransmitter's round-trip estimate).

        Cover (number COVER) carries a real SURB-ACK too, with a random index
        and attempt: its ack comes back like any other, and its identifier is
        as fresh as a real one's to the gateway that sees it."""
        # (a *gateway* taken from the topology before a switch still routes:
        # its old key is accepted for the overlap)
        self._advance_topology()
        own = None
        if self.config.gateway_key is not None:
            own = self.topology.gateway_by_key(self.config.gateway_key)
        if own is None:
            raise TopologyError("my own gateway is not in the topology: no route for the"
                                " acknowledgements")
        if number == COVER:
            index, attempt = self.rng.getrandbits(32), self.rng.getrandbits(16)
        # around the mixnodes whose packets keep going unacknowledged
        avoid = self._health.avoid()
        ack_route = self.topology.route(own, self.rng, avoid)
        ack_delays = sample_delays(len(ack_route), self.config.average_ack_delay / 1000,
                                   self.rng)
        surb_ack = build_surb_ack(ack_route, self.keys.public_key, self.outbox.ack_key,
                                  number, index, attempt, ack_delays)
        route = self.topology.route(gateway, self.rng, avoid)
        delays = sample_delays(len(route), self.config.average_packet_delay / 1000, self.rng)
        packet = build_packet(route, destination, IDENTIFIER,
                              compose_payload(surb_ack, payload), delays)
        self.links.send(NodeAddress.from_bytes(route[0].address), packet)
        if number != COVER:
            # the mixnodes of both routes (not the gateways): what an ack
            # clears and a timeout blames
            self._health.sent((number, index, attempt),
                              [hop.public_key for hop in route[:-1] + ack_route[:-1]])
        return (sum(delays) + sum(ack_delays)) / 1e9

    # -- receiving ------------------------------------------------------------

    def on_message(self, callback):
        """Push mode: *callback(data: bytes)* for each message (text as its
        UTF-8 bytes), which then leaves the inbox (``fetch`` will not return it)."""
        self._listeners.append((callback, False))
        self._deliver()

    def on_received(self, callback):
        """Push mode: *callback(message: nymtx.message.Message)* (kind and data)
        for each message, which then leaves the inbox."""
        self._listeners.append((callback, True))
        self._deliver()

    def watch_inbox(self, callback):
        """Call *callback()* after each commit of new messages to the inbox (a
        transport that pushes them then peeks and deletes); returns a function
        that stops the calls."""
        self._observers.append(callback)

        def cancel():
            if callback in self._observers:
                self._observers.remove(callback)
        return cancel

    def fetch(self):
        """Remove and return every stored message's data (bytes), oldest first."""
        return [m.data for m in self.inbox.take_all()]

    def fetch_messages(self):
        """Remove and return every stored Message (kind and data), oldest first."""
        return self.inbox.take_all()

    def peek(self, max_bytes=None):
        """Stored ``(id, Message)`` pairs, oldest first, data adding up to at
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

    def _loop_returned(self, loop_id):
        self.loops_returned += 1

    def _pulled(self, pulled):
        if self._gateway_down:
            self.log.info("gateway reachable again")
        self._gateway_down = False
        if not pulled:
            return None
        ids = [i for i, _ in pulled]
        # Payloads committed before but not acked (the ack was lost) are not
        # opened again: after a restart the reassembler would not know them.
        seen = self.inbox.seen(ids)
        complete = self._unstored
        for gateway_id, body in pulled:
            if gateway_id in seen:
                continue
            self.pulled += 1
            record = classify_record(body, self.outbox.ack_key, self._claim)
            if isinstance(record, Ack):
                self._acked(record.ref)
                continue
            if isinstance(record, Reply):
                message = self._reply_received(record)
                if message is not None:
                    complete.append(message)
                continue
            if not isinstance(record, Envelope) and len(body) == DELIVERY_SIZE:
                # a SURB delivery that is no ack of ours: a cover packet's ack
                # (every packet comes back as one), stale or forged
                self.unreadable += 1
                self.log.debug("dropped a record: {why}",
                               why=getattr(record, "reason", "a reply (not wired yet)"))
                continue
            # An envelope, or what the message layer counts and drops
            # (a record of no known size)
            payload = record.payload if isinstance(record, Envelope) else body
            message = self._receiver.receive(payload)
            if message is not None and message.kind in (KIND_REPLIABLE, KIND_TOP_UP):
                message = self._forward_reply_layer(message)
            if message is not None:
                complete.append(message)
        # Commit first: the gateway deletes what we ack, so an ack before the
        # commit could lose a message in a crash. A failed commit keeps the
        # completed messages here (their fragments come back, but the
        # reassembler knows those sets are done) for the next pull's commit.
        self._unstored = complete
        stored = self.inbox.commit(ids, complete)
        self._unstored = []
        self.log.debug("pulled {n} payload(s): {m} message(s) completed",
                       n=len(pulled), m=len(stored))
        self._deliver(bool(stored))
        # The ack rides on the next pull: waiting for it here would wait for
        # that pull (the fetch loop does not wait anyway; see _PoissonRuns).
        d = self.gateway_link.ack(ids)
        d.addCallback(lambda _: self.inbox.acked(ids))
        d.addErrback(self._pull_failed)
        return None

    def _claim(self, identifier):
        """(tag, keys) of a reply block we gave out, once; else None."""
        return self.replies.claim(identifier)

    def _forward_reply_layer(self, message):
        """A message with reply blocks: keep them under its tag and hand on
        the message with the tag; a top-up: keep them, hand on nothing."""
        try:
            got = reply_layer.decode_forward(bytes((message.kind,)) + message.data)
        except reply_layer.ReplyError as e:
            self.log.debug("dropped a malformed message with reply blocks: {why}", why=str(e))
            return None
        kept = self.replies.add(got.tag, got.surbs)
        self._asked.pop(bytes(got.tag), None)
        if isinstance(got, reply_layer.TopUp):
            self.log.debug("{n} reply block(s) more for a sender tag", n=kept)
            return None
        return Message(got.kind, got.body, bytes(got.tag))

    def _reply_received(self, record):
        """A reply through one of our blocks: its ack is sent on from our
        stream (its last hop, our gateway, cannot see it), its fragment
        reassembled; a complete reply is a Message with the tag, a SURB
        request is answered with more blocks."""
        try:
            their_ack, body = reply_layer.split_reply(record.message)
            fragment = decode_reply_fragment(body)
        except (reply_layer.ReplyError, PlaintextError) as e:
            self.unreadable += 1
            self.log.debug("dropped a malformed reply: {why}", why=str(e))
            return None
        # acked whatever it holds: it is stored (about to be committed) here
        self._reply_acks.append(their_ack)
        self.replies_received += 1
        done = self._reply_reassembler.add(fragment)
        if isinstance(done, reply_layer.SurbRequest):
            self._top_up(record.tag, done.amount)
            return None
        if isinstance(done, reply_layer.ReplyData):
            return Message(done.kind, done.body, bytes(record.tag))
        return None

    def _top_up(self, tag, amount):
        recipient = self.replies.recipient_of(tag)
        if recipient is None:
            return
        amount = min(amount, self.replies.request)
        try:
            blocks = self._make_reply_blocks(tag, amount)
            framed = reply_layer.encode_top_up(tag, blocks)
            self._submit(recipient, None, Message(KIND_TOP_UP, framed[1:]), uuid.uuid4().hex,
                         False).addErrback(lambda f: None)
        except SendError as e:
            self.log.warn("cannot send the reply blocks asked for: {why}", why=str(e))

    def _ack_overdue(self, number, index, attempt):
        self._health.lost((number, index, attempt))

    def _acked(self, ref):
        """An ack for fragment ref.index of message ref.number (any attempt)."""
        self.acks_received += 1
        self._health.acked((ref.number, ref.index, ref.attempt))
        # the outbox first: the outcome (in acked) removes the message from it
        self.outbox.mark_acked(ref.number, ref.index)
        self._rtx.acked(ref.number, ref.index)

    def _pull_failed(self, failure):
        if self.state in (CoreState.STOPPING, CoreState.STOPPED):
            # the link closes with the client: acks not yet carried are
            # pulled again by the next run, nothing is lost or worth a warning
            return
        if not self._gateway_down:
            self.log.warn("cannot fetch from the gateway: {why}", why=failure.getErrorMessage())
        self._gateway_down = True

    def _deliver(self, new=True):
        if self._listeners:
            for message in self.inbox.take_all():
                for callback, whole in list(self._listeners):
                    try:
                        callback(message if whole else message.data)
                    except Exception:
                        self.log.failure("message callback {cb!r} failed", cb=callback)
        if new:
            for observer in list(self._observers):
                try:
                    observer()
                except Exception:
                    self.log.failure("inbox observer {cb!r} failed", cb=observer)


def _count(n, word):
    """``1 gateway``, ``2 gateways``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
