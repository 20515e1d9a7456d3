-- 0004 (saga): what the orchestrator keeps beside the saga row that 0002 inserts with
-- OrderCreated. Workers own these columns while they hold a saga's lease; CancelOrder only
-- writes cancel_requested / cancel_reason / next_run_at (0002's columns).
ALTER TABLE sagas
    ADD COLUMN current_step        TEXT        NULL,
    ADD COLUMN past_pivot          BOOLEAN     NOT NULL DEFAULT false,
    ADD COLUMN compensation_reason TEXT        NULL,
    ADD COLUMN last_error          TEXT        NULL,
    ADD COLUMN authorization_id    TEXT        NULL,
    ADD COLUMN reservation_id      TEXT        NULL,
    ADD COLUMN shipment_id         TEXT        NULL,
    ADD COLUMN tracking_number     TEXT        NULL,
    ADD COLUMN capture_id          TEXT        NULL;

-- ListSagas pages newest first, optionally by status.
CREATE INDEX sagas_newest ON sagas (created_at DESC, saga_id DESC);
CREATE INDEX sagas_status_newest ON sagas (status, created_at DESC, saga_id DESC);

-- One row per step a saga has started: the summary GetSaga shows.
CREATE TABLE saga_steps (
    saga_id         UUID        NOT NULL REFERENCES sagas (saga_id) ON DELETE CASCADE,
    step            TEXT        NOT NULL,
    compensation    BOOLEAN     NOT NULL,
    status          TEXT        NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    -- Attempts since the last operator retry: what the retry budget counts.
    round_attempts  INTEGER     NOT NULL DEFAULT 0,
    idempotency_key TEXT        NOT NULL,
    last_error      TEXT        NULL,
    last_grpc_code  TEXT        NULL,
    started_at      TIMESTAMPTZ NULL,
    finished_at     TIMESTAMPTZ NULL,
    duration_ms     BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (saga_id, step)
);

-- Every attempt, written before the call (outcome NULL) and completed after it: the audit
-- trail of what was sent to whom, with which key, how long it took and how it ended.
CREATE TABLE saga_attempts (
    saga_id         UUID        NOT NULL REFERENCES sagas (saga_id) ON DELETE CASCADE,
    step            TEXT        NOT NULL,
    attempt         INTEGER     NOT NULL,
    worker          TEXT        NOT NULL,
    idempotency_key TEXT        NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ NULL,
    outcome         TEXT        NULL CHECK (outcome IN ('SUCCEEDED', 'REFUSED', 'TRANSIENT')),
    grpc_code       TEXT        NULL,
    error           TEXT        NULL,
    latency_ms      BIGINT      NULL,
    trace_id        TEXT        NULL,
    PRIMARY KEY (saga_id, step, attempt)
);

-- Operator actions (retry, skip) with who and why.
CREATE TABLE saga_operator_actions (
    id       BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    saga_id  UUID        NOT NULL REFERENCES sagas (saga_id) ON DELETE CASCADE,
    action   TEXT        NOT NULL CHECK (action IN ('retry', 'skip')),
    step     TEXT        NOT NULL,
    operator TEXT        NOT NULL,
    reason   TEXT        NOT NULL DEFAULT '',
    at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX saga_operator_actions_saga ON saga_operator_actions (saga_id, id);

-- Wake the workers of every replica when a saga is created or a cancel is requested,
-- instead of waiting for their next poll (delivered at commit).
CREATE FUNCTION sagas_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('commerce_sagas', NEW.saga_id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER sagas_created AFTER INSERT ON sagas
    FOR EACH ROW EXECUTE FUNCTION sagas_wake();
CREATE TRIGGER sagas_cancel_requested AFTER UPDATE OF cancel_requested ON sagas
    FOR EACH ROW WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested)
    EXECUTE FUNCTION sagas_wake();
