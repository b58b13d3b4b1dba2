"""Which mixnodes to route around: blame from unacknowledged packets, on an
injected clock.

A dead mixnode stays in the directory's topology until its presence
expires (10 s on a localnet, minutes in a deployment). Until then a route
drawn uniformly crosses it with probability 1/n per layer (forward and ack
route alike), and a fragment's capped retries (docs/surb.md §3) can all be
drawn through it. So the client remembers, per mixnode, how its packets
fared and leaves out of its routes one that keeps failing.

Blame is only for the nodes not proven alive: an ack for a packet that was
sent *after* a lost one, through the same node, shows that node still
forwarded then; the loss is someone else's. So a node gets a strike for a
lost packet only if it has no success newer than that packet's send. A
dead node never gets a success again; a live one beside it keeps getting
them from the routes that avoid the dead one. After ``strikes`` strikes
with no success between, a node is avoided for ``quarantine`` seconds from
its last strike; then it is tried again, and one more loss (its count has
not been cleared) puts it back, while one ack clears it.

A layer whose every node is avoided is routed over all of them: avoiding
is a preference, and a route through a suspect is better than none.
Avoiding skews route choice, which an attacker who can drop packets could
steer (the same active attacker docs/surb.md §3 caps retries against): it
takes ``strikes`` losses to move one node out for ``quarantine`` seconds,
and it can never empty a layer.
"""

import attrs

DEFAULT_STRIKES = 3
DEFAULT_QUARANTINE = 30.0


@attrs.define(eq=False)
class _Node:
    strikes: int = 0
    last_success_sent: float = float("-inf")  # send time of its newest acked packet
    last_strike: float = float("-inf")


@attrs.define(eq=False)
class RouteHealth:
    """Per-mixnode strikes. Keys are the callers' (a mixnode's public key);
    a packet is named by any hashable *ref* (e.g. (number, index, attempt))."""

    clock: object
    strikes: int = DEFAULT_STRIKES
    quarantine: float = DEFAULT_QUARANTINE
    #: packets in flight kept at most; beyond it the oldest are forgotten
    #: (a packet forgotten is neither blamed nor credited)
    max_in_flight: int = 100_000

    _nodes: dict = attrs.field(factory=dict, init=False)
    _flight: dict = attrs.field(factory=dict, init=False)  # ref -> (sent at, nodes)

    def __attrs_post_init__(self):
        if self.strikes < 1 or self.quarantine < 0:
            raise ValueError("strikes must be at least 1 and quarantine not negative")

    def sent(self, ref, nodes):
        """Packet *ref* left now through *nodes* (forward and ack routes)."""
        self._flight.pop(ref, None)
        self._flight[ref] = (self.clock.seconds(), tuple(nodes))
        while len(self._flight) > self.max_in_flight:
            del self._flight[next(iter(self._flight))]

    def acked(self, ref):
        """Its ack came back: every node on its routes forwarded it."""
        entry = self._flight.pop(ref, None)
        if entry is None:
            return
        sent_at, nodes = entry
        for key in nodes:
            node = self._nodes.setdefault(key, _Node())
            node.strikes = 0
            node.last_success_sent = max(node.last_success_sent, sent_at)

    def lost(self, ref):
        """Its ack did not come back in time: strike each node on its routes
        that has not forwarded a later packet."""
        entry = self._flight.pop(ref, None)
        if entry is None:
            return
        sent_at, nodes = entry
        now = self.clock.seconds()
        for key in set(nodes):
            node = self._nodes.setdefault(key, _Node())
            if node.last_success_sent > sent_at:
                continue  # alive after this packet passed: not its fault
            node.strikes += 1
            node.last_strike = now

    def avoided(self, key):
        node = self._nodes.get(key)
        return (node is not None and node.strikes >= self.strikes
                and self.clock.seconds() - node.last_strike < self.quarantine)

    def avoid(self):
        """The keys to leave out of routes now."""
        return frozenset(key for key in self._nodes if self.avoided(key))
