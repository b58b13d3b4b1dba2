"""When to send a fragment again, and when to give up: pure, on an injected clock.

The Retransmitter never sends. The Poisson sending stream reports each
packet as it leaves (:meth:`Retransmitter.sent`), with the sum of the
delays it drew for that packet's forward route and for its SURB-ACK; acks
come in through :meth:`Retransmitter.acked`; and on each tick the stream
takes what :meth:`Retransmitter.due` hands it, building each one afresh
(new route, delays, SURB-ACK and encryption) in a slot that would otherwise
carry drop cover. So a retransmission never shows as extra traffic.

Timeout, as in nym: ``(Σ forward delays + Σ ack delays) × multiplier +
addition``, counted from when the packet left the stream.

Retry cap: ``max_retransmissions`` (default 5) further sends per fragment
after the first. Katzenpost's catshadow #17: an active attacker who can
drop packets at chosen places learns one bit per retransmission it
observes (did the sender notice the loss?), and unbounded retries let it
halve the set of candidate gateways until one is left. Five retries give
it at most five such bits per fragment, while a fragment still fails only
if six independent attempts are all lost: at 5 % loss per round trip,
1.6e-8 per fragment, 3e-5 for a 1 MiB message of 1914 fragments.
"""

import heapq

import attrs

DELIVERED = "delivered"
FAILED = "failed"

#: nym: 1.5 and 800-1500 ms; the addition also covers the gateway's commit
#: and the sender's fetch from its gateway
DEFAULT_MULTIPLIER = 1.5
DEFAULT_ADDITION = 1.5
DEFAULT_MAX_RETRANSMISSIONS = 5
#: seconds: the mean of the exponential hold a gateway puts on every ack
#: before it leaves (docs/surb.md §2.5), the default of its ``[gateway]
#: ack_delay_ms``. The directory does not announce a gateway's setting, so a
#: client's ack wait assumes this default for the recipient's gateway.
GATEWAY_ACK_HOLD = 0.05


@attrs.frozen
class Retry:
    """A fragment to send again: *attempt* is the number the new send gets."""

    message: object
    index: int
    attempt: int


@attrs.define(eq=False)
class _Message:
    count: int
    unacked: set
    attempts: dict  # index -> sends so far
    deadlines: dict  # index -> deadline of its last send, while waiting for an ack
    queued: set  # handed out by due(), not yet sent again


@attrs.define(eq=False)
class Retransmitter:
    """Per-message ack bookkeeping; *on_outcome(message, outcome)* is called
    once per message with DELIVERED or FAILED."""

    clock: object
    on_outcome: object = None
    #: on_timeout(message, index, attempt): that send's ack is overdue (route
    #: health, nymtx.reliable.health, blames its nodes)
    on_timeout: object = None
    multiplier: float = DEFAULT_MULTIPLIER
    addition: float = DEFAULT_ADDITION
    max_retransmissions: int = DEFAULT_MAX_RETRANSMISSIONS

    _messages: dict = attrs.field(factory=dict, init=False)
    _heap: list = attrs.field(factory=list, init=False)
    _seq: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self):
        if self.multiplier < 0 or self.addition < 0:
            raise ValueError("the ack wait multiplier and addition cannot be negative")
        if not isinstance(self.max_retransmissions, int) or self.max_retransmissions < 0:
            raise ValueError(
                f"max_retransmissions must be a whole number >= 0, not {self.max_retransmissions!r}")

    def track(self, message, count, acked=(), attempts=None):
        """Follow *message* of *count* fragments. After a restart, pass what
        the outbox knows: the fragments already *acked*, and *attempts*
        {index: sends so far}; every other fragment is due at once."""
        if message in self._messages:
            raise ValueError(f"message {message!r} is already tracked")
        if count < 1:
            raise ValueError("a message has at least one fragment")
        unacked = set(range(count)) - set(acked)
        m = _Message(count, unacked, dict(attempts or {}), {}, set())
        self._messages[message] = m
        if not unacked:
            self._finish(message, DELIVERED)
            return
        if attempts is not None:
            for index in sorted(unacked):
                self._expire(message, m, index)

    def tracking(self, message):
        return message in self._messages

    def __len__(self):
        return len(self._messages)

    def sent(self, message, index, round_trip_seconds):
        """Fragment *index* left the stream now; *round_trip_seconds* is the
        sum of its forward and ack delays. Returns the attempt number it
        was (0 for the first), for its SURB-ACK."""
        m = self._messages.get(message)
        if m is None or index not in m.unacked:
            return None
        attempt = m.attempts.get(index, 0)
        m.attempts[index] = attempt + 1
        m.queued.discard(index)
        deadline = (self.clock.seconds() + round_trip_seconds * self.multiplier
                    + self.addition)
        m.deadlines[index] = deadline
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, message, index))
        return attempt

    def acked(self, message, index):
        """An ack for fragment *index* (of any attempt). True if it was news."""
        m = self._messages.get(message)
        if m is None or index not in m.unacked:
            return False
        m.unacked.discard(index)
        m.deadlines.pop(index, None)
        m.queued.discard(index)
        if not m.unacked:
            self._finish(message, DELIVERED)
        return True

    def cancel(self, message):
        """Forget *message* without an outcome."""
        self._messages.pop(message, None)

    def due(self):
        """The fragments whose ack is overdue, each handed out once until it
        is sent again; messages past the retry cap fail here."""
        now = self.clock.seconds()
        while self._heap and self._heap[0][0] <= now:
            deadline, _, message, index = heapq.heappop(self._heap)
            m = self._messages.get(message)
            if m is None or m.deadlines.get(index) != deadline:
                continue  # acked, re-sent since, or finished
            del m.deadlines[index]
            if self.on_timeout is not None:
                self.on_timeout(message, index, m.attempts.get(index, 1) - 1)
            self._expire(message, m, index)
        out = []
        for message, m in list(self._messages.items()):
            for index in sorted(m.queued):
                out.append(Retry(message, index, m.attempts.get(index, 0)))
        return out

    def take(self):
        """The first of :meth:`due`, or None: one per tick of the stream."""
        due = self.due()
        return due[0] if due else None

    def _expire(self, message, m, index):
        if m.attempts.get(index, 0) > self.max_retransmissions:
            self._finish(message, FAILED)
        else:
            m.queued.add(index)

    def next_deadline(self):
        """The earliest time at which :meth:`due` may have something new, or None."""
        while self._heap:
            deadline, _, message, index = self._heap[0]
            m = self._messages.get(message)
            if m is not None and m.deadlines.get(index) == deadline:
                return deadline
            heapq.heappop(self._heap)
        return None

    def _finish(self, message, outcome):
        self._messages.pop(message, None)
        if self.on_outcome is not None:
            self.on_outcome(message, outcome)


def wire_packets_per_fragment(loss, max_retransmissions=DEFAULT_MAX_RETRANSMISSIONS):
    """Expected packets on the wire per fragment when each packet is lost
    with probability *loss* (forward and ack alike): every attempt sends a
    forward packet; an arriving forward packet sends an ack; a fragment is
    sent again unless the ack arrived. Returns (packets per fragment,
    probability the fragment is delivered, packets per delivered fragment)."""
    success = (1 - loss) ** 2  # forward arrived and its ack arrived
    attempts = 0.0
    acks = 0.0
    reach = 1.0  # probability this attempt is made
    for _ in range(max_retransmissions + 1):
        attempts += reach
        acks += reach * (1 - loss)
        reach *= 1 - success
    delivered = 1 - loss ** (max_retransmissions + 1)  # some forward attempt arrived
    total = attempts + acks
    return total, delivered, total / delivered
