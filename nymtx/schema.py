"""Versioned sqlite schemas with an upgrade path, shared by every store.

A package keeps its schema files in a ``schema/`` folder beside its code:
``vN.sql`` creates a new database at version N (its ``version`` table
included), and ``vM-to-vN.sql`` (N = M + 1) upgrades one at version M by
one step. Opening a database:

- a new, empty file gets the newest schema;
- an older version is upgraded step by step, each step in its own
  transaction, so a failure leaves the file at the last whole version;
- a newer version than this code knows is refused, never read: its rows may
  mean something this code does not know;
- a file with tables but no ``version`` table, or an empty one, is refused
  as not being this kind of database (or a damaged one).

Every refusal is a :class:`SchemaError` naming the file and saying what to do.
"""

import sqlite3
from importlib import resources

from twisted.logger import Logger

log = Logger()


class SchemaError(Exception):
    """The database is not of this kind, or of a version this code cannot read."""


def _read(package, folder, name):
    return resources.files(package).joinpath(folder, name).read_text("utf-8")


def open_versioned(db, path, package, kind, version, folder="schema"):
    """Bring the open connection *db* to schema *version*; return the version
    it was at before (0 for a new database).

    *package* holds the schema files in *folder* (a package may keep several
    kinds of database, each in its own folder); *kind* names the database in errors
    ("gateway database", "client inbox"). Raises :class:`SchemaError`, or
    ``sqlite3.Error`` if the file cannot be read at all.
    """
    tables = {row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    if "version" not in tables:
        if tables:
            raise SchemaError(f"{path} is not a nymtx {kind} (it has tables but no"
                              " version table)")
        _run(db, _read(package, folder, f"v{version}.sql"))
        return 0
    rows = db.execute("SELECT version FROM version").fetchall()
    if len(rows) != 1 or not isinstance(rows[0][0], int):
        raise SchemaError(f"{path} has a damaged version table ({len(rows)} rows): it is"
                          f" not a nymtx {kind}, or a damaged one")
    found = rows[0][0]
    if found > version:
        raise SchemaError(
            f"{path} is {kind} schema version {found}, written by a newer nymtx; this"
            f" one reads versions up to {version}. Run the newer nymtx, or move the"
            " file away to start afresh (its contents are then lost to this one)")
    if found < 1:
        raise SchemaError(f"{path} has schema version {found}, which no nymtx wrote")
    for step in range(found, version):
        try:
            script = _read(package, folder, f"v{step}-to-v{step + 1}.sql")
        except FileNotFoundError:
            raise SchemaError(f"{path} is {kind} schema version {found}, and this nymtx"
                              f" cannot upgrade version {step}") from None
        _run(db, script)
        log.info("upgraded {kind} {path} from schema version {old} to {new}",
                 kind=kind, path=path, old=step, new=step + 1)
    return found


def _run(db, script):
    # executescript commits first; the explicit BEGIN makes the step atomic
    try:
        db.executescript("BEGIN;" + script + ";COMMIT;")
    except sqlite3.Error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
