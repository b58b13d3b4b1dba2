-- Upgrade a gateway store from schema version 1 to 2: clients get last_seen,
-- taken as their registration time (version 1 did not record sessions).
ALTER TABLE clients ADD COLUMN last_seen REAL NOT NULL DEFAULT 0;
UPDATE clients SET last_seen = registered_at;
CREATE INDEX clients_by_last_seen ON clients (last_seen);
UPDATE version SET version = 2;
