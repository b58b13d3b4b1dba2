"""The client's config.toml: nym v0.5's keys and layout, validated on load.

nym read its config with serde's ``deny_unknown_fields``; so does this: a
misspelt key is an error naming it rather than a silently ignored setting.
The file holds the gateway auth token, so it is written readable by its
owner only.
"""

import re
from pathlib import Path

import attrs

from nymtx import config as shared
from nymtx.config import ConfigError, ConfigFileError, Key, Section
from nymtx.keys import KeyFormatError, KeyPair, decode_key
from nymtx.message import MAX_MESSAGE_SIZE_V2
from nymtx.paths import node_dir, write_atomically

__all__ = ["ClientConfig", "ConfigError", "DEBUG_DEFAULTS", "is_initialised"]

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

#: [message] keys: sizes in bytes, counts in messages (docs/client.md).
MESSAGE_DEFAULTS = {
    "maximum_message_size": 1 << 20,
    "send_queue_messages": 1000,
    "send_queue_bytes": 16 << 20,
}

#: [reliable] keys (docs/surb.md §3): the retry cap, and the ack wait's
#: multiplier (in percent) and addition (in milliseconds)
RELIABLE_DEFAULTS = {
    "maximum_retransmissions": 5,
    "ack_wait_multiplier": 150,
    "ack_wait_addition": 1500,
    "average_ack_delay": 200,
}
#: more than this many retries per fragment helps an active attacker find the
#: sender's gateway (catshadow #17) far more than it helps delivery
MAX_RETRANSMISSIONS = 20

# Any case on input; nym's spelling in the file and on the config object.
SOCKET_TYPES = {"websocket": "WebSocket", "ws": "WebSocket",
                "tcp": "TCP", "none": "None"}


def parse_socket_type(value, name="socket_type"):
    """'TCP', 'WebSocket' or 'None' from any accepted spelling, in any case."""
    return shared.choice(value, name, SOCKET_TYPES)


# The parse_* functions take a flag's text as well as a number (the Python
# API passes numbers, the command line text).

def parse_port(value, name="listening_port"):
    """A TCP port; 0 asks the system for a free one (tests, the local network)."""
    return shared.from_text(shared.port, value, name)


def parse_delay(value, name):
    """A positive whole number of milliseconds."""
    return shared.from_text(shared.delay, value, name)


def parse_directory(value, name="directory_server"):
    return shared.url(value, name)


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


