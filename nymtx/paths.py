"""Where nymtx keeps its files: ``$HOME/.nym`` unless told otherwise."""

import os
from pathlib import Path

#: Overrides the root for every command (tests and the local network use it).
ROOT_ENV = "NYM_HOME"


def nym_root(override=None):
    """The config root: *override*, else ``$NYM_HOME``, else ``~/.nym``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".nym"


def node_dir(kind, node_id, root=None):
    """``<root>/<kind>/<id>``, kind being clients, mixnodes or gateways.

    The id becomes a directory name, so it is checked here once for all.
    """
    check_id(node_id)
    return nym_root(root) / kind / node_id


def check_id(node_id):
    if not isinstance(node_id, str):
        # a TOML `id = 5` would otherwise fail inside the check with a TypeError
        raise ValueError(f"invalid id {node_id!r}: an id is text, not {type(node_id).__name__}")
    if not node_id or not all(c.isalnum() or c in "-_." for c in node_id) \
            or node_id.startswith("."):
        raise ValueError(
            f"invalid id {node_id!r}: use letters, digits, '-', '_' and '.',"
            " not starting with '.'")
    return node_id


def write_atomically(path, text, mode):
    """Write *text* (UTF-8) to *path* through a file beside it, then rename.

    A crash never leaves half a file, and *mode* is set before any byte is
    written (the files hold keys and tokens). A ``.tmp`` left by a crash is
    removed first: under O_TRUNC it would keep its old mode, and if it were a
    symlink the secret would be written wherever it points.
    """
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:  # write() loops until all is written
        f.write(text.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    # the umask may have taken bits from O_CREAT's mode (a public key is 0644)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
