"""The packet path of a mixnode: unwrap one layer, hold, forward.

This is the protocol-level logic only: no listener, no directory, no files.
``MixnodeService`` (service.py) wires it to a listening endpoint and to
the directory; tests wire it to a Clock and fake links.
"""

import itertools

import attrs
from twisted.internet.defer import succeed
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from nymtx.addressing import AddressError, NodeAddress
from nymtx.sphinx import PACKET_SIZE, ForwardHop, SphinxError, process_packet
from nymtx.listening import ConnectionLimit
from nymtx.mixnode.worker import FINAL_HOP, FORWARD
from nymtx.mixnode.workers import LOST, WORKER_LOST, WorkerPool
from nymtx.wire import BoundedPacketReceiver, PacketReceiver

#: Drop reasons that are not a SphinxError subclass name (and FINAL_HOP,
#: WORKER_LOST: a packet a worker held when it ended).
WORKERS_BUSY = "workers_busy"
BAD_NEXT_ADDRESS = "bad_next_address"
TOO_MANY_IN_FLIGHT = "too_many_in_flight"
DELAY_TOO_LONG = "delay_too_long"
QUEUE_OVERFLOW = "queue_overflow"
PEER_EVICTED = "peer_evicted"

# Next hops are few (the next layer's nodes); decoding an address costs more
# than looking it up, but a flood of distinct addresses must not grow memory.
_ADDRESS_CACHE_SIZE = 4096


@attrs.define(eq=False)
class Mixnode:
    """Processes packets with *private_key* and forwards them through *links*.

    Counters (``received``, ``dropped`` by reason, and the links' ``sent``)
    accumulate until ``take_metrics`` reads and resets them.
    """

    log = Logger()

    clock: object
    private_key: bytes = attrs.field(repr=False)
    links: object
    replay_cache: object
    max_in_flight: int = 32768
    max_delay: float = 300.0
    received: int = 0
    dropped: dict = attrs.Factory(dict)
    _held: dict = attrs.Factory(dict)
    _tokens: object = attrs.Factory(itertools.count)
    _addresses: dict = attrs.Factory(dict)
    _reported_overflow: int = 0
    _reported_evicted: int = 0
    _unreported_sent: int = 0
    _stopped: bool = False
    #: processes that unwrap packets: 1 is this one; N >= 2 starts N workers
    workers: int = 1
    #: how a worker is started (tests give a fake); None: a real process
    spawn: object = None
    #: packets at the workers past which reading pauses, and past which they drop
    pause_backlog: int = 4096
    max_backlog: int = 65536
    receivers: set = attrs.Factory(set)
    #: a nymtx.trust.keyring.SphinxKeyring: rotating keys, each with its own
    #: replay cache (then private_key and replay_cache are not used)
    keyring: object = None
    _pool: object = None
    _reading_paused: bool = False

    @property
    def in_flight(self):
        """Packets held for their delay right now."""
        return len(self._held)

    def handle_packet(self, packet):
        if self._stopped:
            # bytes still arriving while the connections close: nowhere to go
            return
        self.received += 1
        pool = self._pool
        if pool is not None:
            self._submit(pool, packet, 1)
            return
        try:
            if self.keyring is not None:
                hop = self.keyring.process(packet)
            else:
                hop = process_packet(self.private_key, packet, self.replay_cache)
        except SphinxError as e:
            self._drop(type(e).__name__)
            return
        if type(hop) is not ForwardHop:
            self._drop(FINAL_HOP)
            return
        self._forward(hop.next_address, hop.delay_ns, hop.packet, None)

    def handle_packets(self, packets):
        """Whole packets laid end to end, as one read brought them.

        With workers they go to the pool in one piece (no packet is cut
        out and joined again); else one by one through handle_packet.
        """
        pool = self._pool
        if pool is None or self._stopped:
            size = PACKET_SIZE
            for start in range(0, len(packets), size):
                self.handle_packet(packets[start:start + size])
            return
        count = len(packets) // PACKET_SIZE
        self.received += count
        self._submit(pool, packets, count)

    def _submit(self, pool, packets, count):
        if pool.backlog >= self.max_backlog:
            self._drop(WORKERS_BUSY, count)
            return
        pool.submit(packets, self.clock.seconds())
        if not self._reading_paused and pool.backlog >= self.pause_backlog:
            self._pause_reading(True)

    def processed(self, runs):
        """The workers' results, ``[(arrival time, [result, ...]), ...]`` in arrival order."""
        if self._stopped:
            return
        replay_cache = self.replay_cache
        keyring = self.keyring
        forward = self._forward
        for received_at, results in runs:
            for result in results:
                if result is LOST:
                    self._drop(WORKER_LOST)
                    continue
                tag = result[1]
                if tag is not None and keyring is not None:
                    # the key's own replay cache: the result names its slot
                    replay_cache = keyring.replay_cache(self._pool.slot_key(result[-1]))
                    if replay_cache is None:
                        # retired while the packet was at the worker
                        self._drop("HeaderMacError")
                        continue
                if tag is not None and not replay_cache.insert(tag):
                    self._drop("ReplayError")
                    continue
                if result[0] != FORWARD:
                    self._drop(result[2])
                    continue
                forward(result[2], result[3], result[4], received_at)
        if self._reading_paused and self._pool.backlog <= self.pause_backlog // 4:
            self._pause_reading(False)

    def _pause_reading(self, paused):
        # Workers take packets as fast as the socket gives them; without this
        # a sender faster than the workers would grow the pipes' buffers.
        self._reading_paused = paused
        for receiver in self.receivers:
            if paused:
                receiver.transport.pauseProducing()
            else:
                receiver.transport.resumeProducing()

    def _forward(self, raw, delay_ns, packet, received_at):
        address = self._addresses.get(raw)
        if address is None:
            try:
                address = NodeAddress.from_bytes(raw)
            except AddressError:
                self._drop(BAD_NEXT_ADDRESS)
                return
            if len(self._addresses) >= _ADDRESS_CACHE_SIZE:
                self._addresses.clear()
            self._addresses[raw] = address
        delay = delay_ns / 1e9
        if delay == 0:
            self.links.send(address, packet)
            return
        if delay > self.max_delay:
            self._drop(DELAY_TOO_LONG)
            return
        held = self._held
        if len(held) >= self.max_in_flight:
            self._drop(TOO_MANY_IN_FLIGHT)
            return
        if received_at is not None:
            # the delay runs from the packet's arrival, not from its result
            delay -= self.clock.seconds() - received_at
            if delay <= 0:
                self.links.send(address, packet)
                return
        token = next(self._tokens)
        held[token] = self.clock.callLater(delay, self._release, token, address, packet)

    def _release(self, token, address, packet):
        del self._held[token]
        self.links.send(address, packet)

    def _drop(self, reason, n=1):
        dropped = self.dropped
        dropped[reason] = dropped.get(reason, 0) + n

    def take_metrics(self):
        """``{"received", "sent", "dropped"}`` since the last call; resets them.

        ``sent`` is a total: nym reported it per next hop, which published
        who sends how much to whom (the links keep per-peer counts, and they
        stay in this process). ``dropped`` is per reason, the links' queue
        overflows and packets lost with an evicted peer included.
        """
        overflow = self.links.dropped - self._reported_overflow
        self._reported_overflow = self.links.dropped
        evicted = self.links.evicted - self._reported_evicted
        self._reported_evicted = self.links.evicted
        dropped, self.dropped = self.dropped, {}
        if overflow:
            dropped[QUEUE_OVERFLOW] = dropped.get(QUEUE_OVERFLOW, 0) + overflow
        if evicted:
            dropped[PEER_EVICTED] = evicted
        sent = sum(self.links.sent.values()) + self._unreported_sent
        self.links.sent.clear()
        self._unreported_sent = 0
        received, self.received = self.received, 0
        return {"received": received, "sent": sent, "dropped": dropped}

    def return_metrics(self, metrics):
        """Put back counts that could not be reported, to go with the next report."""
        self.received += metrics["received"]
        self._unreported_sent += metrics["sent"]
        for reason, n in metrics["dropped"].items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def start(self):
        """Take packets again (after a stop); starts the workers, if any."""
        self._stopped = False
        if self.workers > 1:
            if self._pool is None:
                kwargs = {} if self.spawn is None else {"spawn": self.spawn}
                self._pool = WorkerPool(self.clock, self.private_key, self.workers,
                                        self.processed, **kwargs)
                if self.keyring is not None:
                    # the parent tells the workers each change of its keys
                    # (docs/mixnode.md, "Worker processes"); the replay
                    # caches, one per key, stay here
                    self.keyring.on_change = self._pool.set_keys
                    self._pool.set_keys(self.keyring.held())
            self._pool.start()

    @property
    def pool(self):
        """The WorkerPool (workers >= 2, once started), else None."""
        return self._pool

    def stop_workers(self):
        """Ends the worker processes; fires once they have exited."""
        if self._pool is None:
            return succeed(None)
        return self._pool.stop()

    def stop(self):
        """Forget the packets still held (they would have nowhere to go)."""
        self._stopped = True
        held, self._held = self._held, {}
        for call in held.values():
            if call.active():
                call.cancel()
        return len(held)


