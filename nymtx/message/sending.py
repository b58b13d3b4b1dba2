"""The sending side: messages queued in fragments, one fragment per stream tick.

The Poisson sending stream ticks at its own rate whatever the application
does; at each tick it sends the next real fragment if one waits, and drop
cover otherwise (Loopix), so a long message never changes the outgoing
rate: it just takes more ticks. Queued messages take turns, one fragment
each, so a short message is not stuck behind a megabyte.

The queue is bounded in messages and in bytes; past either, ``enqueue``
raises QueueFull at once (the application's backpressure signal) instead of
letting memory grow. Nothing here touches the network or the clock: the
client hands ``SendingStream.tick`` to its PoissonLoop and gives it the two
callables that build and send packets.
"""

import collections
import os

import attrs

from .envelope import check_recipient_key
from .errors import QueueFull
from .fragment import DEFAULT_MAX_MESSAGE_SIZE, KINDS, Message, check_size, fragment_count
from .payload import FRAGMENT_DATA_SIZE, SET_ID_SIZE, Fragment, drop_cover_payload, seal_fragment


@attrs.define(eq=False)
class Outgoing:
    """One queued message: to *recipient_key* (the key it is sealed to).

    *destination* is whatever the caller needs to route it (for the client:
    the recipient's key and its gateway, if given); *context* is the
    caller's too (a Deferred to fire when the last fragment has left).
    """

    recipient_key: bytes
    message: Message
    destination: object = None
    context: object = None
    set_id: bytes = b""
    count: int = 0
    next_index: int = 0
    _framed: bytes = b""

    @property
    def remaining_bytes(self):
        return max(0, len(self._framed) - self.next_index * FRAGMENT_DATA_SIZE)

    @property
    def done(self):
        return self.next_index >= self.count

    def fragment(self, index):
        start = index * FRAGMENT_DATA_SIZE
        return Fragment(self.set_id, index, self.count,
                        self._framed[start:start + FRAGMENT_DATA_SIZE])


@attrs.frozen(slots=True)
class Pending:
    """The fragment a tick would send next: ``outgoing.fragment(index)``."""

    outgoing: Outgoing
    index: int

    @property
    def fragment(self):
        return self.outgoing.fragment(self.index)


