"""Outgoing mix links: one persistent TCP connection per next hop.

Client→mixnode, mixnode→mixnode and mixnode→gateway traffic all leaves
through here. A link connects when it first has something to send, keeps
its connection, and reconnects with a capped, jittered exponential backoff
while it has packets queued, for at most ``max_wait`` seconds: packets that
waited longer are dropped (counted in ``expired``) and the peer is not
redialled until something new is sent to it. Each link is in one
``PeerState`` at a time. Each peer has a bounded queue: on overflow the oldest
packet goes (it is the one most likely to be late anyway) and is counted.

Packets sent in one reactor turn to one peer leave in one
``transport.write``; and a peer that reads slower than we write pauses us
(we are a streaming producer of its transport), so the only memory a slow
or dead peer can cost is its bounded queue.

The number of peers is bounded too (``max_peers``): anyone can build a valid
packet for a mixnode that names any next hop, so a flood of distinct dead
addresses would otherwise cost a link, a queue, a retry timer and a socket
each, for ever. Past the bound the least recently used peer is closed and
forgotten; the packets still queued for it are counted in ``evicted``.
Real next hops are few and busy, so they stay at the recent end.
"""

import collections
import enum

import attrs
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.backoff import backoff_policy
from nymtx.interfaces import IPacketLinks
from nymtx.wire import no_delay

#: Seconds a connection attempt may take before it counts as failed.
CONNECT_TIMEOUT = 10
#: Seconds packets may wait for a peer that cannot be reached; the longest
#: delay a mixnode holds a packet for (max_delay) is 300 s too.
MAX_WAIT = 300.0


def tcp_endpoint(reactor, address):
    """The client endpoint for a node address (the default endpoint factory)."""
    if address.ip.version == 6:
        return TCP6ClientEndpoint(reactor, address.host, address.port,
                                  timeout=CONNECT_TIMEOUT)
    return TCP4ClientEndpoint(reactor, address.host, address.port,
                              timeout=CONNECT_TIMEOUT)


@implementer(IPushProducer)
class _LinkProtocol(Protocol):
    """The connected end of one link; the link owns the logic.

    With the links' ``secure`` (nymtx.trust.mixlink), the connection first
    runs the mix link handshake as its initiator, and counts as connected
    only once the receiving node has proven its key; each packet then
    leaves as one sealed frame.
    """

    def __init__(self, link):
        self.link = link
        self.paused = False
        self.mixlink = None
        self._timer = None
        self.why = None  # why this side closed the connection, if it did

    def connectionMade(self):
        no_delay(self.transport)
        self.transport.registerProducer(self, True)
        secure = self.link.links.secure
        if secure is None:
            self.link._connected(self)
            return
        from nymtx.trust.mixlink import HANDSHAKE_TIMEOUT, LinkError
        self.link._handshaking(self)
        try:
            self.mixlink = secure.initiator(self.link.address)
        except LinkError as e:
            self._close(str(e))
            return
        self.transport.write(self.mixlink.take_output())
        self._timer = self.link.links._reactor.callLater(
            HANDSHAKE_TIMEOUT, self._close, "no handshake answer within"
            f" {HANDSHAKE_TIMEOUT:g} s", True)

    def dataReceived(self, data):
        mixlink = self.mixlink
        if mixlink is None:
            # Plain mix links carry packets one way; whatever the peer says is ignored.
            return
        from nymtx.trust.mixlink import LinkError
        was_open = mixlink.is_open
        try:
            mixlink.receive(data)
        except LinkError as e:
            self._close(str(e))
            return
        out = mixlink.take_output()
        if out:
            self.transport.write(out)
        if mixlink.is_open and not was_open:
            self._cancel()
            self.link._connected(self)

    def _close(self, why, abort=False):
        if self._timer is not None and not abort:
            self._cancel()
        self._timer = None
        self.why = why
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _cancel(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason):
        self._cancel()
        self.link._lost(self, reason)

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        self.link._flush()

    def stopProducing(self):
        self.paused = True


