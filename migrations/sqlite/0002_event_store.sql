-- 0002 (orders): see migrations/postgres/0002_event_store.sql for the meaning of each table.
--
-- SQLite conventions (used by every SQLite table of this service):
--   * UUIDs are TEXT, lowercase hyphenated ("0190...-....").
--   * Timestamps are INTEGER milliseconds since the Unix epoch, UTC (sortable, comparable).
--   * JSON is TEXT.
--   * Booleans are INTEGER 0/1.
-- SQLite has a single writer (every write transaction is BEGIN IMMEDIATE), so transactions
-- commit in `global_position` order and a reader's snapshot is always a prefix of the log:
-- reading by position never skips an event, no transaction id is needed.

CREATE TABLE events (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    stream_id       TEXT    NOT NULL,
    stream_type     TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL DEFAULT '{}',
    recorded_at     INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    UNIQUE (stream_id, version)
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    stream_id       TEXT    NOT NULL,
    stream_type     TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL,
    global_position INTEGER NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL DEFAULT '{}',
    created_at      INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    published_at    INTEGER NULL
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE idempotency_keys (
    customer_id  TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('in_flight', 'done', 'refused')),
    order_id     TEXT    NOT NULL,
    progress     TEXT    NULL,
    response     TEXT    NULL,
    lease_until  INTEGER NULL,
    created_at   INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    updated_at   INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    PRIMARY KEY (customer_id, key)
);

CREATE TABLE sagas (
    saga_id          TEXT    PRIMARY KEY,
    order_id         TEXT    NOT NULL UNIQUE,
    status           TEXT    NOT NULL DEFAULT 'RUNNING',
    idempotency_seed TEXT    NOT NULL,
    deadline         INTEGER NOT NULL,
    next_run_at      INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    cancel_reason    TEXT    NULL,
    lease_owner      TEXT    NULL,
    lease_until      INTEGER NULL,
    created_at       INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    updated_at       INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER))
);
CREATE INDEX sagas_due ON sagas (status, next_run_at);
