"""The network topology the directory publishes, and route selection over it.

``Topology.from_json`` reads what a directory answers on
``GET /api/presence/topology``: the seed's ``MixNodes``/``MixProviderNodes``
or nym's camelCase ``mixNodes``/``mixProviderNodes``, keys in base58 or
base64url. One malformed entry never spoils the rest: it is dropped and the
reason logged. ``docs/topology.md`` describes the accepted JSON.
"""

import json

import attrs
from twisted.logger import Logger

from nymtx.addressing import AddressError, NodeAddress
from nymtx.keys import KEY_SIZE, KeyFormatError, decode_key, encode_key
from nymtx.sphinx import Hop

LAYERS = 3

_MIX_KEYS = ("MixNodes", "mixNodes")
_GATEWAY_KEYS = ("MixProviderNodes", "mixProviderNodes")


class TopologyError(ValueError):
    """A topology that cannot be read or cannot carry a route; the message says why."""


class _BadEntry(Exception):
    """One entry of the topology is malformed; it is dropped, the others kept."""


def _check_key(instance, attribute, value):
    if not isinstance(value, bytes) or len(value) != KEY_SIZE:
        raise TopologyError(f"{attribute.name} must be {KEY_SIZE} bytes, not {value!r}")


def _check_int(instance, attribute, value):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TopologyError(f"{attribute.name} must be an integer, not {value!r}")


def _check_layer(instance, attribute, value):
    _check_int(instance, attribute, value)
    if not 1 <= value <= LAYERS:
        raise TopologyError(f"layer {value} is not in 1..{LAYERS}")


def _check_clients(instance, attribute, value):
    for key in value:
        _check_key(instance, attribute, key)


@attrs.frozen
class MixNodeInfo:
    address: NodeAddress = attrs.field(validator=attrs.validators.instance_of(NodeAddress))
    public_key: bytes = attrs.field(validator=_check_key)
    layer: int = attrs.field(validator=_check_layer)
    last_seen: int = attrs.field(default=0, validator=_check_int)
    version: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    #: the node's Ed25519 identity key when the topology is signed (the
    #: threshold merge sets it; a seed topology has none): mix links prove
    #: it (nymtx.trust.mixlink). Not compared: the same node either way.
    identity_key: bytes = attrs.field(default=None, eq=False, repr=False)
    #: the Sphinx key the node announced next (``nextPubKey``) and the Unix
    #: ns from which senders use it (``nextPubKeyFrom``); ``Topology.at``
    #: switches to it then. Not compared, as identity_key.
    next_key: bytes = attrs.field(default=None, eq=False, repr=False)
    next_key_from: int = attrs.field(default=0, eq=False, repr=False)

    @property
    def route_key(self):
        """The Sphinx key a packet through this node is built with."""
        return self.public_key

    @property
    def key_until(self):
        """Unix ns from which senders stop using ``route_key`` (its
        successor's start), or 0 if the node announced none."""
        return self.next_key_from if self.next_key is not None else 0

    def switched(self):
        return attrs.evolve(self, public_key=self.next_key, next_key=None, next_key_from=0)


@attrs.frozen
class GatewayInfo:
    # ``address`` is the mix listener, where Sphinx packets go; clients
    # register and pull at ``client_listener``.
    address: NodeAddress = attrs.field(validator=attrs.validators.instance_of(NodeAddress))
    client_listener: NodeAddress = attrs.field(
        validator=attrs.validators.instance_of(NodeAddress))
    public_key: bytes = attrs.field(validator=_check_key)
    registered_clients: tuple = attrs.field(
        default=(), converter=tuple, validator=_check_clients)
    last_seen: int = attrs.field(default=0, validator=_check_int)
    version: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    #: as MixNodeInfo.identity_key
    identity_key: bytes = attrs.field(default=None, eq=False, repr=False)
    #: the Sphinx key in use when the gateway rotates (``sphinxKey``):
    #: ``public_key`` stays its name (addresses name it, clients' Noise
    #: handshakes prove it), this is what the route's last hop is built
    #: with. None: the public_key, as in the seed.
    sphinx_key: bytes = attrs.field(default=None, eq=False, repr=False)
    #: as MixNodeInfo.next_key, next_key_from: the gateway's next Sphinx key
    next_key: bytes = attrs.field(default=None, eq=False, repr=False)
    next_key_from: int = attrs.field(default=0, eq=False, repr=False)

    @property
    def route_key(self):
        """The Sphinx key a packet to this gateway is built with."""
        return self.sphinx_key or self.public_key

    @property
    def key_until(self):
        """As MixNodeInfo.key_until, but 0 while the name key is in use: a
        gateway accepts its name key for good (docs/trust.md, "On the
        gateway"), so a reply block built with it need not expire here."""
        return self.next_key_from if self.next_key is not None and self.sphinx_key else 0

    def switched(self):
        return attrs.evolve(self, sphinx_key=self.next_key, next_key=None, next_key_from=0)


