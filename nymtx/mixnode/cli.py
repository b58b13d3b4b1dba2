"""``nym-mixnode init`` and ``nym-mixnode run``."""

import sys
from functools import partial

from twisted.python import usage

from nymtx import cli
from nymtx import config as shared
from nymtx.mixnode import tap
from nymtx.mixnode.config import (
    DEFAULT_DIRECTORY, DEFAULT_HOST, DEFAULT_PORT, LAYERS, check_layer, config_path,
    init_mixnode)
from nymtx.runner import run_service
from nymtx.trust.wiring import pinned_keys

_port = partial(shared.port, allow_zero=False)


class InitOptions(usage.Options):
    synopsis = "--id ID --layer N [--host H] [--port P] [--announce-host H]" \
        " [--announce-port P] [--directory URL] [--directory-keys K1,K2] [--home DIR] [--force]"
    optFlags = [["force", None, "Rewrite the config of an existing id (its keys are kept)."]]
    optParameters = [
        ["id", None, None, "The id of the new mixnode.", cli.coerce(shared.identifier, "--id")],
        ["layer", None, None, "The mix layer: 1, 2 or 3.", cli.coerce(check_layer, "--layer")],
        ["host", None, DEFAULT_HOST, "The IP address to listen on.",
         cli.coerce(shared.ip_host, "--host")],
        ["port", None, DEFAULT_PORT, "The port to listen on.", cli.coerce(_port, "--port")],
        ["announce-host", None, None, "The IP address to announce (default: --host).",
         cli.coerce(shared.ip_host, "--announce-host", announce=True)],
        ["announce-port", None, None, "The port to announce (default: --port)",
         cli.coerce(_port, "--announce-port")],
        ["directory", None, DEFAULT_DIRECTORY,
         "The directory server URL ('' to announce nothing).",
         cli.coerce(shared.url, "--directory", empty=True)],
        ["location", None, "unknown", "Free text shown in the directory."],
        ["home", None, None, "The config root (default: $NYM_HOME or ~/.nym)."],
        ["log-level", None, shared.DEFAULT_LOG_LEVEL,
         "[logging] level written to config.toml.", cli.coerce(shared.log_level, "--log-level")],
        ["directory-keys", None, None,
         "The directories' public keys (base58, comma-separated) to pin ([debug]"
         " directory_keys): signed topologies only, and mix links (docs/deployment.md).",
         cli.coerce(pinned_keys, "--directory-keys")],
    ]

    def postOptions(self):
        if not self["id"]:
            raise usage.UsageError("--id is required")
        if self["layer"] is None:
            raise usage.UsageError(
                f"--layer is required: one of {', '.join(map(str, LAYERS))}")
        if self["announce-host"] is None and self["host"] in ("0.0.0.0", "::"):
            raise usage.UsageError(
                f"listening on {self['host']} needs --announce-host: the address others dial")


class RunOptions(tap.Options):
    pass


class Options(cli.Command):
    name = "nym-mixnode"
    synopsis = "init|run [options]"
    subCommands = [
        ["init", None, InitOptions, "Create keys and config.toml for a new mixnode."],
        ["run", None, RunOptions, "Run an initialised mixnode."],
    ]


def init(sub):
    config = init_mixnode(
        sub["id"], sub["layer"], sub["host"], sub["port"], sub["announce-host"],
        sub["announce-port"], sub["directory"], sub["location"], sub["home"],
        sub["force"], sub["log-level"], directory_keys=sub["directory-keys"] or ())
    keys = config.load_keys()
    identity = config.load_identity()
    print(f"Initialised mixnode {config.id} (layer {config.layer})\n"
          f"  config:      {config_path(config.id, sub['home'])}\n"
          f"  listening:   {config.listening_address}\n"
          f"  announcing:  {config.announce_address}\n"
          f"  public key:  {keys.public_text}\n"
          f"  identity:    {identity.public_text} (for a directory's allow list)\n"
          f"Run it with: nym-mixnode run --id {config.id}")
    return 0


def main(argv=None, reactor=None):
    def action(options):
        sub = options.subOptions
        if options.subCommand == "init":
            return init(sub)
        return run_service(tap.makeService(sub, reactor), reactor,
                           level=cli.log_level(sub, sub.config))
    return cli.run("nym-mixnode", Options(), argv, action)


if __name__ == "__main__":
    sys.exit(main())
