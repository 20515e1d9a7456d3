-- 0002 (orders): the event store, its transactional outbox, command idempotency keys and the
-- saga start row. Everything an order command writes commits in ONE transaction.

-- The event log. `global_position` is unique and assigned at insert time, but with concurrent
-- writers a later position can commit before an earlier one. Readers of the whole log therefore
-- never read past the *settled horizon*: each row carries the id of the transaction that wrote
-- it (`transaction_id`, xid8) and readers only take rows whose transaction id is below
-- `pg_snapshot_xmin(pg_current_snapshot())` (every older transaction has finished), in
-- (transaction_id, global_position) order. A transaction that starts later always gets a
-- larger xid, so nothing can ever appear behind a reader's cursor.
CREATE TABLE events (
    global_position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        UUID        NOT NULL UNIQUE,
    stream_id       UUID        NOT NULL,
    stream_type     TEXT        NOT NULL,
    version         BIGINT      NOT NULL CHECK (version >= 1),
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL CHECK (schema_version >= 1),
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    transaction_id  XID8        NOT NULL DEFAULT pg_current_xact_id(),
    -- Optimistic concurrency: two writers of the same version cannot both commit.
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
CREATE INDEX events_settled_order ON events (transaction_id, global_position);

-- Transactional outbox: one row per event, written in the event's transaction. The relay
-- publishes unpublished rows to the bus and sets `published_at`.
CREATE TABLE outbox (
    id              BIGSERIAL   PRIMARY KEY,
    event_id        UUID        NOT NULL UNIQUE,
    stream_id       UUID        NOT NULL,
    stream_type     TEXT        NOT NULL,
    stream_version  BIGINT      NOT NULL,
    global_position BIGINT      NOT NULL,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL,
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    transaction_id  XID8        NOT NULL DEFAULT pg_current_xact_id(),
    published_at    TIMESTAMPTZ NULL
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Command idempotency (CreateOrder). Keys are scoped per customer: two customers may pick the
-- same key without seeing each other. `request_hash` is the SHA-256 of the canonical request
-- (customer included). `order_id` is chosen when the key is first claimed, so every retry works
-- on the same order. `progress` records the cart snapshot before the cart is converted, so a
-- retry after a transient failure can finish the order. `lease_until` bounds how long an
-- 'in_flight' claim blocks others (a crashed request's claim expires).
CREATE TABLE idempotency_keys (
    customer_id  TEXT        NOT NULL,
    key          TEXT        NOT NULL,
    request_hash TEXT        NOT NULL,
    status       TEXT        NOT NULL CHECK (status IN ('in_flight', 'done', 'refused')),
    order_id     UUID        NOT NULL,
    progress     JSONB       NULL,
    response     JSONB       NULL,
    lease_until  TIMESTAMPTZ NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, key)
);

-- The saga start, inserted in the transaction of OrderCreated (the saga engineer owns the rest
-- of this table and may extend it in 0004). `idempotency_seed` seeds the per-step keys.
CREATE TABLE sagas (
    saga_id          UUID        PRIMARY KEY,
    order_id         UUID        NOT NULL UNIQUE,
    status           TEXT        NOT NULL DEFAULT 'RUNNING',
    idempotency_seed TEXT        NOT NULL,
    deadline         TIMESTAMPTZ NOT NULL,
    next_run_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    cancel_requested BOOLEAN     NOT NULL DEFAULT false,
    cancel_reason    TEXT        NULL,
    lease_owner      TEXT        NULL,
    lease_until      TIMESTAMPTZ NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sagas_due ON sagas (status, next_run_at);
