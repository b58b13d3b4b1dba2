"""A replay cache with bounded memory."""


class ReplayCache:
    """Remembers the tags of recent packets, at most *capacity* of them.

    Two generations: tags go into the current one; when it holds
    capacity/2 tags it becomes the previous one and the old previous one is
    forgotten. Memory therefore never exceeds *capacity* tags, every tag is
    remembered for at least capacity/2 later packets, and a replay of a
    packet older than that is no longer caught. A node that must refuse
    replays for ever has to rotate its key before then.
    """

    def __init__(self, capacity=1 << 20):
        if capacity < 2:
            raise ValueError("a replay cache needs a capacity of at least 2")
        self.capacity = capacity
        self._half = capacity // 2
        self._current = set()
        self._previous = set()

    def insert(self, tag):
        """Record *tag*; False if it was already there (a replay)."""
        if tag in self._current or tag in self._previous:
            return False
        current = self._current
        current.add(tag)
        if len(current) >= self._half:
            self._previous = current
            self._current = set()
        return True

    def __contains__(self, tag):
        return tag in self._current or tag in self._previous

    def __len__(self):
        return len(self._current) + len(self._previous)
