"""What the directory knows: the nodes heard from lately and their metrics.

Entries are kept in memory, keyed by public key, as nym's directory does; a
re-announce replaces the old entry. A node not heard from for ``expiry``
seconds leaves the topology, and its metrics go with it. Expiry runs on
every announce and every read (nym's ``killOldsters``), so no timer is
needed and the clock is only ever read, never waited on.
"""

import attrs
from twisted.logger import Logger

NS = 1_000_000_000
DEFAULT_EXPIRY = 10.0
#: Distinct public keys the directory keeps of each kind; anyone may
#: announce, so memory is bounded.
DEFAULT_CAPACITY = 10_000


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
    _mixnodes: dict = attrs.field(factory=dict, init=False)
    _gateways: dict = attrs.field(factory=dict, init=False)
    # pubKey -> (metric dict, nanoseconds since that node's previous report or None)
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
        previous = self._metrics.get(key)
        if previous is None and len(self._metrics) >= self.capacity:
            raise DirectoryFull(f"the directory holds metrics of {self.capacity} nodes")
        metric = dict(entry, timestamp=now)
        interval = None
        if previous is not None and previous[0]["timestamp"] < now:
            interval = now - previous[0]["timestamp"]
        self._metrics[key] = (metric, interval)

    def topology(self):
        """The seed's topology JSON object, after dropping stale nodes."""
        self.expire()
        mixnodes = sorted(self._mixnodes.values(),
                          key=lambda e: (e["layer"], e["host"], e["pubKey"]))
        gateways = sorted(self._gateways.values(),
                          key=lambda e: (e["host"], e["pubKey"]))
        return {"MixNodes": [dict(e) for e in mixnodes],
                "MixProviderNodes": [_copy_gateway(e) for e in gateways]}

    def metrics(self):
        """The latest metric of each mixnode, oldest report first."""
        self.expire()
        return [dict(m) for m, _ in sorted(
            self._metrics.values(), key=lambda v: (v[0]["timestamp"], v[0]["pubKey"]))]

    def rates(self):
        """Per mixnode key: packets per second received, sent and dropped.

        A report counts the packets since the node's previous report, so a
        rate needs two reports; until then the key is absent.
        """
        self.expire()
        out = {}
        for key, (metric, interval) in self._metrics.items():
            if not interval:
                continue
            seconds = interval / NS
            out[key] = {
                "received": metric["received"] / seconds,
                "sent": sum(metric["sent"].values()) / seconds,
                "dropped": sum(metric["dropped"].values()) / seconds,
            }
        return out

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
        # A metric outlives neither its node nor the window: stale rates mislead.
        for key in [k for k, (m, _) in self._metrics.items() if m["timestamp"] <= cutoff]:
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


def _copy_gateway(entry):
    out = dict(entry)
    out["registeredClients"] = [dict(c) for c in entry["registeredClients"]]
    return out
