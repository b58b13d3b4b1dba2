"""Both sides of anonymous replies, durable: the reply blocks others gave
us (by sender tag) and the keys to open replies to the blocks we gave out.

Tables in the outbox's file (``outbox_schema/``). A reply block expires with
the keys of the nodes it was built for (its ``expires_at``, Unix seconds on
the injected clock); an expired block is never handed out and is deleted
on the next call that looks at its tag, or by :meth:`ReplyStore.expire`.
Every call is one committed transaction.
"""

import os

import attrs

from nymtx.client.outbox import OutboxError, _Transaction, connect
from nymtx.reliable.replies import TAG_SIZE, ReplyError, ReplySurb
from nymtx.sphinx.surb import SurbError, SurbKeys

#: nym's defaults: keep up to 200 blocks per tag, ask for more below 10
DEFAULT_MAX_PER_TAG = 200
DEFAULT_MAX_TAGS = 1000
DEFAULT_LOW_WATER = 10
DEFAULT_REQUEST = 20
DEFAULT_MAX_KEYS = 100_000


@attrs.define(eq=False)
class ReplyStore:
    db: object
    clock: object
    max_per_tag: int = DEFAULT_MAX_PER_TAG
    max_tags: int = DEFAULT_MAX_TAGS
    low_water: int = DEFAULT_LOW_WATER
    request: int = DEFAULT_REQUEST
    max_keys: int = DEFAULT_MAX_KEYS

    @classmethod
    def open(cls, path, clock, **bounds):
        return cls(connect(path), clock, **bounds)

    def close(self):
        self.db.close()

    # -- replier side: blocks we hold for others ----------------------------

    def add(self, tag, surbs):
        """Keep *surbs* (ReplySurb) under *tag*; returns how many were kept.
        Expired ones and those past the per-tag or tag-count bound are not."""
        tag = _tag(tag)
        now = self.clock.seconds()
        kept = 0
        with _Transaction(self.db) as db:
            db.execute("DELETE FROM reply_surbs WHERE tag = ? AND expires_at <= ?", (tag, now))
            have = db.execute("SELECT COUNT(*) FROM reply_surbs WHERE tag = ?",
                              (tag,)).fetchone()[0]
            if have == 0:
                tags = db.execute("SELECT COUNT(DISTINCT tag) FROM reply_surbs").fetchone()[0]
                if tags >= self.max_tags:
                    return 0
            for s in surbs:
                if not isinstance(s, ReplySurb):
                    raise OutboxError(f"a reply block is a ReplySurb, not {type(s).__name__}")
                if s.expires_at <= now or have >= self.max_per_tag:
                    continue
                db.execute("INSERT INTO reply_surbs (tag, surb, expires_at, received_at)"
                           " VALUES (?, ?, ?, ?)", (tag, s.to_bytes(), s.expires_at, now))
                have += 1
                kept += 1
        return kept

    def take(self, tag):
        """One unexpired block for *tag*, removed (it is single use): the one
        that expires first. None if there is none."""
        tag = _tag(tag)
        now = self.clock.seconds()
        with _Transaction(self.db) as db:
            db.execute("DELETE FROM reply_surbs WHERE tag = ? AND expires_at <= ?", (tag, now))
            while True:
                row = db.execute("SELECT id, surb FROM reply_surbs WHERE tag = ?"
                                 " ORDER BY expires_at, id LIMIT 1", (tag,)).fetchone()
                if row is None:
                    return None
                db.execute("DELETE FROM reply_surbs WHERE id = ?", (row[0],))
                try:
                    return ReplySurb.from_bytes(row[1])
                except ReplyError:
                    continue  # a damaged row: gone, and the next one is tried

    def count(self, tag):
        return self.db.execute("SELECT COUNT(*) FROM reply_surbs WHERE tag = ? AND"
                               " expires_at > ?", (_tag(tag), self.clock.seconds())).fetchone()[0]

    def wanted(self, tag):
        """How many blocks to ask for now (0: enough). The request itself
        spends a block, so at least one must be left to ask with."""
        n = self.count(tag)
        if n == 0 or n >= self.low_water:
            return 0
        return min(self.request, self.max_per_tag - n + 1)

    # -- builder side: keys of the blocks we gave out -----------------------

    def remember(self, keys, tag, expires_at):
        """Keep the keys of a reply block given out under *tag*. Past
        max_keys, the soonest-expiring keys are forgotten first."""
        with _Transaction(self.db) as db:
            db.execute("INSERT OR REPLACE INTO surb_keys (identifier, tag, keys, expires_at)"
                       " VALUES (?, ?, ?, ?)", (keys.identifier, _tag(tag), keys.to_bytes(),
                                                expires_at))
            over = db.execute("SELECT COUNT(*) FROM surb_keys").fetchone()[0] - self.max_keys
            if over > 0:
                db.execute("DELETE FROM surb_keys WHERE identifier IN (SELECT identifier FROM"
                           " surb_keys ORDER BY expires_at LIMIT ?)", (over,))

    def claim(self, identifier):
        """(tag, SurbKeys) for a SURB delivery's identifier, removed (a reply
        block opens once), or None: not ours, already used, or expired."""
        identifier = bytes(identifier)
        with _Transaction(self.db) as db:
            row = db.execute("SELECT tag, keys, expires_at FROM surb_keys WHERE identifier = ?",
                             (identifier,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM surb_keys WHERE identifier = ?", (identifier,))
        tag, keys, expires_at = row
        if expires_at <= self.clock.seconds():
            return None
        try:
            return bytes(tag), SurbKeys.from_bytes(keys)
        except SurbError:
            return None

    def sender_tag(self, recipient, randbytes=os.urandom):
        """The sender tag used with *recipient*, made once and kept."""
        recipient = bytes(recipient)
        with _Transaction(self.db) as db:
            row = db.execute("SELECT tag FROM sender_tags WHERE recipient = ?",
                             (recipient,)).fetchone()
            if row is not None:
                return bytes(row[0])
            tag = randbytes(TAG_SIZE)
            db.execute("INSERT INTO sender_tags (recipient, tag) VALUES (?, ?)", (recipient, tag))
        return tag

    def recipient_of(self, tag):
        """The recipient this client uses *tag* with (its own tags), or None."""
        row = self.db.execute("SELECT recipient FROM sender_tags WHERE tag = ?",
                              (_tag(tag),)).fetchone()
        return None if row is None else bytes(row[0])

    def expire(self):
        """Delete every expired block and key; returns how many."""
        now = self.clock.seconds()
        with _Transaction(self.db) as db:
            a = db.execute("DELETE FROM reply_surbs WHERE expires_at <= ?", (now,)).rowcount
            b = db.execute("DELETE FROM surb_keys WHERE expires_at <= ?", (now,)).rowcount
        return a + b


def _tag(tag):
    if not isinstance(tag, (bytes, bytearray)) or len(tag) != TAG_SIZE:
        raise OutboxError(f"a sender tag is {TAG_SIZE} bytes")
    return bytes(tag)
