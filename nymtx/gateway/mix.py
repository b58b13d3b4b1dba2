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
the gateway's own key, is discarded, its ack sent with the next commit.
Everything else is dropped and counted by reason.
"""

import collections
import os

import attrs
from nacl.bindings import crypto_scalarmult_base
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from nymtx import sphinx
from nymtx.links import LogThrottle
from nymtx.reliable.ack import AckError, ack_packet
from nymtx.reliable.inbound import gateway_record
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

    received: int = attrs.field(default=0, init=False)
    #: ack packets handed to the links
    acks_sent: int = attrs.field(default=0, init=False)
    dropped: collections.Counter = attrs.field(factory=collections.Counter, init=False)
    _held: dict = attrs.field(factory=dict, init=False)
    _next: int = attrs.field(default=0, init=False)
    _quiet: object = attrs.field(default=None, init=False)

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
        if record.destination == self.public_key:
            # drop cover: nothing to store, but its sender counts on the ack
            # like on any packet's; it leaves with the next commit's acks
            self.dropped[DROP_COVER] += 1
            if record.surb_ack is not None:
                self.store.after_commit(record.surb_ack)
            return
        try:
            reason = self.store.add(record.destination, record.record, record.surb_ack)
        except Exception:
            self.log.failure("storing a message failed")
            reason = STORE_FAILURE
        if reason is not None:
            # not stored, so not acked: its sender sends it again
            self.dropped[reason] += 1

    def _committed(self, surb_acks):
        for surb_ack in surb_acks:
            try:
                first_hop, packet = ack_packet(surb_ack, self.randbytes)
            except AckError as e:
                self.dropped[BAD_ACK] += 1
                count = self._quiet.allow(BAD_ACK)
                if count:
                    self.log.info("an ack not sent (the message is stored): {why}"
                                  " ({count} such since the last such line)",
                                  why=str(e), count=count)
                continue
            if self.links is None:
                self.dropped[NO_LINKS] += 1
                continue
            self.links.send(first_hop, packet)
            self.acks_sent += 1

    @property
    def held(self):
        return len(self._held)

    def release_all(self):
        """Store every held packet now: at shutdown, early beats lost."""
        held, self._held = self._held, {}
        for call, hop in held.values():
            call.cancel()
            self.deliver(hop)


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
