-- 0012 (relay cursor, #17): the relay publishes the event store's settled log itself instead of
-- an outbox copy of every event. Units of work stopped writing `outbox` rows (one insert and one
-- update per event, a full copy of its payload); the relay keeps one durable cursor instead: the
-- global position of the last event the bus accepted, read back through
-- `EventStore::read_all` (which resolves it to the event's (transaction, position) in the
-- settled order, like `event_consumers.acked_position` and `projection_checkpoints.position`).
--
-- A table of its own rather than a row of `projection_checkpoints`: that table has one owner
-- (the read models' store), and its rows are projections that rebuilds reset and the console
-- reports; the relay's cursor is neither. Written only by src/store/relay_cursor/.
CREATE TABLE relay_cursor (
    -- One row: the cursor of the whole service (replicas share it, compare-and-set on `position`).
    id         SMALLINT    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    position   BIGINT      NOT NULL CHECK (position >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The turn: the relay that publishes now, until its lease ends (replicas take turns, as the
    -- outbox relay's advisory lock made them; src/store/relay_cursor/ says how).
    owner       TEXT        NULL,
    lease_until TIMESTAMPTZ NULL
);

-- Writers of the old release insert outbox rows in their events' transactions: waiting for this
-- lock waits for every one of them to end, so that the cursor below is taken after them.
LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE;

-- Start where the outbox left off: just before the first unpublished event in the settled order
-- (transaction, position), so that it and everything after it are published (an event already
-- published behind it in that order goes again: consumers are idempotent). Nothing unpublished:
-- the log's last event. No event before it: 0, the start.
WITH first_unpublished AS (
    SELECT e.transaction_id, e.global_position
    FROM outbox o JOIN events e ON e.event_id = o.event_id
    WHERE o.published_at IS NULL
    ORDER BY e.transaction_id, e.global_position
    LIMIT 1
)
INSERT INTO relay_cursor (id, position)
SELECT 1, COALESCE((
    SELECT e.global_position FROM events e
    WHERE NOT EXISTS (SELECT 1 FROM first_unpublished)
       OR (e.transaction_id, e.global_position)
          < (SELECT f.transaction_id, f.global_position FROM first_unpublished f)
    ORDER BY e.transaction_id DESC, e.global_position DESC
    LIMIT 1
), 0);

-- The outbox table stays for one release: replicas of the old release, still running during a
-- rolling upgrade (or back after a rollback), insert into it and relay from it (their events
-- reach the bus twice then: consumers are idempotent). Nothing of this release reads or writes
-- it; the release after drops it.
