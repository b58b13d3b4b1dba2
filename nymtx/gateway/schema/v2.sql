-- nymtx gateway store, schema version 2.
-- The ledger keeps only a hash of each client's token, and when the client
-- was last seen (a registration not used for a while expires).
CREATE TABLE version (version INTEGER NOT NULL);
CREATE TABLE clients (
  client_key BLOB PRIMARY KEY,          -- 32-byte X25519 public key
  token_hash BLOB NOT NULL,             -- SHA-256 of the 32-byte token
  registered_at REAL NOT NULL,          -- reactor seconds
  last_seen REAL NOT NULL               -- reactor seconds: registered or authenticated
);
CREATE INDEX clients_by_last_seen ON clients (last_seen);
CREATE TABLE messages (
  id INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused, so an old ack cannot hit a new message
  client_key BLOB NOT NULL,
  body BLOB NOT NULL,
  received_at REAL NOT NULL
);
CREATE INDEX messages_by_client ON messages (client_key, id);
INSERT INTO version (version) VALUES (2);
