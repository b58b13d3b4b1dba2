"""What the directory knows: the nodes heard from lately and their metrics.

Entries are kept in memory, keyed by public key, as nym's directory does; a
re-announce replaces the old entry. A node not heard from for ``expiry``
seconds leaves the topology, and its metrics go with it. Expiry runs on
every announce and every read (nym's ``killOldsters``), so no timer is
needed and the clock is only ever read, never waited on.

Metrics are published only as each node's totals over the last whole
window of ``METRICS_WINDOW`` seconds (windows aligned to the clock, not
sliding: two readings of a sliding window a second apart would give the
per-second counts back by subtraction). Per-second, per-next-hop counts
would be a traffic matrix for anyone who asks; docs/directory.md says more.
"""

import attrs
from twisted.logger import Logger

NS = 1_000_000_000
DEFAULT_EXPIRY = 10.0
#: Distinct public keys the directory keeps of each kind; anyone may
#: announce, so memory is bounded.
DEFAULT_CAPACITY = 10_000
#: Seconds over which a node's reports are summed before they are shown.
METRICS_WINDOW = 60.0
#: Distinct drop reasons a window keeps per node; the rest count as "other".
MAX_REASONS = 32
OTHER_REASON = "other"


class DirectoryFull(Exception):
    """No room for one more node; existing nodes may still re-announce."""


@attrs.define
class Registry:
    """Presence of mixnodes and gateways, and the mixnodes' latest metrics.

    ``clock`` provides ``seconds()``: the reactor, or a ``task.Clock``.
    """

    clock: object
    expiry: float = DEFAULT_EXPIRY
    capacity: int = DEFAULT_CAPACITY
    window: float = METRICS_WINDOW
    _mixnodes: dict = attrs.field(factory=dict, init=False)
    _gateways: dict = attrs.field(factory=dict, init=False)
    # pubKey -> _Tally: the window being counted and the last whole one
    _metrics: dict = attrs.field(factory=dict, init=False)

    log = Logger()

    def now_ns(self):
        return int(self.clock.seconds() * NS)

    def add_mixnode(self, entry):
        """Record a checked mixnode presence (see presence.parse_mixnode)."""
        self._add(self._mixnodes, "mixnode", entry)

    def add_gateway(self, entry):
        """Record a checked gateway presence (see presence.parse_gateway)."""
        self._add(self._gateways, "gateway", entry)

    def add_metrics(self, entry):
        """Record a checked metrics report (see presence.parse_metrics)."""
        now = self.now_ns()
        self.expire(now)
        key = entry["pubKey"]
        tally = self._metrics.get(key)
        if tally is None:
            if len(self._metrics) >= self.capacity:
                raise DirectoryFull(f"the directory holds metrics of {self.capacity} nodes")
            tally = self._metrics[key] = _Tally(self._window_of(now))
        tally.roll(self._window_of(now))
        tally.add(entry, now)

    def topology(self):
        """The seed's topology JSON object, after dropping stale nodes."""
        self.expire()
        mixnodes = sorted(self._mixnodes.values(),
                          key=lambda e: (e["layer"], e["host"], e["pubKey"]))
        gateways = sorted(self._gateways.values(),
                          key=lambda e: (e["host"], e["pubKey"]))
        return {"MixNodes": [dict(e) for e in mixnodes],
                "MixProviderNodes": [_copy_gateway(e) for e in gateways]}

    def _window_of(self, now_ns):
        return now_ns // int(self.window * NS)

    def _whole_windows(self):
        """pubKey -> the totals of the last whole window, where there is one."""
        now = self.now_ns()
        self.expire(now)
        current = self._window_of(now)
        out = {}
        for key, tally in self._metrics.items():
            tally.roll(current)
            if tally.done is not None:
                out[key] = tally.done
        return out

    def metrics(self):
        """Each mixnode's totals over the last whole window, by key.

        A node shows up only once a window it reported in has ended, and
        only with totals: received, sent, and dropped per reason.
        """
        width = int(self.window * NS)
        return [{"pubKey": key, "received": done["received"], "sent": done["sent"],
                 "dropped": dict(done["dropped"]),
                 "windowStart": done["index"] * width, "windowSeconds": self.window}
                for key, done in sorted(self._whole_windows().items())]

    def rates(self):
        """Per mixnode key: packets per second received, sent and dropped,
        averaged over the last whole window (absent until one has ended)."""
        return {key: {"received": done["received"] / self.window,
                      "sent": done["sent"] / self.window,
                      "dropped": sum(done["dropped"].values()) / self.window}
                for key, done in self._whole_windows().items()}

    def expire(self, now=None):
        """Drop every node whose lastSeen is ``expiry`` seconds old or more."""
        if now is None:
            now = self.now_ns()
        cutoff = now - int(self.expiry * NS)
        for kind, table in (("mixnode", self._mixnodes), ("gateway", self._gateways)):
            stale = [k for k, e in table.items() if e["lastSeen"] <= cutoff]
            for key in stale:
                entry = table.pop(key)
                if kind == "mixnode":
                    self._metrics.pop(key, None)
                self.log.info("{kind} {key} at {host} left: not heard from for {age:.1f}s",
                              kind=kind, key=key, host=entry["host"],
                              age=(now - entry["lastSeen"]) / NS)
        # A tally goes with its node (above), or once it has nothing to show:
        # no report in the last two windows.
        quiet = now - 2 * int(self.window * NS)
        for key in [k for k, t in self._metrics.items() if t.last_report <= quiet]:
            del self._metrics[key]

    def _add(self, table, kind, entry):
        now = self.now_ns()
        self.expire(now)
        key = entry["pubKey"]
        old = table.get(key)
        if old is None and len(table) >= self.capacity:
            raise DirectoryFull(f"the directory holds {self.capacity} {kind}s")
        table[key] = dict(entry, lastSeen=now)
        if old is None:
            self.log.info("{kind} {key} joined at {host}", kind=kind, key=key,
                          host=entry["host"])
        elif old["host"] != entry["host"]:
            self.log.info("{kind} {key} moved from {old} to {host}", kind=kind, key=key,
                          old=old["host"], host=entry["host"])


@attrs.define
class _Tally:
    """One node's counts in the window being counted, and the last whole one."""

    index: int
    counting: dict = attrs.field(factory=lambda: _zero())
    done: dict | None = None
    last_report: int = 0

    def roll(self, current):
        if current == self.index:
            return
        # The window just ended is shown only if it is the one before now;
        # a node silent for a whole window has nothing current to show.
        self.done = dict(self.counting, index=self.index) if current == self.index + 1 \
            else None
        self.index, self.counting = current, _zero()

    def add(self, entry, now):
        self.counting["received"] += entry["received"]
        self.counting["sent"] += entry["sent"]
        dropped = self.counting["dropped"]
        for reason, n in entry["dropped"].items():
            # anyone may post reports, each with new reason names: a
            # window keeps a bounded number of them
            if reason not in dropped and len(dropped) >= MAX_REASONS:
                reason = OTHER_REASON
            dropped[reason] = dropped.get(reason, 0) + n
        self.last_report = now


def _zero():
    return {"received": 0, "sent": 0, "dropped": {}}


def _copy_gateway(entry):
    out = dict(entry)
    out["registeredClients"] = [dict(c) for c in entry["registeredClients"]]
    return out
