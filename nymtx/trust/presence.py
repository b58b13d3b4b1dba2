"""Signed presences: a node's own statement of its keys, address and role.

A presence binds the node's identity key (Ed25519), its Sphinx key
(X25519), its host, its role and layer, a gateway's client listener and
client list (by digest), the Sphinx key announced next, the node's version
and location, a timestamp and an expiry. The node signs the canonical bytes
of those fields (``Presence.signed_bytes``, docs/trust.md); the JSON the
directory takes is the seed's presence plus the fields that rebuild those
bytes and the signature, so a seed reader still reads every entry.

Everything parsed here is untrusted: the parsers raise PresenceError (a
BodyError, so the directory answers 400 with its text) naming the field.
"""

import hashlib
import struct

import attrs

from nymtx.addressing import ADDRESS_SIZE, NodeAddress
from nymtx.directory.presence import BodyError, gateway_fields, load_object, mixnode_fields
from nymtx.keys import KEY_SIZE, KeyFormatError, decode_key, encode_key
from nymtx.trust.identity import (
    SIGNATURE_SIZE, decode_b58, decode_identity_key, encode_b58,
    verify_signature)

PRESENCE_CONTEXT = b"nymtx/presence/1"
CLIENTS_CONTEXT = b"nymtx/clients/1"
ROLE_MIXNODE = 1
ROLE_GATEWAY = 2
ROLES = {ROLE_MIXNODE: "mixnode", ROLE_GATEWAY: "gateway"}
NS = 1_000_000_000
#: How far a presence's timestamp may be ahead of the checker's clock, and
#: how old it may be when it reaches the directory.
MAX_CLOCK_SKEW = 60 * NS
#: The longest a presence may be valid (expires - timestamp).
MAX_PRESENCE_LIFETIME = 600 * NS
#: What a node asks for: a directory forgets a silent node after 10 s, a
#: client's document may be a few minutes old.
DEFAULT_PRESENCE_LIFETIME = 300 * NS
MAX_U64 = 2 ** 64 - 1
MAX_U32 = 2 ** 32 - 1
_NO_ADDRESS = bytes(ADDRESS_SIZE)
_NO_KEY = bytes(KEY_SIZE)


class PresenceError(BodyError):
    """A presence refused: the message names the field and says why."""


def clients_digest(keys):
    """SHA-256 of the context, the count (u32) and the sorted distinct keys."""
    keys = sorted(set(bytes(k) for k in keys))
    h = hashlib.sha256(CLIENTS_CONTEXT)
    h.update(struct.pack(">I", len(keys)))
    for key in keys:
        h.update(key)
    return h.digest()


def _bytes32(instance, attribute, value):
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{attribute.name} must be 32 bytes")


def _u64(instance, attribute, value):
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_U64:
        raise ValueError(f"{attribute.name} must be an integer in 0..2**64-1")


