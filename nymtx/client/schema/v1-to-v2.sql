-- Upgrade a client inbox from schema version 1 to 2: messages get a kind.
-- Version 1 held only the seed's text messages, so every one is text.
ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 1;
UPDATE version SET version = 2;
