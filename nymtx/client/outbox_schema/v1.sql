-- The client's reliable-delivery state (docs/surb.md): what the application
-- handed over and has not been acknowledged, the key its acks are read
-- with, and both sides of anonymous replies.
CREATE TABLE version (version INTEGER NOT NULL);
INSERT INTO version (version) VALUES (1);

-- 'ack_key': 32 random bytes made with the database, never changed: acks of
-- packets sent before a restart must still open after it.
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

-- AUTOINCREMENT: a number is never given twice, so a late ack for a
-- removed message cannot be taken for a new one's.
CREATE TABLE outbox (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    recipient BLOB NOT NULL,
    kind INTEGER NOT NULL,
    body BLOB NOT NULL,
    fragments INTEGER NOT NULL CHECK (fragments >= 1),
    -- the sender tag and reply blocks sent with it, or NULL
    reply_tag BLOB,
    reply_surbs INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL
);

CREATE TABLE outbox_fragments (
    number INTEGER NOT NULL REFERENCES outbox (number) ON DELETE CASCADE,
    fragment INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    acked INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (number, fragment)
) WITHOUT ROWID;

-- Replier side: reply blocks others gave us, by their sender tag.
CREATE TABLE reply_surbs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tag BLOB NOT NULL,
    surb BLOB NOT NULL,
    expires_at REAL NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX reply_surbs_by_tag ON reply_surbs (tag, expires_at);

-- Builder side: the keys to open replies to the reply blocks we gave out.
CREATE TABLE surb_keys (
    identifier BLOB PRIMARY KEY,
    tag BLOB NOT NULL,
    keys BLOB NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;

-- Builder side: one sender tag per recipient, kept across restarts.
CREATE TABLE sender_tags (
    recipient BLOB PRIMARY KEY,
    tag BLOB NOT NULL UNIQUE
) WITHOUT ROWID;
