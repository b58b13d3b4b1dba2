"""The client's config.toml: nym v0.5's keys and layout, validated on load.

nym read its config with serde's ``deny_unknown_fields``; so does this: a
misspelt key is an error naming it rather than a silently ignored setting.
The file holds the gateway auth token, so it is written readable by its
owner only.
"""

import re
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import tomlkit
from tomlkit.exceptions import TOMLKitError

from nymtx.keys import KeyFormatError, KeyPair, decode_key
from nymtx.paths import check_id, node_dir, write_atomically

DEFAULT_DIRECTORY = "http://127.0.0.1:8080"
DEFAULT_PORT = 9001

#: [debug] keys in milliseconds, with nym v0.5's defaults.
DEBUG_DEFAULTS = {
    "average_packet_delay": 200,
    "loop_cover_traffic_average_delay": 1000,
    "message_sending_average_delay": 500,
    "fetch_message_delay": 1000,
    "topology_refresh_rate": 10000,
}

_SOCKET_TYPES = {"websocket": "WebSocket", "ws": "WebSocket",
                 "tcp": "TCP", "none": "None"}
_CLIENT_KEYS = ("id", "directory_server", "private_identity_key_file",
                "public_identity_key_file", "provider_id", "provider_authtoken",
                "nym_root_directory")
_SOCKET_KEYS = ("socket_type", "listening_port", "allowed_origins")


class ConfigError(ValueError):
    """A config value, file or flag that cannot be used; the message says why."""


def parse_socket_type(value, name="socket_type"):
    """'TCP', 'WebSocket' or 'None' from any accepted spelling."""
    if not isinstance(value, str) or value.strip().lower() not in _SOCKET_TYPES:
        raise ConfigError(
            f"{name} {value!r} is not allowed: use 'WebSocket' (or 'ws'),"
            " 'TCP' or 'None'")
    return _SOCKET_TYPES[value.strip().lower()]


def parse_port(value, name="listening_port"):
    """A TCP port; 0 asks the system for a free one (tests, the local network)."""
    port = _integer(value, name)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} {port} is out of range: use 0-65535")
    return port


def parse_delay(value, name):
    """A positive number of milliseconds."""
    delay = _integer(value, name)
    if delay <= 0:
        raise ConfigError(f"{name} must be a positive number of milliseconds, not {delay}")
    if delay > 24 * 3600 * 1000:
        raise ConfigError(f"{name} {delay} ms is over a day: use milliseconds")
    return delay


