"""Reassembly of fragment sets, in bounded memory, on an injected clock.

Anyone who knows an address can send it fragments, and the envelope says
nothing about who sealed it, so every limit here holds against a stranger:

- a set may not claim more fragments than the largest message allows;
- at most ``max_partial_sets`` sets and ``max_buffered_bytes`` (accounted)
  are held; past either, the set that made progress longest ago goes
  first. A sender in the middle of a message sends every few hundred
  milliseconds, so to push it out a flood must open more than
  ``max_partial_sets`` sets between two of its fragments;
- a set without a new fragment for ``timeout`` seconds is dropped (nym: 30
  minutes since the last fragment);
- completed set ids are remembered for ``remember_completed`` seconds (at
  most ``max_completed`` of them), so duplicates and late retransmissions
  of a delivered message are ignored: each message comes out once.
"""

import collections

import attrs

from .errors import MessageLayerError, PlaintextError
from .fragment import DEFAULT_MAX_MESSAGE_SIZE, join_pieces, max_fragments
from .payload import FRAGMENT_DATA_SIZE, DropCover, Fragment, LoopCover, Reserved, open_payload

#: bytes charged per held fragment beyond its data (object and dict overhead)
FRAGMENT_OVERHEAD = 96
#: bytes charged per partial set
SET_OVERHEAD = 256
DEFAULT_TIMEOUT = 30 * 60.0


def set_cost(count):
    """The accounted bytes of a full set of *count* fragments."""
    return SET_OVERHEAD + count * (FRAGMENT_DATA_SIZE + FRAGMENT_OVERHEAD)


def _default_buffer(instance):
    # Room for four largest messages at once, and never under 16 MiB.
    return max(16 << 20, 4 * set_cost(max_fragments(instance.max_message_size)))


@attrs.define(slots=True)
class ReassemblyStats:
    """What happened to the fragments given to a Reassembler, by outcome."""

    accepted: int = 0
    completed: int = 0
    duplicates: int = 0
    late: int = 0
    conflicts: int = 0
    too_large: int = 0
    malformed: int = 0
    evicted_sets: int = 0
    expired_sets: int = 0


@attrs.define(eq=False, slots=True)
class _Partial:
    count: int
    last_seen: float
    pieces: dict = attrs.field(factory=dict)
    cost: int = SET_OVERHEAD