@attrs.frozen
class Presence:
    """The signed fields of a presence (times in Unix nanoseconds)."""

    role: int = attrs.field(validator=attrs.validators.in_(ROLES))
    layer: int = attrs.field()
    identity_key: bytes = attrs.field(validator=_bytes32)
    sphinx_key: bytes = attrs.field(validator=_bytes32)
    host: NodeAddress = attrs.field(validator=attrs.validators.instance_of(NodeAddress))
    timestamp: int = attrs.field(validator=_u64)
    expires: int = attrs.field(validator=_u64)
    version: str = attrs.field(validator=attrs.validators.instance_of(str))
    location: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    client_listener: NodeAddress | None = attrs.field(default=None)
    clients_digest: bytes | None = attrs.field(default=None)
    clients_count: int = attrs.field(default=0)
    next_sphinx_key: bytes | None = attrs.field(default=None)
    next_key_from: int = attrs.field(default=0, validator=_u64)
    #: a gateway's Sphinx key in use when it is not ``sphinx_key``: a
    #: gateway's ``pubKey`` stays its name (its clients' addresses, its
    #: Noise key), and the keys it rotates are announced beside it
    gateway_sphinx_key: bytes | None = attrs.field(default=None)
    # signed_bytes(), built once: documents and merges ask for it often
    _bytes: bytes = attrs.field(init=False, eq=False, repr=False, default=b"")

    def __attrs_post_init__(self):
        gateway = self.role == ROLE_GATEWAY
        if gateway != (self.layer == 0) or not 0 <= self.layer <= 3:
            raise ValueError("a mixnode has layer 1..3, a gateway layer 0")
        if gateway != (self.client_listener is not None) \
                or gateway != (self.clients_digest is not None):
            raise ValueError("a gateway, and only a gateway, has a client listener "
                             "and a clients digest")
        if not 0 <= self.clients_count <= MAX_U32 or (not gateway and self.clients_count):
            raise ValueError("clients_count out of range")
        if (self.next_sphinx_key is None) != (self.next_key_from == 0):
            raise ValueError("next_sphinx_key and next_key_from go together")
        if self.gateway_sphinx_key is not None:
            if not gateway:
                raise ValueError("only a gateway announces a Sphinx key beside its pubKey")
            if not isinstance(self.gateway_sphinx_key, bytes) \
                    or len(self.gateway_sphinx_key) != KEY_SIZE:
                raise ValueError("gateway_sphinx_key must be 32 bytes")
            if self.gateway_sphinx_key == self.sphinx_key:
                raise ValueError("gateway_sphinx_key is the pubKey: leave it out")
        if self.next_sphinx_key is not None and self.next_sphinx_key in (
                self.sphinx_key, self.gateway_sphinx_key):
            raise ValueError("the next Sphinx key must differ from the current one")
        for text in (self.version, self.location):
            if len(text.encode("utf-8")) > 0xFFFF:
                raise ValueError("version and location are at most 65535 bytes")
        object.__setattr__(self, "_bytes", self._build())

    @property
    def kind(self):
        return ROLES[self.role]

    def signed_bytes(self):
        """The exact bytes the identity key signs (docs/trust.md, "Presence")."""
        return self._bytes

    def _build(self):
        version = self.version.encode("utf-8")
        location = self.location.encode("utf-8")
        return b"".join([
            PRESENCE_CONTEXT,
            struct.pack(">BB", self.role, self.layer),
            self.identity_key,
            self.sphinx_key,
            self.host.to_bytes(),
            self.client_listener.to_bytes() if self.client_listener else _NO_ADDRESS,
            struct.pack(">QQ", self.timestamp, self.expires),
            self.next_sphinx_key or _NO_KEY,
            struct.pack(">Q", self.next_key_from),
            self.clients_digest or _NO_KEY,
            struct.pack(">I", self.clients_count),
            struct.pack(">H", len(version)), version,
            struct.pack(">H", len(location)), location,
            # a gateway's rotated key in use, only when it has one: every
            # presence without it keeps the bytes it always had
            self.gateway_sphinx_key or b"",
        ])

    def content(self):
        """What directories must agree on: how to route to the node.

        Role, layer, identity, Sphinx key, host, client listener, and the
        next key with its start: the signed bytes at offsets 16-145 and
        162-201. Not the timestamp and expiry (every re-announce changes
        them), nor the client list, version and location: those are the
        node's own word, taken from its newest presence with this content;
        were the client list part of it, a gateway would drop out of every
        client's topology each time a client registers, until all
        directories held its new list.
        """
        b = self._bytes
        return b[16:146] + b[162:202] + (self.gateway_sphinx_key or b"")

    @property
    def key_in_use(self):
        """The Sphinx key packets for this node are built with until
        ``next_key_from``: ``sphinx_key``, or a gateway's rotated key."""
        return self.gateway_sphinx_key or self.sphinx_key

    def sphinx_keys(self):
        """The Sphinx keys this presence claims: pubKey, a gateway's key in
        use, and the next if announced."""
        return (self.sphinx_key,) + tuple(
            k for k in (self.gateway_sphinx_key, self.next_sphinx_key) if k)

    def addresses(self):
        """The listeners this presence claims."""
        if self.client_listener is None or self.client_listener == self.host:
            return (self.host,)
        return (self.host, self.client_listener)

    def sphinx_key_at(self, now):
        """The key a sender uses at *now*: the next one once its time has come."""
        if self.next_sphinx_key is not None and now >= self.next_key_from:
            return self.next_sphinx_key
        return self.key_in_use

    def sign(self, identity, clients=None):
        """This presence signed by *identity* (whose public key it must name)."""
        if identity.public_key != self.identity_key:
            raise ValueError("the presence names another identity key")
        return SignedPresence(self, identity.sign(self.signed_bytes()), clients)


