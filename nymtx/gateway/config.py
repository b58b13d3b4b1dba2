"""The gateway's config.toml: a commented template, read back with every value checked.

Layout: ``<root>/gateways/<id>/config/config.toml`` and the keys and the
database in ``<root>/gateways/<id>/data/``. Unknown keys are refused (as
nym's ``deny_unknown_fields`` did), so a typo never silently means a default.
"""

import os

import attrs

from nymtx import config as shared
from nymtx.config import ConfigError, ConfigFileError, Key, Section
from nymtx.paths import node_dir, write_atomically
from nymtx.reliable.retransmit import GATEWAY_ACK_HOLD
from nymtx.trust.rotation import rotation_interval

__all__ = ["ConfigError", "GatewayConfig", "load", "parse", "save", "validate"]

DEFAULT_MIX_PORT = 1789
DEFAULT_CLIENTS_PORT = 9000


@attrs.frozen
class GatewayConfig:
    id: str
    listening_host: str = "0.0.0.0"
    mix_port: int = DEFAULT_MIX_PORT
    clients_port: int = DEFAULT_CLIENTS_PORT
    announce_host: str = "127.0.0.1"
    directory: str = "http://127.0.0.1:8080"
    location: str = "unknown"
    quota_messages: int = 20_000
    quota_bytes: int = 20_000_000
    commit_interval_ms: int = 0
    commit_batch: int = 512
    ack_delay_ms: int = round(GATEWAY_ACK_HOLD * 1000)
    message_retrieval_limit: int = 100
    max_clients: int = 1000
    presence_sending_delay_ms: int = 1500
    #: docs/decisions.md, "Sphinx key rotation": a day, as nym's epochs
    sphinx_key_rotation_hours: int = 24
    sphinx_key_rotation_ms: int = 0
    more_directories: tuple = ()
    directory_keys: tuple = ()
    directory_threshold: int = 0
    mix_max_connections: int = 1024
    mix_idle_timeout_ms: int = 300_000
    client_max_connections: int = 10_000
    client_handshake_timeout_ms: int = 30_000
    client_idle_timeout_ms: int = 300_000
    registration_idle_hours: int = 168
    registration_per_source_burst: int = 3
    registration_per_source_interval: float = 600.0
    registration_total_burst: int = 20
    registration_total_interval: float = 10.0
    log_level: str = shared.DEFAULT_LOG_LEVEL

    def __attrs_post_init__(self):
        # every construction is checked, not only a file read through parse()
        for field, (where, check) in _KEYS.items():
            check(getattr(self, field), where)

    @property
    def rotation_interval(self):
        """Nanoseconds each Sphinx key is used; 0: it never rotates."""
        return rotation_interval(self.sphinx_key_rotation_hours, self.sphinx_key_rotation_ms)

    def mix_endpoint(self):
        return _endpoint(self.mix_port, self.listening_host)

    def client_endpoint(self):
        return _endpoint(self.clients_port, self.listening_host)

    def to_toml(self):
        return shared.render(LAYOUT, attrs.asdict(self), HEADER)


def _endpoint(port, host):
    return f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"


def _directory_list(value, name):
    return _trust("directory_list", value, name)


def _trust(check, value, name):
    from nymtx.trust import wiring
    return getattr(wiring, check)(value, name)


def _location(value, name):
    return shared.text(value, name)


#: sanity bounds: a few extra digits are an error naming the key
_MAX_IDLE_HOURS = 24 * 366
_MAX_INTERVAL = 7 * 86400.0
_MAX_BURST = 1_000_000
#: a minute: the hold is meant to be far longer than a commit and far
#: shorter than a client's ack wait
_MAX_ACK_DELAY_MS = 60_000


def _rotation_hours(value, name):
    return shared.whole_number(value, name, low=0, high=_MAX_IDLE_HOURS,
                               what="a whole number of hours")


def _idle_hours(value, name):
    return shared.delay(value, name, unit="hours", high=_MAX_IDLE_HOURS)


