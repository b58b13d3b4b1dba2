"""``python -m nymtx.trust key FOLDER``: a node's or directory's identity key.

Prints the public identity key (base58) of the key pair in FOLDER,
creating the pair (private_identity.key owner-only) if there is none: the
line an operator adds to a directory's allow list, or a client pins.
"""

import getopt
import sys

from twisted.python import usage

from nymtx import cli
from nymtx.keys import KeyFormatError
from nymtx.trust.identity import IdentityKey


class KeyOptions(usage.Options):
    """Flags of ``key``: the folder, and an optional allow-list label."""

    synopsis = "FOLDER [--label LABEL]"
    optParameters = [["label", None, "", "print an allow-list line with this label"]]

    def parseOptions(self, options=None):
        # --label may come after the folder, as it could when this command
        # was on argparse: gather the flags first (twisted's getopt stops at
        # the first argument that is not one)
        options = sys.argv[1:] if options is None else list(options)
        try:
            flags, args = getopt.gnu_getopt(options, "", ["help", "version", "label="])
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e))
        super().parseOptions([part for flag in flags for part in flag if part] + ["--"] + args)

    def parseArgs(self, folder=None):
        if not folder:
            raise usage.UsageError("give the FOLDER that holds (or will hold) the key pair")
        self["folder"] = folder


class Options(cli.Command):
    name = "python -m nymtx.trust"
    synopsis = "key FOLDER [--label LABEL]"
    subCommands = [["key", None, KeyOptions,
                    "print (creating if needed) FOLDER's identity key"]]


def main(argv=None, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr

    def action(options):
        sub = options.subOptions
        try:
            identity = IdentityKey.load_or_generate(sub["folder"])
        except (KeyFormatError, OSError) as e:
            print(f"error: {e}", file=err)
            return 1
        print(f"{identity.public_text} {sub['label']}".rstrip(), file=out)
        return 0
    return cli.run("python -m nymtx.trust", Options(), argv, action)


if __name__ == "__main__":
    sys.exit(main())
