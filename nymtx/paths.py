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
