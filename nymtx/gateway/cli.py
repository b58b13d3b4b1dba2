"""``nym-gateway init`` and ``nym-gateway run``."""

import sys

from twisted.python import usage

from nymtx import cli
from nymtx import config as shared
from nymtx.gateway import config as C, tap
from nymtx.keys import KeyPair
from nymtx.runner import run_service
from nymtx.trust.wiring import pinned_keys


class InitOptions(usage.Options):
    synopsis = "--id ID [--host IP] [--announce-host IP] [--mix-port P]" \
        " [--clients-port P] [--directory URL] [--directory-keys K1,K2] [--location TEXT]" \
        " [--home DIR]"
    optParameters = [
        ["id", None, None, "The id of the new gateway.", cli.coerce(shared.identifier, "--id")],
        ["home", None, None, "The config root (default $NYM_HOME or ~/.nym)."],
        ["mix-port", None, C.DEFAULT_MIX_PORT, "The port mixnodes deliver to.",
         cli.coerce(shared.port, "--mix-port")],
        ["clients-port", None, C.DEFAULT_CLIENTS_PORT, "The port clients connect to.",
         cli.coerce(shared.port, "--clients-port")],
        ["host", None, "0.0.0.0", "The IP address to listen on.",
         cli.coerce(shared.ip_host, "--host")],
        ["announce-host", None, None,
         "The IP address announced to the directory (default: --host, or 127.0.0.1"
         " when listening on every address).",
         cli.coerce(shared.ip_host, "--announce-host", announce=True)],
        ["directory", None, "http://127.0.0.1:8080",
         "The directory URL; empty to announce nowhere.",
         cli.coerce(shared.url, "--directory", empty=True)],
        ["location", None, "unknown", "Free text announced to the directory."],
        ["log-level", None, shared.DEFAULT_LOG_LEVEL,
         "[logging] level written to config.toml.", cli.coerce(shared.log_level, "--log-level")],
        ["directory-keys", None, None,
         "The directories' public keys (base58, comma-separated) to pin ([debug]"
         " directory_keys): signed topologies only, and mix links (docs/deployment.md).",
         cli.coerce(pinned_keys, "--directory-keys")],
    ]

    def postOptions(self):
        if not self["id"]:
            raise usage.UsageError("--id is required (the new gateway's name)")
        host = self["host"]
        announce = self["announce-host"] or (
            "127.0.0.1" if host in ("0.0.0.0", "::") else host)
        self["config"] = C.validate(
            id=self["id"], listening_host=host, announce_host=announce,
            mix_port=self["mix-port"], clients_port=self["clients-port"],
            directory=self["directory"], location=self["location"],
            log_level=self["log-level"], directory_keys=self["directory-keys"] or ())


class RunOptions(tap.Options):
    pass


class Options(cli.Command):
    name = "nym-gateway"
    synopsis = "init|run --id ID [options]"
    subCommands = [
        ["init", None, InitOptions, "Create keys and config.toml for a new gateway."],
        ["run", None, RunOptions, "Run an initialised gateway."],
    ]


def init(options):
    config = options["config"]
    home = options["home"]
    path = C.config_path(config.id, home)
    if path.exists():
        raise C.ConfigError(
            f"gateway {config.id!r} is already initialised ({path}); edit that file instead")
    keys = KeyPair.generate()
    keys.save(C.data_dir(config.id, home))
    from nymtx.trust.identity import IdentityKey
    identity = IdentityKey.load_or_generate(str(C.data_dir(config.id, home)))
    C.save(config, home)
    print(f"Initialised gateway {config.id!r}\n"
          f"  config:     {path}\n"
          f"  public key: {keys.public_text}\n"
          f"  identity:   {identity.public_text} (for a directory's allow list)\n"
          f"  mix port {config.mix_port}, client port {config.clients_port},"
          f" announced as {config.announce_host}")
    return 0


def main(argv=None, reactor=None):
    def action(options):
        sub = options.subOptions
        if options.subCommand == "init":
            return init(sub)
        return run_service(tap.makeService(sub, reactor), reactor,
                           level=cli.log_level(sub, sub["config"]))
    return cli.run("nym-gateway", Options(), argv, action)


if __name__ == "__main__":
    sys.exit(main())