@attrs.frozen
class Topology:
    """Mixnodes and gateways, in the order the directory listed them."""

    log = Logger()

    mixnodes: tuple = attrs.field(default=(), converter=tuple)
    gateways: tuple = attrs.field(default=(), converter=tuple)
    # Built once: route() runs for every packet a client sends.
    _layers: dict = attrs.field(init=False, eq=False, repr=False)
    #: route key -> key_until of its node (for key_until(route))
    _until: dict = attrs.field(init=False, eq=False, repr=False)
    #: the earliest next_key_from of any node, 0 if none: at() is free before it
    switch_at: int = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self):
        seen = set()
        layers = {layer: [] for layer in range(1, LAYERS + 1)}
        for node in self.mixnodes:
            if not isinstance(node, MixNodeInfo):
                raise TopologyError(f"a mixnode must be a MixNodeInfo, not {node!r}")
            layers[node.layer].append(node)
        for node in self.gateways:
            if not isinstance(node, GatewayInfo):
                raise TopologyError(f"a gateway must be a GatewayInfo, not {node!r}")
        # A key names one node: two nodes with one key would make routes
        # ambiguous and from_json(to_json()) lossy.
        for node in self.mixnodes + self.gateways:
            if node.public_key in seen:
                raise TopologyError(
                    f"public key {encode_key(node.public_key)} appears twice")
            seen.add(node.public_key)
        object.__setattr__(self, "_layers", {
            layer: tuple(Hop(address=node.address.to_bytes(), public_key=node.public_key)
                         for node in nodes)
            for layer, nodes in layers.items()})
        nodes = self.mixnodes + self.gateways
        object.__setattr__(self, "_until", {
            node.route_key: node.key_until for node in nodes if node.key_until})
        object.__setattr__(self, "switch_at", min(
            (node.next_key_from for node in nodes if node.next_key is not None), default=0))

    def at(self, now):
        """This topology at *now* (Unix ns): every node whose announced next
        key's start has come routes with that key. Mixnodes change their
        ``public_key`` (the key names a mixnode nowhere else), gateways
        their ``sphinx_key`` (their ``public_key`` is their name)."""
        if not self.switch_at or now < self.switch_at:
            return self

        def advance(node):
            if node.next_key is not None and now >= node.next_key_from:
                return node.switched()
            return node
        return Topology([advance(n) for n in self.mixnodes],
                        [advance(g) for g in self.gateways])

    def key_until(self, route):
        """The earliest Unix ns at which a key of *route* (Hops) stops being
        the one its node's senders use, or 0 if none of them announced a
        successor: a reply block built on *route* expires then (the node
        accepts the old key a while longer, the overlap, but how long is
        its own choice)."""
        times = [self._until[hop.public_key] for hop in route
                 if hop.public_key in self._until]
        return min(times, default=0)

    @classmethod
    def from_json(cls, data):
        """A Topology from JSON text, bytes or an already-parsed dict.

        Raises TopologyError if the whole document is unusable; drops (and
        logs) each malformed entry.
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError as e:
                raise TopologyError(f"topology is not UTF-8 text: {e}")
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except RecursionError:
                raise TopologyError("topology JSON is nested too deeply")
            except ValueError as e:
                raise TopologyError(f"topology is not valid JSON: {e}")
        if not isinstance(data, dict):
            raise TopologyError(
                f"topology must be a JSON object, not {_json_type(data)}")
        mix_entries = _entry_list(data, _MIX_KEYS, cls.log)
        gateway_entries = _entry_list(data, _GATEWAY_KEYS, cls.log)

        # one set for both lists: a key names one node, mixnode or gateway
        seen = set()
        mixnodes = _parse_entries(mix_entries, "mixnode", _parse_mixnode, seen, cls.log)
        gateways = _parse_entries(gateway_entries, "gateway", _parse_gateway, seen, cls.log)
        return cls(mixnodes, gateways)

    def to_json(self):
        """The seed's form: capitalised keys, base58 public keys."""
        return {
            "MixNodes": [
                {"host": str(node.address), "pubKey": encode_key(node.public_key),
                 "layer": node.layer, "lastSeen": node.last_seen,
                 "version": node.version, **_rotation_json(node)}
                for node in self.mixnodes],
            "MixProviderNodes": [
                {"host": str(node.address), "pubKey": encode_key(node.public_key),
                 "mixnetListener": str(node.address),
                 "clientListener": str(node.client_listener),
                 "registeredClients": [
                     {"pubKey": encode_key(key)} for key in node.registered_clients],
                 "lastSeen": node.last_seen, "version": node.version,
                 **({"sphinxKey": encode_key(node.sphinx_key)} if node.sphinx_key else {}),
                 **_rotation_json(node)}
                for node in self.gateways],
        }

    def gateway_for(self, client_key):
        """The first gateway that lists ``client_key`` as registered, or None."""
        for gateway in self.gateways:
            if client_key in gateway.registered_clients:
                return gateway
        return None

    def gateway_by_key(self, public_key):
        for gateway in self.gateways:
            if gateway.public_key == public_key:
                return gateway
        return None

    def clients(self):
        """Every registered client of every gateway, each once, in listing order."""
        return list(dict.fromkeys(
            key for gateway in self.gateways for key in gateway.registered_clients))

    def route(self, gateway, rng, avoid=frozenset()):
        """One uniformly random mixnode from each layer 1..LAYERS, then ``gateway``.

        Mixnodes whose public key is in *avoid* are left out of a layer that
        has others (nymtx.reliable.health: nodes whose packets keep going
        unacknowledged); a layer of only those is used whole."""
        if not isinstance(gateway, GatewayInfo):
            raise TopologyError(f"a route ends at a GatewayInfo, not {gateway!r}")
        hops = []
        for layer in range(1, LAYERS + 1):
            candidates = self._layers[layer]
            if not candidates:
                raise TopologyError(f"layer {layer} has no mixnodes")
            if avoid:
                candidates = [h for h in candidates if h.public_key not in avoid] or candidates
            hops.append(rng.choice(candidates))
        hops.append(Hop(address=gateway.address.to_bytes(), public_key=gateway.route_key))
        return hops


