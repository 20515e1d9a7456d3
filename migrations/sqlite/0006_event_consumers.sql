-- 0006 (public event feed): see migrations/postgres/0006_event_consumers.sql. JSON as TEXT,
-- timestamps as INTEGER milliseconds since the epoch.
CREATE TABLE event_consumers (
    name           TEXT    PRIMARY KEY,
    event_types    TEXT    NOT NULL DEFAULT '[]',
    acked_position INTEGER NOT NULL DEFAULT 0 CHECK (acked_position >= 0),
    acked_at       INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    created_by     TEXT    NOT NULL
);
