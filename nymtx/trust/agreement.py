"""Several directories: the topology a threshold of them agree on.

Each directory signs the presences it holds (nymtx.trust.document). A
client pins m directory keys and a threshold t. ``merge`` keeps a node when
at least t of the current documents list it with the same signed content
(its presence but for timestamp and expiry, which every re-announce
changes), each such listing a presence the node itself signed and that has
not expired. One lying directory can then add no node (its listing is one
vote), drop no node (the others still have t) and replay no old presence
(the old content has its vote alone, and its expiry runs out). The choice
against per-epoch voting is argued in docs/decisions.md, "Trust".

``TrustedDirectories`` holds, per pinned directory, the last good document
it sent: a newer serial replaces it, an older one or one signed by an
unknown key is refused, and an expired one stops counting. So a directory
that is down keeps counting with its last document until it expires.
"""

import attrs
from twisted.logger import Logger

from nymtx.keys import encode_key
from nymtx.topology import GatewayInfo, MixNodeInfo, Topology
from nymtx.trust.document import (
    MAX_DOCUMENT_LIFETIME, DocumentError, PresenceCache, parse_document)
from nymtx.keys import KeyFormatError
from nymtx.trust.identity import decode_identity_key, encode_b58
from nymtx.trust.presence import MAX_CLOCK_SKEW, NS, ROLE_GATEWAY, is_current


class NoAgreement(Exception):
    """Fewer than the threshold of pinned directories have a current document."""


@attrs.frozen
class Agreement:
    """What ``merge`` decided: the topology, and why each other node is out."""

    topology: Topology
    #: the chosen SignedPresence per identity key
    presences: dict
    #: (identity key, reason) of each node listed somewhere but not kept
    refused: tuple
    #: client keys listed by more than one kept gateway, left out of every list
    ambiguous_clients: frozenset = frozenset()


def merge(documents, threshold, now, skew=MAX_CLOCK_SKEW):
    """The Agreement of *documents* (SignedDocuments, one per directory).

    Pure: the same documents, threshold and time give the same topology,
    listed in a fixed order (mixnodes by layer, host, key bytes; gateways
    by host, key bytes) so that seeded routes repeat.
    """
    if threshold < 1:
        raise ValueError("the threshold is at least 1")
    # identity -> content -> (directory keys, newest SignedPresence)
    votes = {}
    # (identity, clients digest) -> a client list carried with that digest
    lists = {}
    for signed_document in documents:
        directory = signed_document.document.directory_key
        mixnodes, gateways = signed_document.usable()
        for signed in mixnodes + gateways:
            if not is_current(signed.presence, now, skew):
                continue
            if signed.clients is not None:
                lists[(signed.identity_key, signed.presence.clients_digest)] = signed.clients
            by_content = votes.setdefault(signed.identity_key, {})
            voters, best = by_content.get(signed.presence.content(), (set(), None))
            voters.add(directory)
            # the node's newest word, whichever directory brought it: it
            # signed it, and the content has its threshold anyway
            if best is None or signed.presence.timestamp > best.presence.timestamp:
                best = signed
            by_content[signed.presence.content()] = (voters, best)
    chosen, refused = {}, []
    for identity, by_content in votes.items():
        agreed = [(best.presence.timestamp, best.presence.signed_bytes(), best)
                  for voters, best in by_content.values() if len(voters) >= threshold]
        if not agreed:
            most = max(len(voters) for voters, _ in by_content.values())
            refused.append((identity, f"listed alike by {most} of the directories; "
                            f"{threshold} needed"))
            continue
        best = max(agreed)[2]
        if best.presence.role == ROLE_GATEWAY and best.clients is None:
            carried = lists.get((identity, best.presence.clients_digest))
            if carried is not None:
                best = attrs.evolve(best, clients=carried)
        chosen[identity] = best
    # A Sphinx key or listener names one node: two identities claiming one
    # (a mixnode entry carrying a gateway's key, say) are both left out.
    claims = {}
    for identity, signed in chosen.items():
        for claim in signed.presence.sphinx_keys() + signed.presence.addresses():
            claims.setdefault(claim, set()).add(identity)
    for claim, identities in claims.items():
        if len(identities) > 1:
            what = encode_key(claim) if isinstance(claim, bytes) else str(claim)
            for identity in sorted(identities):
                if chosen.pop(identity, None) is not None:
                    refused.append((identity, f"{what} is claimed by {len(identities)} "
                                    "identities"))
    # A gateway signs its own list, so in an open network any gateway can
    # list Bob: a client two gateways list is resolved by neither (mail to
    # it then needs CLIENT@GATEWAY), never by the one that sorts first.
    listed = {}
    for signed in chosen.values():
        for client in signed.clients or ():
            listed[client] = listed.get(client, 0) + 1
    ambiguous = frozenset(c for c, n in listed.items() if n > 1)
    mixnodes, gateways = [], []
    for signed in chosen.values():
        p = signed.presence
        key = p.sphinx_key_at(now)
        # the next key, while it is still ahead: the topology switches to
        # it at its start (Topology.at), and reply blocks expire then
        ahead = p.next_sphinx_key is not None and now < p.next_key_from
        rotation = dict(next_key=p.next_sphinx_key, next_key_from=p.next_key_from) \
            if ahead else {}
        if p.kind == "mixnode":
            mixnodes.append(MixNodeInfo(p.host, key, p.layer, p.timestamp, p.version,
                                        identity_key=signed.identity_key, **rotation))
        else:
            clients = tuple(c for c in signed.clients or () if c not in ambiguous)
            # a gateway keeps its name (pubKey); its Sphinx key rotates beside it
            gateways.append(GatewayInfo(p.host, p.client_listener, p.sphinx_key, clients,
                                        p.timestamp, p.version,
                                        identity_key=signed.identity_key,
                                        sphinx_key=key if key != p.sphinx_key else None,
                                        **rotation))
    # raw key bytes break ties: base58 of thousands of keys is slow
    mixnodes.sort(key=lambda n: (n.layer, str(n.address), n.public_key))
    gateways.sort(key=lambda n: (str(n.address), n.public_key))
    return Agreement(Topology(mixnodes, gateways), chosen, tuple(refused), ambiguous)


