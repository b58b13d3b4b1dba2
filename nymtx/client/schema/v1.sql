-- The client's inbox: messages pulled from the gateway and not yet fetched
-- by the application.
CREATE TABLE version (version INTEGER NOT NULL);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,
    received_at REAL NOT NULL
);

-- Gateway message ids stored here but not yet acknowledged: if the ack is
-- lost the gateway sends them again, and they must not be stored twice.
CREATE TABLE unacked (
    gateway_id INTEGER PRIMARY KEY
);
