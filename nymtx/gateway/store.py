"""The gateway's durable state: the client ledger and the mailboxes.

One sqlite file (WAL mode) holds both. Incoming messages are buffered and
committed in batches, ``commit_interval`` seconds after the first one on the
injected clock or every ``commit_batch`` messages, whichever comes first: one
commit per message would cap throughput at the disk's commit rate. The
default interval is 0: the commit runs at the end of the reactor turn in
which the first message came, so an idle gateway adds no wait, and a busy
one still commits everything a turn brought in one transaction. A message counts
as stored only once its batch is committed. Registrations are committed at
once, since a client acts on the answer. Acknowledgements are deleted at
once but committed together at the end of the reactor turn (before any
answer written in that turn reaches the socket, which happens in the
reactor's next I/O pass): a commit per pull was a third of a pull's time,
and losing the last turn's deletions in a crash only delivers those
messages again, which the client's inbox recognises.

What a flush committed is told to the store's commit hooks
(:meth:`MailboxStore.add_commit_hook`): each message may carry a *token*
(the gateway's final hop passes the message's SURB-ACK), and after the
COMMIT returns every hook gets the tokens of that batch, in order. Tokens
live only in memory with their buffered messages, so a crash (or a failed
commit) before the COMMIT loses both together: nothing is ever acked that
was not stored (docs/surb.md §2.2).

Drop cover goes through the same commit (:meth:`MailboxStore.add_cover`):
its record is inserted with the batch and deleted again inside the same
transaction, so it is never stored, never seen by a pull and never counted
against a quota, yet its commit writes what a stored message's does and
its token comes out of the same COMMIT (or is lost with a failed one). A
token that skipped the commit would leave sooner than a stored message's
and tell cover from mail (docs/surb.md §2.5).
"""

import hmac
import sqlite3

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.gateway.frames import token_hash
from nymtx.interfaces import IMailboxStore
from nymtx.schema import SchemaError, open_versioned

SCHEMA_VERSION = 2

#: Drop reasons returned by :meth:`MailboxStore.add`.
UNREGISTERED = "unregistered"
OVER_MESSAGE_QUOTA = "over_message_quota"
OVER_BYTE_QUOTA = "over_byte_quota"


class StoreError(Exception):
    """The database cannot be opened or used; the message says which file and why."""


