-- 0006 (public event feed): named durable consumers of commerce.events.v1.OrderEventService.
-- One row per consumer, written only by src/store/consumers/. `acked_position` is the global
-- position (events.global_position) of the last event the consumer acknowledged, 0 before
-- any: Subscribe resumes after it in the settled log's order.
CREATE TABLE event_consumers (
    name           TEXT        PRIMARY KEY,
    -- Public event type names it receives, a JSON array as text (the same on SQLite; empty: all).
    event_types    TEXT        NOT NULL DEFAULT '[]',
    acked_position BIGINT      NOT NULL DEFAULT 0 CHECK (acked_position >= 0),
    acked_at       TIMESTAMPTZ NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    created_by     TEXT        NOT NULL
);
