"""Sphinx key rotation: which key a node announces, and which it accepts.

A node's keys form a schedule of periods, each a key and the time from
which senders use it. The presence announces the key in use and, once the
next period is scheduled, that key and its start (``nextPubKey``,
``nextPubKeyFrom``): clients switch at the start, and the node accepts the
new key from the moment it is announced and the old one until ``overlap``
after the switch (packets in flight, topologies a few minutes old, reply
blocks built before it). After that the old key is retired: its private
half and its replay cache can go. docs/trust.md, "Key rotation".
"""

import attrs

def rotation_interval(hours, debug_ms):
    """Nanoseconds each Sphinx key of a node is used, from its config:
    *debug_ms* (``[debug] sphinx_key_rotation``, for tests) if set, else
    *hours*; 0: it never rotates."""
    return debug_ms * 1_000_000 if debug_ms else hours * 3600 * 1_000_000_000


#: How long a key is still accepted after its successor took over: a
#: client's topology may be a few minutes old and a packet may wait 300 s
#: at each of four hops.
DEFAULT_OVERLAP = 30 * 60 * 1_000_000_000


@attrs.frozen
class KeyPeriod:
    public_key: bytes
    start: int  # Unix ns from which senders use this key


def _check_periods(instance, attribute, value):
    if not value:
        raise ValueError("a schedule has at least one key")
    starts = [p.start for p in value]
    if starts != sorted(set(starts)):
        raise ValueError("periods must start at strictly increasing times")
    keys = [p.public_key for p in value]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears in two periods")


@attrs.frozen
class RotationSchedule:
    periods: tuple = attrs.field(converter=tuple, validator=_check_periods)
    overlap: int = DEFAULT_OVERLAP

    def _index(self, now):
        # the first period is in use from the start of time: a node's first key
        index = 0
        for i, period in enumerate(self.periods):
            if period.start <= now:
                index = i
        return index

    def in_use(self, now):
        """The key senders use at *now* (the presence's ``pubKey``)."""
        return self.periods[self._index(now)].public_key

    def announced(self, now):
        """(next key, its start) for the presence, or (None, 0) if none is scheduled."""
        index = self._index(now) + 1
        if index < len(self.periods):
            return self.periods[index].public_key, self.periods[index].start
        return None, 0

    def accepted(self, now):
        """The keys a node tries on a packet at *now*, the one in use first."""
        index = self._index(now)
        keys = [self.periods[index].public_key]
        if index + 1 < len(self.periods):
            keys.append(self.periods[index + 1].public_key)
        for i in range(index - 1, -1, -1):
            if now < self.periods[i + 1].start + self.overlap:
                keys.append(self.periods[i].public_key)
            else:
                break
        return keys

    def retired(self, now):
        """Keys no longer accepted: their private keys and replay caches may go."""
        accepted = set(self.accepted(now))
        index = self._index(now)
        return [p.public_key for p in self.periods[:index] if p.public_key not in accepted]

    def rotate(self, public_key, start):
        """This schedule with *public_key* used from *start* (after the last period)."""
        return attrs.evolve(self, periods=self.periods + (KeyPeriod(public_key, start),))
