"""``nym-mixnode init`` and ``nym-mixnode run``."""

import sys

from twisted.python import usage

from nymtx.mixnode import tap
from nymtx.mixnode.config import (
    DEFAULT_DIRECTORY, DEFAULT_HOST, DEFAULT_PORT, LAYERS, ConfigError, config_path,
    init_mixnode)
from nymtx.runner import run_service


def _port(flag):
    def parse(text):
        if not text.isdigit() or not 0 < int(text) < 65536:
            # UsageError, not ValueError: twisted.python.usage would prefix
            # "Parameter type enforcement failed:" to the message
            raise usage.UsageError(f"{flag} must be a number from 1 to 65535, not {text!r}")
        return int(text)
    parse.coerceDoc = "A port, 1-65535."
    return parse


def _layer(text):
    if text not in {str(n) for n in LAYERS}:
        raise usage.UsageError(f"--layer must be one of {', '.join(map(str, LAYERS))}, not {text!r}")
    return int(text)


class InitOptions(usage.Options):
    synopsis = "--id ID --layer N [--host H] [--port P] [--announce-host H]" \
        " [--announce-port P] [--directory URL] [--home DIR] [--force]"
    optFlags = [["force", None, "Rewrite the config of an existing id (its keys are kept)."]]
    optParameters = [
        ["id", None, None, "The id of the new mixnode."],
        ["layer", None, None, "The mix layer: 1, 2 or 3.", _layer],
        ["host", None, DEFAULT_HOST, "The IP address to listen on."],
        ["port", None, DEFAULT_PORT, "The port to listen on.", _port("--port")],
        ["announce-host", None, None, "The IP address to announce (default: --host)."],
        ["announce-port", None, None, "The port to announce (default: --port)",
         _port("--announce-port")],
        ["directory", None, DEFAULT_DIRECTORY,
         "The directory server URL ('' to announce nothing)."],
        ["location", None, "unknown", "Free text shown in the directory."],
        ["home", None, None, "The config root (default: $NYM_HOME or ~/.nym)."],
    ]

    def postOptions(self):
        if not self["id"]:
            raise usage.UsageError("--id is required")
        if self["layer"] is None:
            raise usage.UsageError(
                f"--layer is required: one of {', '.join(map(str, LAYERS))}")


class RunOptions(tap.Options):
    pass


class Options(usage.Options):
    synopsis = "init|run [options]"
    subCommands = [
        ["init", None, InitOptions, "Create keys and config.toml for a new mixnode."],
        ["run", None, RunOptions, "Run an initialised mixnode."],
    ]

    def getSynopsis(self):
        # A subcommand's --help prints this, then the subcommand and its synopsis.
        if self.subCommand is not None:
            return "Usage: nym-mixnode"
        return f"Usage: nym-mixnode {self.synopsis}"

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("say 'init' or 'run'")


def main(argv=None, reactor=None):
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"nym-mixnode: error: {e}\nusage: nym-mixnode {Options.synopsis}\n"
              "Try 'nym-mixnode --help' or 'nym-mixnode init --help' for more.",
              file=sys.stderr)
        return 1
    sub = options.subOptions
    if options.subCommand == "init":
        try:
            config = init_mixnode(
                sub["id"], sub["layer"], sub["host"], sub["port"], sub["announce-host"],
                sub["announce-port"], sub["directory"], sub["location"], sub["home"],
                sub["force"])
        except ConfigError as e:
            print(f"nym-mixnode: error: {e}", file=sys.stderr)
            return 1
        keys = config.load_keys()
        print(f"Initialised mixnode {config.id} (layer {config.layer})\n"
              f"  config:      {config_path(config.id, sub['home'])}\n"
              f"  listening:   {config.listening_address}\n"
              f"  announcing:  {config.announce_address}\n"
              f"  public key:  {keys.public_text}\n"
              f"Run it with: nym-mixnode run --id {config.id}")
        return 0
    return run_service(tap.makeService(sub, reactor), reactor)


if __name__ == "__main__":
    sys.exit(main())