def _positive(instance, attribute, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number above 0, not {value!r}")


@attrs.define(eq=False)
class Reassembler:
    """Collects fragments and hands back each complete Message once.

    *now* is a callable giving seconds (``reactor.seconds``, a
    ``task.Clock().seconds``) or an ``IReactorTime`` (its ``seconds`` is
    used); nothing here reads real time.
    """

    now: object
    max_message_size: int = attrs.field(default=DEFAULT_MAX_MESSAGE_SIZE, validator=_positive)
    max_partial_sets: int = attrs.field(default=1024, validator=_positive)
    max_buffered_bytes: int = attrs.field(
        default=attrs.Factory(_default_buffer, takes_self=True), validator=_positive)
    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, validator=_positive)
    remember_completed: float = attrs.field(default=2 * DEFAULT_TIMEOUT, validator=_positive)
    max_completed: int = attrs.field(default=65536, validator=_positive)
    #: what a complete set's pieces make: a Message (replies have their own)
    join: object = join_pieces
    stats: ReassemblyStats = attrs.field(factory=ReassemblyStats, init=False)
    buffered_bytes: int = attrs.field(default=0, init=False)
    _partial: collections.OrderedDict = attrs.field(factory=collections.OrderedDict, init=False)
    _completed: collections.OrderedDict = attrs.field(
        factory=collections.OrderedDict, init=False)
    _max_count: int = attrs.field(init=False)

    def __attrs_post_init__(self):
        if not callable(self.now) and callable(getattr(self.now, "seconds", None)):
            self.now = self.now.seconds
        self._max_count = max_fragments(self.max_message_size)
        need = set_cost(self._max_count)
        if self.max_buffered_bytes < need:
            raise ValueError(
                f"max_buffered_bytes {self.max_buffered_bytes} cannot hold one message of"
                f" max_message_size {self.max_message_size} ({need} accounted bytes)")

    @property
    def partial_sets(self):
        return len(self._partial)

    def add(self, fragment):
        """Take *fragment*; return the Message it completes, else None."""
        now = self.now()
        self.expire(now)
        set_id = fragment.set_id
        if set_id in self._completed:
            self.stats.late += 1
            return None
        if fragment.count > self._max_count:
            self.stats.too_large += 1
            return None
        partial = self._partial.get(set_id)
        if partial is None:
            if fragment.count == 1:
                self.stats.accepted += 1
                return self._complete(set_id, [fragment.data], now)
            while len(self._partial) >= self.max_partial_sets:
                self._evict()
            partial = self._partial[set_id] = _Partial(fragment.count, now)
            self.buffered_bytes += partial.cost
        elif partial.count != fragment.count:
            self.stats.conflicts += 1
            return None
        elif fragment.index in partial.pieces:
            self.stats.duplicates += 1
            return None
        self.stats.accepted += 1
        partial.pieces[fragment.index] = fragment.data
        cost = len(fragment.data) + FRAGMENT_OVERHEAD
        partial.cost += cost
        partial.last_seen = now
        self.buffered_bytes += cost
        self._partial.move_to_end(set_id)
        if len(partial.pieces) == partial.count:
            self._drop(set_id)
            return self._complete(
                set_id, [partial.pieces[i] for i in range(partial.count)], now)
        # The set just made progress, so it is last in line: evict others.
        while self.buffered_bytes > self.max_buffered_bytes:
            self._evict()
        return None

    def expire(self, now=None):
        """Drop partial sets idle for ``timeout`` and forget old completed ids."""
        now = self.now() if now is None else now
        while self._partial:
            set_id, partial = next(iter(self._partial.items()))
            if partial.last_seen + self.timeout > now:
                break
            self._drop(set_id)
            self.stats.expired_sets += 1
        while self._completed:
            set_id, when = next(iter(self._completed.items()))
            if when + self.remember_completed > now:
                break
            del self._completed[set_id]

    def _evict(self):
        set_id = next(iter(self._partial))
        self._drop(set_id)
        self.stats.evicted_sets += 1

    def _drop(self, set_id):
        partial = self._partial.pop(set_id)
        self.buffered_bytes -= partial.cost

    def _complete(self, set_id, pieces, now):
        self._completed[set_id] = now
        self._completed.move_to_end(set_id)
        while len(self._completed) > self.max_completed:
            self._completed.popitem(last=False)
        try:
            message = self.join(pieces)
        except PlaintextError:
            self.stats.malformed += 1
            return None
        if len(getattr(message, "data", b"")) > self.max_message_size:
            self.stats.too_large += 1
            return None
        self.stats.completed += 1
        return message


@attrs.define(slots=True)
class ReceiveStats:
    """What a Receiver did with the payloads it was given."""

    not_for_me: int = 0
    malformed: int = 0
    loop_cover: int = 0
    drop_cover: int = 0
    reserved: int = 0
    fragments: int = 0


@attrs.define(eq=False)
class Receiver:
    """One client's inbound side: payload bytes in, whole Messages out.

    Everything that is not a fragment of a message for this key (another
    key's payload, an altered one, cover, malformed) is counted and
    dropped; ``receive`` never raises for outside bytes.
    """

    private_key: bytes
    public_key: bytes
    reassembler: Reassembler
    #: called with each Reserved payload (acks and replies, issue 12)
    on_reserved: object = None
    #: called with the loop id of each loop cover payload that came back
    on_loop: object = None
    stats: ReceiveStats = attrs.field(factory=ReceiveStats, init=False)

    def receive(self, payload):
        """The Message *payload* completes, or None."""
        try:
            opened = open_payload(self.private_key, self.public_key, payload)
        except MessageLayerError as e:
            if isinstance(e, PlaintextError):
                self.stats.malformed += 1
            else:
                self.stats.not_for_me += 1
            return None
        if isinstance(opened, Fragment):
            self.stats.fragments += 1
            return self.reassembler.add(opened)
        if isinstance(opened, LoopCover):
            self.stats.loop_cover += 1
            if self.on_loop is not None:
                self.on_loop(opened.loop_id)
        elif isinstance(opened, DropCover):
            self.stats.drop_cover += 1
        elif isinstance(opened, Reserved):
            self.stats.reserved += 1
            if self.on_reserved is not None:
                self.on_reserved(opened)
        return None
