"""The durable send queue: what the application handed over and has not
been acknowledged survives a restart.

One sqlite file (WAL) per client, schema in ``outbox_schema/``. Every call
is one transaction, committed before it returns: a message the client has
answered ``send`` for is on disk, and an ack recorded is never taken back.
After a crash the outbox holds exactly the calls that returned. Bounded in
messages and in bytes; a message over a bound is refused with
:class:`OutboxFull`, never dropped silently.
"""

import os
import sqlite3

import attrs

from nymtx.reliable.ack import ACK_KEY_SIZE
from nymtx.schema import SchemaError, open_versioned

SCHEMA_VERSION = 1

DEFAULT_MAX_MESSAGES = 1000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class OutboxError(Exception):
    """The outbox file cannot be opened or used, or a call is malformed."""


class OutboxFull(OutboxError):
    """Adding the message would exceed a bound; the message names which."""


@attrs.frozen
class Pending:
    """A message not yet delivered or failed."""

    number: int
    id: str
    recipient: bytes
    kind: int
    body: bytes
    fragments: int
    acked: frozenset
    attempts: dict
    reply_tag: object = None
    reply_surbs: int = 0


def connect(path):
    """A connection to *path* at the current schema (shared by the outbox and
    the reply store, which keep their tables in the same file)."""
    db = None
    try:
        db = sqlite3.connect(str(path), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # A process crash loses nothing committed; only a power cut can take
        # back the last commits (synchronous=NORMAL), as in the inbox.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        open_versioned(db, path, "nymtx.client", "client outbox", SCHEMA_VERSION,
                       folder="outbox_schema")
    except (sqlite3.Error, SchemaError) as e:
        if db is not None:
            db.close()
        if isinstance(e, SchemaError):
            raise OutboxError(str(e)) from e
        raise OutboxError(f"cannot open client outbox {path}: {e}") from e
    return db


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
        return False


@attrs.define(eq=False)
class Outbox:
    """The send queue on connection *db*; *clock* timestamps what is added."""

    db: sqlite3.Connection
    clock: object
    max_messages: int = DEFAULT_MAX_MESSAGES
    max_bytes: int = DEFAULT_MAX_BYTES

    ack_key: bytes = attrs.field(default=None, init=False)

    @classmethod
    def open(cls, path, clock, randbytes=os.urandom, **bounds):
        db = connect(path)
        try:
            return cls(db, clock, **bounds)._load_key(randbytes)
        except BaseException:
            db.close()
            raise

    def _load_key(self, randbytes):
        with _Transaction(self.db) as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'ack_key'").fetchone()
            if row is None:
                key = randbytes(ACK_KEY_SIZE)
                db.execute("INSERT INTO meta (name, value) VALUES ('ack_key', ?)", (key,))
            else:
                key = bytes(row[0])
                if len(key) != ACK_KEY_SIZE:
                    raise OutboxError(f"the outbox's ack key is {len(key)} bytes, not"
                                      f" {ACK_KEY_SIZE}: the file is damaged")
        self.ack_key = key
        return self

    def close(self):
        self.db.close()

    def add(self, id, recipient, body, kind, fragments, reply_tag=None, reply_surbs=0):
        """Keep a message; returns its number (for its SURB-ACKs). Refuses a
        duplicate *id* (OutboxError) and a message over a bound (OutboxFull)."""
        if not isinstance(id, str) or not id:
            raise OutboxError("a message id is a non-empty string")
        if not isinstance(recipient, (bytes, bytearray)):
            raise OutboxError(f"a recipient is bytes, not {type(recipient).__name__}")
        if not isinstance(kind, int) or not 0 <= kind <= 255:
            raise OutboxError(f"a message kind is a byte, not {kind!r}")
        if not isinstance(body, (bytes, bytearray)):
            raise OutboxError(f"a message body is bytes, not {type(body).__name__}")
        if not isinstance(fragments, int) or fragments < 1:
            raise OutboxError(f"a message has at least one fragment, not {fragments!r}")
        if len(body) > self.max_bytes:
            raise OutboxFull(f"a message of {len(body)} bytes is over the outbox's bound"
                             f" of {self.max_bytes} bytes")
        try:
            with _Transaction(self.db) as db:
                count, size = db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM outbox").fetchone()
                if count >= self.max_messages:
                    raise OutboxFull(f"the outbox holds {count} messages, its bound")
                if size + len(body) > self.max_bytes:
                    raise OutboxFull(f"the outbox holds {size} bytes; {len(body)} more would"
                                     f" pass its bound of {self.max_bytes}")
                cur = db.execute(
                    "INSERT INTO outbox (id, recipient, kind, body, fragments, reply_tag,"
                    " reply_surbs, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (id, bytes(recipient), kind, bytes(body), fragments, reply_tag,
                     reply_surbs, self.clock.seconds()))
                number = cur.lastrowid
                db.executemany(
                    "INSERT INTO outbox_fragments (number, fragment) VALUES (?, ?)",
                    ((number, i) for i in range(fragments)))
        except sqlite3.IntegrityError:
            raise OutboxError(f"a message with id {id!r} is already in the outbox") from None
        return number

    def sent(self, number, fragment):
        """Count one send of *fragment* (so a restart knows what the cap left)."""
        with _Transaction(self.db) as db:
            db.execute("UPDATE outbox_fragments SET attempts = attempts + 1"
                       " WHERE number = ? AND fragment = ?", (number, fragment))

    def mark_acked(self, number, fragment):
        """Record an ack; returns True if the whole message is now acked,
        False if not yet, None if no such message or fragment is here."""
        with _Transaction(self.db) as db:
            cur = db.execute("UPDATE outbox_fragments SET acked = 1"
                             " WHERE number = ? AND fragment = ?", (number, fragment))
            if cur.rowcount == 0:
                return None
            left = db.execute("SELECT COUNT(*) FROM outbox_fragments WHERE number = ?"
                              " AND acked = 0", (number,)).fetchone()[0]
        return left == 0

    def remove(self, number):
        """Forget a delivered or failed message (and its fragments)."""
        with _Transaction(self.db) as db:
            db.execute("DELETE FROM outbox WHERE number = ?", (number,))

    def get(self, number):
        for p in self._pending("WHERE number = ?", (number,)):
            return p
        return None

    def pending(self):
        """Every message not yet removed, oldest first: what a restarted
        client sends again (its unacked fragments)."""
        return self._pending("", ())

    def _pending(self, where, args):
        rows = self.db.execute(
            "SELECT number, id, recipient, kind, body, fragments, reply_tag, reply_surbs"
            f" FROM outbox {where} ORDER BY number", args).fetchall()
        out = []
        for number, id, recipient, kind, body, fragments, tag, surbs in rows:
            frags = self.db.execute(
                "SELECT fragment, attempts, acked FROM outbox_fragments WHERE number = ?",
                (number,)).fetchall()
            out.append(Pending(number, id, bytes(recipient), kind, bytes(body), fragments,
                               frozenset(f for f, _, a in frags if a),
                               {f: n for f, n, a in frags if not a},
                               None if tag is None else bytes(tag), surbs))
        return out

    def __len__(self):
        return self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def size(self):
        return self.db.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM outbox").fetchone()[0]
