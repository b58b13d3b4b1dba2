"""Signed topology documents: what a directory vouches for, and when.

A document is the list of signed presences a directory holds, with the
directory's identity key, a serial (strictly increasing per directory), the
time it was issued and the time it expires, signed by the directory's
Ed25519 key over ``TopologyDocument.signed_bytes`` (docs/trust.md,
"Topology document"). Its JSON is the seed's topology, each entry the
node's signed presence, plus a ``directorySignature`` object beside
``MixNodes`` and ``MixProviderNodes``: a seed reader ignores it.

A gateway's client list is not signed by the directory: the signed bytes
hold the gateway's signed digest of it, so the list can be left out (the
compact form) without changing the signature, and a list that is carried
is checked against that digest.
"""

import json
import struct

import attrs

from nymtx.keys import KeyFormatError
from nymtx.trust.identity import (
    SIGNATURE_SIZE, decode_b58, decode_identity_key, encode_b58,
    verify_signature)
from nymtx.trust.presence import (
    MAX_U64, NS, ROLE_GATEWAY, ROLE_MIXNODE, PresenceError, parse_unverified)

TOPOLOGY_CONTEXT = b"nymtx/topology/1"
DOCUMENT_VERSION = 1
#: What the directory signs for: clients refresh every 10 s, and keep
#: routing on the last good document this long if every directory is down.
DEFAULT_DOCUMENT_LIFETIME = 120 * NS
#: Clients refuse a document valid for longer (a stolen key's reach).
MAX_DOCUMENT_LIFETIME = 3600 * NS
SIGNATURE_FIELD = "directorySignature"
_LISTS = (("MixNodes", ROLE_MIXNODE), ("MixProviderNodes", ROLE_GATEWAY))


class DocumentError(ValueError):
    """A topology document refused as a whole; the message says why."""


@attrs.frozen
class TopologyDocument:
    directory_key: bytes
    serial: int
    issued: int
    expires: int
    mixnodes: tuple = attrs.field(default=(), converter=tuple)
    gateways: tuple = attrs.field(default=(), converter=tuple)

    def signed_bytes(self):
        """The exact bytes the directory signs (docs/trust.md)."""
        parts = [TOPOLOGY_CONTEXT, self.directory_key,
                 struct.pack(">QQQ", self.serial, self.issued, self.expires)]
        for entries in (self.mixnodes, self.gateways):
            parts.append(struct.pack(">I", len(entries)))
            for signed in entries:
                body = signed.presence.signed_bytes()
                parts += [struct.pack(">I", len(body)), body, signed.signature]
        return b"".join(parts)

    def sign(self, identity):
        if identity.public_key != self.directory_key:
            raise ValueError("the document names another directory key")
        return SignedDocument(self, identity.sign(self.signed_bytes()))


def sign_topology(identity, serial, issued, mixnodes, gateways,
                  lifetime=DEFAULT_DOCUMENT_LIFETIME):
    """The directory's SignedDocument of the presences it holds."""
    return TopologyDocument(identity.public_key, serial, issued, issued + lifetime,
                            mixnodes, gateways).sign(identity)


def next_serial(last, now):
    """A serial after *last*: the clock in ns, so a restarted directory
    (which keeps no state) still moves forward unless its clock went back."""
    return max(last + 1, now)


@attrs.frozen
class SignedDocument:
    document: TopologyDocument
    signature: bytes
    #: (list name, index) of each entry whose node signature fails: the
    #: directory signed a presence its node did not; such entries are unusable
    dropped: tuple = attrs.field(default=(), eq=False)

    def usable(self):
        """The presences whose node signatures hold: (mixnodes, gateways)."""
        bad = set(self.dropped)
        return tuple(
            tuple(s for i, s in enumerate(entries) if (name, i) not in bad)
            for (name, _), entries in zip(_LISTS, (self.document.mixnodes,
                                                   self.document.gateways)))

    def verify(self):
        return verify_signature(self.document.directory_key, self.document.signed_bytes(),
                                self.signature)

    def to_json(self, with_clients=True, last_seen=None):
        """The seed's topology shape plus ``directorySignature``.

        *last_seen* maps an identity key to the directory's lastSeen (ns),
        which is informational and not signed.
        """
        d = self.document
        last_seen = last_seen or {}

        def entry(signed):
            out = signed.to_json(with_clients)
            if signed.identity_key in last_seen:
                out["lastSeen"] = last_seen[signed.identity_key]
            return out
        return {
            "MixNodes": [entry(s) for s in d.mixnodes],
            "MixProviderNodes": [entry(s) for s in d.gateways],
            SIGNATURE_FIELD: {
                "version": DOCUMENT_VERSION,
                "directoryKey": encode_b58(d.directory_key),
                "serial": d.serial, "issued": d.issued, "expires": d.expires,
                "signature": encode_b58(self.signature)},
        }

    def to_bytes(self, with_clients=True, last_seen=None):
        return json.dumps(self.to_json(with_clients, last_seen)).encode("utf-8")