def make_presence(identity, role, sphinx_key, host, timestamp, version, *, layer=0,
                  client_listener=None, clients=None, location="",
                  lifetime=DEFAULT_PRESENCE_LIFETIME, next_sphinx_key=None,
                  next_key_from=0, gateway_sphinx_key=None):
    """A node's SignedPresence (what a mixnode or gateway announces)."""
    if isinstance(host, str):
        host = NodeAddress.parse(host)
    if isinstance(client_listener, str):
        client_listener = NodeAddress.parse(client_listener)
    digest = count = None
    if role == ROLE_GATEWAY:
        clients = tuple(sorted(set(clients or ())))
        digest, count = clients_digest(clients), len(clients)
    else:
        clients = None
    presence = Presence(
        role=role, layer=layer, identity_key=identity.public_key, sphinx_key=sphinx_key,
        host=host, timestamp=timestamp, expires=timestamp + lifetime, version=version,
        location=location, client_listener=client_listener, clients_digest=digest,
        clients_count=count or 0, next_sphinx_key=next_sphinx_key,
        next_key_from=next_key_from, gateway_sphinx_key=gateway_sphinx_key)
    return presence.sign(identity, clients)


def sign_seed_presence(identity, role, entry, now, *, lifetime=DEFAULT_PRESENCE_LIFETIME,
                       next_sphinx_key=None, next_key_from=0, gateway_sphinx_key=None):
    """A node's seed presence dict (what MixNode/Gateway ``presence()``
    build) signed by *identity* at *now* (Unix ns): what it then announces
    is ``sign_seed_presence(...).to_json()``.

    The dict goes through the directory's own field checks first, so a node
    never signs what a directory would refuse to read.
    """
    try:
        fields = (mixnode_fields if role == ROLE_MIXNODE else gateway_fields)(entry)
    except BodyError as e:
        raise PresenceError(e.field, e.why)
    extra = {}
    if role == ROLE_MIXNODE:
        extra["layer"] = fields["layer"]
    else:
        extra["client_listener"] = fields["clientListener"]
        extra["clients"] = [decode_key(c["pubKey"]) for c in fields["registeredClients"]]
        extra["gateway_sphinx_key"] = gateway_sphinx_key
    return make_presence(identity, role, decode_key(fields["pubKey"]), fields["host"], now,
                         fields["version"], location=fields.get("location", ""),
                         lifetime=lifetime, next_sphinx_key=next_sphinx_key,
                         next_key_from=next_key_from, **extra)