class LogThrottle:
    """Lets a repeated log line through at most once per *interval* seconds.

    ``allow(kind)`` returns how many times *kind* happened since the last
    line that was let through (this time included), or 0 to stay quiet.
    """

    def __init__(self, clock, interval=60.0):
        self.clock = clock
        self.interval = interval
        self._last = {}  # kind -> (time of the last line, times since)

    def allow(self, kind):
        now = self.clock.seconds()
        last, since = self._last.get(kind, (None, 0))
        if last is None or now - last >= self.interval:
            self._last[kind] = (now, 0)
            return since + 1
        self._last[kind] = (last, since + 1)
        return 0


class _LinkFactory(Factory):
    noisy = False

    def __init__(self, link):
        self.link = link

    def buildProtocol(self, addr):
        return _LinkProtocol(self.link)


class PeerState(enum.Enum):
    """Where one peer's link is; one at a time."""

    IDLE = "idle"              # no connection and no attempt: the next send connects
                               # (no sooner than the backoff after a failure)
    CONNECTING = "connecting"  # a TCP connect under way
    CONNECTED = "connected"    # packets are written as they come
    WAITING = "waiting"        # packets wait for the retry timer (backoff)
    CLOSED = "closed"          # stopped, evicted or retired: PacketLinks forgot it


