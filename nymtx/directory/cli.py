"""``nym-directory``: the twistd plugin's service, in the foreground."""

import sys

from nymtx import cli
from nymtx.directory.tap import Options, makeService
from nymtx.runner import run_service


def main(argv=None, reactor=None):
    def action(options):
        return run_service(makeService(options, reactor), reactor,
                           level=cli.log_level(options))
    return cli.run("nym-directory", Options(), argv, action)


if __name__ == "__main__":
    sys.exit(main())