@attrs.frozen
class SignedPresence:
    """A presence, its signature, and (gateways) the client list if carried.

    ``clients`` is None when the list was left out (the compact form); when
    present it matches ``presence.clients_digest``.
    """

    presence: Presence
    signature: bytes
    clients: tuple | None = None
    # to_json's answers, built once (base58 is slow): with_clients -> dict
    _json: dict = attrs.field(factory=dict, init=False, eq=False, repr=False)

    @property
    def identity_key(self):
        return self.presence.identity_key

    def verify(self):
        """True if the signature is the identity key's over signed_bytes()."""
        return verify_signature(self.presence.identity_key, self.presence.signed_bytes(),
                                self.signature)

    def to_json(self, with_clients=True):
        """The seed's presence fields, then the signed ones (docs/trust.md).

        A new dict each call (its registeredClients list is shared)."""
        built = self._json.get(with_clients)
        if built is None:
            built = self._json[with_clients] = self._build_json(with_clients)
        return dict(built)

    def _build_json(self, with_clients):
        p = self.presence
        out = {"host": str(p.host), "pubKey": encode_key(p.sphinx_key)}
        if p.role == ROLE_MIXNODE:
            out["layer"] = p.layer
        else:
            out["mixnetListener"] = str(p.host)
            out["clientListener"] = str(p.client_listener)
            if with_clients and self.clients is not None:
                out["registeredClients"] = [{"pubKey": encode_key(k)} for k in self.clients]
            out["clientsDigest"] = encode_b58(p.clients_digest)
            out["clientsCount"] = p.clients_count
        out["version"] = p.version
        if p.location:
            out["location"] = p.location
        out["identityKey"] = encode_b58(p.identity_key)
        out["timestamp"] = p.timestamp
        out["expires"] = p.expires
        if p.gateway_sphinx_key is not None:
            out["sphinxKey"] = encode_key(p.gateway_sphinx_key)
        if p.next_sphinx_key is not None:
            out["nextPubKey"] = encode_key(p.next_sphinx_key)
            out["nextPubKeyFrom"] = p.next_key_from
        out["signature"] = encode_b58(self.signature)
        return out

    def without_clients(self):
        return attrs.evolve(self, clients=None)


def parse_signed_mixnode(data):
    """A mixnode's SignedPresence from its JSON (bytes, or a parsed dict)."""
    return _parse(data, ROLE_MIXNODE)


def parse_signed_gateway(data):
    """A gateway's SignedPresence from its JSON (bytes, or a parsed dict)."""
    return _parse(data, ROLE_GATEWAY)


def parse_unverified(data, role):
    """_parse without the signature check: a document checks its directory's
    signature first, then each node's (and drops a node whose fails)."""
    return _parse(data, role, verify=False)


def _parse(data, role, verify=True):
    if isinstance(data, (bytes, bytearray)):
        try:
            data = load_object(bytes(data))
        except BodyError as e:
            raise PresenceError(e.field, e.why)
    if not isinstance(data, dict):
        raise PresenceError(None, "a presence must be a JSON object")
    if data.get("signature") is None:
        raise PresenceError("signature", "missing: the presence is not signed")
    try:
        entry = (mixnode_fields if role == ROLE_MIXNODE else gateway_fields)(data)
    except PresenceError:
        raise
    except BodyError as e:
        raise PresenceError(e.field, e.why)
    identity = _identity(data)
    timestamp = _u64_field(data, "timestamp")
    expires = _u64_field(data, "expires")
    if not timestamp < expires <= timestamp + MAX_PRESENCE_LIFETIME:
        raise PresenceError("expires", f"must be after timestamp and at most "
                            f"{MAX_PRESENCE_LIFETIME // NS} s after it")
    next_key, next_from = _next_key(data)
    sphinx_key = decode_key(entry["pubKey"])
    gateway_key = _gateway_sphinx_key(data, role, sphinx_key)
    if next_key is not None and next_key in (sphinx_key, gateway_key):
        raise PresenceError("nextPubKey", "is the current pubKey"
                            if next_key == sphinx_key else "is the current sphinxKey")
    fields = dict(
        role=role, identity_key=identity, sphinx_key=sphinx_key,
        host=NodeAddress.parse(entry["host"]), timestamp=timestamp, expires=expires,
        version=entry["version"], location=entry.get("location", ""),
        next_sphinx_key=next_key, next_key_from=next_from, gateway_sphinx_key=gateway_key)
    clients = None
    if role == ROLE_MIXNODE:
        fields["layer"] = entry["layer"]
    else:
        fields["layer"] = 0
        fields["client_listener"] = NodeAddress.parse(entry["clientListener"])
        fields["clients_digest"] = _b58_field(data, "clientsDigest", KEY_SIZE)
        count = _u64_field(data, "clientsCount")
        if count > MAX_U32:
            raise PresenceError("clientsCount", f"{count} is out of range 0..{MAX_U32}")
        fields["clients_count"] = count
        if data.get("registeredClients") is not None:
            clients = tuple(sorted(decode_key(c["pubKey"]) for c in entry["registeredClients"]))
            if len(clients) != count or clients_digest(clients) != fields["clients_digest"]:
                raise PresenceError(
                    "registeredClients",
                    "do not match the signed clientsDigest and clientsCount")
    try:
        presence = Presence(**fields)
    except ValueError as e:
        raise PresenceError(None, str(e))
    signature = _b58_field(data, "signature", SIGNATURE_SIZE)
    signed = SignedPresence(presence, signature, clients)
    if verify and not signed.verify():
        raise PresenceError("signature", "does not verify: it is not the identity key's "
                            "signature over these fields")
    return signed


