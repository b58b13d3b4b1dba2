"""The gateway's config.toml: a commented template, read back with every value checked.

Layout: ``<root>/gateways/<id>/config/config.toml`` and the keys and the
database in ``<root>/gateways/<id>/data/``. Unknown keys are refused (as
nym's ``deny_unknown_fields`` did), so a typo never silently means a default.
"""

import ipaddress
import os

import attrs
import tomlkit
from tomlkit.exceptions import TOMLKitError

from nymtx.paths import check_id, node_dir, write_atomically

DEFAULT_MIX_PORT = 1789
DEFAULT_CLIENTS_PORT = 9000


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names it."""


def _ip(text, name):
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not an IPv4 or IPv6 address")


def _port(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
        raise ConfigError(f"{name}: {value!r} is not a port number (0-65535)")
    return value


def _positive(value, name, kind=int):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) \
            or value <= 0:
        raise ConfigError(f"{name}: {value!r} must be a positive {kind.__name__}")
    return value


def _non_negative(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name}: {value!r} must be a whole number, 0 or more")
    return value


def _url(value, name):
    if value == "":
        return ""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}: {value!r} must be an http:// or https:// URL, or empty")
    return value


def _check(validator, name):
    def check(instance, attribute, value):
        validator(value, name)
    return check


@attrs.frozen
class GatewayConfig:
    id: str
    listening_host: str = "0.0.0.0"
    mix_port: int = DEFAULT_MIX_PORT
    clients_port: int = DEFAULT_CLIENTS_PORT
    announce_host: str = "127.0.0.1"
    directory: str = "http://127.0.0.1:8080"
    location: str = "unknown"
    quota_messages: int = 1000
    quota_bytes: int = 1_000_000
    commit_interval_ms: int = 0
    commit_batch: int = 512
    message_retrieval_limit: int = 100
    max_clients: int = 1000
    presence_sending_delay_ms: int = 1500
    mix_max_connections: int = 1024
    mix_idle_timeout_ms: int = 300_000
    client_max_connections: int = 10_000
    client_handshake_timeout_ms: int = 30_000
    client_idle_timeout_ms: int = 300_000

    def mix_endpoint(self):
        return _endpoint(self.mix_port, self.listening_host)

    def client_endpoint(self):
        return _endpoint(self.clients_port, self.listening_host)

    def to_toml(self):
        return TEMPLATE.format(
            id=_q(self.id), location=_q(self.location),
            listening_host=_q(self.listening_host), mix_port=self.mix_port,
            announce_host=_q(self.announce_host), clients_port=self.clients_port,
            quota_messages=self.quota_messages, quota_bytes=self.quota_bytes,
            commit_interval_ms=self.commit_interval_ms, commit_batch=self.commit_batch,
            message_retrieval_limit=self.message_retrieval_limit,
            max_clients=self.max_clients,
            directory=_q(self.directory),
            presence_sending_delay_ms=self.presence_sending_delay_ms,
            mix_max_connections=self.mix_max_connections,
            mix_idle_timeout_ms=self.mix_idle_timeout_ms,
            client_max_connections=self.client_max_connections,
            client_handshake_timeout_ms=self.client_handshake_timeout_ms,
            client_idle_timeout_ms=self.client_idle_timeout_ms)


def _q(text):
    return tomlkit.string(text).as_string()


def _endpoint(port, host):
    return f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"


TEMPLATE = """\
# nymtx gateway configuration.
# Start-up flags of `nym-gateway run` override nothing here: edit and restart.

[gateway]
# The id names this gateway's directory under <root>/gateways/.
id = {id}
# Free text announced to the directory.
location = {location}

[mixnet_endpoint]
# Where mixnodes deliver Sphinx packets: the address to bind and its port.
listening_address = {listening_host}
port = {mix_port}
# The IP address other nodes and clients reach this gateway at; it is
# announced to the directory for both listeners.
announce_address = {announce_host}
# Mix links open at once; more are closed as soon as accepted. Both
# listeners' maximums are lowered at start-up (with a warning) if the
# open-files limit (ulimit -n) cannot hold them.
max_connections = {mix_max_connections}
# A mix link that brings no whole packet for this long is closed (ms).
idle_timeout = {mix_idle_timeout_ms}

[clients_endpoint]
# Clients register, authenticate and pull their mail here (same address).
port = {clients_port}
# Client connections open at once (every client keeps one).
max_connections = {client_max_connections}
# Milliseconds a new connection has to register or authenticate.
handshake_timeout = {client_handshake_timeout_ms}
# An authenticated connection that sends nothing for this long is closed (ms).
idle_timeout = {client_idle_timeout_ms}

