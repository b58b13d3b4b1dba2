"""A mixnode's config.toml and keys, in nym v0.5's layout.

``<root>/mixnodes/<id>/config/config.toml`` and ``<root>/mixnodes/<id>/data/``
for the sphinx key pair. Times in ``[debug]`` are milliseconds, as in nym.
Reading is strict, like nym's ``deny_unknown_fields``: an unknown key or a
value of the wrong kind is an error naming the key and what is allowed.
"""

import ipaddress
import os

import attrs
import tomlkit
from tomlkit.exceptions import TOMLKitError

from nymtx.addressing import AddressError, NodeAddress
from nymtx.keys import KeyFormatError, KeyPair, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE
from nymtx.paths import node_dir, nym_root, write_atomically

LAYERS = (1, 2, 3)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1789
DEFAULT_DIRECTORY = "http://127.0.0.1:8080"


class ConfigError(ValueError):
    """A config file, flag or value that cannot be used; the message says which."""


# [debug] keys: (default, smallest allowed, largest allowed, what the value is).
# The largest values are sanity bounds: a typo of a few extra digits must be
# an error naming the key, not a node that starts and then fails (a queue
# size beyond a C ssize_t) or grows without any practical bound.
_DAY_MS = 86_400_000
DEBUG = {
    "presence_directory_server": (DEFAULT_DIRECTORY, None, None,
                                  "the directory URL; empty to announce nothing"),
    "presence_sending_delay": (1500, 1, _DAY_MS, "milliseconds between presence announcements"),
    "metrics_sending_delay": (1000, 1, _DAY_MS, "milliseconds between metrics reports"),
    "packet_forwarding_initial_backoff": (
        100, 1, _DAY_MS, "milliseconds before the first reconnect to a next hop"),
    "packet_forwarding_maximum_backoff": (
        30000, 1, _DAY_MS, "the longest wait in milliseconds between reconnects"),
    "packet_queue_size": (1024, 1, 1 << 20,
                          "packets queued per next hop before the oldest is dropped"),
    "replay_cache_size": (1 << 20, 2, 1 << 26, "packet tags remembered against replays"),
    "maximum_packets_in_flight": (32768, 1, 1 << 22, "packets held for their delay at once"),
    "maximum_packet_delay": (300000, 1, _DAY_MS,
                             "the longest delay in milliseconds a packet may ask for"),
    "maximum_connections": (4096, 1, 1 << 20, "incoming connections at once"),
    "connection_idle_timeout": (300000, 1000, _DAY_MS,
                                "milliseconds without a packet before an incoming"
                                " connection is closed"),
}

_DEBUG_COMMENTS = {
    "presence_directory_server": "The directory this node announces itself and its metrics to.",
    "presence_sending_delay": "How often the node announces itself (ms). nym: 1500.",
    "metrics_sending_delay": "How often the node reports its counters (ms), resetting them.",
    "packet_forwarding_initial_backoff":
        "First wait before reconnecting to an unreachable next hop (ms); it doubles each try.",
    "packet_forwarding_maximum_backoff": "Longest wait between reconnect attempts (ms).",
    "packet_queue_size":
        "Packets queued per next hop while it is down or slow; on overflow the oldest goes.",
    "replay_cache_size":
        "Replay cache bound in tags (~100 bytes each). Replays are caught for at least\n"
        "# half this many later packets; older ones are forgotten.",
    "maximum_packets_in_flight":
        "Packets held for their delay at once; more are dropped (too_many_in_flight).",
    "maximum_packet_delay": "Packets asking for a longer delay are dropped (delay_too_long), ms.",
    "maximum_connections":
        "Incoming connections at once; more are closed as soon as accepted. Lowered at\n"
        "# start-up (with a warning) if the open-files limit (ulimit -n) cannot hold them.",
    "connection_idle_timeout":
        "An incoming connection that brings no whole packet for this long is closed (ms).",
}


