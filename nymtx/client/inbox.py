"""The client's inbox: a sqlite file in its data directory.

Messages are committed here before the gateway is told to delete them, so
a crash between pull and ack loses nothing; the gateway ids of stored but
unacknowledged messages are kept too, so a message the gateway sends again
after a lost ack is not stored twice.
"""

import sqlite3
from importlib import resources

from twisted.logger import Logger
from zope.interface import implementer

from nymtx.interfaces import IInbox

SCHEMA_VERSION = 1


class InboxError(Exception):
    """The inbox file cannot be opened or is not a nymtx inbox."""


def _schema(version):
    return resources.files("nymtx.client").joinpath(f"schema/v{version}.sql").read_text()


@implementer(IInbox)
class Inbox:
    log = Logger()

    def __init__(self, path, clock):
        """Open (creating it if new) the inbox at *path*, or ``:memory:``."""
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
            self._migrate()
        except BaseException as e:
            # a file we refuse is not held open behind the error
            self._db.close()
            if isinstance(e, sqlite3.Error):
                raise InboxError(f"cannot open the inbox {self.path}: {e}")
            raise

    def _migrate(self):
        tables = {row[0] for row in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        if "version" not in tables:
            if tables:
                raise InboxError(f"{self.path} has tables but is not a nymtx inbox")
            self._db.executescript(
                "BEGIN;" + _schema(SCHEMA_VERSION)
                + f";INSERT INTO version VALUES ({SCHEMA_VERSION});COMMIT;")
            return
        row = self._db.execute("SELECT version FROM version").fetchone()
        if row is None:
            raise InboxError(f"{self.path} has an empty version table: it is not a"
                             " nymtx inbox, or a damaged one")
        version = row[0]
        if version != SCHEMA_VERSION:
            raise InboxError(
                f"{self.path} is inbox version {version}; this nymtx reads version"
                f" {SCHEMA_VERSION}")

    def store(self, messages):
        """Commit ``(gateway_id, body)`` pairs in one transaction.

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
                cur.execute("INSERT INTO messages (body, received_at) VALUES (?, ?)",
                            (bytes(body), now))
                stored.append(bytes(body))
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
        """``(id, body)`` pairs, oldest first, whose bodies add up to at most
        *max_bytes* (all if None); nothing leaves the inbox."""
        rows, used = [], 0
        for row_id, body in self._db.execute("SELECT id, body FROM messages ORDER BY id"):
            used += len(body)
            if max_bytes is not None and used > max_bytes:
                break
            rows.append((row_id, bytes(body)))
        return rows

    def delete(self, ids):
        """Remove the messages *ids* (from peek), once the application has them."""
        self._db.executemany("DELETE FROM messages WHERE id=?", [(i,) for i in ids])

    def take_all(self):
        """Remove and return every stored message, oldest first."""
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            rows = cur.execute("SELECT id, body FROM messages ORDER BY id").fetchall()
            if rows:
                cur.execute("DELETE FROM messages WHERE id <= ?", (rows[-1][0],))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return [bytes(body) for _, body in rows]

    def __len__(self):
        return self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    def close(self):
        self._db.close()

