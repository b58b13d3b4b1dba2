"""The gateway's mix side: the last Sphinx hop, its delay, the mailbox, the ack.

Packets arrive framed as on every mix link (``nymtx.wire``). The gateway
removes the last layer (``process_gateway_packet``: a forward packet's
message, or a SURB delivery, an ack or reply for one of its clients),
holds the packet for the delay its sender chose for this hop (every hop
delays, the last one too, so the arrival time at the gateway says less
about the sending time) and stores the record
(``nymtx.reliable.inbound.gateway_record``) for its destination if that
client is registered here. A message that carries a SURB-ACK is stored
without it, and the ack packet goes to the SURB-ACK's first hop on a mix
link only once the store has committed the message (its commit hook): an
ack means "safe", not "seen" (docs/surb.md §2.2). Drop cover, addressed to
the gateway's own key, goes through the same commit and is deleted in it
(``MailboxStore.add_cover``), so its ack comes out of a commit like a
stored message's. Every ack is then held until an exponential time of
mean ``ack_hold`` after its packet's release, counted from the release and
never ending before the commit: the ack leaves at max(release + hold,
commit), so the commit's duration (which depends on what the store holds
and does) shows only when the draw is shorter than it (docs/surb.md §2.5).
Everything else is dropped and counted by reason.
"""

import collections
import os
import random

import attrs
from nacl.bindings import crypto_scalarmult_base
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from nymtx import sphinx
from nymtx.links import LogThrottle
from nymtx.reliable.ack import AckError, ack_packet
from nymtx.reliable.inbound import gateway_record
from nymtx.reliable.retransmit import GATEWAY_ACK_HOLD
from nymtx.sphinx.errors import ReplayError, SphinxError
from nymtx.sphinx.surb import SurbDelivery, process_gateway_packet
from nymtx.listening import ConnectionLimit
from nymtx.wire import BoundedPacketReceiver

#: Drop reasons besides the store's own.
REPLAY = "replay"
MALFORMED = "malformed"
FORWARD_HOP = "forward_hop"
DELAY_TOO_LONG = "delay_too_long"
OVERLOADED = "overloaded"
STORE_FAILURE = "store_failure"
#: drop cover: addressed to the gateway's own key, discarded (its ack sent)
DROP_COVER = "drop_cover"
#: acks not sent: the SURB-ACK's first hop is not a node address (the
#: message itself is kept), or the gateway has no mix links
BAD_ACK = "bad_ack_address"
NO_LINKS = "ack_without_links"


@attrs.frozen
class _PendingAck:
    """The store's token for a message's SURB-ACK: sent after the commit,
    not before *due* (reactor seconds: the packet's release plus its hold)."""

    surb_ack: bytes
    due: float


