-- 0012 (relay cursor, #17): see migrations/postgres/0012_relay_cursor.sql. SQLite commits in
-- position order, so "just before the first unpublished event" is one position earlier. The
-- outbox table stays for one release, as on PostgreSQL: the previous release, after a rollback,
-- still writes and relays it.
CREATE TABLE relay_cursor (
    id         INTEGER PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    position   INTEGER NOT NULL CHECK (position >= 0),
    updated_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    owner       TEXT    NULL,
    lease_until INTEGER NULL
);

INSERT INTO relay_cursor (id, position)
SELECT 1, COALESCE(
    (SELECT MIN(global_position) - 1 FROM outbox WHERE published_at IS NULL),
    (SELECT MAX(global_position) FROM events),
    0);

