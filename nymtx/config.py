"""One configuration layer: the validators, the config.toml reader and writer, ConfigError.

Every node's config.toml and every command's flags go through these, so a
value gets the same verdict, with the same message, wherever it is given::

    port(70000, "[socket] listening_port")
    # ConfigError: [socket] listening_port must be a port number from 0 to 65535, not 70000

A validator is ``check(value, name) -> value``: it returns the value it
accepts (normalised: a URL without its trailing ``/``, an IP address in its
short form) and raises ConfigError naming *name* otherwise. Values from a
file keep their TOML type (``port = "9001"`` is refused: the file says what
it means); flags arrive as text and go through :func:`from_text` first.

A node describes its file once, as a list of :class:`Section`; the same
description reads the file (:func:`read`) and writes it (:func:`render`), so
what is written is always what is read back.
"""

import ipaddress
import math
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import tomlkit
from tomlkit.exceptions import TOMLKitError
from twisted.internet.endpoints import serverFromString

from nymtx import logfilter
from nymtx.paths import check_id

DAY_MS = 86_400_000
LOG_LEVELS = logfilter.LEVELS
DEFAULT_LOG_LEVEL = logfilter.DEFAULT_LEVEL


class ConfigError(ValueError):
    """A config value, file or flag that cannot be used; the message names it and says why."""


class ConfigFileError(ConfigError):
    """A config file that is missing or holds what cannot be used; the message names the file.

    Commands tell it from a bad flag: a flag is a usage error (exit 2), a
    file is a failure to do what the command line asked (exit 1).
    """


# -- validators ---------------------------------------------------------------

def _bounds(low, high):
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f", {low} or more"
    if high is not None:
        return f", at most {high}"
    return ""


def _is_int(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) \
        and (low is None or value >= low) and (high is None or value <= high)


def whole_number(value, name, low=None, high=None, what="a whole number"):
    """An int (never a bool, a float or text) within [low, high]."""
    if not _is_int(value, low, high):
        raise ConfigError(f"{name} must be {what}{_bounds(low, high)}, not {_show(value)}")
    return int(value)


def port(value, name, allow_zero=True):
    """A TCP port; 0 (where allowed) asks the system for a free one."""
    return whole_number(value, name, 0 if allow_zero else 1, 65535, "a port number")


def count(value, name, low=1, high=None):
    """A number of things (connections, messages, bytes)."""
    return whole_number(value, name, low, high)


def delay(value, name, unit="milliseconds", low=1, high=DAY_MS):
    """A whole number of *unit* (the unit each key documents), positive unless *low* is 0.

    The upper bound is a sanity bound: a few extra digits are an error naming
    the key, not a node that waits for years.
    """
    if low == 1:
        if not _is_int(value, 1, high):
            raise ConfigError(f"{name} must be a positive whole number of {unit}"
                              f"{_bounds(None, high)}, not {_show(value)}")
        return int(value)
    return whole_number(value, name, low, high, f"a whole number of {unit}")


def seconds(value, name, high=None):
    """A finite, positive number of seconds (a float is fine)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0 and (high is None or value <= high)
    if not ok:
        raise ConfigError(f"{name} must be a positive number of seconds"
                          f"{_bounds(None, high)}, not {_show(value)}")
    return float(value)


def text(value, name, empty=True):
    if not isinstance(value, str) or (not empty and not value):
        raise ConfigError(f"{name} must be {'a' if empty else 'a non-empty'} string,"
                          f" not {_show(value)}")
    return value


def identifier(value, name):
    """A node or client id: it becomes a directory name."""
    try:
        return check_id(value)
    except ValueError as e:
        raise ConfigError(f"{name}: {e}")


def boolean(value, name):
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, not {_show(value)}")
    return value


def choice(value, name, choices):
    """One of *choices* (a dict from lower-case spelling to the canonical value), any case."""
    if isinstance(value, str) and value.strip().lower() in choices:
        return choices[value.strip().lower()]
    shown = ", ".join(repr(c) for c in dict.fromkeys(choices.values()))
    raise ConfigError(f"{name} must be one of {shown}, not {_show(value)}")


def url(value, name, empty=False):
    """An http:// or https:// URL with a host; *empty* lets '' mean "none"."""
    if value == "" and empty:
        return ""
    problem = None
    if not isinstance(value, str):
        problem = True
    else:
        try:
            parts = urlsplit(value)
            parts.port  # raises ValueError for a port out of range
        except ValueError as e:
            problem = str(e)
        else:
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname \
                    or parts.query or parts.fragment \
                    or any(c.isspace() or ord(c) < 32 for c in value):
                problem = True
    if problem:
        raise ConfigError(
            f"{name} must be an http:// or https:// URL such as http://127.0.0.1:8080"
            f"{', or empty' if empty else ''}, not {_show(value)}")
    return value.rstrip("/")


def ip_host(value, name, announce=False):
    """An IPv4 or IPv6 address, as text in its short form.

    An announced address is dialled by others, so 0.0.0.0 and :: (which only
    mean "every local address" to a listener) are refused for it.
    """
    try:
        if not isinstance(value, str):
            raise ValueError
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{name} must be an IPv4 or IPv6 address, not {_show(value)}")
    if announce and address.is_unspecified:
        raise ConfigError(f"{name} {value} cannot be dialled: give the address others reach"
                          " this node at")
    return str(address)