def _positive_int(instance, attribute, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer of at least 1, not {value!r}")


@attrs.define(eq=False)
class SendQueue:
    """Messages waiting for the sending stream, bounded in messages and bytes."""

    max_message_size: int = attrs.field(default=DEFAULT_MAX_MESSAGE_SIZE,
                                        validator=_positive_int)
    max_messages: int = attrs.field(default=1000, validator=_positive_int)
    #: bytes of messages not yet sent (the framed message bytes still queued)
    max_bytes: int = attrs.field(
        default=attrs.Factory(lambda self: max(16 << 20, 2 * (self.max_message_size + 1)),
                              takes_self=True),
        validator=_positive_int)
    randbytes: object = os.urandom
    queued_bytes: int = attrs.field(default=0, init=False)
    _queue: collections.deque = attrs.field(factory=collections.deque, init=False)

    def __attrs_post_init__(self):
        if self.max_bytes < self.max_message_size + 1:
            raise ValueError(
                f"max_bytes {self.max_bytes} cannot hold one message of max_message_size"
                f" {self.max_message_size}")

    def __len__(self):
        return len(self._queue)

    def __iter__(self):
        return iter(self._queue)

    def enqueue(self, recipient_key, message, destination=None, context=None, set_id=None):
        """Queue *message* (a Message) for *recipient_key*; return its Outgoing.

        Raises MessageTooLarge past the maximum size, QueueFull when the
        queue holds ``max_messages`` messages or the message would take it
        past ``max_bytes``; both name the numbers. RecipientKeyError for a
        key nothing can be sealed to: refused here, it cannot jam the
        stream later. *set_id*: the caller's (the client derives it from the
        outbox's number, so a restart sends the same set), else random.
        """
        if not isinstance(message, Message) or message.kind not in KINDS:
            raise TypeError(f"enqueue takes a Message of a known kind, not {message!r}")
        check_size(len(message.data), self.max_message_size)
        recipient_key = check_recipient_key(recipient_key)
        size = len(message.data) + 1
        if len(self._queue) >= self.max_messages:
            raise QueueFull(
                f"the send queue is full: {len(self._queue)} messages wait for the sending"
                f" stream (at most {self.max_messages}); try again later")
        if self.queued_bytes + size > self.max_bytes:
            raise QueueFull(
                f"the send queue is full: {self.queued_bytes} bytes wait for the sending"
                f" stream and this message adds {size}, over the {self.max_bytes}-byte"
                " bound; try again later")
        outgoing = Outgoing(recipient_key, message, destination, context,
                            set_id=set_id or self.randbytes(SET_ID_SIZE),
                            count=fragment_count(len(message.data)),
                            framed=bytes((message.kind,)) + message.data)
        self._queue.append(outgoing)
        self.queued_bytes += size
        return outgoing

    def peek(self, sendable=None):
        """The next fragment to send, or None when nothing (sendable) waits.

        Messages take turns; *sendable(outgoing)* may skip those that cannot
        leave now (their recipient is not in the topology): they keep their
        place.
        """
        for outgoing in self._queue:
            if sendable is None or sendable(outgoing):
                return Pending(outgoing, outgoing.next_index)
        return None

    def sent(self, pending):
        """Record that *pending* left; True when it was its message's last fragment."""
        outgoing = pending.outgoing
        if outgoing.next_index != pending.index or outgoing.done:
            raise ValueError(f"{pending!r} is not the next fragment of its message")
        before = outgoing.remaining_bytes
        outgoing.next_index += 1
        self.queued_bytes -= before - outgoing.remaining_bytes
        self._queue.remove(outgoing)
        if outgoing.done:
            outgoing._framed = b""
            return True
        self._queue.append(outgoing)  # its turn is over: to the back
        return False

    def discard(self, context):
        """Take the message queued with *context* out (its outcome is known)."""
        for outgoing in list(self._queue):
            if outgoing.context is context:
                self._queue.remove(outgoing)
                self.queued_bytes -= outgoing.remaining_bytes
                outgoing._framed = b""

    def clear(self):
        """Empty the queue (the client stops); return what was still queued."""
        queue, self._queue = list(self._queue), collections.deque()
        self.queued_bytes = 0
        return queue


def drop_gateway(topology, rng):
    """Where a drop cover packet ends: the gateway of a uniformly random
    listed client (docs/decisions.md, "Drop cover"), or a uniformly random
    gateway when none lists a client; None without gateways."""
    gateways = list(topology.gateways)
    if not gateways:
        return None
    total = sum(len(g.registered_clients) for g in gateways)
    if total == 0:
        return rng.choice(gateways)
    pick = rng.randrange(total)
    for gateway in gateways:
        pick -= len(gateway.registered_clients)
        if pick < 0:
            return gateway
    raise AssertionError("unreachable")  # pragma: no cover


@attrs.define(eq=False)
class SendingStream:
    """What one tick of the sending stream sends: a real fragment, else drop cover.

    - ``send_real(outgoing, payload)`` builds and sends the packet of a real
      fragment and returns True; when it cannot (no route: it logs why) it
      returns False, the fragment keeps its place for a later tick and this
      tick sends drop cover instead (the stream never skips a tick).
    - ``send_drop(seal)`` sends drop cover: it picks where the drop ends
      (``drop_gateway``), then calls ``seal(gateway_key)`` for the payload.
    - ``on_sent(outgoing)`` is called when a message's last fragment left.
    - ``send_retry()`` (optional), tried when no new fragment can go: sends
      one retransmission that is due and returns True, or returns False
      when none is due or it cannot leave now. So a retransmission takes a
      slot that would have carried drop cover: never an extra packet
      (docs/surb.md §3).
    """

    queue: SendQueue
    send_real: object
    send_drop: object
    on_sent: object = None
    sendable: object = None
    randbytes: object = os.urandom
    send_retry: object = None
    real_sent: int = 0
    retries_sent: int = 0
    drop_sent: int = 0
    failed: int = 0

    def tick(self):
        pending = self.queue.peek(self.sendable)
        if pending is not None:
            outgoing = pending.outgoing
            payload = seal_fragment(outgoing.recipient_key, pending.fragment, self.randbytes)
            if self.send_real(outgoing, payload):
                self.real_sent += 1
                if self.queue.sent(pending) and self.on_sent is not None:
                    self.on_sent(outgoing)
                return True
            self.failed += 1
        if self.send_retry is not None and self.send_retry():
            self.retries_sent += 1
            return True
        self.send_drop(lambda key: drop_cover_payload(key, self.randbytes))
        self.drop_sent += 1
        return False
