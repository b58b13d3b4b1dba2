"""``twistd -n nym``: Options and makeService, which only assembles.

makeService gives a ClientLauncher (init if new, then the client and its
API) inside an ExitOnFailure, so that twistd stops with status 1 when the
client cannot start; ``nym-client run`` reports that itself (run_service).
"""

from twisted.python import usage

from nymtx.client.config import DEBUG_DEFAULTS, ClientConfig, ConfigError, \
    is_initialised, parse_delay, parse_directory, parse_port, parse_socket_type
from nymtx.cli import LogLevelOption, usage_error
from nymtx.client.service import ClientLauncher
from nymtx.runner import ExitOnFailure
from nymtx.keys import KeyFormatError, decode_key
from nymtx.paths import check_id, nym_root

_DELAY_FLAGS = [(name.replace("_", "-"), name) for name in DEBUG_DEFAULTS]


class Options(LogLevelOption, usage.Options):
    """Flags of ``nym-client run`` and ``twistd nym``; they override config.toml."""

    optParameters = [
        ["id", None, None, "Id of the client (its directory under <home>/clients/)."],
        ["socket-type", None, None, "websocket, tcp or none (overrides config.toml)."],
        ["port", None, None, "Port of the socket API on 127.0.0.1 (0: any free port)."],
        ["directory", None, None, "URL of the directory server."],
        ["home", None, None, "Config root (default $NYM_HOME or ~/.nym)."],
        ["gateway", None, None, "Gateway key (base58) to register at, if the id is new."],
        ["directories", None, None,
         "Further directory URLs, comma-separated (directory_servers); needs --directory-keys."],
        ["directory-keys", None, None,
         "The directories' public keys (base58, comma-separated) to pin: the client then "
         "routes only on a topology a threshold of them signed."],
        ["directory-threshold", None, None,
         "How many of the pinned directories must agree (default: a majority)."],
    ] + [[flag, None, None, f"[debug] {name} in milliseconds (default {DEBUG_DEFAULTS[name]})."]
         for flag, name in _DELAY_FLAGS]

    def postOptions(self):
        if not self["id"]:
            raise usage.UsageError("--id is required (the client's name, e.g. --id Alice)")
        try:
            check_id(self["id"])
        except ValueError as e:
            raise usage.UsageError(f"--id: {e}")
        try:
            self["overrides"] = overrides_from(self)
            if self["gateway"] is not None:
                try:
                    decode_key(self["gateway"])
                except KeyFormatError as e:
                    raise ConfigError(f"--gateway: {e}")
            self["root"] = nym_root(self["home"])
            # Read config.toml now so that a bad file is a usage error, not a
            # traceback from inside twistd.
            self["config"] = None
            if is_initialised(self["root"], self["id"]):
                self["config"] = ClientConfig.load(
                    self["root"], self["id"]).evolve(**self["overrides"])
        except ConfigError as e:
            raise usage_error(e)


def overrides_from(options):
    """ClientConfig field values from the flags that were given."""
    overrides = {}
    if options["socket-type"] is not None:
        overrides["socket_type"] = parse_socket_type(options["socket-type"], "--socket-type")
    if options["port"] is not None:
        overrides["listening_port"] = parse_port(options["port"], "--port")
    if options["directory"] is not None:
        overrides["directory_server"] = parse_directory(options["directory"], "--directory")
    from nymtx.trust.wiring import (comma_separated, directory_keys, directory_list,
                                    directory_threshold)
    for flag, name, check in (("directories", "more_directories", directory_list),
                              ("directory-keys", "directory_keys", directory_keys)):
        if options[flag] is not None:
            overrides[name] = comma_separated(check, options[flag], f"--{flag}")
    if options["directory-threshold"] is not None:
        overrides["directory_threshold"] = directory_threshold(
            parse_whole(options["directory-threshold"], "--directory-threshold"),
            "--directory-threshold")
    for flag, name in _DELAY_FLAGS:
        if options[flag] is not None:
            overrides[name] = parse_delay(options[flag], f"--{flag}")
    return overrides


def parse_whole(text, name):
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {text!r}")


#: the config fields a new id is initialised with, from the flags
TRUST_FIELDS = ("more_directories", "directory_keys", "directory_threshold")


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    init_options = {}
    if options["gateway"]:
        init_options["gateway"] = options["gateway"]
    debug = {name: v for name, v in options["overrides"].items()
             if name in DEBUG_DEFAULTS or name in TRUST_FIELDS}
    init_options.update(debug)
    launcher = ClientLauncher(reactor, options["root"], options["id"],
                              overrides=options["overrides"], init_options=init_options)
    # under twistd a client that cannot start stops the process, exit status 1
    return ExitOnFailure(launcher, reactor)
