-- 0003 (read side): the read models and the projections' checkpoints.
--
-- Read models are disposable: `commerce rebuild-projections` rebuilds them from the event store
-- into shadow tables (`<table>_rebuild`, created LIKE these) and swaps them in. Every row
-- carries the version of its order stream folded in: an event is applied only at the next
-- version, and upserts never lower it.

-- One row per projection. `position` is the last global position of the event store's settled
-- log the projection has swept (only the sweep moves it, compare-and-set on `generation`,
-- which each rebuild swap bumps). The rebuild_* columns report a running rebuild.
CREATE TABLE projection_checkpoints (
    name                 TEXT        PRIMARY KEY,
    position             BIGINT      NOT NULL DEFAULT 0,
    generation           BIGINT      NOT NULL DEFAULT 0,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    rebuilding           BOOLEAN     NOT NULL DEFAULT false,
    rebuild_replayed     BIGINT      NOT NULL DEFAULT 0,
    rebuild_total        BIGINT      NOT NULL DEFAULT 0,
    rebuild_started_at   TIMESTAMPTZ NULL,
    rebuild_heartbeat_at TIMESTAMPTZ NULL
);
INSERT INTO projection_checkpoints (name) VALUES ('order_detail'), ('customer_orders'), ('cart_conversion');

-- GetOrder / WatchOrder: the whole order, personal fields as the event gives them.
CREATE TABLE order_details (
    order_id            UUID        PRIMARY KEY,
    customer_id         TEXT        NOT NULL,
    cart_id             UUID        NOT NULL,
    saga_id             UUID        NULL,
    status              TEXT        NOT NULL,
    items               JSONB       NOT NULL,
    currency            TEXT        NOT NULL,
    total               NUMERIC     NOT NULL,
    item_count          INTEGER     NOT NULL,
    personal            JSONB       NOT NULL,
    cancellation_reason TEXT        NOT NULL,
    version             BIGINT      NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);

-- ListOrders: summaries without personal data, keyset-paged newest first.
CREATE TABLE customer_orders (
    order_id            UUID        PRIMARY KEY,
    customer_id         TEXT        NOT NULL,
    cart_id             UUID        NOT NULL,
    saga_id             UUID        NULL,
    status              TEXT        NOT NULL,
    items               JSONB       NOT NULL,
    currency            TEXT        NOT NULL,
    total               NUMERIC     NOT NULL,
    item_count          INTEGER     NOT NULL,
    cancellation_reason TEXT        NOT NULL,
    version             BIGINT      NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX customer_orders_newest ON customer_orders (customer_id, created_at DESC, order_id DESC);
CREATE INDEX customer_orders_all_newest ON customer_orders (created_at DESC, order_id DESC);

-- Cart conversion figures: one row per converted cart (order), summed per day and currency.
CREATE TABLE cart_conversions (
    order_id     UUID        PRIMARY KEY,
    cart_id      UUID        NOT NULL,
    customer_id  TEXT        NOT NULL,
    currency     TEXT        NOT NULL,
    total        NUMERIC     NOT NULL,
    item_count   INTEGER     NOT NULL,
    outcome      TEXT        NOT NULL CHECK (outcome IN ('open', 'confirmed', 'cancelled')),
    converted_at TIMESTAMPTZ NOT NULL,
    settled_at   TIMESTAMPTZ NULL,
    version      BIGINT      NOT NULL
);
CREATE INDEX cart_conversions_day ON cart_conversions (converted_at);
