-- 0005 (security): see migrations/postgres/0005_customer_keys.sql. UUIDs as TEXT,
-- timestamps as INTEGER milliseconds since the epoch.
CREATE TABLE customer_keys (
    customer_id TEXT    PRIMARY KEY,
    key_id      TEXT    NOT NULL UNIQUE,
    wrapped_key BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE forgotten_customers (
    customer_id    TEXT    PRIMARY KEY,
    forgotten_at   INTEGER NOT NULL,
    forgotten_by   TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    keys_destroyed INTEGER NOT NULL DEFAULT 0
);
