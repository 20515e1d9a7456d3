-- 0012 (relay cursor, #17): see migrations/postgres/0012_relay_cursor.sql. SQLite commits in
-- position order, so "just before the first unpublished event" is one position earlier.
CREATE TABLE relay_cursor (
    id         INTEGER PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    position   INTEGER NOT NULL CHECK (position >= 0),
    updated_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER))
);

INSERT INTO relay_cursor (id, position)
SELECT 1, COALESCE(
    (SELECT MIN(global_position) - 1 FROM outbox WHERE published_at IS NULL),
    (SELECT MAX(global_position) FROM events),
    0);

DROP TABLE outbox;