class MixnodeProtocol(BoundedPacketReceiver):
    """One incoming connection: every packet goes to the node."""

    def connectionMade(self):
        node = self.factory.node
        node.receivers.add(self)
        if node._reading_paused:
            self.transport.pauseProducing()

    def connectionLost(self, reason):
        self.factory.node.receivers.discard(self)

    def packetReceived(self, packet):
        self.factory.node.handle_packet(packet)

    def packetsReceived(self, packets):
        node = self.factory.node
        if node.pool is None:
            PacketReceiver.packetsReceived(self, packets)
        else:
            # the workers take a read's packets in one piece
            node.handle_packets(packets)


#: Incoming connections at once: clients of a layer-1 node and the previous
#: layer's nodes. Each costs a descriptor and ~1.4 KB of partial packet.
MAX_CONNECTIONS = 4096
#: Seconds without a whole packet after which an incoming connection is cut:
#: a sender's link redials on its next packet, so a quiet peer loses nothing.
IDLE_TIMEOUT = 300.0


class MixnodeFactory(Factory):
    """Builds a :class:`MixnodeProtocol` per incoming connection, unbounded:
    :func:`listener_factory` puts the listener's bounds around it."""

    protocol = MixnodeProtocol
    noisy = False

    def __init__(self, node):
        self.node = node


def listener_factory(node, max_connections=MAX_CONNECTIONS, idle_timeout=IDLE_TIMEOUT,
                     clock=None):
    """The mixnode's packet listener factory: MixnodeFactory within its bounds."""
    return ConnectionLimit(MixnodeFactory(node), node.clock if clock is None else clock,
                           max_connections, idle_timeout=idle_timeout,
                           name="mixnode packet listener")