def _interval(value, name):
    return float(shared.seconds(value, name, high=_MAX_INTERVAL))


def _burst(value, name):
    return shared.count(value, name, high=_MAX_BURST)


def _retrieval_limit(value, name):
    from nymtx.gateway.frames import MAX_PULL
    return shared.count(value, name, high=MAX_PULL)


HEADER = """\
nymtx gateway configuration.
Start-up flags of `nym-gateway run` override nothing here but --log-level: edit and restart."""

LAYOUT = (
    Section("gateway", keys=[
        Key("id", shared.identifier, required=True,
            comment="The id names this gateway's directory under <root>/gateways/."),
        Key("location", _location, comment="Free text announced to the directory."),
        Key("sphinx_key_rotation_hours", _rotation_hours, comment=(
            "Hours each Sphinx key is used before the next, announced ahead (docs/trust.md,\n"
            "\"Key rotation\"); 0: the key never rotates. The gateway's first key stays\n"
            "its name (clients' addresses, their connections) and stays accepted.")),
    ]),
    Section("mixnet_endpoint", keys=[
        Key("listening_address", shared.ip_host, field="listening_host", comment=(
            "Where mixnodes deliver Sphinx packets: the address to bind and its port.")),
        Key("port", shared.port, field="mix_port"),
        Key("announce_address", lambda v, n: shared.ip_host(v, n, announce=True),
            field="announce_host", comment=(
                "The IP address other nodes and clients reach this gateway at; it is\n"
                "announced to the directory for both listeners (not 0.0.0.0 or ::).")),
        Key("max_connections", shared.count, field="mix_max_connections", comment=(
            "Mix links open at once; more are closed as soon as accepted. Both\n"
            "listeners' maximums are lowered at start-up (with a warning) if the\n"
            "open-files limit (ulimit -n) cannot hold them.")),
        Key("idle_timeout", shared.delay, field="mix_idle_timeout_ms",
            comment="A mix link that brings no whole packet for this long is closed (ms)."),
    ]),
    Section("clients_endpoint", keys=[
        Key("port", shared.port, field="clients_port", comment=(
            "Clients register, authenticate and pull their mail here (same address).")),
        Key("max_connections", shared.count, field="client_max_connections",
            comment="Client connections open at once (every client keeps one)."),
        Key("handshake_timeout", shared.delay, field="client_handshake_timeout_ms",
            comment="Milliseconds a new connection has to register or authenticate."),
        Key("idle_timeout", shared.delay, field="client_idle_timeout_ms", comment=(
            "An authenticated connection that sends nothing for this long is closed (ms).")),
    ]),
    Section("storage", keys=[
        Key("quota_messages", shared.count, comment=(
            "Per-client quota: messages over it are dropped (and counted) until the\n"
            "client pulls and acknowledges its mail.")),
        Key("quota_bytes", shared.count),
        Key("commit_interval_ms", lambda v, n: shared.delay(v, n, low=0), comment=(
            "Incoming messages are committed in batches: commit_interval_ms after the\n"
            "first (0: at the end of the event-loop turn that brought it) or every\n"
            "commit_batch messages, whichever comes first.")),
        Key("commit_batch", shared.count),
        Key("message_retrieval_limit", _retrieval_limit,
            comment="The most messages one pull returns."),
        Key("max_clients", shared.count, comment=(
            "The most clients registered at once; further keys are refused. The\n"
            "directory refuses a presence document over 64 KiB, which is about 1090\n"
            "registered clients: above that this gateway would leave the topology.")),
    ]),
    Section("reliable", keys=[
        Key("ack_delay_ms", lambda v, n: shared.delay(v, n, low=0, high=_MAX_ACK_DELAY_MS),
            comment=(
                "Every ack this gateway sends is held after its message's commit until an\n"
                "exponential time of this mean (ms) from the packet's release has passed,\n"
                "drop cover's and mail's alike, so that an ack's timing shows neither\n"
                "what it acks nor how long the commit took (docs/surb.md 2.5). Clients\n"
                "cannot read it: their ack wait assumes the default, 50; much more makes\n"
                "their retries spurious. 0: each ack leaves with its commit.")),
    ]),
    Section("admission", comment=(
        "Registrations (docs/gateway-protocol.md, Admission): unused ones expire, and\n"
        "new keys are rate-limited per source address (an IPv4 address, an IPv6 /64)\n"
        "and in total. A key already registered renews for free."), keys=[
        Key("idle_expiry", _idle_hours, field="registration_idle_hours", comment=(
            "Hours without a proven connection after which a registration expires,\n"
            "with its mail.")),
        Key("per_source_burst", _burst, field="registration_per_source_burst",
            comment="New keys one source may register at once ..."),
        Key("per_source_interval", _interval, field="registration_per_source_interval",
            comment="... then one per this many seconds."),
        Key("total_burst", _burst, field="registration_total_burst",
            comment="New keys everyone together may register at once ..."),
        Key("total_interval", _interval, field="registration_total_interval",
            comment="... then one per this many seconds."),
    ]),
    shared.logging_section(),
    Section("debug", keys=[
        Key("presence_directory_server", lambda v, n: shared.url(v, n, empty=True),
            field="directory",
            comment="The directory to announce this gateway to; empty to announce nowhere."),
        Key("presence_directory_servers", lambda v, n: _directory_list(v, n),
            field="more_directories",
            comment="Further directories it announces to as well (a list of URLs), signed."),
        Key("directory_keys", lambda v, n: _trust("directory_keys", v, n), comment=(
            "The directories' keys (base58). When pinned, the mix port admits only the\n"
            "last layer's mixnodes of the topology directory_threshold of them signed\n"
            "(by their keys, on mix links: docs/mix-link.md); [] admits anyone, as the seed did.")),
        Key("directory_threshold", lambda v, n: _trust("directory_threshold", v, n),
            comment="How many of directory_keys must agree; 0: a majority."),
        Key("presence_sending_delay", shared.delay, field="presence_sending_delay_ms",
            comment="Milliseconds between two announcements."),
        Key("sphinx_key_rotation", lambda v, n: shared.delay(v, n, low=0),
            field="sphinx_key_rotation_ms", comment=(
                "Milliseconds each Sphinx key is used, for tests; 0: as\n"
                "[gateway] sphinx_key_rotation_hours says.")),
    ]),
)

