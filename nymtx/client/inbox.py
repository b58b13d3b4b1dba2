"""The client's inbox: a sqlite file in its data directory.

Whole messages (reassembled from their fragments, with their kind) are
committed here before the gateway is told to delete them, so
a crash between pull and ack loses nothing; the gateway ids of stored but
unacknowledged messages are kept too, so a message the gateway sends again
after a lost ack is not stored twice.
"""

import sqlite3

from twisted.logger import Logger
from zope.interface import implementer

from nymtx.interfaces import IInbox
from nymtx.message import KIND_TEXT, Message
from nymtx.schema import SchemaError, open_versioned

SCHEMA_VERSION = 2


class InboxError(Exception):
    """The inbox file cannot be opened or is not a nymtx inbox."""


def _message(body):
    # Bytes alone are text, as every message of the seed (and of a v1 inbox) was.
    if isinstance(body, Message):
        return body
    return Message(KIND_TEXT, bytes(body))


@implementer(IInbox)
class Inbox:
    """Whole messages (``nymtx.message.Message``: kind and bytes), oldest first."""

    log = Logger()

    def __init__(self, path, clock):
        """Open (creating it if new, upgrading a v1 one) the inbox at *path*, or ``:memory:``."""
        self._clock = clock
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as e:
            raise InboxError(f"cannot open the inbox {self.path}: {e}")
        try:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            open_versioned(self._db, self.path, "nymtx.client", "client inbox", SCHEMA_VERSION)
        except BaseException as e:
            # a file we refuse is not held open behind the error
            self._db.close()
            if isinstance(e, (sqlite3.Error, SchemaError)):
                raise InboxError(f"cannot open the inbox {self.path}: {e}")
            raise

    def commit(self, gateway_ids, messages):
        """In one transaction: remember *gateway_ids* as pulled but not yet
        acknowledged, and store *messages* (Messages, or bytes for text).

        The client calls it with every id of a pull (fragments and cover
        included) and the messages they completed, before it acks them.
        Returns the Messages stored.
        """
        now = self._clock.seconds()
        stored = [_message(m) for m in messages]
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.executemany("INSERT OR IGNORE INTO unacked VALUES (?)",
                            [(i,) for i in gateway_ids])
            cur.executemany("INSERT INTO messages (kind, body, received_at) VALUES (?, ?, ?)",
                            [_row(m) + (now,) for m in stored])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return stored

    def seen(self, gateway_ids):
        """The ids among *gateway_ids* committed here and not acknowledged yet."""
        return {i for i in gateway_ids if self._seen(self._db, i)}

    def store(self, messages):
        """Commit ``(gateway_id, body)`` pairs in one transaction; a body is a
        Message, or bytes for a text message.

        A gateway id of None stores the body unconditionally. Returns the
        bodies actually stored: a repeat of a stored-but-unacked id is not.
        """
        now = self._clock.seconds()
        stored = []
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for gateway_id, body in messages:
                if gateway_id is not None:
                    if self._seen(cur, gateway_id):
                        continue
                    cur.execute("INSERT INTO unacked VALUES (?)", (gateway_id,))
                message = _message(body)
                cur.execute("INSERT INTO messages (kind, body, received_at) VALUES (?, ?, ?)",
                            _row(message) + (now,))
                stored.append(body)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return stored

    @staticmethod
    def _seen(cur, gateway_id):
        return cur.execute("SELECT 1 FROM unacked WHERE gateway_id=?",
                           (gateway_id,)).fetchone() is not None

    def acked(self, gateway_ids):
        """The gateway deleted these: their ids may be reused from now on."""
        self._db.executemany("DELETE FROM unacked WHERE gateway_id=?",
                             [(i,) for i in gateway_ids])

    def unacked(self):
        return [row[0] for row in self._db.execute(
            "SELECT gateway_id FROM unacked ORDER BY gateway_id")]

    def peek(self, max_bytes=None):
        """``(id, Message)`` pairs, oldest first, whose data add up to at most
        *max_bytes* (all if None); nothing leaves the inbox."""
        rows, used = [], 0
        for row_id, kind, body in self._db.execute(
                "SELECT id, kind, body FROM messages ORDER BY id"):
            used += len(body)
            if max_bytes is not None and used > max_bytes:
                break
            rows.append((row_id, _from_row(kind, body)))
        return rows

    def delete(self, ids):
        """Remove the messages *ids* (from peek), once the application has them."""
        self._db.executemany("DELETE FROM messages WHERE id=?", [(i,) for i in ids])

    def take_all(self):
        """Remove and return every stored Message, oldest first."""
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            rows = cur.execute("SELECT id, kind, body FROM messages ORDER BY id").fetchall()
            if rows:
                cur.execute("DELETE FROM messages WHERE id <= ?", (rows[-1][0],))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return [_from_row(kind, body) for _, kind, body in rows]

    def __len__(self):
        return self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    def close(self):
        self._db.close()



#: a message with a sender tag (anonymous replies, docs/surb.md §5) is kept
#: as kind | TAGGED, body = tag (16) || data
TAGGED = 0x80
_TAG = 16


def _row(message):
    if message.sender_tag is None:
        return message.kind, message.data
    return message.kind | TAGGED, bytes(message.sender_tag) + message.data


def _from_row(kind, body):
    body = bytes(body)
    if kind & TAGGED and len(body) >= _TAG:
        return Message(kind & ~TAGGED, body[_TAG:], body[:_TAG])
    return Message(kind, body)
