"""The gateway's mix side: the last Sphinx hop, its delay, then the mailbox.

Packets arrive framed as on every mix link (``nymtx.wire``). The gateway
removes the last layer, holds the packet for the delay its sender chose for
this hop (every hop delays, the last one too, so the arrival time at the
gateway says less about the sending time) and stores the message for its
destination if that client is registered here. Everything else is dropped
and counted by reason.
"""

import collections

import attrs
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from nymtx import sphinx
from nymtx.sphinx.errors import ReplayError, SphinxError
from nymtx.listening import ConnectionLimit
from nymtx.wire import BoundedPacketReceiver

#: Drop reasons besides the store's own.
REPLAY = "replay"
MALFORMED = "malformed"
FORWARD_HOP = "forward_hop"
DELAY_TOO_LONG = "delay_too_long"
OVERLOADED = "overloaded"
STORE_FAILURE = "store_failure"


@attrs.define(eq=False)
class FinalHopHandler:
    """Turns packets into stored messages on *store*, after their delay on *clock*."""

    log = Logger()

    clock: object
    private_key: bytes
    store: object
    replay_cache: object = attrs.field(factory=lambda: sphinx.ReplayCache())
    #: a sender may choose any delay; beyond this the gateway will not hold it
    max_delay: float = 300.0
    #: packets held at once; more would let a flood grow memory without bound
    max_held: int = 100_000

    received: int = attrs.field(default=0, init=False)
    dropped: collections.Counter = attrs.field(factory=collections.Counter, init=False)
    _held: dict = attrs.field(factory=dict, init=False)
    _next: int = attrs.field(default=0, init=False)

    def packet_received(self, packet):
        self.received += 1
        try:
            hop = sphinx.process_packet(self.private_key, packet, self.replay_cache)
        except SphinxError as e:
            reason = REPLAY if isinstance(e, ReplayError) else MALFORMED
            self.dropped[reason] += 1
            self.log.debug("dropped a packet: {why}", why=str(e))
            return
        if not isinstance(hop, sphinx.FinalHop):
            self.dropped[FORWARD_HOP] += 1
            return
        delay = hop.delay_ns / 1e9
        if delay > self.max_delay:
            self.dropped[DELAY_TOO_LONG] += 1
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
        try:
            reason = self.store.add(hop.destination, hop.message)
        except Exception:
            self.log.failure("storing a message failed")
            reason = STORE_FAILURE
        if reason is not None:
            self.dropped[reason] += 1

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