def parse_directory(value, name="directory_server"):
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be an http(s) URL, not {type(value).__name__}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} {value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


_ORIGIN = re.compile(r"\*|[a-z][a-z0-9+.-]*://[^/\s]*")


def parse_origins(value, name="allowed_origins"):
    """A list of web origins, e.g. ["https://app.example:8443"], or ["*"] for any."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a list of origins such as"
                          ' ["https://app.example"] (or ["*"] for any page)')
    origins = []
    for origin in value:
        if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin.strip().lower().rstrip("/")):
            raise ConfigError(f"{name}: {origin!r} is not an origin such as"
                              ' "https://app.example" or "http://localhost:3000" (no path)')
        origins.append(origin.strip().lower().rstrip("/"))
    return tuple(origins)


def _integer(value, name):
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a whole number, not {value!r}")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ConfigError(f"{name} must be a whole number, not {value!r}")


def _text(value, name):
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, not {type(value).__name__}")
    return value


def _gateway_key(value, name):
    if value == "":
        return value
    try:
        decode_key(value)
    except KeyFormatError as e:
        raise ConfigError(f"{name}: {e}")
    return value


@attrs.frozen
class ClientConfig:
    """Everything one client needs; ``root`` is nym_root_directory."""

    id: str = attrs.field()
    root: Path = attrs.field(converter=Path)
    directory_server: str = attrs.field(default=DEFAULT_DIRECTORY)
    private_identity_key_file: str = attrs.field(default="")
    public_identity_key_file: str = attrs.field(default="")
    provider_id: str = attrs.field(default="")
    # a secret: kept out of repr, hence out of logs and tracebacks
    provider_authtoken: str = attrs.field(default="", repr=False)
    socket_type: str = attrs.field(default="WebSocket")
    listening_port: int = attrs.field(default=DEFAULT_PORT)
    # web pages (besides this machine's) that may use the websocket API
    allowed_origins: tuple = attrs.field(default=(), converter=tuple)
    average_packet_delay: int = attrs.field(default=DEBUG_DEFAULTS["average_packet_delay"])
    loop_cover_traffic_average_delay: int = attrs.field(
        default=DEBUG_DEFAULTS["loop_cover_traffic_average_delay"])
    message_sending_average_delay: int = attrs.field(
        default=DEBUG_DEFAULTS["message_sending_average_delay"])
    fetch_message_delay: int = attrs.field(default=DEBUG_DEFAULTS["fetch_message_delay"])
    topology_refresh_rate: int = attrs.field(default=DEBUG_DEFAULTS["topology_refresh_rate"])

    def __attrs_post_init__(self):
        # Validate on every construction (load, evolve, flags) in one place.
        try:
            check_id(self.id)
        except ValueError as e:
            raise ConfigError(str(e))
        parse_directory(self.directory_server)
        for name in ("private_identity_key_file", "public_identity_key_file",
                     "provider_authtoken"):
            _text(getattr(self, name), name)
        _gateway_key(_text(self.provider_id, "provider_id"), "provider_id")
        if self.provider_authtoken:
            try:
                decode_key(self.provider_authtoken)
            except KeyFormatError:
                raise ConfigError("provider_authtoken is not a base58 32-byte token")
        if self.socket_type not in ("WebSocket", "TCP", "None"):
            raise ConfigError(
                f"socket_type {self.socket_type!r} is not allowed:"
                " use 'WebSocket', 'TCP' or 'None'")
        parse_port(self.listening_port)
        parse_origins(self.allowed_origins)
        for name in DEBUG_DEFAULTS:
            parse_delay(getattr(self, name), name)

    @classmethod
    def new(cls, root, client_id, **values):
        """A config for a fresh client, key files in its data directory."""
        data = node_dir("clients", client_id, root) / "data"
        values.setdefault("private_identity_key_file", str(data / "private_identity.key"))
        values.setdefault("public_identity_key_file", str(data / "public_identity.key"))
        return cls(id=client_id, root=root, **values)

    def evolve(self, **changes):
        """A copy with *changes* (flags) applied and validated."""
        return attrs.evolve(self, **changes)

    @property
    def client_dir(self):
        return node_dir("clients", self.id, self.root)

    @property
    def config_path(self):
        return self.client_dir / "config" / "config.toml"

    @property
    def data_dir(self):
        return self.client_dir / "data"

    @property
    def inbox_path(self):
        return self.data_dir / "inbox.sqlite"

    @property
    def gateway_key(self):
        return decode_key(self.provider_id) if self.provider_id else None

    @property
    def token(self):
        return decode_key(self.provider_authtoken) if self.provider_authtoken else None

    def load_keys(self):
        private = Path(self.private_identity_key_file)
        public = Path(self.public_identity_key_file)
        if private.parent != public.parent:
            raise ConfigError("the identity key files must be in one directory")
        try:
            return KeyPair.load(private.parent, private.name, public.name)
        except KeyFormatError as e:
            raise ConfigError(str(e))

    def save_keys(self, keys):
        private = Path(self.private_identity_key_file)
        keys.save(private.parent, private.name, Path(self.public_identity_key_file).name)

    # -- the file -------------------------------------------------------------

    def to_toml(self):
        return _TEMPLATE.format(
            **{name: _quote(getattr(self, name)) for name in _CLIENT_KEYS if name != "nym_root_directory"},
            nym_root_directory=_quote(str(self.root)),
            socket_type=_quote(self.socket_type),
            listening_port=self.listening_port,
            allowed_origins="[" + ", ".join(_quote(o) for o in self.allowed_origins) + "]",
            **{name: getattr(self, name) for name in DEBUG_DEFAULTS})

    def save(self, path=None):
        """Write config.toml atomically, mode 0600 (it holds the auth token)."""
        path = Path(path or self.config_path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(path, self.to_toml(), 0o600)

    @classmethod
    def from_toml(cls, text, source="config.toml"):
        try:
            doc = tomlkit.parse(text).unwrap()
        except (TOMLKitError, ValueError) as e:
            raise ConfigError(f"{source} is not valid TOML: {e}")
        unknown = sorted(set(doc) - {"client", "socket", "debug", "logging"})
        if unknown:
            raise ConfigError(
                f"{source}: unknown section(s) {', '.join(unknown)}; allowed:"
                " [client], [socket], [logging], [debug]")
        values = {}
        for section, allowed in (("client", _CLIENT_KEYS), ("socket", _SOCKET_KEYS),
                                 ("debug", tuple(DEBUG_DEFAULTS)), ("logging", ())):
            table = doc.get(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: [{section}] must be a table")
            extra = sorted(set(table) - set(allowed))
            if extra:
                raise ConfigError(
                    f"{source}: unknown key(s) in [{section}]: {', '.join(extra)}"
                    + (f"; allowed: {', '.join(allowed)}" if allowed else ""))
            values.update(table)
        if "id" not in values:
            raise ConfigError(f"{source}: [client] id is missing")
        root = values.pop("nym_root_directory", None)
        if root is None:
            raise ConfigError(f"{source}: [client] nym_root_directory is missing")
        try:
            _text(root, "nym_root_directory")
            if "socket_type" in values:
                values["socket_type"] = parse_socket_type(values["socket_type"])
            if "listening_port" in values:
                values["listening_port"] = parse_port(values["listening_port"])
            if "allowed_origins" in values:
                values["allowed_origins"] = parse_origins(values["allowed_origins"])
            for name in DEBUG_DEFAULTS:
                if name in values:
                    values[name] = parse_delay(values[name], name)
            return cls(root=root, **values)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}")
        except TypeError as e:  # pragma: no cover - keys are checked above
            raise ConfigError(f"{source}: {e}")

    @classmethod
    def load(cls, root, client_id):
        """The saved config of *client_id*; ConfigError if missing or bad."""
        try:
            path = node_dir("clients", client_id, root) / "config" / "config.toml"
        except ValueError as e:
            raise ConfigError(str(e))
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"client {client_id!r} is not initialised: {path} does not exist")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}")
        config = cls.from_toml(text, str(path))
        if config.id != client_id:
            raise ConfigError(f"{path} is for client {config.id!r}, not {client_id!r}")
        return config


def _quote(value):
    # tomlkit renders a str as a valid TOML basic string, escapes included.
    return tomlkit.string(value).as_string()


def is_initialised(root, client_id):
    try:
        return (node_dir("clients", client_id, root) / "config" / "config.toml").exists()
    except ValueError as e:
        raise ConfigError(str(e))


_TEMPLATE = """\
# This is a TOML config file for a nymtx mixnet client.
# For more information, see https://github.com/toml-lang/toml
# It holds the client's gateway auth token: keep it private (mode 0600).

##### main base client config options #####

[client]
# Human readable ID of this particular client.
id = {id}

# URL of the directory server the client fetches the network topology from.
directory_server = {directory_server}

# Path to file containing private identity key.
private_identity_key_file = {private_identity_key_file}

# Path to file containing public identity key.
public_identity_key_file = {public_identity_key_file}

# The base58 public key of the gateway (provider) this client registered at.
provider_id = {provider_id}

# The base58 token the gateway gave this client at registration.
provider_authtoken = {provider_authtoken}

# nym_home_directory specifies absolute path to the home nym Clients directory.
nym_root_directory = {nym_root_directory}

##### socket config options #####

[socket]
# allowed values are 'TCP', 'WebSocket' or 'None'
socket_type = {socket_type}

# if applicable (for the case of 'TCP' or 'WebSocket'), the port on which the
# client will be listening for incoming requests (on 127.0.0.1 only)
listening_port = {listening_port}

# Web pages that may use the websocket API, besides those served from this
# machine (http(s)://localhost, 127.0.0.1, [::1]) and file:// pages: any
# page the user's browser opens could otherwise read their mail. For
# example ["https://chat.example"]; ["*"] lets every page in.
allowed_origins = {allowed_origins}

##### logging configuration options #####

[logging]

# Nothing to set yet: nym-client logs to stderr, twistd to its --logfile.

##### debug configuration options #####
# The following options should not be modified unless you know EXACTLY what
# you are doing. All values are in milliseconds.

[debug]
# The mean delay at each hop of a packet; each hop's delay is drawn from an
# exponential distribution with this mean.
average_packet_delay = {average_packet_delay}

# The mean gap between loop cover packets sent to the client itself.
loop_cover_traffic_average_delay = {loop_cover_traffic_average_delay}

# The mean gap between packets of the sending stream: a real message when one
# is queued, else a loop cover packet.
message_sending_average_delay = {message_sending_average_delay}

# How often the client pulls its messages from its gateway.
fetch_message_delay = {fetch_message_delay}

# How often the client fetches the network topology from the directory.
topology_refresh_rate = {topology_refresh_rate}
"""