def _identity(data):
    value = data.get("identityKey")
    if value is None:
        raise PresenceError("identityKey", "missing")
    try:
        return decode_identity_key(value)
    except KeyFormatError as e:
        raise PresenceError("identityKey", str(e))


def _b58_field(data, field, size):
    value = data.get(field)
    if value is None:
        raise PresenceError(field, "missing")
    try:
        return decode_b58(value, size, field)
    except KeyFormatError as e:
        raise PresenceError(field, str(e))


def _u64_field(data, field):
    value = data.get(field)
    if value is None:
        raise PresenceError(field, "missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise PresenceError(field, "must be an integer")
    if not 0 <= value <= MAX_U64:
        raise PresenceError(field, f"{value} is out of range 0..2**64-1")
    return value


def _gateway_sphinx_key(data, role, pub_key):
    """A gateway's ``sphinxKey`` (its rotated Sphinx key in use), or None."""
    value = data.get("sphinxKey")
    if value is None:
        return None
    if role != ROLE_GATEWAY:
        raise PresenceError("sphinxKey", "only a gateway announces a Sphinx key beside its"
                            " pubKey")
    raw = _key_field("sphinxKey", value)
    if raw == pub_key:
        raise PresenceError("sphinxKey", "is the pubKey: a gateway leaves it out then")
    return raw


def _key_field(name, value):
    """The 32 bytes of a base58 key field *name*, or PresenceError naming it."""
    if not isinstance(value, str):
        raise PresenceError(name, "must be a string")
    try:
        return decode_key(value)
    except KeyFormatError as e:
        raise PresenceError(name, str(e))


def _next_key(data):
    key, start = data.get("nextPubKey"), data.get("nextPubKeyFrom")
    if key is None and start is None:
        return None, 0
    if key is None or start is None:
        raise PresenceError("nextPubKey", "nextPubKey and nextPubKeyFrom go together")
    raw = _key_field("nextPubKey", key)
    start = _u64_field(data, "nextPubKeyFrom")
    if start == 0:
        raise PresenceError("nextPubKeyFrom", "must be a time after 0")
    return raw, start


def check_announced(presence, now, skew=MAX_CLOCK_SKEW):
    """The directory's time rule: signed within *skew* of *now* and unexpired."""
    if presence.timestamp > now + skew:
        raise PresenceError("timestamp", f"is {(presence.timestamp - now) / NS:.1f} s in "
                            f"the future; clocks may differ by at most {skew / NS:.0f} s")
    if presence.timestamp < now - skew:
        raise PresenceError("timestamp", f"is stale: signed {(now - presence.timestamp) / NS:.1f}"
                            f" s ago; a presence is announced within {skew / NS:.0f} s")
    if presence.expires <= now:
        raise PresenceError("expires", f"the presence expired {(now - presence.expires) / NS:.1f}"
                            " s ago")


def is_current(presence, now, skew=MAX_CLOCK_SKEW):
    """A client's time rule: not from the future (beyond *skew*), not expired."""
    return presence.timestamp <= now + skew and presence.expires > now