def parse_api_key(value, name="api_key"):
    """"" (no key: any local program may use the API, as in nym) or a key of at
    least 16 printable ASCII characters that every API connection must show."""
    shared.text(value, name)
    if value and (len(value) < 16 or not value.isascii() or not value.isprintable()
                  or " " in value):
        raise ConfigError(f"{name} must be empty (no key) or at least 16 printable ASCII"
                          " characters without spaces, e.g. the output of"
                          " python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return value


def _gateway_key(value, name):
    shared.text(value, name)
    if value:
        try:
            decode_key(value)
        except KeyFormatError as e:
            raise ConfigError(f"{name}: {e}")
    return value


def _token(value, name):
    shared.text(value, name)
    if value:
        try:
            decode_key(value)
        except KeyFormatError:
            raise ConfigError(f"{name} is not a base58 32-byte token")
    return value


def parse_endpoint(value, name="listening_endpoint"):
    """A server endpoint string for the socket API, or "" for tcp:<listening_port>."""
    if value == "":
        return value
    return shared.endpoint(value, name)


def _trust(check, value, name):
    from nymtx.trust import wiring
    return getattr(wiring, check)(value, name)


def _root(value, name):
    return shared.text(str(value) if isinstance(value, Path) else value, name, empty=False)


LAYOUT = (
    Section("client", comment="main base client config options", keys=[
        Key("id", shared.identifier, required=True,
            comment="Human readable ID of this particular client."),
        Key("directory_server", shared.url, comment=(
            "URL of the directory server the client fetches the network topology from.")),
        Key("directory_servers", lambda v, n: _trust("directory_list", v, n),
            field="more_directories", comment=(
                "Further directories, beside directory_server (a list of URLs). Several\n"
                "directories need their keys pinned in directory_keys.")),
        Key("directory_keys", lambda v, n: _trust("directory_keys", v, n), comment=(
            "The directories' public keys (base58, from their operators: nym-directory\n"
            "logs it, its public_identity.key holds it). With keys pinned the client\n"
            "routes only on a topology signed by directory_threshold of them; [] (the\n"
            "default) trusts the one directory_server unsigned, as nym v0.5 did.")),
        Key("directory_threshold", lambda v, n: _trust("directory_threshold", v, n),
            comment="How many of directory_keys must agree; 0: a majority."),
        Key("private_identity_key_file", shared.text,
            comment="Path to file containing private identity key."),
        Key("public_identity_key_file", shared.text,
            comment="Path to file containing public identity key."),
        Key("provider_id", _gateway_key, comment=(
            "The base58 public key of the gateway (provider) this client registered at.")),
        Key("provider_authtoken", _token,
            comment="The base58 token the gateway gave this client at registration."),
        Key("nym_root_directory", _root, field="root",
            required=True, comment=(
                "nym_home_directory specifies absolute path to the home nym Clients"
                " directory.")),
    ]),
    Section("socket", comment="socket config options", keys=[
        Key("socket_type", parse_socket_type,
            comment="allowed values are 'TCP', 'WebSocket' or 'None' (any case)"),
        Key("listening_port", shared.port, comment=(
            "if applicable (for the case of 'TCP' or 'WebSocket'), the port on which the\n"
            "client will be listening for incoming requests (on 127.0.0.1 only)")),
        Key("listening_endpoint", parse_endpoint, comment=(
            "Instead of listening_port, any server endpoint string, for example\n"
            '"tcp6:9001:interface=\\\\:\\\\:1"; peers not on loopback are refused all the same.\n'
            '"" (the default) uses listening_port.')),
        Key("allowed_origins", parse_origins, comment=(
            "Web pages that may use the websocket API, besides those served from this\n"
            "machine (http(s)://localhost, 127.0.0.1, [::1]) and file:// pages: any\n"
            "page the user's browser opens could otherwise read their mail. For\n"
            'example ["https://chat.example"]; ["*"] lets every page in.')),
        Key("api_key", parse_api_key, comment=(
            "A key every connection to the socket API must show (docs/client.md, \"API\n"
            "key\"); \"\" (the default) lets any program on this machine use it, as nym does.")),
    ]),
    Section("message", comment=(
        "end-to-end message options (docs/message-format.md); sizes in bytes"), keys=[
        Key("maximum_message_size", shared.count, comment=(
            "The longest message this client sends or accepts, in bytes of application\n"
            "data. A message is cut into fragments of 548 bytes, one per packet of the\n"
            "sending stream; a longer one is refused with an error naming both sizes.\n"
            "At most 35913179 (65,535 fragments).")),
        Key("send_queue_messages", shared.count, comment=(
            "Messages that may wait for the sending stream at once; past it a send is\n"
            "refused (the application's backpressure signal), never buffered.")),
        Key("send_queue_bytes", shared.count, comment=(
            "Bytes of messages that may wait for the sending stream at once; at least\n"
            "maximum_message_size + 1.")),
    ]),
    Section("reliable", comment=(
        "acknowledgements and retransmission (docs/surb.md, section 3)"), keys=[
        Key("maximum_retransmissions", lambda v, n: shared.count(v, n, 0, MAX_RETRANSMISSIONS),
            comment=(
                "How many times a fragment whose acknowledgement does not come back is sent\n"
                "again before its message is reported failed (0: never). Each retry is one\n"
                "more chance for an attacker who drops packets to learn where the sender is\n"
                f"(Katzenpost catshadow #17), so at most {MAX_RETRANSMISSIONS}.")),
        Key("ack_wait_multiplier", lambda v, n: shared.count(v, n, 100, 1000), comment=(
            "Percent: a fragment is sent again when its ack has not come back after\n"
            "(the delays drawn for its route and its ack's route) x this / 100 +\n"
            "ack_wait_addition. nym: 150.")),
        Key("ack_wait_addition", lambda v, n: shared.delay(v, n, low=0), comment=(
            "Milliseconds added to the ack wait: the gateways' commit and this client's\n"
            "next fetch (fetch_message_delay) come on top of the hop delays.")),
        Key("average_ack_delay", shared.delay, comment=(
            "The mean delay at each hop of an acknowledgement, in milliseconds.")),
    ]),
    shared.logging_section(
        "logging configuration options: nym-client logs to stderr, twistd to its --logfile"),
    Section("debug", comment=(
        "debug configuration options\n"
        "The following options should not be modified unless you know EXACTLY what\n"
        "you are doing. All values are in milliseconds."), keys=[
        Key("average_packet_delay", shared.delay, comment=(
            "The mean delay at each hop of a packet; each hop's delay is drawn from an\n"
            "exponential distribution with this mean.")),
        Key("loop_cover_traffic_average_delay", shared.delay,
            comment="The mean gap between loop cover packets sent to the client itself."),
        Key("message_sending_average_delay", shared.delay, comment=(
            "The mean gap between packets of the sending stream: a real message when one\n"
            "is queued, else a loop cover packet.")),
        Key("fetch_message_delay", shared.delay,
            comment="How often the client pulls its messages from its gateway."),
        Key("topology_refresh_rate", shared.delay,
            comment="How often the client fetches the network topology from the directory."),
    ]),
)

_HEADER = """\
This is a TOML config file for a nymtx mixnet client.
For more information, see https://github.com/toml-lang/toml
It holds the client's gateway auth token: keep it private (mode 0600)."""

# where each field is in the file, for the messages of the checks below
_WHERE = {key.attribute: f"[{section.name}] {key.name}"
          for section in LAYOUT for key in section.keys}


@attrs.frozen
class ClientConfig:
    """Everything one client needs; ``root`` is nym_root_directory."""

    id: str = attrs.field()
    root: Path = attrs.field(converter=Path)
    directory_server: str = attrs.field(default=DEFAULT_DIRECTORY)
    more_directories: tuple = attrs.field(default=(), converter=tuple)
    directory_keys: tuple = attrs.field(default=(), converter=tuple)
    directory_threshold: int = attrs.field(default=0)
    private_identity_key_file: str = attrs.field(default="")
    public_identity_key_file: str = attrs.field(default="")
    provider_id: str = attrs.field(default="")
    # a secret: kept out of repr, hence out of logs and tracebacks
    provider_authtoken: str = attrs.field(default="", repr=False)
    socket_type: str = attrs.field(default="WebSocket", converter=parse_socket_type)
    listening_port: int = attrs.field(default=DEFAULT_PORT)
    # an endpoint string for the socket API; "" means tcp:<listening_port> on 127.0.0.1
    listening_endpoint: str = attrs.field(default="")
    # web pages (besides this machine's) that may use the websocket API
    allowed_origins: tuple = attrs.field(default=(), converter=tuple)
    # a secret like the token: kept out of repr
    api_key: str = attrs.field(default="", repr=False)
    log_level: str = attrs.field(default=shared.DEFAULT_LOG_LEVEL, converter=shared.log_level)
    average_packet_delay: int = attrs.field(default=DEBUG_DEFAULTS["average_packet_delay"])
    loop_cover_traffic_average_delay: int = attrs.field(
        default=DEBUG_DEFAULTS["loop_cover_traffic_average_delay"])
    message_sending_average_delay: int = attrs.field(
        default=DEBUG_DEFAULTS["message_sending_average_delay"])
    fetch_message_delay: int = attrs.field(default=DEBUG_DEFAULTS["fetch_message_delay"])
    topology_refresh_rate: int = attrs.field(default=DEBUG_DEFAULTS["topology_refresh_rate"])
    maximum_message_size: int = attrs.field(default=MESSAGE_DEFAULTS["maximum_message_size"])
    send_queue_messages: int = attrs.field(default=MESSAGE_DEFAULTS["send_queue_messages"])
    send_queue_bytes: int = attrs.field(default=MESSAGE_DEFAULTS["send_queue_bytes"])
    maximum_retransmissions: int = attrs.field(
        default=RELIABLE_DEFAULTS["maximum_retransmissions"])
    ack_wait_multiplier: int = attrs.field(default=RELIABLE_DEFAULTS["ack_wait_multiplier"])
    ack_wait_addition: int = attrs.field(default=RELIABLE_DEFAULTS["ack_wait_addition"])
    average_ack_delay: int = attrs.field(default=RELIABLE_DEFAULTS["average_ack_delay"])

    def __attrs_post_init__(self):
        # Validate on every construction (load, evolve, flags, the Python
        # API) in one place, with the checks the file is read with.
        for section in LAYOUT:
            for key in section.keys:
                key.check(getattr(self, key.attribute), _WHERE[key.attribute])
        # one fragment set of version 2 holds at most 65,535 fragments (a u16
        # count, docs/message-format.md "Maximum size"), so no longer message
        # can be sent or received whatever is configured
        if self.maximum_message_size > MAX_MESSAGE_SIZE_V2:
            raise ConfigError(
                f"[message] maximum_message_size ({self.maximum_message_size}) must be at"
                f" most {MAX_MESSAGE_SIZE_V2}: the longest message one fragment set can"
                " carry (65,535 fragments of 548 bytes, less the kind byte)")
        # the queue must hold one largest message (framed: one kind byte more)
        if self.send_queue_bytes < self.maximum_message_size + 1:
            raise ConfigError(
                f"[message] send_queue_bytes ({self.send_queue_bytes}) must be at least"
                f" [message] maximum_message_size + 1 ({self.maximum_message_size + 1}):"
                " the queue must hold one largest message")
        urls = 1 + len([u for u in self.more_directories if u != self.directory_server])
        if urls > 1 and not self.directory_keys:
            raise ConfigError(f"{_WHERE['more_directories']}: several directories need their"
                              f" keys pinned in {_WHERE['directory_keys']}: a client cannot"
                              " tell which of them to believe otherwise")
        if self.directory_threshold > len(self.directory_keys):
            raise ConfigError(f"{_WHERE['directory_threshold']} {self.directory_threshold} is"
                              f" more than the {len(self.directory_keys)} directory_keys")
        threshold = self.directory_threshold or len(self.directory_keys) // 2 + 1
        if self.directory_keys and threshold > urls:
            raise ConfigError(f"{_WHERE['directory_threshold']}: {threshold} directories must"
                              f" agree, but {urls} are given")

    @property
    def directory_urls(self):
        """directory_server, then the further ones."""
        from nymtx.trust.wiring import all_directories
        return all_directories(self.directory_server, self.more_directories)

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
    def outbox_path(self):
        """The durable send queue and reply blocks (docs/surb.md §4)."""
        return self.data_dir / "outbox.sqlite"

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
        return shared.render(LAYOUT, attrs.asdict(self, recurse=False), _HEADER)

    def save(self, path=None):
        """Write config.toml atomically, mode 0600 (it holds the auth token)."""
        path = Path(path or self.config_path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(path, self.to_toml(), 0o600)

    @classmethod
    def from_toml(cls, text, source="config.toml"):
        values = shared.read(text, LAYOUT, source)
        try:
            return cls(**values)
        except ConfigError as e:
            raise ConfigFileError(f"{source}: {e}")

    @classmethod
    def load(cls, root, client_id):
        """The saved config of *client_id*; ConfigError if missing or bad."""
        try:
            path = node_dir("clients", client_id, root) / "config" / "config.toml"
        except ValueError as e:
            raise ConfigError(str(e))
        config = cls.from_toml(shared.read_file(path, f"client {client_id!r}"), str(path))
        if config.id != client_id:
            raise ConfigFileError(f"{path} is for client {config.id!r}, not {client_id!r}")
        return config


def is_initialised(root, client_id):
    try:
        return (node_dir("clients", client_id, root) / "config" / "config.toml").exists()
    except ValueError as e:
        raise ConfigError(str(e))
