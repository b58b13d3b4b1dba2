"""A mixnode's config.toml and keys, in nym v0.5's layout.

``<root>/mixnodes/<id>/config/config.toml`` and ``<root>/mixnodes/<id>/data/``
for the sphinx key pair. Times in ``[debug]`` are milliseconds, as in nym.
Reading is strict, like nym's ``deny_unknown_fields``: an unknown key or a
value of the wrong kind is an error naming the key and what is allowed.
"""

import os
from functools import partial

import attrs

from nymtx import config as shared
from nymtx.addressing import AddressError, NodeAddress
from nymtx.config import ConfigError, ConfigFileError, Key, Section
from nymtx.keys import KeyFormatError, KeyPair, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE
from nymtx.paths import node_dir, nym_root, write_atomically
from nymtx.trust.rotation import rotation_interval

__all__ = ["ConfigError", "MixnodeConfig", "init_mixnode", "load_config", "parse_config"]

LAYERS = (1, 2, 3)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1789
DEFAULT_DIRECTORY = "http://127.0.0.1:8080"
_DAY_MS = shared.DAY_MS


def _ms(low=1):
    return partial(shared.delay, low=low)


def _count(low, high):
    return partial(shared.count, low=low, high=high)


# [debug] keys: (default, check, comment). The largest values are sanity
# bounds: a typo of a few extra digits must be an error naming the key, not
# a node that starts and then fails (a queue size beyond a C ssize_t) or
# grows without any practical bound.
DEBUG = {
    "presence_directory_server": (
        DEFAULT_DIRECTORY, partial(shared.url, empty=True),
        "The directory this node announces itself and its metrics to; empty: none."),
    "presence_directory_servers": (
        (), lambda v, n: _directory_list(v, n),
        "Further directories it announces to as well (a list of URLs), each signed."),
    "directory_keys": (
        (), lambda v, n: _trust("directory_keys", v, n),
        "Pinned directory keys (base58): a node of layer 2 or 3 then admits only the\n"
        "previous layer's mixnodes of the signed topology, by key (docs/mix-link.md)."),
    "directory_threshold": (
        0, lambda v, n: _trust("directory_threshold", v, n),
        "How many of directory_keys must agree; 0: a majority."),
    "sphinx_key_rotation": (
        0, _ms(low=0),
        "Milliseconds each Sphinx key is used before the next, for tests (docs/trust.md,\n"
        "\"Key rotation\"); 0: as [mixnode] sphinx_key_rotation_hours says."),
    "presence_sending_delay": (
        1500, _ms(), "How often the node announces itself (ms). nym: 1500."),
    "metrics_sending_delay": (
        1000, _ms(), "How often the node reports its counters (ms), resetting them."),
    "packet_forwarding_initial_backoff": (
        100, _ms(),
        "First wait before reconnecting to an unreachable next hop (ms); it doubles each try."),
    "packet_forwarding_maximum_backoff": (
        30000, _ms(), "Longest wait between reconnect attempts (ms)."),
    "packet_queue_size": (
        1024, _count(1, 1 << 20),
        "Packets queued per next hop while it is down or slow; on overflow the oldest goes."),
    "replay_cache_size": (
        1 << 20, _count(2, 1 << 26),
        "Replay cache bound in tags (~100 bytes each). Replays are caught for at least\n"
        "half this many later packets; older ones are forgotten."),
    "maximum_packets_in_flight": (
        32768, _count(1, 1 << 22),
        "Packets held for their delay at once; more are dropped (too_many_in_flight)."),
    "maximum_packet_delay": (
        300000, _ms(), "Packets asking for a longer delay are dropped (delay_too_long), ms."),
    "maximum_connections": (
        4096, _count(1, 1 << 20),
        "Incoming connections at once; more are closed as soon as accepted. Lowered at\n"
        "start-up (with a warning) if the open-files limit (ulimit -n) cannot hold them."),
    "workers": (
        1, _count(1, 256),
        "Processes that unwrap packets: 1 is the node's own process; N >= 2 starts N\n"
        "worker processes beside it (about one per core; the node's process keeps\n"
        "the sockets, the replay cache and the delays)."),
    "connection_idle_timeout": (
        300000, _ms(1000),
        "An incoming connection that brings no whole packet for this long is closed (ms)."),
}