@attrs.define
class TrustedDirectories:
    """A client's pinned directory keys, threshold, and last good documents."""

    pinned: frozenset = attrs.field(converter=frozenset)
    threshold: int
    skew: int = MAX_CLOCK_SKEW
    max_lifetime: int = MAX_DOCUMENT_LIFETIME
    #: a nymtx.trust.serials.SerialFile: the serials of the documents held
    #: survive a restart, so an older one is refused after it too
    store: object = None
    _held: dict = attrs.field(factory=dict, init=False)
    _cache: PresenceCache = attrs.field(factory=PresenceCache, init=False)
    # directory key -> the serial held before the restart (store.load())
    _floors: dict = attrs.field(factory=dict, init=False)

    log = Logger()

    def __attrs_post_init__(self):
        if not 1 <= self.threshold <= len(self.pinned):
            raise ValueError(f"the threshold must be in 1..{len(self.pinned)} "
                             f"(the pinned directories), not {self.threshold}")
        if self.store is not None:
            self._floors = {k: v for k, v in self.store.load().items() if k in self.pinned}

    @classmethod
    def from_config(cls, keys, threshold=None, field="directory_keys"):
        """From a config's list of base58 directory keys and threshold
        (default: a majority, m // 2 + 1). ValueError names the entry at fault."""
        if not isinstance(keys, (list, tuple)) or not keys:
            raise ValueError(f"{field}: give at least one directory key (base58)")
        pinned = []
        for index, text in enumerate(keys):
            try:
                key = decode_identity_key(text, "the key")
            except KeyFormatError as e:
                raise ValueError(f"{field}[{index}]: {e}")
            if key in pinned:
                raise ValueError(f"{field}[{index}]: {text} is listed twice")
            pinned.append(key)
        if threshold is None:
            threshold = len(pinned) // 2 + 1
        if isinstance(threshold, bool) or not isinstance(threshold, int) \
                or not 1 <= threshold <= len(pinned):
            raise ValueError(f"directory_threshold: {threshold!r} is not in 1..{len(pinned)}"
                             f" (the number of {field})")
        return cls(pinned, threshold)

    def offer(self, data, now):
        """Take a directory's answer (bytes or parsed JSON) if it is good.

        Returns the SignedDocument held for its directory; raises
        DocumentError saying why the answer was refused (the last good
        document stays).
        """
        try:
            return self._offer(data, now)
        finally:
            # what a refused answer brought in goes at once: the cache holds
            # only what the held documents list
            self._cache.keep_only(self._held.values())

    def _offer(self, data, now):
        signed = parse_document(data, self._cache)
        d = signed.document
        name = encode_b58(d.directory_key)
        if d.directory_key not in self.pinned:
            raise DocumentError(f"signed by {name}, which is not a pinned directory key")
        if d.expires <= now:
            raise DocumentError(f"directory {name}'s topology expired "
                                f"{(now - d.expires) / NS:.1f} s ago")
        if d.issued > now + self.skew:
            raise DocumentError(f"directory {name}'s topology is issued "
                                f"{(d.issued - now) / NS:.1f} s in the future")
        if not d.issued < d.expires <= d.issued + self.max_lifetime:
            raise DocumentError(f"directory {name}'s topology is valid for longer than "
                                f"{self.max_lifetime / NS:.0f} s, or not at all")
        held = self._held.get(d.directory_key)
        floor = self._floors.get(d.directory_key)
        if held is None and floor is not None and d.serial < floor:
            raise DocumentError(f"directory {name}'s topology has serial {d.serial}, older"
                                f" than the one held before the restart ({floor})")
        if held is not None:
            if d.serial < held.document.serial:
                raise DocumentError(f"directory {name}'s topology has serial {d.serial}, "
                                    f"older than the one held ({held.document.serial})")
            if d.serial == held.document.serial:
                if signed.signature != held.signature:
                    raise DocumentError(f"directory {name} signed two different topologies "
                                        f"with serial {d.serial}")
                return held
        for list_name, index in signed.dropped:
            self.log.warn("directory {name} lists {list}[{index}], whose node signature "
                          "does not verify; not using it", name=name, list=list_name,
                          index=index)
        self._held[d.directory_key] = signed
        if self.store is not None:
            self.store.save({**self._floors, **{k: h.document.serial
                                                for k, h in self._held.items()}})
        return signed

    def current(self, now):
        """The held documents that have not expired."""
        return [s for s in self._held.values() if s.document.expires > now]

    def agreement(self, now):
        """The Agreement of the current documents, or NoAgreement."""
        current = self.current(now)
        if len(current) < self.threshold:
            raise NoAgreement(f"{len(current)} of {len(self.pinned)} pinned directories have "
                              f"a current signed topology; {self.threshold} needed")
        return merge(current, self.threshold, now, self.skew)

    def topology(self, now):
        return self.agreement(now).topology
