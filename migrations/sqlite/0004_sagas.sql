-- 0004 (saga): see migrations/postgres/0004_sagas.sql. SQLite conventions: UUIDs as TEXT,
-- timestamps as INTEGER milliseconds since the epoch, booleans as INTEGER 0/1.
ALTER TABLE sagas ADD COLUMN current_step TEXT NULL;
ALTER TABLE sagas ADD COLUMN past_pivot INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sagas ADD COLUMN compensation_reason TEXT NULL;
ALTER TABLE sagas ADD COLUMN last_error TEXT NULL;
ALTER TABLE sagas ADD COLUMN authorization_id TEXT NULL;
ALTER TABLE sagas ADD COLUMN reservation_id TEXT NULL;
ALTER TABLE sagas ADD COLUMN shipment_id TEXT NULL;
ALTER TABLE sagas ADD COLUMN tracking_number TEXT NULL;
ALTER TABLE sagas ADD COLUMN capture_id TEXT NULL;

CREATE INDEX sagas_newest ON sagas (created_at DESC, saga_id DESC);
CREATE INDEX sagas_status_newest ON sagas (status, created_at DESC, saga_id DESC);

CREATE TABLE saga_steps (
    saga_id         TEXT    NOT NULL REFERENCES sagas (saga_id) ON DELETE CASCADE,
    step            TEXT    NOT NULL,
    compensation    INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    round_attempts  INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT    NOT NULL,
    last_error      TEXT    NULL,
    last_grpc_code  TEXT    NULL,
    started_at      INTEGER NULL,
    finished_at     INTEGER NULL,
    duration_ms     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (saga_id, step)
);

CREATE TABLE saga_attempts (
    saga_id         TEXT    NOT NULL REFERENCES sagas (saga_id) ON DELETE CASCADE,
    step            TEXT    NOT NULL,
    attempt         INTEGER NOT NULL,
    worker          TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER NULL,
    outcome         TEXT    NULL CHECK (outcome IN ('SUCCEEDED', 'REFUSED', 'TRANSIENT')),
    grpc_code       TEXT    NULL,
    error           TEXT    NULL,
    latency_ms      INTEGER NULL,
    trace_id        TEXT    NULL,
    PRIMARY KEY (saga_id, step, attempt)
);

CREATE TABLE saga_operator_actions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id  TEXT    NOT NULL REFERENCES sagas (saga_id) ON DELETE CASCADE,
    action   TEXT    NOT NULL CHECK (action IN ('retry', 'skip')),
    step     TEXT    NOT NULL,
    operator TEXT    NOT NULL,
    reason   TEXT    NOT NULL DEFAULT '',
    at       INTEGER NOT NULL
);
CREATE INDEX saga_operator_actions_saga ON saga_operator_actions (saga_id, id);
