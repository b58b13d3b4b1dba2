"""``python -m nymtx.trust key FOLDER``: a node's or directory's identity key.

Prints the public identity key (base58) of the key pair in FOLDER,
creating the pair (private_identity.key owner-only) if there is none: the
line an operator adds to a directory's allow list, or a client pins.
"""

import argparse
import sys

from nymtx.keys import KeyFormatError
from nymtx.trust.identity import IdentityKey


def main(argv=None, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    parser = argparse.ArgumentParser(prog="python -m nymtx.trust",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    key = commands.add_parser("key", help="print (creating if needed) FOLDER's identity key")
    key.add_argument("folder")
    key.add_argument("--label", default="", help="print an allow-list line with this label")
    args = parser.parse_args(argv)
    try:
        identity = IdentityKey.load_or_generate(args.folder)
    except (KeyFormatError, OSError) as e:
        print(f"error: {e}", file=err)
        return 1
    print(f"{identity.public_text} {args.label}".rstrip(), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
