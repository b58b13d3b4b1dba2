"""``nym-gateway init`` and ``nym-gateway run``."""

import argparse
import sys

from twisted.python import usage

from nymtx.gateway import config as C
from nymtx.keys import KeyPair
from nymtx.runner import run_service


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse exits with 2 on its own; nym-* commands exit 1 on bad flags
        raise usage.UsageError(message)


def _parser():
    parser = _Parser(prog="nym-gateway", description="A nymtx store-and-forward gateway.")
    commands = parser.add_subparsers(dest="command", metavar="{init,run}")
    commands.required = True
    init = commands.add_parser("init", help="create keys and config.toml for a new gateway")
    init.add_argument("--id", required=True)
    init.add_argument("--home", help="config root (default $NYM_HOME or ~/.nym)")
    init.add_argument("--mix-port", type=_int("--mix-port"), default=C.DEFAULT_MIX_PORT)
    init.add_argument("--clients-port", type=_int("--clients-port"),
                      default=C.DEFAULT_CLIENTS_PORT)
    init.add_argument("--host", default="0.0.0.0", help="address to listen on")
    init.add_argument("--announce-host",
                      help="address announced to the directory (default: --host,"
                           " or 127.0.0.1 when listening on every address)")
    init.add_argument("--directory", default="http://127.0.0.1:8080",
                      help="directory URL; empty to announce nowhere")
    init.add_argument("--location", default="unknown")
    run = commands.add_parser("run", help="run an initialised gateway")
    run.add_argument("--id", required=True)
    run.add_argument("--home", help="config root (default $NYM_HOME or ~/.nym)")
    return parser


def _int(flag):
    def convert(text):
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return convert


def init(args):
    host = args.host
    announce = args.announce_host or (
        "127.0.0.1" if host in ("0.0.0.0", "::") else host)
    flags = {"--host": ("listening_host", host), "--announce-host": ("announce_host", announce),
             "--mix-port": ("mix_port", args.mix_port),
             "--clients-port": ("clients_port", args.clients_port),
             "--directory": ("directory", args.directory), "--location": ("location", args.location)}
    try:
        C.validate(id=args.id)
    except C.ConfigError as e:
        raise usage.UsageError(f"--id: {e}")
    values = {"id": args.id}
    for flag, (field, value) in flags.items():
        try:
            C.validate(id=args.id, **{field: value})
        except C.ConfigError as e:
            raise usage.UsageError(f"{flag}: {e}")
        values[field] = value
    config = C.validate(**values)
    path = C.config_path(args.id, args.home)
    if path.exists():
        raise usage.UsageError(
            f"gateway {args.id!r} is already initialised ({path}); edit that file instead")
    keys = KeyPair.generate()
    keys.save(C.data_dir(args.id, args.home))
    C.save(config, args.home)
    print(f"Initialised gateway {args.id!r}\n"
          f"  config:     {path}\n"
          f"  public key: {keys.public_text}\n"
          f"  mix port {config.mix_port}, client port {config.clients_port},"
          f" announced as {config.announce_host}")
    return 0


def run(args, reactor=None):
    from nymtx.gateway.tap import Options, makeService
    options = Options()
    argv = ["--id", args.id] + (["--home", args.home] if args.home else [])
    options.parseOptions(argv)
    return run_service(makeService(options, reactor), reactor)


def main(argv=None, reactor=None):
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
        if args.command == "init":
            return init(args)
        return run(args, reactor)
    except (usage.UsageError, ValueError) as e:
        print(f"nym-gateway: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