def _directory_list(value, name):
    return _trust("directory_list", value, name)


def _trust(check, value, name):
    from nymtx.trust import wiring
    return getattr(wiring, check)(value, name)


def check_layer(layer, name="layer"):
    if isinstance(layer, bool) or not isinstance(layer, int) or layer not in LAYERS:
        raise ConfigError(
            f"{name} must be one of {', '.join(map(str, LAYERS))}, not {layer!r}")
    return layer


def _address(value, name, announce=False):
    """A NodeAddress from its text ``ip:port``; an announced one can be dialled."""
    if isinstance(value, NodeAddress):
        value = str(value)
    shared.text(value, name, empty=False)
    try:
        address = NodeAddress.parse(value)
    except AddressError as e:
        raise ConfigError(f"{name}: {e}")
    if announce:
        shared.ip_host(address.host, name, announce=True)
    return address


def _path(value, name):
    return shared.text(value, name, empty=False)


LAYOUT = (
    Section("mixnode", keys=[
        Key("id", shared.identifier, required=True,
            comment="The id of this node; also its directory name."),
        Key("layer", check_layer, required=True,
            comment="The mix layer of this node: 1, 2 or 3."),
        Key("listening_address", _address, required=True, dump=str,
            comment="Where packets are received (ip:port)."),
        Key("announce_address", partial(_address, announce=True), required=True, dump=str,
            comment="What the directory is told; other nodes and clients dial it (ip:port)."),
        Key("location", shared.text, comment="Free text shown in the directory."),
        Key("private_sphinx_key_file", _path, required=True,
            comment="The sphinx key pair (base58 text files)."),
        Key("public_sphinx_key_file", _path, required=True),
        Key("nym_root_directory", _path, required=True),
        Key("sphinx_key_rotation_hours", lambda v, n: shared.whole_number(
            v, n, low=0, high=24 * 366, what="a whole number of hours"), comment=(
            "Hours each Sphinx key is used before the next, announced an hour ahead and\n"
            "accepted 30 min after (docs/trust.md, \"Key rotation\"); 0: never rotates.")),
    ]),
    shared.logging_section(),
    Section("debug", comment="Times are in milliseconds, as in nym.", keys=[
        Key(name, check, comment=comment) for name, (_, check, comment) in DEBUG.items()]),
)


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
    log_level: str = attrs.field(default=shared.DEFAULT_LOG_LEVEL, converter=shared.log_level)
    #: docs/decisions.md, "Sphinx key rotation": a day, as nym's epochs
    sphinx_key_rotation_hours: int = 24

    @property
    def rotation_interval(self):
        """Nanoseconds each Sphinx key is used (the debug key, in ms, wins
        when set); 0: it never rotates."""
        return rotation_interval(self.sphinx_key_rotation_hours,
                                 self.debug["sphinx_key_rotation"])

    def __attrs_post_init__(self):
        # every construction is checked with the checks the file is read with
        if not isinstance(self.debug, dict) or set(self.debug) != set(DEBUG):
            raise ConfigError(f"debug must have exactly the keys {', '.join(DEBUG)}")
        values = {**attrs.asdict(self, recurse=False), **self.debug}
        for section in LAYOUT:
            for key in section.keys:
                key.check(values[key.attribute], f"[{section.name}] {key.name}")

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
            raise ConfigFileError(str(e))

    def load_identity(self):
        """The node's Ed25519 identity key beside its Sphinx key (created,
        and logged, if there is none: a node from before identity keys)."""
        from nymtx.trust.wiring import node_identity
        try:
            return node_identity(os.path.dirname(self.private_sphinx_key_file))
        except (KeyFormatError, OSError) as e:
            raise ConfigFileError(f"identity key: {e}")

    def to_toml(self):
        values = {**attrs.asdict(self, recurse=False), **self.debug}
        return shared.render(LAYOUT, values, header=(
            f"nymtx mixnode {self.id!r}: nym v0.5's config layout.\n"
            "Written by 'nym-mixnode init'; edit and restart to change."))

    def save(self, path):
        write_atomically(path, self.to_toml(), 0o600)