def endpoint(value, name, reactor=None):
    """A server endpoint string (``tcp:9001:interface=127.0.0.1``), parsed, never bound.

    The description is parsed with Twisted's own endpoint parser (plugins
    included); nothing listens until the service starts.
    """
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a server endpoint such as"
                          f" tcp:9001:interface=127.0.0.1, not {_show(value)}")
    try:
        parsed = serverFromString(reactor, value)
    except Exception as e:
        raise ConfigError(f"{name} must be a server endpoint such as"
                          f" tcp:9001:interface=127.0.0.1, not {value!r}: {e}")
    # Twisted's parser takes any integer as a TCP port and the error comes
    # only at bind time; the TCP and SSL endpoints keep it as _port
    bound = getattr(parsed, "_port", None)
    if isinstance(bound, int) and not 0 <= bound <= 65535:
        raise ConfigError(f"{name}: port {bound} in {value!r} is not a port number (0-65535)")
    return value


def log_level(value, name="log level"):
    """debug, info, warn, error or critical (any case; 'warning' is warn)."""
    return choice(value, name, {**{level: level for level in LOG_LEVELS}, "warning": "warn"})


def from_text(check, text_value, name, **kwargs):
    """Run *check* on a flag's text: digits become a number first, other text stays text."""
    value = text_value
    if isinstance(value, str):
        stripped = value.strip()
        try:
            value = int(stripped)
        except ValueError:
            try:
                number = float(stripped)
            except ValueError:
                pass
            else:
                # 'nan', 'inf' and '1e3' are numbers to float(); only a real
                # decimal such as 1.5 is taken for one
                if any(c.isdigit() for c in stripped) and stripped.lower() not in (
                        "nan", "inf", "-inf", "infinity"):
                    value = number
    return check(value, name, **kwargs)


def _show(value):
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


# -- config.toml ----------------------------------------------------------------

@attrs.frozen
class Key:
    """One key of a section: what it is called in the file and on the config object."""

    name: str
    check: object                  # check(value, name) -> value
    field: str = None              # the config attribute; default: the key's name
    comment: str = ""              # written above the key; lines split on \n
    required: bool = False
    dump: object = None            # value -> what TOML holds (e.g. NodeAddress -> str)

    @property
    def attribute(self):
        return self.field or self.name


@attrs.frozen
class Section:
    name: str
    keys: tuple = attrs.field(converter=tuple)
    comment: str = ""              # written above the [section] line


def read(text, sections, source="config.toml"):
    """{field: value} from TOML *text* laid out as *sections*, every value checked.

    Unknown sections and keys are refused (as nym's ``deny_unknown_fields``
    did), so a typo never silently means a default. Absent optional keys are
    absent from the result: the caller's defaults apply. Every error is a
    ConfigFileError that starts with *source*.
    """
    try:
        doc = tomlkit.parse(text).unwrap()
    except (TOMLKitError, ValueError) as e:
        raise ConfigFileError(f"{source} is not valid TOML: {e}")
    layout = {section.name: section for section in sections}
    unknown = [name for name in doc if name not in layout]
    if unknown:
        raise ConfigFileError(
            f"{source}: unknown section [{unknown[0]}]; allowed: "
            + ", ".join(f"[{name}]" for name in layout))
    values = {}
    for section in sections:
        table = doc.get(section.name, {})
        if not isinstance(table, dict):
            raise ConfigFileError(f"{source}: {section.name} must be a [{section.name}] table")
        keys = {key.name: key for key in section.keys}
        extra = [name for name in table if name not in keys]
        if extra:
            raise ConfigFileError(
                f"{source}: unknown key {extra[0]!r} in [{section.name}]; allowed: "
                + ", ".join(keys))
        for key in section.keys:
            where = f"[{section.name}] {key.name}"
            if key.name not in table:
                if key.required:
                    raise ConfigFileError(f"{source}: {where} is missing")
                continue
            try:
                values[key.attribute] = key.check(table[key.name], where)
            except ConfigError as e:
                raise ConfigFileError(f"{source}: {e}")
    return values


def render(sections, values, header=""):
    """The TOML text of *values* ({field: value}) laid out as *sections*, commented."""
    doc = tomlkit.document()
    for line in _lines(header):
        doc.add(tomlkit.comment(line))
    for section in sections:
        doc.add(tomlkit.nl())
        for line in _lines(section.comment):
            doc.add(tomlkit.comment(line))
        table = tomlkit.table()
        for i, key in enumerate(section.keys):
            if i and key.comment:
                table.add(tomlkit.nl())
            for line in _lines(key.comment):
                table.add(tomlkit.comment(line))
            value = values[key.attribute]
            if key.dump is not None:
                value = key.dump(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Path):
                value = str(value)
            table.add(key.name, value)
        doc.add(section.name, table)
    return tomlkit.dumps(doc)


def _lines(comment):
    return comment.split("\n") if comment else []


def read_file(path, what, hint=""):
    """The text of config file *path*; ConfigFileError if it is missing or unreadable.

    *what* is what the file belongs to ("gateway 'G1'"), *hint* what to do
    when it does not exist yet.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{what} is not initialised: {path} does not exist"
                              + (f"; {hint}" if hint else ""))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"cannot read {path}: {e}")


def logging_section(comment=""):
    """The [logging] section every config.toml has, with its one key."""
    return Section("logging", comment=comment, keys=[Key(
        "level", log_level, field="log_level", comment=(
            f"Events at this level and above are logged: one of {', '.join(LOG_LEVELS)}.\n"
            "The --log-level flag overrides it."))])
