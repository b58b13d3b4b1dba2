"""``nym-directory``: the twistd plugin's service, in the foreground."""

import sys

from twisted.python import usage

from nymtx.directory.tap import Options, makeService
from nymtx.runner import run_service


def main(argv=None, reactor=None):
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"nym-directory: error: {e}\n"
              f"usage: nym-directory {Options.synopsis}\n"
              "Try 'nym-directory --help' for more.", file=sys.stderr)
        return 1
    return run_service(makeService(options, reactor), reactor)


if __name__ == "__main__":
    sys.exit(main())
