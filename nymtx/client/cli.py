"""``nym-client init`` and ``nym-client run``."""

import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.python import usage

from nymtx import cli
from nymtx.client import tap
from nymtx.client.config import ClientConfig, ConfigError
from nymtx.client.embed import InitError, init_client
from nymtx.paths import check_id, nym_root
from nymtx.runner import run_service, start_logging


class InitOptions(tap.Options):
    """Flags of ``nym-client init``."""

    optFlags = [["force", None, "Overwrite an existing client of this id."]]

    def postOptions(self):
        # init writes the file that run reads: nothing to read yet.
        if not self["id"]:
            raise usage.UsageError("--id is required (the client's name, e.g. --id Alice)")
        try:
            check_id(self["id"])
            self["overrides"] = tap.overrides_from(self)
        except ValueError as e:
            raise usage.UsageError(str(e))
        self["root"] = nym_root(self["home"])


class Options(cli.Command):
    name = "nym-client"
    synopsis = "init|run --id ID [flags]"
    subCommands = [
        ["init", None, InitOptions, "Create keys, register at a gateway, write config.toml."],
        ["run", None, tap.Options, "Run the client (initialising a new id first)."],
    ]


def main(argv=None):
    def action(options):
        sub = options.subOptions
        if options.subCommand == "init":
            return _init(sub)
        return run_service(tap.makeService(sub), level=cli.log_level(sub, sub["config"]))
    return cli.run("nym-client", Options(), argv, action)


def _init(sub):
    start_logging(cli.log_level(sub))
    overrides = sub["overrides"]
    debug = {k: v for k, v in overrides.items()
             if k not in ("socket_type", "listening_port", "directory_server")}
    outcome = {"code": 0}

    async def run(reactor):
        try:
            config = await init_client(
                reactor, sub["root"], sub["id"],
                overrides.get("directory_server",
                              ClientConfig.new(sub["root"], sub["id"]).directory_server),
                socket_type=overrides.get("socket_type", "websocket"),
                port=overrides.get("listening_port", 9001),
                gateway=sub["gateway"], force=sub["force"], **debug)
        except (ConfigError, InitError) as e:
            # the flags were checked before: this is the state (the id
            # exists) or the network, a failure rather than a usage error
            print(f"nym-client: error: {e}", file=sys.stderr)
            outcome["code"] = 1
            return
        if sub["log-level"]:
            config = config.evolve(log_level=sub["log-level"])
            config.save()
        keys = config.load_keys()
        print(f"Saved configuration file to {config.config_path}")
        print(f"Client address: {keys.public_text}")
        print(f"Gateway: {config.provider_id}")

    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        return outcome["code"] or (e.code or 0)
    return outcome["code"]


if __name__ == "__main__":
    sys.exit(main())
