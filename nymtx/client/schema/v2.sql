-- nymtx client inbox, schema version 2: whole messages reassembled from
-- their fragments and not yet taken by the application, with their kind.
CREATE TABLE version (version INTEGER NOT NULL);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,        -- 1 text (UTF-8), 2 binary (docs/message-format.md)
    body BLOB NOT NULL,
    received_at REAL NOT NULL
);

-- Gateway message ids pulled and committed here but not yet acknowledged:
-- if the ack is lost the gateway sends them again, and they must not be
-- opened (and a message completed) twice.
CREATE TABLE unacked (
    gateway_id INTEGER PRIMARY KEY
);
INSERT INTO version (version) VALUES (2);
