"""The bodies nodes send to the directory, checked field by field.

Everything here comes from the network and is untrusted. Each parser takes
the raw request body and returns a clean dict holding only the fields the
directory keeps, with keys and addresses in their canonical text form, or
raises :class:`BodyError` naming the first field that is wrong and why.
"""

import json

from nymtx.addressing import AddressError, NodeAddress
from nymtx.keys import KeyFormatError, decode_key, encode_key

#: Larger bodies are refused before they are parsed (HTTP 413).
MAX_BODY_SIZE = 64 * 1024
MAX_VERSION_LENGTH = 64
MAX_LOCATION_LENGTH = 256
MAX_REASON_LENGTH = 64
# A counter reported by a node; bounded so that sums and rates stay sane.
MAX_COUNT = 2 ** 63 - 1
LAYERS = (1, 2, 3)


class BodyError(ValueError):
    """A request body the directory refuses; the message names the field."""

    def __init__(self, field, why):
        self.field = field
        self.why = why
        super().__init__(f"{field}: {why}" if field else why)


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def load_object(body):
    """The JSON object in *body* (bytes), or BodyError saying why not."""
    if len(body) > MAX_BODY_SIZE:
        raise BodyError(None, f"the body exceeds the limit of {MAX_BODY_SIZE} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyError(None, f"the body is not UTF-8 (byte {e.start})")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BodyError(None, "the body is not valid JSON: nested too deeply")
    except ValueError as e:
        raise BodyError(None, f"the body is not valid JSON: {str(e)[:100]}")
    if not isinstance(data, dict):
        raise BodyError(None, f"the body must be a JSON object, not {_kind(data)}")
    return data


def parse_mixnode(body):
    """A mixnode's presence: host, pubKey, layer, version, optional location."""
    return mixnode_fields(load_object(body))


def mixnode_fields(data):
    """parse_mixnode's checks on an already-parsed JSON object (a dict)."""
    entry = {
        "host": _address(data, "host"),
        "pubKey": _key(data, "pubKey"),
        "layer": _layer(data),
        "version": _version(data),
    }
    _location(data, entry)
    return entry


def parse_gateway(body):
    """A gateway's presence.

    nym v0.5 providers send ``mixnetListener`` and no ``host``; nymtx's
    topology carries both with the same value, so either is accepted and,
    when both are sent, they must agree.
    """
    return gateway_fields(load_object(body))


def gateway_fields(data):
    """parse_gateway's checks on an already-parsed JSON object (a dict)."""
    key = _key(data, "pubKey")
    listener = None
    for field in ("host", "mixnetListener"):
        if data.get(field) is not None:
            address = _address(data, field)
            if listener is not None and address != listener:
                raise BodyError(
                    "mixnetListener",
                    f"{address} differs from host {listener}; they name the same listener")
            listener = address
    if listener is None:
        raise BodyError("host", "missing (give host or mixnetListener)")
    entry = {
        "host": listener,
        "mixnetListener": listener,
        "clientListener": _address(data, "clientListener"),
        "pubKey": key,
        "registeredClients": _registered_clients(data),
        "version": _version(data),
    }
    _location(data, entry)
    return entry


def parse_metrics(body):
    """A mixnode's metrics since its previous report.

    ``sent`` is a total (what nymtx nodes report) or, from a seed node, an
    object of counts per next hop; the object is folded into its total at
    once, so the directory never holds who sent how much to whom.
    """
    return metrics_fields(load_object(body))


def metrics_fields(data):
    """parse_metrics's checks on an already-parsed JSON object (a dict)."""
    entry = {
        "pubKey": _key(data, "pubKey"),
        "received": _count(data.get("received"), "received"),
        "sent": _sent_total(data),
    }
    if data.get("dropped") is not None:
        entry["dropped"] = _counts(data, "dropped", _reason)
    else:
        entry["dropped"] = {}
    return entry


def _kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _string(data, field, name=None):
    if data.get(field) is None:
        raise BodyError(name or field, "missing")
    value = data[field]
    if not isinstance(value, str):
        raise BodyError(name or field, f"must be a string, not {_kind(value)}")
    return value


def _key(data, field, name=None):
    text = _string(data, field, name)
    try:
        return encode_key(decode_key(text))
    except KeyFormatError as e:
        raise BodyError(name or field, str(e))


def _address(data, field):
    text = _string(data, field)
    try:
        return str(NodeAddress.parse(text))
    except AddressError as e:
        raise BodyError(field, str(e))


def _layer(data):
    if "layer" not in data or data["layer"] is None:
        raise BodyError("layer", "missing")
    layer = data["layer"]
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise BodyError("layer", f"must be an integer, not {_kind(layer)}")
    if layer not in LAYERS:
        raise BodyError("layer", f"{layer} is not a layer; layers are 1, 2 and 3")
    return layer


def _printable(value, field, limit):
    if len(value) > limit:
        raise BodyError(field, f"is {len(value)} characters long; the limit is {limit}")
    if not value.isprintable():
        raise BodyError(field, "contains control characters")
    return value


def _version(data):
    version = _string(data, "version")
    if not version.strip():
        raise BodyError("version", "is empty")
    return _printable(version, "version", MAX_VERSION_LENGTH)


def _location(data, entry):
    # nym v0.5 required a location, v0.7 made it optional: keep it if given.
    if data.get("location") is None:
        return
    location = _string(data, "location")
    entry["location"] = _printable(location, "location", MAX_LOCATION_LENGTH)


def _registered_clients(data):
    clients = data.get("registeredClients")
    if clients is None:
        return []
    if not isinstance(clients, list):
        raise BodyError("registeredClients", f"must be an array, not {_kind(clients)}")
    seen = {}
    for index, item in enumerate(clients):
        field = f"registeredClients[{index}]"
        if not isinstance(item, dict):
            raise BodyError(field, f"must be an object, not {_kind(item)}")
        seen.setdefault(_key(item, "pubKey", f"{field}.pubKey"), None)
    return [{"pubKey": key} for key in seen]


def _count(value, field):
    if value is None:
        raise BodyError(field, "missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BodyError(field, f"must be an integer, not {_kind(value)}")
    if not 0 <= value <= MAX_COUNT:
        raise BodyError(field, f"{value} is out of range 0-{MAX_COUNT}")
    return value


def _counts(data, field, check_name):
    value = data.get(field)
    if value is None:
        raise BodyError(field, "missing")
    if not isinstance(value, dict):
        raise BodyError(field, f"must be an object, not {_kind(value)}")
    out = {}
    for name, count in value.items():
        name = check_name(field, name)
        out[name] = out.get(name, 0) + _count(count, f"{field}[{name!r}]")
        if out[name] > MAX_COUNT:
            raise BodyError(f"{field}[{name!r}]", "the total is out of range")
    return out


def _sent_total(data):
    value = data.get("sent")
    if isinstance(value, int) and not isinstance(value, bool):
        return _count(value, "sent")
    if value is not None and not isinstance(value, dict):
        raise BodyError("sent", f"must be an integer or an object, not {_kind(value)}")
    total = sum(_counts(data, "sent", _sent_target).values())
    if total > MAX_COUNT:
        raise BodyError("sent", "the total is out of range")
    return total


def _sent_target(field, name):
    try:
        return str(NodeAddress.parse(name))
    except AddressError as e:
        raise BodyError(field, str(e))


def _reason(field, name):
    if not name.strip():
        raise BodyError(field, "a drop reason is empty")
    try:
        return _printable(name, f"{field} reason", MAX_REASON_LENGTH)
    except BodyError as e:
        raise BodyError(e.field, f"{e.why}: {name[:MAX_REASON_LENGTH]!r}")