[storage]
# Per-client quota: messages over it are dropped (and counted) until the
# client pulls and acknowledges its mail.
quota_messages = {quota_messages}
quota_bytes = {quota_bytes}
# Incoming messages are committed in batches: commit_interval_ms after the
# first (0: at the end of the event-loop turn that brought it) or every
# commit_batch messages, whichever comes first.
commit_interval_ms = {commit_interval_ms}
commit_batch = {commit_batch}
# The most messages one pull returns.
message_retrieval_limit = {message_retrieval_limit}
# The most clients registered at once; further keys are refused. The
# directory refuses a presence document over 64 KiB, which is about 1090
# registered clients: above that this gateway would leave the topology.
max_clients = {max_clients}

[debug]
# The directory to announce this gateway to; empty to announce nowhere.
presence_directory_server = {directory}
# Milliseconds between two announcements.
presence_sending_delay = {presence_sending_delay_ms}
"""

# (section, key) -> (field, validator)
_KEYS = {
    ("gateway", "id"): ("id", lambda v, n: _string(v, n)),
    ("gateway", "location"): ("location", lambda v, n: _string(v, n)),
    ("mixnet_endpoint", "listening_address"): ("listening_host", _ip),
    ("mixnet_endpoint", "port"): ("mix_port", _port),
    ("mixnet_endpoint", "announce_address"): ("announce_host", _ip),
    ("mixnet_endpoint", "max_connections"): ("mix_max_connections", _positive),
    ("mixnet_endpoint", "idle_timeout"): ("mix_idle_timeout_ms", _positive),
    ("clients_endpoint", "port"): ("clients_port", _port),
    ("clients_endpoint", "max_connections"): ("client_max_connections", _positive),
    ("clients_endpoint", "handshake_timeout"): ("client_handshake_timeout_ms", _positive),
    ("clients_endpoint", "idle_timeout"): ("client_idle_timeout_ms", _positive),
    ("storage", "quota_messages"): ("quota_messages", _positive),
    ("storage", "quota_bytes"): ("quota_bytes", _positive),
    ("storage", "commit_interval_ms"): ("commit_interval_ms", _non_negative),
    ("storage", "commit_batch"): ("commit_batch", _positive),
    ("storage", "message_retrieval_limit"): ("message_retrieval_limit", _positive),
    ("storage", "max_clients"): ("max_clients", _positive),
    ("debug", "presence_directory_server"): ("directory", _url),
    ("debug", "presence_sending_delay"): ("presence_sending_delay_ms", _positive),
}


def _string(value, name):
    if not isinstance(value, str):
        raise ConfigError(f"{name}: {value!r} must be a string")
    return str(value)


def validate(**values):
    """A GatewayConfig from keyword values, each checked; ConfigError names the bad one."""
    names = {field: f"{section}.{key}" for (section, key), (field, _) in _KEYS.items()}
    checks = {field: check for (_, (field, check)) in _KEYS.items()}
    out = {}
    for field, value in values.items():
        out[field] = checks[field](value, names[field])
    try:
        check_id(out.get("id", ""))
    except ValueError as e:
        raise ConfigError(f"gateway.id: {e}")
    from nymtx.gateway.frames import MAX_PULL
    if out.get("message_retrieval_limit", 1) > MAX_PULL:
        raise ConfigError(f"storage.message_retrieval_limit: at most {MAX_PULL}")
    return GatewayConfig(**out)


def parse(text, source="config.toml"):
    """A GatewayConfig from TOML text; ConfigError names the file and key."""
    try:
        doc = tomlkit.parse(text).unwrap()
    except TOMLKitError as e:
        raise ConfigError(f"{source} is not valid TOML: {e}")
    values = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {section!r} must be a [section]")
        for key, value in table.items():
            if (section, key) not in _KEYS:
                raise ConfigError(f"{source}: unknown key {section}.{key}")
            values[_KEYS[(section, key)][0]] = value
    if "id" not in values:
        raise ConfigError(f"{source}: gateway.id is missing")
    try:
        return validate(**values)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}")


def gateway_dir(node_id, home=None):
    return node_dir("gateways", node_id, root=home)


def config_path(node_id, home=None):
    return gateway_dir(node_id, home) / "config" / "config.toml"


def data_dir(node_id, home=None):
    return gateway_dir(node_id, home) / "data"


def load(node_id, home=None):
    path = config_path(node_id, home)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"gateway {node_id!r} is not initialised ({path} does not exist):"
            f" run `nym-gateway init --id {node_id}` first")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}")
    config = parse(text, str(path))
    if config.id != node_id:
        raise ConfigError(f"{path}: gateway.id is {config.id!r}, not {node_id!r}")
    return config


def save(config, home=None):
    path = config_path(config.id, home)
    os.makedirs(path.parent, mode=0o700, exist_ok=True)
    write_atomically(path, config.to_toml(), 0o600)
    return path