@attrs.frozen
class MixnodeConfig:
    id: str
    layer: int
    listening_address: NodeAddress
    announce_address: NodeAddress
    private_sphinx_key_file: str
    public_sphinx_key_file: str
    nym_root_directory: str
    location: str = "unknown"
    debug: dict = attrs.field(factory=lambda: {k: v[0] for k, v in DEBUG.items()})

    @property
    def listen_endpoint(self):
        """The listening address as a server endpoint string."""
        host = self.listening_address.host.replace(":", "\\:")
        return f"tcp:{self.listening_address.port}:interface={host}"

    def load_keys(self):
        directory = os.path.dirname(self.private_sphinx_key_file)
        try:
            return KeyPair.load(directory, os.path.basename(self.private_sphinx_key_file),
                                self.public_sphinx_key_file)
        except KeyFormatError as e:
            raise ConfigError(str(e))

    def to_toml(self):
        doc = tomlkit.document()
        doc.add(tomlkit.comment(f"nymtx mixnode {self.id!r}: nym v0.5's config layout."))
        doc.add(tomlkit.comment("Written by 'nym-mixnode init'; edit and restart to change."))
        doc.add(tomlkit.nl())
        mix = tomlkit.table()
        mix.add(tomlkit.comment("The id of this node; also its directory name."))
        mix.add("id", self.id)
        mix.add(tomlkit.comment("The mix layer of this node: 1, 2 or 3."))
        mix.add("layer", self.layer)
        mix.add(tomlkit.comment("Where packets are received (ip:port)."))
        mix.add("listening_address", str(self.listening_address))
        mix.add(tomlkit.comment(
            "What the directory is told; other nodes and clients dial it (ip:port)."))
        mix.add("announce_address", str(self.announce_address))
        mix.add(tomlkit.comment("Free text shown in the directory."))
        mix.add("location", self.location)
        mix.add(tomlkit.comment("The sphinx key pair (base58 text files)."))
        mix.add("private_sphinx_key_file", self.private_sphinx_key_file)
        mix.add("public_sphinx_key_file", self.public_sphinx_key_file)
        mix.add("nym_root_directory", self.nym_root_directory)
        doc.add("mixnode", mix)
        doc.add("logging", tomlkit.table())
        debug = tomlkit.table()
        for key in DEBUG:
            for line in _DEBUG_COMMENTS[key].split("\n# "):
                debug.add(tomlkit.comment(line))
            debug.add(key, self.debug[key])
        doc.add("debug", debug)
        return tomlkit.dumps(doc)

    def save(self, path):
        write_atomically(path, self.to_toml(), 0o600)


def config_path(node_id, root=None):
    return mixnode_dir(node_id, root) / "config" / "config.toml"


def mixnode_dir(node_id, root=None):
    try:
        return node_dir("mixnodes", node_id, root)
    except ValueError as e:
        raise ConfigError(f"--id: {e}")


def check_layer(layer):
    if isinstance(layer, bool) or not isinstance(layer, int) or layer not in LAYERS:
        raise ConfigError(f"layer must be one of {', '.join(map(str, LAYERS))}, not {layer!r}")
    return layer


def node_address(host, port, what):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{what} host {host!r} is not an IPv4 or IPv6 address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{what} port must be a number from 1 to 65535, not {port!r}")
    return NodeAddress(ipaddress.ip_address(host), port)


def check_directory(url):
    if not isinstance(url, str):
        raise ConfigError(f"the directory must be a URL string, not {url!r}")
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"the directory {url!r} must be an http:// or https:// URL")
    return url.rstrip("/")


