"""The directory with signed presences and signed topologies (issue 15).

``SignedRegistry`` stands where ``Registry`` does (``make_site(registry)``,
``DirectoryResource(registry)``) when the operator turns signatures on:
nodes must announce presences signed by their identity keys
(nymtx.trust.presence), admitted by a PresenceBook (allow list, clock,
replays, keys and hosts held by another identity), and
``GET /api/presence/topology`` answers the seed's topology signed by the
directory's own key (nymtx.trust.document). With signatures off the
directory is the plain Registry, as before. Metrics are kept by a plain
Registry inside. docs/trust.md, docs/directory.md.
"""

import attrs
from twisted.logger import Logger

from nymtx.directory.registry import (
    DEFAULT_CAPACITY, DEFAULT_EXPIRY, NS, DirectoryFull, Registry)
from nymtx.trust.book import PresenceBook
from nymtx.trust.document import DEFAULT_DOCUMENT_LIFETIME, next_serial, sign_topology
from nymtx.trust.identity import encode_b58
from nymtx.trust.presence import (
    MAX_CLOCK_SKEW, ROLE_GATEWAY, ROLE_MIXNODE, PresenceError, parse_signed_gateway,
    parse_signed_mixnode)
from nymtx.keys import encode_key
from nymtx.trust.metrics import parse_signed_metrics

#: The directory signs a new document at most this often (seconds): every
#: node re-announces every 1.5 s, and a document of 10 000 nodes is 3 MB
#: to sign. A change shows in the topology within this time.
RESIGN_INTERVAL = 1.0


def parse_gateway_with_list(body):
    """A signed gateway presence that carries its client list.

    The directory publishes the seed's topology, whose readers (getClients)
    need the lists; the list is checked against the signed digest.
    """
    signed = parse_signed_gateway(body)
    if signed.clients is None:
        raise PresenceError("registeredClients", "missing: the directory publishes the "
                            "list (give [] for none)")
    return signed