@attrs.define(eq=False)
class FinalHopHandler:
    """Turns packets into stored messages on *store*, after their delay on
    *clock*, and sends each stored message's ack through *links* (an
    IPacketLinks) once the store has committed it. *public_key* is the
    gateway's own: drop cover is addressed to it."""

    log = Logger()

    clock: object
    private_key: bytes
    store: object
    replay_cache: object = attrs.field(factory=lambda: sphinx.ReplayCache())
    #: a sender may choose any delay; beyond this the gateway will not hold it
    max_delay: float = 300.0
    #: packets held at once; more would let a flood grow memory without bound
    max_held: int = 100_000
    links: object = None
    public_key: bytes = None
    randbytes: object = os.urandom
    #: mean seconds of the hold on every ack, counted from its packet's
    #: release (``[gateway] ack_delay_ms``); 0: each ack leaves with its commit
    ack_hold: float = attrs.field(default=GATEWAY_ACK_HOLD)
    #: draws the holds: the operating system's by default, since a hold an
    #: observer could predict hides nothing; tests pass a seeded Random
    rng: random.Random = attrs.field(default=None,
                                     converter=lambda r: r or random.SystemRandom())
    #: a nymtx.trust.keyring.SphinxKeyring: the gateway's rotating Sphinx
    #: keys, each with its own replay cache (private_key and replay_cache
    #: are then its first, the gateway's name key, which it keeps)
    keyring: object = None

    received: int = attrs.field(default=0, init=False)
    #: ack packets handed to the links
    acks_sent: int = attrs.field(default=0, init=False)
    #: acks that left without the rest of their hold: over max_held waiting
    #: at once, or the gateway stopping
    acks_unheld: int = attrs.field(default=0, init=False)
    dropped: collections.Counter = attrs.field(factory=collections.Counter, init=False)
    _held: dict = attrs.field(factory=dict, init=False)
    _next: int = attrs.field(default=0, init=False)
    #: committed acks waiting for the end of their hold: key -> (call, first hop, packet)
    _held_acks: dict = attrs.field(factory=dict, init=False)
    _next_ack: int = attrs.field(default=0, init=False)
    #: set by release_all: what commits from now on is acked at once
    _stopping: bool = attrs.field(default=False, init=False)
    _quiet: object = attrs.field(default=None, init=False)

    @ack_hold.validator
    def _check_hold(self, attribute, value):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and 0 <= value < float("inf")):
            raise ValueError(f"the ack hold is a finite number of seconds >= 0, not {value!r}")

    def __attrs_post_init__(self):
        if self.public_key is None:
            self.public_key = crypto_scalarmult_base(bytes(self.private_key))
        # the commit hook: what a flush committed may now be acked
        self.store.add_commit_hook(self._committed)
        # anyone can send packets with bad SURB-ACKs: one log line a minute
        self._quiet = LogThrottle(self.clock)

    def packet_received(self, packet):
        self.received += 1
        try:
            if self.keyring is not None:
                hop = self.keyring.process(packet, process_gateway_packet)
            else:
                hop = process_gateway_packet(self.private_key, packet, self.replay_cache)
        except SphinxError as e:
            reason = REPLAY if isinstance(e, ReplayError) else MALFORMED
            self.dropped[reason] += 1
            self.log.debug("dropped a packet: {why}", why=str(e))
            return
        if not isinstance(hop, (sphinx.FinalHop, SurbDelivery)):
            self.dropped[FORWARD_HOP] += 1
            return
        delay = hop.delay_ns / 1e9
        if delay > self.max_delay:
            self.dropped[DELAY_TOO_LONG] += 1
            return
        if delay == 0:
            # no hold (a test network's zero delays): a timer would only cost
            # a turn of the reactor before the store sees the packet
            self.deliver(hop)
            return
        if len(self._held) >= self.max_held:
            self.dropped[OVERLOADED] += 1
            return
        key = self._next
        self._next += 1
        self._held[key] = (self.clock.callLater(delay, self._release, key), hop)

    def _release(self, key):
        _, hop = self._held.pop(key)
        self.deliver(hop)

    def deliver(self, hop):
        record = gateway_record(hop)
        token = None
        if record.surb_ack is not None:
            # the hold is drawn at the release, for drop cover and mail alike
            token = _PendingAck(record.surb_ack, self.clock.seconds() + self._draw_hold())
        if record.destination == self.public_key:
            # drop cover: nothing to keep, but its sender counts on the ack
            # like on any packet's. It goes through a commit (inserted and
            # deleted in it) so that its ack leaves as a stored message's
            # would: skipping the commit made it leave sooner (docs/surb.md §2.5)
            self.dropped[DROP_COVER] += 1
            if token is not None:
                try:
                    self.store.add_cover(self.public_key, record.record, token)
                except Exception:
                    self.log.failure("committing drop cover failed")
            return
        try:
            reason = self.store.add(record.destination, record.record, token)
        except Exception:
            self.log.failure("storing a message failed")
            reason = STORE_FAILURE
        if reason is not None:
            # not stored, so not acked: its sender sends it again
            self.dropped[reason] += 1

    def _draw_hold(self):
        return self.rng.expovariate(1 / self.ack_hold) if self.ack_hold > 0 else 0.0

    def _committed(self, tokens):
        """The commit hook: these messages are stored, so their acks may go,
        each when its hold has ended (at once if it already has)."""
        now = self.clock.seconds()
        for token in tokens:
            try:
                first_hop, packet = ack_packet(token.surb_ack, self.randbytes)
            except AckError as e:
                self.dropped[BAD_ACK] += 1
                count = self._quiet.allow(BAD_ACK)
                if count:
                    self.log.info("an ack not sent (the message is stored): {why}"
                                  " ({count} such since the last such line)",
                                  why=str(e), count=count)
                continue
            wait = token.due - now
            if wait <= 0:
                self._send_ack(first_hop, packet)
            elif self._stopping or len(self._held_acks) >= self.max_held:
                self.acks_unheld += 1
                self._send_ack(first_hop, packet)
            else:
                key = self._next_ack
                self._next_ack += 1
                self._held_acks[key] = (self.clock.callLater(wait, self._ack_due, key),
                                        first_hop, packet)

    def _ack_due(self, key):
        _, first_hop, packet = self._held_acks.pop(key)
        self._send_ack(first_hop, packet)

    def _send_ack(self, first_hop, packet):
        if self.links is None:
            self.dropped[NO_LINKS] += 1
            return
        self.links.send(first_hop, packet)
        self.acks_sent += 1

    @property
    def acks_held(self):
        """Committed acks waiting for the end of their hold."""
        return len(self._held_acks)

    @property
    def held(self):
        return len(self._held)

    def release_all(self):
        """Store every held packet now, and send every held ack: at
        shutdown, early beats lost. The acks of what the store commits from
        now on (its last flush) leave at once too."""
        held, self._held = self._held, {}
        for call, hop in held.values():
            call.cancel()
            self.deliver(hop)
        self._stopping = True
        acks, self._held_acks = self._held_acks, {}
        for call, first_hop, packet in acks.values():
            call.cancel()
            self.acks_unheld += 1
            self._send_ack(first_hop, packet)


class MixProtocol(BoundedPacketReceiver):
    def __init__(self, handler):
        super().__init__()
        self.handler = handler

    def packetReceived(self, packet):
        self.handler.packet_received(packet)


#: Incoming mix links at once. Only the last layer's mixnodes deliver here,
#: but anyone can connect; each connection costs a descriptor.
MAX_CONNECTIONS = 1024
#: Seconds without a whole packet before a mix link is cut (its sender redials).
IDLE_TIMEOUT = 300.0


class MixListenerFactory(Factory):
    """Builds a :class:`MixProtocol` per incoming mix link (unbounded:
    :func:`listener_factory` puts the bounds around it)."""

    noisy = False

    def __init__(self, handler):
        self.handler = handler

    def buildProtocol(self, addr):
        p = MixProtocol(self.handler)
        p.factory = self
        return p


def listener_factory(handler, max_connections=MAX_CONNECTIONS, idle_timeout=IDLE_TIMEOUT,
                     clock=None):
    """The gateway's mix listener factory: MixListenerFactory within its bounds."""
    return ConnectionLimit(MixListenerFactory(handler),
                           handler.clock if clock is None else clock, max_connections,
                           idle_timeout=idle_timeout, name="gateway mix listener")