def config_path(node_id, root=None):
    return mixnode_dir(node_id, root) / "config" / "config.toml"


def mixnode_dir(node_id, root=None):
    try:
        return node_dir("mixnodes", node_id, root)
    except ValueError as e:
        raise ConfigError(f"--id: {e}")


def init_mixnode(node_id, layer, host=DEFAULT_HOST, port=DEFAULT_PORT,
                 announce_host=None, announce_port=None, directory=DEFAULT_DIRECTORY,
                 location="unknown", root=None, force=False, log_level="info",
                 directory_keys=()):
    """Write keys and config.toml for a new mixnode; return its config.

    An existing id is refused unless *force*; with *force* the config is
    rewritten and existing keys are kept (the node keeps its identity).
    """
    home = mixnode_dir(node_id, root)
    path = config_path(node_id, root)
    if path.exists() and not force:
        raise ConfigError(
            f"mixnode {node_id!r} already exists ({path}); rewrite its config with"
            " force=True (--force on the command line)")
    check_layer(layer)
    host = shared.ip_host(host, "host")
    port = shared.port(port, "port", allow_zero=False)
    if announce_host is None:
        if shared.ip_host(host, "host") in ("0.0.0.0", "::"):
            raise ConfigError(
                f"listening on {host} needs an announce host (--announce-host):"
                " the address others dial")
        announce_host = host
    announce_host = shared.ip_host(announce_host, "announce host", announce=True)
    if announce_port is not None:
        shared.port(announce_port, "announce port", allow_zero=False)
    listening = NodeAddress(host, port)
    announce = NodeAddress(announce_host, announce_port or port)
    data = home / "data"
    private = data / PRIVATE_KEY_FILE
    debug = {k: v[0] for k, v in DEBUG.items()}
    debug["presence_directory_server"] = shared.url(directory, "directory", empty=True)
    debug["directory_keys"] = _trust("directory_keys", tuple(directory_keys), "directory_keys")
    config = MixnodeConfig(
        node_id, layer, listening, announce, str(private), str(data / PUBLIC_KEY_FILE),
        str(nym_root(root)), shared.text(location, "location"), debug, log_level)
    if not private.exists():
        KeyPair.generate().save(str(data))
    else:
        config.load_keys()
    config.load_identity()
    path.parent.mkdir(parents=True, exist_ok=True)
    config.save(path)
    return config


def load_config(node_id, root=None):
    """The config of mixnode *node_id*; ConfigError says what is wrong or missing."""
    path = config_path(node_id, root)
    text = shared.read_file(path, f"mixnode {node_id!r}",
                            f"run 'nym-mixnode init --id {node_id} --layer N' first")
    config = parse_config(text, str(path))
    if config.id != node_id:
        # a config copied from another node would announce under a wrong name
        raise ConfigFileError(
            f"{path}: [mixnode] id is {config.id!r}, but this is mixnode {node_id!r}")
    return config


def parse_config(text, source="config.toml"):
    values = shared.read(text, LAYOUT, source)
    debug = {k: v[0] for k, v in DEBUG.items()}
    for key in DEBUG:
        if key in values:
            debug[key] = values.pop(key)
    if debug["packet_forwarding_initial_backoff"] > debug["packet_forwarding_maximum_backoff"]:
        raise ConfigFileError(
            f"{source}: [debug] packet_forwarding_initial_backoff cannot exceed"
            " packet_forwarding_maximum_backoff")
    return MixnodeConfig(debug=debug, **values)