@attrs.define(eq=False)
class _Link:
    """One peer: its queue, its connection, its reconnect timer."""

    links: "PacketLinks"
    address: object
    key: str
    queue: collections.deque
    state: PeerState = PeerState.IDLE
    protocol: object = None        # in CONNECTED
    handshaking: object = None     # in CONNECTING: connected, the mix link handshake under way
    connecting: object = None      # the endpoint's Deferred, in CONNECTING
    retry: object = None           # the DelayedCall of the next attempt, in WAITING
    flush_call: object = None      # the DelayedCall that writes this turn's packets
    failures: int = 0              # failed attempts in a row: the backoff's step
    not_before: float = 0.0        # no new attempt before this time, even on demand
    queued_since: float = None     # when the oldest packet still queued came
    closed: object = None          # Deferred fired when the connection is gone

    def send(self, packet):
        queue = self.queue
        if len(queue) == queue.maxlen:
            self.links.dropped += 1
        if not queue:
            self.queued_since = self.links._reactor.seconds()
        queue.append(packet)
        if self.state is PeerState.CONNECTED:
            if self.flush_call is None and not self.protocol.paused:
                self.flush_call = self.links._reactor.callLater(0, self._flush)
        elif self.state is PeerState.IDLE:
            wait = self.not_before - self.links._reactor.seconds()
            if wait > 0:
                self.state = PeerState.WAITING
                self.retry = self.links._reactor.callLater(wait, self._connect)
            else:
                self._connect()

    def _flush(self):
        self.flush_call = None
        protocol = self.protocol
        queue = self.queue
        if self.state is not PeerState.CONNECTED or protocol.paused or not queue:
            return
        n = len(queue)
        mixlink = getattr(protocol, "mixlink", None)
        data = b"".join(queue) if mixlink is None else mixlink.seal_all(queue)
        queue.clear()
        self.queued_since = None
        transport = protocol.transport
        transport.write(data)
        # Twisted sends buffered bytes when the reactor next polls the socket
        # writable: one more loop of the reactor per hop. This turn's packets
        # are all in the buffer, so send them now; whatever the socket does
        # not take stays buffered and leaves as before. (doWrite is the
        # IWriteDescriptor method the reactor itself calls; a memory
        # transport in a test has none.)
        do_write = getattr(transport, "doWrite", None)
        if do_write is not None:
            do_write()
        sent = self.links.sent
        sent[self.key] = sent.get(self.key, 0) + n

    def _connect(self):
        self.retry = None
        self.state = PeerState.CONNECTING
        links = self.links
        d = links._endpoint_for(links._reactor, self.address).connect(_LinkFactory(self))
        self.connecting = d

        def failed(f):
            if self.connecting is d:
                self.connecting = None
                count = links._quiet.allow("failed")
                if count:
                    links.log.info("mix link to {peer} failed: {why} ({count} failed"
                                   " connection attempts since the last such line)",
                                   peer=self.key, why=f.getErrorMessage(), count=count)
                self._schedule_retry()
        d.addCallbacks(lambda _: None, failed)

    def _schedule_retry(self):
        links = self.links
        if links._stopping or self.state is PeerState.CLOSED:
            return
        self.failures += 1
        delay = links._policy(self.failures)
        now = links._reactor.seconds()
        if (self.queue and links.max_wait is not None
                and now - self.queued_since >= links.max_wait):
            # A peer down this long may have left for good, and a mixnode
            # cannot tell (it has no topology): stale packets are worth
            # nothing, and redialling for them would go on for ever.
            links.expired += len(self.queue)
            count = links._quiet.allow("expired")
            if count:
                links.log.info("mix link to {peer}: {n} packets waited over {wait:g} s"
                               " and were dropped; it is dialled again when a packet"
                               " comes for it ({count} such since the last such line)",
                               peer=self.key, n=len(self.queue), wait=links.max_wait,
                               count=count)
            self.queue.clear()
            self.queued_since = None
        if self.queue:
            self.state = PeerState.WAITING
            self.retry = links._reactor.callLater(delay, self._connect)
        else:
            # Connect on demand: a peer nobody sends to is not hammered, and
            # one that keeps dropping us is not redialled faster than backoff.
            self.state = PeerState.IDLE
            self.not_before = links._reactor.seconds() + delay

    def _handshaking(self, protocol):
        self.connecting = None
        self.handshaking = protocol
        if self.links._stopping or self.state is PeerState.CLOSED:
            protocol.transport.loseConnection()

    def _connected(self, protocol):
        self.connecting = None
        self.handshaking = None
        if self.links._stopping or self.state is PeerState.CLOSED:
            protocol.transport.loseConnection()
            return
        self.state = PeerState.CONNECTED
        self.protocol = protocol
        self.failures = 0
        self.closed = Deferred()
        self.links.log.debug("mix link to {peer} is up", peer=self.key)
        self._flush()

    def _lost(self, protocol, reason):
        if self.handshaking is protocol:
            # the TCP connection came up but no mix link did: a failed attempt
            self.handshaking = None
            links = self.links
            count = links._quiet.allow("handshake")
            if count:
                links.log.info("mix link to {peer} failed: {why} ({count} failed"
                               " handshakes since the last such line)", peer=self.key,
                               why=protocol.why or reason.getErrorMessage(), count=count)
            links.handshake_failures += 1
            if self.state is PeerState.CONNECTING:
                self._schedule_retry()
            return
        if self.protocol is protocol:
            self.protocol = None
            if self.flush_call is not None:
                self.flush_call.cancel()
                self.flush_call = None
            self.links.log.info("mix link to {peer} closed: {why}", peer=self.key,
                                why=reason.getErrorMessage())
            closed, self.closed = self.closed, None
            if self.state is PeerState.CONNECTED:
                # A link that was up starts its backoff afresh.
                self.failures = 0
                self.state = PeerState.IDLE
                self._schedule_retry()
            if closed is not None:
                closed.callback(None)

    def stop(self):
        self.state = PeerState.CLOSED
        for call in (self.retry, self.flush_call):
            if call is not None and call.active():
                call.cancel()
        self.retry = self.flush_call = None
        if self.connecting is not None:
            d, self.connecting = self.connecting, None
            d.cancel()
        if self.handshaking is not None:
            self.handshaking.transport.loseConnection()
        self.queue.clear()
        self.queued_since = None
        if self.protocol is not None:
            closed = self.closed
            self.protocol.transport.loseConnection()
            return closed
        return succeed(None)