@attrs.define
class SignedRegistry:
    """Signed presences of mixnodes and gateways, and the document over them.

    ``clock`` has ``seconds()``; ``identity`` is the directory's
    IdentityKey; ``allowed`` an AllowList, or None to admit any identity.
    """

    clock: object
    identity: object
    allowed: object = None
    expiry: float = DEFAULT_EXPIRY
    capacity: int = DEFAULT_CAPACITY
    lifetime: int = DEFAULT_DOCUMENT_LIFETIME
    resign_interval: float = RESIGN_INTERVAL
    skew: int = MAX_CLOCK_SKEW
    _metrics: Registry = attrs.field(init=False)
    _book: PresenceBook = attrs.field(init=False)
    # identity key -> when its last presence arrived (ns, directory's clock)
    _last_seen: dict = attrs.field(factory=dict, init=False)
    _document: object = attrs.field(default=None, init=False)
    _changed: bool = attrs.field(default=True, init=False)
    _left: bool = attrs.field(default=False, init=False)
    # identity key -> timestamp of its last metrics report (replays refused)
    _last_report: dict = attrs.field(factory=dict, init=False)
    _count: dict = attrs.field(init=False, factory=lambda: {ROLE_MIXNODE: 0, ROLE_GATEWAY: 0})

    log = Logger()

    #: what DirectoryResource parses each POST body with
    presence_parsers = {"mixnode": parse_signed_mixnode, "gateway": parse_gateway_with_list,
                        "metrics": parse_signed_metrics}

    def __attrs_post_init__(self):
        self._metrics = Registry(self.clock, self.expiry, self.capacity)
        self._book = PresenceBook(self.allowed, self.skew)

    def now_ns(self):
        return int(self.clock.seconds() * NS)

    def add_mixnode(self, signed):
        self._add(signed, ROLE_MIXNODE)

    def add_gateway(self, signed):
        self._add(signed, ROLE_GATEWAY)

    def add_metrics(self, signed):
        """A SignedMetrics, taken only from the mixnode whose presence holds
        its Sphinx key, signed within the clock tolerance, newer than the last."""
        now = self.now_ns()
        self.expire(now)
        m = signed.metrics
        held = self._book.get(m.identity_key)
        if held is None or held.presence.role != ROLE_MIXNODE:
            raise PresenceError("identityKey", f"{encode_b58(m.identity_key)} has no mixnode "
                                "presence here: only a mixnode reports metrics, after it "
                                "announced itself")
        if m.sphinx_key not in held.presence.sphinx_keys():
            raise PresenceError("pubKey", f"{encode_key(m.sphinx_key)} is not a Sphinx key "
                                "of this identity's presence")
        if not now - self.skew <= m.timestamp <= now + self.skew:
            raise PresenceError("timestamp", f"is {(m.timestamp - now) / NS:+.1f} s from the "
                                f"directory's clock; the tolerance is {self.skew / NS:.0f} s")
        last = self._last_report.get(m.identity_key)
        if last is not None and m.timestamp <= last:
            raise PresenceError("timestamp", "is not newer than this node's last report: "
                                "a replay")
        self._metrics.add_metrics(m.entry())
        self._last_report[m.identity_key] = m.timestamp
        if len(self._last_report) > 2 * len(self._last_seen) + 64:
            # a report older than the tolerance is refused anyway
            self._last_report = {i: t for i, t in self._last_report.items()
                                 if t >= now - self.skew}

    def metrics(self):
        return self._metrics.metrics()

    def rates(self):
        return self._metrics.rates()

    def _add(self, signed, role):
        if signed.presence.role != role:
            raise PresenceError(None, f"a {signed.presence.kind} presence on the "
                                f"{'mixnode' if role == ROLE_MIXNODE else 'gateway'} endpoint")
        now = self.now_ns()
        self.expire(now)
        identity = signed.identity_key
        old = self._book.get(identity)
        moving_in = old is None or old.presence.role != role
        if moving_in and self._count[role] >= self.capacity:
            raise DirectoryFull(f"the directory holds {self.capacity} "
                                f"{signed.presence.kind}s")
        self._book.admit(signed, now)
        # render its JSON now, spread over the announces, not all at once
        # when the document is next signed (base58 is slow)
        signed.to_json()
        if moving_in:
            self._count[role] += 1
            if old is not None:
                self._count[old.presence.role] -= 1
        self._last_seen[identity] = now
        self._changed = True
        p = signed.presence
        if old is None:
            self.log.info("{kind} {identity} joined at {host} with key {key}", kind=p.kind,
                          identity=encode_b58(identity), host=str(p.host),
                          key=encode_key(p.sphinx_key))
        elif old.presence.host != p.host:
            self.log.info("{kind} {identity} moved from {old} to {host}", kind=p.kind,
                          identity=encode_b58(identity), old=str(old.presence.host),
                          host=str(p.host))

    def _held(self):
        return [self._book.get(i) for i in self._last_seen]

    def expire(self, now=None):
        """Forget nodes silent for ``expiry`` seconds and presences that expired."""
        if now is None:
            now = self.now_ns()
        cutoff = now - int(self.expiry * NS)
        for identity, seen in list(self._last_seen.items()):
            signed = self._book.get(identity)
            if seen > cutoff and signed.presence.expires > now:
                continue
            self._book.forget(identity)
            del self._last_seen[identity]
            self._count[signed.presence.role] -= 1
            # a node that left must leave the document now, not at the
            # next re-signing
            self._left = True
            why = (f"not heard from for {(now - seen) / NS:.1f}s" if seen <= cutoff
                   else "its presence expired")
            self.log.info("{kind} {identity} at {host} left: {why}", kind=signed.presence.kind,
                          identity=encode_b58(identity), host=str(signed.presence.host),
                          why=why)

    def signed_topology(self):
        """The directory's current SignedDocument (re-signed at most once per
        ``resign_interval``, and before half its lifetime has passed)."""
        now = self.now_ns()
        self.expire(now)
        doc = self._document
        if doc is None or self._left or (self._changed and now - doc.document.issued
                                         >= self.resign_interval * NS) \
                or now - doc.document.issued >= self.lifetime // 2:
            held = self._held()
            mixnodes = sorted((s for s in held if s.presence.role == ROLE_MIXNODE),
                              key=lambda s: (s.presence.layer, str(s.presence.host),
                                             s.presence.sphinx_key))
            gateways = sorted((s for s in held if s.presence.role == ROLE_GATEWAY),
                              key=lambda s: (str(s.presence.host),
                                             s.presence.sphinx_key))
            serial = next_serial(doc.document.serial if doc else 0, now)
            doc = self._document = sign_topology(self.identity, serial, now, mixnodes,
                                                 gateways, self.lifetime)
            self._changed = self._left = False
        return doc

    def topology(self, with_clients=True):
        """The seed's topology JSON object, signed (``directorySignature``)."""
        doc = self.signed_topology()
        return doc.to_json(with_clients, last_seen=self._last_seen)

    def compact_topology(self):
        """The same document without the gateways' client lists (the same
        signature: it covers their signed digests, not the lists)."""
        return self.topology(with_clients=False)

    def gateway_presence(self, identity_text):
        """The signed presence JSON, with its client list, of the gateway
        whose identity key is *identity_text* (base58); None if none is
        held. ValueError if the text is not an identity key."""
        from nymtx.keys import KeyFormatError
        from nymtx.trust.identity import decode_identity_key
        try:
            identity = decode_identity_key(identity_text, "the identity key")
        except KeyFormatError as e:
            raise ValueError(str(e))
        self.expire()
        signed = self._book.get(identity)
        if signed is None or signed.presence.role != ROLE_GATEWAY:
            return None
        return signed.to_json(with_clients=True)
