"""``nym-client init`` and ``nym-client run``."""

import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.python import usage

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


class Options(usage.Options):
    synopsis = "nym-client init|run --id ID [flags]"
    subCommands = [
        ["init", None, InitOptions, "Create keys, register at a gateway, write config.toml."],
        ["run", None, tap.Options, "Run the client (initialising a new id first)."],
    ]

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("give a command: init or run")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"nym-client: error: {e}", file=sys.stderr)
        print(f"usage: {options.synopsis} (see nym-client init --help)", file=sys.stderr)
        return 2
    sub = options.subOptions
    if options.subCommand == "init":
        return _init(sub)
    return run_service(tap.makeService(sub))


def _init(sub):
    start_logging()
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
        except ConfigError as e:
            print(f"nym-client: error: {e}", file=sys.stderr)
            outcome["code"] = 2
            return
        except InitError as e:
            print(f"nym-client: error: {e}", file=sys.stderr)
            outcome["code"] = 1
            return
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