def _rotation_json(node):
    if node.next_key is None:
        return {}
    return {"nextPubKey": encode_key(node.next_key), "nextPubKeyFrom": node.next_key_from}


def _next_key(entry, current, log, index):
    """(nextPubKey, nextPubKeyFrom) of an entry, or (None, 0); a bad pair is
    left out (logged) and the entry kept: the key in use still routes."""
    key, start = entry.get("nextPubKey"), entry.get("nextPubKeyFrom")
    if key is None and start is None:
        return None, 0
    try:
        if not isinstance(start, int) or isinstance(start, bool) or not 0 < start < 2 ** 64:
            raise _BadEntry(f"nextPubKeyFrom must be a Unix time in ns, not {start!r:.40}")
        key = _key(key, "nextPubKey")
        if key == current:
            raise _BadEntry("nextPubKey is the key in use")
    except _BadEntry as e:
        log.warn("entry {index}: ignoring its next key: {reason}", index=index,
                 reason=str(e))
        return None, 0
    return key, start


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _entry_list(data, names, log):
    present = [name for name in names if name in data]
    if not present:
        return []
    if len(present) > 1:
        log.warn("topology has both {used} and {ignored}; reading only {used}",
                 used=present[0], ignored=present[1])
    value = data[present[0]]
    # Go's encoding/json writes an empty slice as null.
    if value is None:
        return []
    if not isinstance(value, list):
        raise TopologyError(
            f"topology field {present[0]} must be an array, not {_json_type(value)}")
    return value