def open_database(path):
    """A connection to *path* (or ``:memory:``) at the current schema version;
    an older store is upgraded in place (nymtx.schema)."""
    db = None
    try:
        db = sqlite3.connect(str(path), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL survives a process crash; only a power
        # loss can take back the last commits, which is what batching accepts.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        open_versioned(db, path, "nymtx.gateway", "gateway database", SCHEMA_VERSION)
    except (sqlite3.Error, SchemaError) as e:
        if db is not None:
            db.close()
        if isinstance(e, SchemaError):
            raise StoreError(str(e)) from e
        raise StoreError(f"cannot open gateway database {path}: {e}") from e
    return db


@implementer(IMailboxStore)
@attrs.define(eq=False)
class MailboxStore:
    """Ledger and per-client mailboxes with quotas, on one sqlite connection."""

    log = Logger()

    clock: object
    db: sqlite3.Connection
    quota_messages: int = 20_000
    quota_bytes: int = 20_000_000
    commit_interval: float = 0.0
    commit_batch: int = 512
    #: registered clients at most: the presence document lists them all and
    #: the directory refuses a body over 64 KiB (about 1,090 clients)
    max_clients: int = 1000

    #: messages committed since this store was opened
    stored: int = attrs.field(default=0, init=False)
    #: buffered messages whose commit failed (disk full, I/O error): dropped
    lost: int = attrs.field(default=0, init=False)
    _pending: list = attrs.field(factory=list, init=False)
    #: tokens of the buffered messages, in order (None for none)
    _tokens: list = attrs.field(factory=list, init=False)
    #: positions in _pending of drop cover (add_cover): deleted in the commit
    _covers: list = attrs.field(factory=list, init=False)
    _hooks: list = attrs.field(factory=list, init=False)
    _timer: object = attrs.field(default=None, init=False)
    _usage: dict = attrs.field(factory=dict, init=False)     # key -> [count, bytes]
    #: acks deleted in the open transaction, for a rollback: (key, count, bytes)
    _acked: list = attrs.field(factory=list, init=False)
    _ack_timer: object = attrs.field(default=None, init=False)
    _ack_open: bool = attrs.field(default=False, init=False)
    _registered: set = attrs.field(factory=set, init=False)
    #: ack transactions rolled back (a failed commit): the deletions they
    #: held are undone, and whoever was told "acked" must learn otherwise
    ack_rollbacks: int = attrs.field(default=0, init=False)

    @classmethod
    def open(cls, clock, path, **kwargs):
        store = cls(clock, open_database(path), **kwargs)
        store._load()
        return store

    def _load(self):
        self._registered = {bytes(k) for (k,) in self.db.execute(
            "SELECT client_key FROM clients")}
        for key, count, size in self.db.execute(
                "SELECT client_key, COUNT(*), SUM(LENGTH(body)) FROM messages"
                " GROUP BY client_key"):
            self._usage[bytes(key)] = [count, size or 0]

    # ---- ledger -------------------------------------------------------

    def register(self, client_key, token):
        """Record *token* (only its hash) for *client_key*, replacing any older one."""
        now = self.clock.seconds()
        try:
            self.db.execute(
                "INSERT INTO clients (client_key, token_hash, registered_at, last_seen)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (client_key) DO UPDATE SET token_hash=excluded.token_hash,"
                " registered_at=excluded.registered_at, last_seen=excluded.last_seen",
                (bytes(client_key), token_hash(token), now, now))
        except sqlite3.Error as e:
            raise StoreError(f"cannot record a registration: {e}") from e
        # committed now, with the turn's acks if it joined their transaction
        self.commit_acks()
        self._registered.add(bytes(client_key))

    def check_token(self, client_key, token):
        """Whether *token* is the current token of *client_key* (constant time)."""
        try:
            row = self.db.execute("SELECT token_hash FROM clients WHERE client_key=?",
                                  (bytes(client_key),)).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the ledger: {e}") from e
        if row is None:
            return False
        return hmac.compare_digest(bytes(row[0]), token_hash(token))

    def touch(self, client_key):
        """Record that *client_key* was seen now (it authenticated)."""
        try:
            self.db.execute("UPDATE clients SET last_seen=? WHERE client_key=?",
                            (self.clock.seconds(), bytes(client_key)))
        except sqlite3.Error as e:
            raise StoreError(f"cannot record a session: {e}") from e

    def last_seen(self, client_key):
        """Reactor seconds when *client_key* last registered or authenticated, or None."""
        row = self.db.execute("SELECT last_seen FROM clients WHERE client_key=?",
                              (bytes(client_key),)).fetchone()
        return None if row is None else row[0]

    def expire_idle(self, idle):
        """Remove every client not seen for *idle* seconds, with its mail.

        Returns the keys removed. A registration nobody uses would otherwise
        hold one of the ledger's ``max_clients`` places for ever.
        """
        cutoff = self.clock.seconds() - idle
        self.flush()
        self.commit_acks()
        try:
            self.db.execute("BEGIN")
            keys = [bytes(k) for (k,) in self.db.execute(
                "SELECT client_key FROM clients WHERE last_seen <= ?", (cutoff,))]
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                self.db.execute(f"DELETE FROM messages WHERE client_key IN ({marks})", chunk)
                self.db.execute(f"DELETE FROM clients WHERE client_key IN ({marks})", chunk)
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise StoreError(f"cannot expire idle registrations: {e}") from e
        for key in keys:
            self._registered.discard(key)
            self._usage.pop(key, None)
        if keys:
            self.log.info("{n} registration(s) expired: not seen for {idle:.0f} s",
                          n=len(keys), idle=idle)
        return keys

    def has_room(self, client_key):
        """Whether *client_key* may register: it already is, or the ledger is not full."""
        return bytes(client_key) in self._registered or len(self._registered) < self.max_clients

    def is_registered(self, client_key):
        return bytes(client_key) in self._registered

    def registered_clients(self):
        return sorted(self._registered)

    # ---- mailboxes ----------------------------------------------------

    def add(self, client_key, message, token=None):
        """Queue *message* for *client_key*: None if queued, else the drop reason.

        A *token* other than None is handed to the commit hooks once the
        message is committed, and never if it is not (a failed commit, a
        crash first)."""
        client_key = bytes(client_key)
        if client_key not in self._registered:
            return UNREGISTERED
        usage = self._usage.setdefault(client_key, [0, 0])
        if usage[0] + 1 > self.quota_messages:
            return OVER_MESSAGE_QUOTA
        if usage[1] + len(message) > self.quota_bytes:
            return OVER_BYTE_QUOTA
        usage[0] += 1
        usage[1] += len(message)
        self._pending.append((client_key, bytes(message), self.clock.seconds()))
        self._tokens.append(token)
        if len(self._pending) >= self.commit_batch:
            self.flush()
        else:
            self._arm()
        return None

    def add_cover(self, key, message, token):
        """Put drop cover through a commit: *message* is buffered like a
        stored message (under *key*, 32 bytes like a client's, so that its
        row costs what theirs do), inserted with the next batch and deleted
        again in the same transaction, and *token* goes to the commit hooks
        with that batch's tokens, as a stored message's would: after the
        COMMIT, and never if it fails. Nothing is stored, nothing counts
        against a quota or in :attr:`stored`."""
        self._covers.append(len(self._pending))
        self._pending.append((bytes(key), bytes(message), self.clock.seconds()))
        self._tokens.append(token)
        if len(self._pending) >= self.commit_batch:
            self.flush()
        else:
            self._arm()

    def _arm(self):
        if self._timer is None:
            self._timer = self.clock.callLater(self.commit_interval, self._timed_flush)

    def add_commit_hook(self, hook):
        """Call *hook(tokens)* after each commit of buffered messages, with
        the (non-None) tokens of the messages it committed, in order."""
        self._hooks.append(hook)

    def _run_hooks(self, tokens):
        if not tokens:
            return
        for hook in self._hooks:
            try:
                hook(tokens)
            except Exception:
                # the messages are committed whatever a hook does
                self.log.failure("a commit hook failed")

    def _timed_flush(self):
        self._timer = None
        try:
            self.flush()
        except StoreError:
            self.log.failure("committing buffered messages failed")

    def flush(self):
        """Commit every buffered message; return how many. Then the commit
        hooks get what was committed."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        batch, self._pending = self._pending, []
        tokens, self._tokens = self._tokens, []
        covers, self._covers = self._covers, []
        if not batch:
            return 0
        self.commit_acks()
        try:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO messages (client_key, body, received_at) VALUES (?, ?, ?)",
                batch)
            if covers:
                self._delete_covers(batch, covers)
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            cover = set(covers)
            for i, (key, body, _) in enumerate(batch):
                if i not in cover:
                    usage = self._usage[key]
                    usage[0] -= 1
                    usage[1] -= len(body)
            self.lost += len(batch) - len(covers)
            # drop cover's tokens are lost with the batch, as the messages'
            # are: a failed commit must not tell them apart either
            raise StoreError(f"cannot store {len(batch) - len(covers)} messages: {e}") from e
        self.stored += len(batch) - len(covers)
        self._run_hooks([t for t in tokens if t is not None])
        return len(batch) - len(covers)

    def _delete_covers(self, batch, covers):
        """Delete, inside the open transaction, the rows of *batch* at the
        positions *covers*. With AUTOINCREMENT one transaction's rows get
        consecutive ids, the last being last_insert_rowid(); the key and the
        count are checked too, so a surprise rolls the batch back rather
        than deleting a message."""
        (last,) = self.db.execute("SELECT last_insert_rowid()").fetchone()
        first = last - len(batch) + 1
        deleted = self.db.executemany(
            "DELETE FROM messages WHERE id=? AND client_key=?",
            [(first + i, batch[i][0]) for i in covers]).rowcount
        if deleted != len(covers):
            raise sqlite3.DatabaseError(
                f"{len(covers)} drop cover rows inserted, {deleted} found again")

    def _rollback(self):
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the original error is the one worth reporting

    @property
    def pending(self):
        return len(self._pending)

    def pull(self, client_key, limit, after=0):
        """Up to *limit* committed messages of *client_key* with ids over
        *after*, oldest first, as (id, bytes)."""
        try:
            # sqlite gives a BLOB as bytes already: no copy per row
            return self.db.execute(
                "SELECT id, body FROM messages WHERE client_key=? AND id>? ORDER BY id LIMIT ?",
                (bytes(client_key), int(after), int(limit))).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read messages: {e}") from e

    def ack(self, client_key, ids):
        """Delete those of *ids* that belong to *client_key*; return how many.

        The deletion joins the turn's acknowledgement transaction, committed
        at the end of the reactor turn (:meth:`commit_acks`)."""
        client_key = bytes(client_key)
        ids = list(dict.fromkeys(int(i) for i in ids if 0 <= i < 1 << 63))
        if not ids:
            return 0
        count = size = 0
        try:
            if not self._ack_open:
                self.db.execute("BEGIN")
                self._ack_open = True
                self._ack_timer = self.clock.callLater(0, self._timed_commit_acks)
            # sqlite limits bound variables per statement, hence the chunks
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for (length,) in self.db.execute(
                        f"DELETE FROM messages WHERE client_key=? AND id IN ({marks})"
                        " RETURNING LENGTH(body)", [client_key, *chunk]):
                    count += 1
                    size += length
        except sqlite3.Error as e:
            self._rollback_acks()
            raise StoreError(f"cannot delete acknowledged messages: {e}") from e
        if count:
            usage = self._usage[client_key]
            usage[0] -= count
            usage[1] -= size
            self._acked.append((client_key, count, size))
        return count

    def _timed_commit_acks(self):
        self._ack_timer = None
        try:
            self.commit_acks()
        except StoreError:
            self.log.failure("committing acknowledgements failed; those messages are"
                             " delivered again")

    def commit_acks(self):
        """Commit the acknowledgements deleted since the last commit."""
        timer, self._ack_timer = self._ack_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if not self._ack_open:
            return
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback_acks()
            raise StoreError(f"cannot commit acknowledgements: {e}") from e
        self._ack_open = False
        self._acked = []

    def _rollback_acks(self):
        if self._ack_open:
            self.ack_rollbacks += 1
        self._rollback()
        self._ack_open = False
        timer, self._ack_timer = self._ack_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        # the deleted rows are back: so is their room in the quotas
        for key, count, size in self._acked:
            usage = self._usage.setdefault(key, [0, 0])
            usage[0] += count
            usage[1] += size
        self._acked = []

    def usage(self, client_key):
        """(messages, bytes) held for *client_key*, buffered ones included."""
        return tuple(self._usage.get(bytes(client_key), (0, 0)))

    def close(self):
        """Commit what is buffered and close the database."""
        try:
            self.flush()
            self.commit_acks()
        finally:
            timer, self._ack_timer = self._ack_timer, None
            if timer is not None and timer.active():
                timer.cancel()
            self.db.close()