@implementer(IPacketLinks)
class PacketLinks:
    """Persistent, bounded, reconnecting packet links to every next hop.

    ``send`` never blocks and never raises for a peer being down: the packet
    waits in that peer's queue until the link is up (or is pushed out by
    newer packets). ``sent`` counts packets written per ``str(address)``;
    ``dropped`` counts packets pushed out of a full queue; ``evicted``
    counts packets lost with a peer closed to stay within ``max_peers``;
    ``retired`` those lost with a peer closed by ``retain``; ``expired``
    those that waited over ``max_wait`` for a peer down. All are plain
    counters that the owner may read and reset. Reconnect waits follow
    :func:`nymtx.backoff.backoff_policy` (capped, *jitter* a share of each).
    """

    log = Logger()

    def __init__(self, reactor, queue_size=1024, initial_backoff=0.1,
                 maximum_backoff=30.0, endpoint_for=tcp_endpoint, max_peers=1024,
                 jitter=0.5, rng=None, max_wait=MAX_WAIT, secure=None):
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        if max_peers < 1:
            raise ValueError(f"max_peers must be at least 1, not {max_peers}")
        self._policy = backoff_policy(initial_backoff, maximum_backoff, jitter=jitter, rng=rng)
        self._reactor = reactor
        self.queue_size = queue_size
        self.initial_backoff = initial_backoff
        self.maximum_backoff = maximum_backoff
        self._endpoint_for = endpoint_for
        self.max_peers = max_peers
        if max_wait is not None and not max_wait > 0:
            raise ValueError(f"max_wait must be positive (or None), not {max_wait}")
        self.max_wait = max_wait
        #: None: plain links (1372-byte packets back to back, the seed's
        #: wire). Else what gives each connection its mix link (a
        #: nymtx.trust.admission.LinkAuthority): ``initiator(address)``
        #: returns a MixLink or raises LinkError. May be set before links open.
        self.secure = secure
        #: connections closed before their mix link was up
        self.handshake_failures = 0
        # least recently used first: send() moves a peer to the end
        self._links = collections.OrderedDict()
        self._closing = set()  # Deferreds of evicted links still closing
        self._stopping = False
        self.sent = {}
        self.dropped = 0
        self.evicted = 0
        self.retired = 0
        self.expired = 0
        # Anyone can make packets that name made-up next hops: each would
        # cost a log line per failed connect and per eviction.
        self._quiet = LogThrottle(reactor)

    def send(self, address, packet):
        """Queue *packet* for *address*; connect if need be."""
        links = self._links
        link = links.get(address)
        if link is None:
            if self._stopping:
                return
            if len(links) >= self.max_peers:
                self._evict()
            link = links[address] = _Link(
                self, address, str(address),
                collections.deque(maxlen=self.queue_size))
        else:
            links.move_to_end(address)
        link.send(packet)

    def _evict(self):
        _, link = self._links.popitem(last=False)
        self.evicted += len(link.queue)
        count = self._quiet.allow("evicted")
        if count:
            self.log.info("mix link to {peer} closed: more than {n} peers, and it was"
                          " the least recently used ({count} links closed so since the"
                          " last such line)", peer=link.key, n=self.max_peers, count=count)
        self._close(link)

    def _close(self, link):
        closing = link.stop()
        if not closing.called:
            self._closing.add(closing)
            closing.addBoth(lambda result: self._closing.discard(closing))

    def retain(self, addresses):
        """Close the link of every peer not in *addresses* (the peers still wanted).

        A client calls it with the topology's mixnodes at each refresh: a
        peer that left would otherwise be redialled for as long as packets
        wait for it, which is for ever. Packets still queued for a closed
        peer are counted in ``retired``. A later send() to it opens a new link.
        """
        wanted = set(addresses)
        gone = [address for address in self._links if address not in wanted]
        for address in gone:
            link = self._links.pop(address)
            self.retired += len(link.queue)
            self.log.info("mix link to {peer} closed: it is no longer in the topology"
                          " ({n} queued packets dropped)", peer=link.key, n=len(link.queue))
            self._close(link)

    def state(self, address):
        """The PeerState of the link to *address* (CLOSED for an unknown peer)."""
        link = self._links.get(address)
        return link.state if link is not None else PeerState.CLOSED

    def queued(self, address):
        """How many packets wait for *address* (0 for an unknown peer)."""
        link = self._links.get(address)
        return len(link.queue) if link is not None else 0

    def connected(self, address):
        return self.state(address) is PeerState.CONNECTED

    def stop(self):
        """Close every link; the Deferred fires once every connection is gone."""
        self._stopping = True
        links, self._links = list(self._links.values()), collections.OrderedDict()
        waits = [link.stop() for link in links] + list(self._closing)
        return DeferredList(waits).addCallback(lambda _: None)