def _parse_entries(entries, kind, parse, seen, log):
    nodes = []
    for index, entry in enumerate(entries):
        try:
            node = parse(entry, log, index)
            _check_unique(node, seen)
        except _BadEntry as e:
            log.warn("dropping {kind} entry {index}: {reason}",
                     kind=kind, index=index, reason=str(e))
            continue
        nodes.append(node)
    return nodes


def _check_unique(node, seen):
    if node.public_key in seen:
        raise _BadEntry(
            f"public key {encode_key(node.public_key)} was already listed; keeping the first")
    seen.add(node.public_key)


def _address(entry, field):
    value = entry.get(field)
    if not isinstance(value, str):
        raise _BadEntry(f"{field} must be an \"ip:port\" string, not {_json_type(value)}")
    try:
        return NodeAddress.parse(value)
    except AddressError as e:
        raise _BadEntry(f"{field}: {e}")


def _key(value, field):
    if not isinstance(value, str):
        raise _BadEntry(f"{field} must be a base58 or base64url string, not {_json_type(value)}")
    try:
        return decode_key(value)
    except KeyFormatError as e:
        raise _BadEntry(f"{field}: {e}")


def _optional_int(entry, field):
    value = entry.get(field)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise _BadEntry(f"{field} must be an integer, not {_json_type(value)}")
    return value


def _optional_str(entry, field):
    value = entry.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _BadEntry(f"{field} must be a string, not {_json_type(value)}")
    return value


def _parse_mixnode(entry, log, index):
    if not isinstance(entry, dict):
        raise _BadEntry(f"an entry must be an object, not {_json_type(entry)}")
    address = _address(entry, "host")
    public_key = _key(entry.get("pubKey"), "pubKey")
    layer = entry.get("layer")
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise _BadEntry(f"layer must be an integer, not {_json_type(layer)}")
    if not 1 <= layer <= LAYERS:
        raise _BadEntry(f"layer {layer} is not in 1..{LAYERS}")
    next_key, next_from = _next_key(entry, public_key, log, index)
    return MixNodeInfo(address, public_key, layer,
                       _optional_int(entry, "lastSeen"), _optional_str(entry, "version"),
                       next_key=next_key, next_key_from=next_from)


def _parse_gateway(entry, log, index):
    if not isinstance(entry, dict):
        raise _BadEntry(f"an entry must be an object, not {_json_type(entry)}")
    # nym v0.5's provider announced mixnetListener and no host; the seed's
    # provider announced host and no listeners.
    if entry.get("host") is not None:
        address = _address(entry, "host")
    elif entry.get("mixnetListener") is not None:
        address = _address(entry, "mixnetListener")
    else:
        raise _BadEntry("it has neither host nor mixnetListener")
    # Without a clientListener, clients are served on the mix address, as
    # the seed-era provider did.
    if entry.get("clientListener") is not None:
        client_listener = _address(entry, "clientListener")
    else:
        client_listener = address
    public_key = _key(entry.get("pubKey"), "pubKey")
    clients = entry.get("registeredClients")
    if clients is None:
        clients = []
    if not isinstance(clients, list):
        raise _BadEntry(f"registeredClients must be an array, not {_json_type(clients)}")
    keys = {}
    for client_index, client in enumerate(clients):
        try:
            if not isinstance(client, dict):
                raise _BadEntry(f"it must be an object, not {_json_type(client)}")
            keys.setdefault(_key(client.get("pubKey"), "pubKey"), None)
        except _BadEntry as e:
            log.warn("gateway entry {index}: dropping registered client {client_index}: "
                     "{reason}", index=index, client_index=client_index, reason=str(e))
    sphinx_key = None
    if entry.get("sphinxKey") is not None:
        sphinx_key = _key(entry.get("sphinxKey"), "sphinxKey")
    next_key, next_from = _next_key(entry, sphinx_key or public_key, log, index)
    return GatewayInfo(address, client_listener, public_key, tuple(keys),
                       _optional_int(entry, "lastSeen"), _optional_str(entry, "version"),
                       sphinx_key=sphinx_key if sphinx_key != public_key else None,
                       next_key=next_key, next_key_from=next_from)