_KEYS = {key.attribute: (f"[{section.name}] {key.name}", key.check)
         for section in LAYOUT for key in section.keys}


def validate(**values):
    """A GatewayConfig from keyword values, each checked; ConfigError names the bad one."""
    out = {}
    for field, value in values.items():
        if field not in _KEYS:
            raise ConfigError(f"unknown gateway setting {field!r}")
        where, check = _KEYS[field]
        out[field] = check(value, where)
    if "id" not in out:
        shared.identifier("", _KEYS["id"][0])
    return GatewayConfig(**out)


def parse(text, source="config.toml"):
    """A GatewayConfig from TOML text; ConfigFileError names the file and key."""
    return GatewayConfig(**shared.read(text, LAYOUT, source))


def gateway_dir(node_id, home=None):
    return node_dir("gateways", node_id, root=home)


def config_path(node_id, home=None):
    return gateway_dir(node_id, home) / "config" / "config.toml"


def data_dir(node_id, home=None):
    return gateway_dir(node_id, home) / "data"


def load(node_id, home=None):
    path = config_path(node_id, home)
    text = shared.read_file(
        path, f"gateway {node_id!r}", f"run `nym-gateway init --id {node_id}` first")
    config = parse(text, str(path))
    if config.id != node_id:
        raise ConfigFileError(f"{path}: [gateway] id is {config.id!r}, not {node_id!r}")
    return config


def save(config, home=None):
    path = config_path(config.id, home)
    os.makedirs(path.parent, mode=0o700, exist_ok=True)
    write_atomically(path, config.to_toml(), 0o600)
    return path