@attrs.define
class PresenceCache:
    """Entries a client has parsed and node signatures it has checked.

    Directories re-sign every few seconds but most presences in their
    documents are the ones of the last refresh: reading an entry again
    (base58, addresses) and checking its signature again would cost a
    client most of its refresh. An entry equal to one already read (but
    for the unsigned lastSeen) is the same presence.
    """

    # signature text -> (role, entry without lastSeen, SignedPresence)
    parsed: dict = attrs.field(factory=dict)
    # (signed bytes, signature) whose node signature verified
    verified: set = attrs.field(factory=set)

    def keep_only(self, documents):
        """Forget what none of *documents* (SignedDocuments) lists."""
        tags, signatures = set(), set()
        for signed_document in documents:
            d = signed_document.document
            for entry in d.mixnodes + d.gateways:
                tags.add((entry.presence.signed_bytes(), entry.signature))
                signatures.add(entry.signature)
        self.verified &= tags
        self.parsed = {k: v for k, v in self.parsed.items() if v[2].signature in signatures}

    def read(self, entry, role):
        key = entry.get("signature") if isinstance(entry, dict) else None
        if isinstance(key, str):
            plain = {k: v for k, v in entry.items() if k != "lastSeen"}
            hit = self.parsed.get(key)
            if hit is not None and hit[0] == role and hit[1] == plain:
                return hit[2]
        signed = parse_unverified(entry, role)
        if isinstance(key, str):
            self.parsed[key] = (role, plain, signed)
        return signed


def parse_document(data, cache=None):
    """A SignedDocument from JSON bytes, text or a dict.

    Raises DocumentError if the document is unsigned, malformed in any
    entry (the directory's signature could not be checked), lists an
    identity twice, or its signature does not verify under the key it
    names; whether that key is trusted is the caller's question. An entry
    whose node signature fails is dropped and named in ``dropped``.
    *cache*, a PresenceCache, skips reading and checking again what it
    holds; it is updated.
    """
    if cache is None:
        cache = PresenceCache()
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise DocumentError(f"the topology is not UTF-8 (byte {e.start})")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except RecursionError:
            raise DocumentError("the topology JSON is nested too deeply")
        except ValueError as e:
            raise DocumentError(f"the topology is not valid JSON: {str(e)[:100]}")
    if not isinstance(data, dict):
        raise DocumentError("the topology must be a JSON object")
    header = data.get(SIGNATURE_FIELD)
    if header is None:
        raise DocumentError(f"the topology is not signed (no {SIGNATURE_FIELD})")
    if not isinstance(header, dict):
        raise DocumentError(f"{SIGNATURE_FIELD} must be an object")
    if header.get("version") != DOCUMENT_VERSION:
        raise DocumentError(f"{SIGNATURE_FIELD}.version must be {DOCUMENT_VERSION}")
    try:
        key = decode_identity_key(header.get("directoryKey"), "directoryKey")
        signature = decode_b58(header.get("signature"), SIGNATURE_SIZE, "signature")
    except KeyFormatError as e:
        raise DocumentError(f"{SIGNATURE_FIELD}: {e}")
    times = [_u64(header, f) for f in ("serial", "issued", "expires")]
    lists = {}
    seen = set()
    for name, role in _LISTS:
        entries = data.get(name)
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            raise DocumentError(f"{name} must be an array")
        parsed = []
        for index, entry in enumerate(entries):
            try:
                signed = cache.read(entry, role)
            except PresenceError as e:
                raise DocumentError(f"{name}[{index}]: {e}")
            if signed.identity_key in seen:
                raise DocumentError(f"{name}[{index}]: identity "
                                    f"{encode_b58(signed.identity_key)} is listed twice")
            seen.add(signed.identity_key)
            parsed.append(signed)
        lists[role] = parsed
    document = TopologyDocument(key, *times, lists[ROLE_MIXNODE], lists[ROLE_GATEWAY])
    signed_document = SignedDocument(document, signature)
    if not signed_document.verify():
        raise DocumentError(f"the signature does not verify under directoryKey "
                            f"{encode_b58(key)}")
    verified = cache.verified
    dropped = []
    for name, role in _LISTS:
        for index, signed in enumerate(lists[role]):
            tag = (signed.presence.signed_bytes(), signed.signature)
            if tag in verified:
                continue
            if signed.verify():
                verified.add(tag)
            else:
                dropped.append((name, index))
    return attrs.evolve(signed_document, dropped=tuple(dropped))


def _u64(header, field):
    value = header.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_U64:
        raise DocumentError(f"{SIGNATURE_FIELD}.{field} must be an integer in 0..2**64-1")
    return value