def init_mixnode(node_id, layer, host=DEFAULT_HOST, port=DEFAULT_PORT,
                 announce_host=None, announce_port=None, directory=DEFAULT_DIRECTORY,
                 location="unknown", root=None, force=False):
    """Write keys and config.toml for a new mixnode; return its config.

    An existing id is refused unless *force*; with *force* the config is
    rewritten and existing keys are kept (the node keeps its identity).
    """
    home = mixnode_dir(node_id, root)
    path = config_path(node_id, root)
    if path.exists() and not force:
        raise ConfigError(
            f"mixnode {node_id!r} already exists ({path}); use --force to rewrite its config")
    check_layer(layer)
    listening = node_address(host, port, "listening")
    if announce_host is None:
        if listening.ip.is_unspecified:
            raise ConfigError(
                f"listening on {host} needs --announce-host: the address others dial")
        announce_host = host
    announce = node_address(announce_host, announce_port or port, "announce")
    if announce.ip.is_unspecified:
        raise ConfigError(f"--announce-host {announce_host} cannot be dialled; give a real address")
    data = home / "data"
    private = data / PRIVATE_KEY_FILE
    debug = {k: v[0] for k, v in DEBUG.items()}
    debug["presence_directory_server"] = check_directory(directory)
    config = MixnodeConfig(
        node_id, layer, listening, announce, str(private), str(data / PUBLIC_KEY_FILE),
        str(nym_root(root)), location, debug)
    if not private.exists():
        KeyPair.generate().save(str(data))
    else:
        config.load_keys()
    path.parent.mkdir(parents=True, exist_ok=True)
    config.save(path)
    return config


def load_config(node_id, root=None):
    """The config of mixnode *node_id*; ConfigError says what is wrong or missing."""
    path = config_path(node_id, root)
    if not path.exists():
        raise ConfigError(
            f"mixnode {node_id!r} has no config at {path}; run 'nym-mixnode init --id"
            f" {node_id} --layer N' first")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}")
    config = parse_config(text, str(path))
    if config.id != node_id:
        # a config copied from another node would announce under a wrong name
        raise ConfigError(f"{path}: [mixnode] id is {config.id!r}, but this is mixnode {node_id!r}")
    return config


def parse_config(text, source="config.toml"):
    try:
        doc = tomlkit.parse(text).unwrap()
    except TOMLKitError as e:
        raise ConfigError(f"{source} is not valid TOML: {e}")
    _only(doc, {"mixnode", "logging", "debug"}, source, "")
    mix = doc.get("mixnode")
    if not isinstance(mix, dict):
        raise ConfigError(f"{source}: the [mixnode] table is missing")
    known = {"id", "layer", "listening_address", "announce_address", "location",
             "private_sphinx_key_file", "public_sphinx_key_file", "nym_root_directory"}
    _only(mix, known, source, "[mixnode] ")
    for key in known - {"location"}:
        if key not in mix:
            raise ConfigError(f"{source}: [mixnode] {key} is missing")

    def field(key, check):
        try:
            return check(mix[key])
        except (ConfigError, AddressError) as e:
            raise ConfigError(f"{source}: [mixnode] {key}: {e}")

    def text_value(value):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"must be a non-empty string, not {value!r}")
        return value

    def address(value):
        text_value(value)
        return NodeAddress.parse(value)

    debug = {k: v[0] for k, v in DEBUG.items()}
    raw_debug = doc.get("debug", {})
    if not isinstance(raw_debug, dict):
        raise ConfigError(f"{source}: debug must be a table")
    _only(raw_debug, set(DEBUG), source, "[debug] ")
    for key, value in raw_debug.items():
        _, low, high, what = DEBUG[key]
        if low is None:
            try:
                debug[key] = check_directory(value)
            except ConfigError as e:
                raise ConfigError(f"{source}: [debug] {key}: {e}")
        elif isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(
                f"{source}: [debug] {key} must be an integer from {low} to {high}"
                f" ({what}), not {value!r}")
        else:
            debug[key] = value
    if debug["packet_forwarding_initial_backoff"] > debug["packet_forwarding_maximum_backoff"]:
        raise ConfigError(
            f"{source}: [debug] packet_forwarding_initial_backoff cannot exceed"
            " packet_forwarding_maximum_backoff")
    return MixnodeConfig(
        id=field("id", text_value), layer=field("layer", check_layer),
        listening_address=field("listening_address", address),
        announce_address=field("announce_address", address),
        private_sphinx_key_file=field("private_sphinx_key_file", text_value),
        public_sphinx_key_file=field("public_sphinx_key_file", text_value),
        nym_root_directory=field("nym_root_directory", text_value),
        location=field("location", _string) if "location" in mix else "unknown",
        debug=debug)


def _string(value):
    if not isinstance(value, str):
        raise ConfigError(f"must be a string, not {value!r}")
    return value


def _only(table, allowed, source, where):
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {where}{unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
