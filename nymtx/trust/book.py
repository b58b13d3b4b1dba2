"""The directory's admission rules for signed presences.

``PresenceBook.admit(signed, now)`` accepts a verified SignedPresence or
raises PresenceError with the reason: an identity not on the allow list, a
timestamp stale or from the future, a replay (a timestamp not newer than
the last one of that identity), a Sphinx key or address already claimed by
another identity (whatever its role: a mixnode entry carrying a gateway's
key is refused). The book holds one presence per identity; the registry
calls ``forget`` when a node expires.
"""

import attrs

from nymtx.keys import encode_key
from nymtx.trust.identity import encode_b58
from nymtx.trust.presence import MAX_CLOCK_SKEW, PresenceError, check_announced


@attrs.define
class PresenceBook:
    """Presences admitted, by identity; ``allowed`` None admits anyone."""

    allowed: object = None
    skew: int = MAX_CLOCK_SKEW
    _held: dict = attrs.field(factory=dict, init=False)
    _keys: dict = attrs.field(factory=dict, init=False)
    _addresses: dict = attrs.field(factory=dict, init=False)
    # identity -> last timestamp admitted; outlives forget() by the skew,
    # after which a replay is refused as stale anyway
    _last: dict = attrs.field(factory=dict, init=False)

    def get(self, identity_key):
        return self._held.get(identity_key)

    def __len__(self):
        return len(self._held)

    def check(self, signed, now):
        """Raise PresenceError if *signed* may not be admitted at *now*."""
        p = signed.presence
        identity = p.identity_key
        if self.allowed is not None and identity not in self.allowed:
            raise PresenceError("identityKey", f"{encode_b58(identity)} is not on the "
                                "directory's allow list")
        check_announced(p, now, self.skew)
        last = self._last.get(identity)
        if last is not None and p.timestamp <= last:
            raise PresenceError("timestamp", f"is not newer than this identity's last "
                                f"presence ({p.timestamp} <= {last}): a replay")
        for key in p.sphinx_keys():
            holder = self._keys.get(key)
            if holder is not None and holder != identity:
                raise PresenceError("pubKey", f"Sphinx key {encode_key(key)} is held by "
                                    f"another identity, {encode_b58(holder)}")
        for address in p.addresses():
            holder = self._addresses.get(address)
            if holder is not None and holder != identity:
                raise PresenceError("host", f"{address} is held by another identity, "
                                    f"{encode_b58(holder)}")

    def admit(self, signed, now):
        """Check, then hold *signed* in place of the identity's older presence."""
        self.check(signed, now)
        identity = signed.presence.identity_key
        self._release(identity)
        self._held[identity] = signed
        self._last[identity] = signed.presence.timestamp
        for key in signed.presence.sphinx_keys():
            self._keys[key] = identity
        for address in signed.presence.addresses():
            self._addresses[address] = identity
        self._prune(now)

    def forget(self, identity_key):
        """Drop the identity's presence (it expired); its keys and addresses are free."""
        self._release(identity_key)
        self._held.pop(identity_key, None)

    def _release(self, identity):
        old = self._held.get(identity)
        if old is None:
            return
        for key in old.presence.sphinx_keys():
            self._keys.pop(key, None)
        for address in old.presence.addresses():
            self._addresses.pop(address, None)

    def _prune(self, now):
        # bounded by the nodes admitted within the last skew
        if len(self._last) <= 2 * len(self._held) + 64:
            return
        for identity in [i for i, t in self._last.items()
                         if i not in self._held and t < now - self.skew]:
            del self._last[identity]
