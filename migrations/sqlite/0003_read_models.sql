-- 0003 (read side): see migrations/postgres/0003_read_models.sql. SQLite conventions of 0002:
-- UUIDs TEXT, timestamps INTEGER milliseconds UTC, JSON TEXT, booleans INTEGER 0/1; decimals
-- are TEXT (sqlx-sqlite has no rust_decimal). The rebuild creates its shadow tables from the live
-- tables' own DDL in sqlite_master (src/store/read_models/shadows.rs).

CREATE TABLE projection_checkpoints (
    name                 TEXT    PRIMARY KEY,
    position             INTEGER NOT NULL DEFAULT 0,
    generation           INTEGER NOT NULL DEFAULT 0,
    updated_at           INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    rebuilding           INTEGER NOT NULL DEFAULT 0,
    rebuild_replayed     INTEGER NOT NULL DEFAULT 0,
    rebuild_total        INTEGER NOT NULL DEFAULT 0,
    rebuild_started_at   INTEGER NULL,
    rebuild_heartbeat_at INTEGER NULL
);
INSERT INTO projection_checkpoints (name) VALUES ('order_detail'), ('customer_orders'), ('cart_conversion');

CREATE TABLE order_details (
    order_id            TEXT    PRIMARY KEY,
    customer_id         TEXT    NOT NULL,
    cart_id             TEXT    NOT NULL,
    saga_id             TEXT    NULL,
    status              TEXT    NOT NULL,
    items               TEXT    NOT NULL,
    currency            TEXT    NOT NULL,
    total               TEXT    NOT NULL,
    item_count          INTEGER NOT NULL,
    personal            TEXT    NOT NULL,
    cancellation_reason TEXT    NOT NULL,
    version             INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

CREATE TABLE customer_orders (
    order_id            TEXT    PRIMARY KEY,
    customer_id         TEXT    NOT NULL,
    cart_id             TEXT    NOT NULL,
    saga_id             TEXT    NULL,
    status              TEXT    NOT NULL,
    items               TEXT    NOT NULL,
    currency            TEXT    NOT NULL,
    total               TEXT    NOT NULL,
    item_count          INTEGER NOT NULL,
    cancellation_reason TEXT    NOT NULL,
    version             INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX customer_orders_newest ON customer_orders (customer_id, created_at DESC, order_id DESC);
CREATE INDEX customer_orders_all_newest ON customer_orders (created_at DESC, order_id DESC);

CREATE TABLE cart_conversions (
    order_id     TEXT    PRIMARY KEY,
    cart_id      TEXT    NOT NULL,
    customer_id  TEXT    NOT NULL,
    currency     TEXT    NOT NULL,
    total        TEXT    NOT NULL,
    item_count   INTEGER NOT NULL,
    outcome      TEXT    NOT NULL CHECK (outcome IN ('open', 'confirmed', 'cancelled')),
    converted_at INTEGER NOT NULL,
    settled_at   INTEGER NULL,
    version      INTEGER NOT NULL
);
CREATE INDEX cart_conversions_day ON cart_conversions (converted_at);
