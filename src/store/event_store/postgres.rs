//! The PostgreSQL event store.
//!
//! # Appending
//! An append is one statement: a guard reads the stream's current version,
//! the events are inserted only if it equals the expected version, and their
//! outbox rows are written from the inserted rows (a data-modifying CTE).
//! Concurrent appends share a transaction and one such statement, with a
//! guard per stream ([`group_commit`]).
//! Two writers that both pass the guard collide on the unique
//! `(stream_id, version)` index: the second waits for the first to commit and
//! then fails, so exactly one wins each version and no version is skipped.
//!
//! # Reading the global log without skipping
//! Positions come from an identity sequence when the row is inserted, but
//! transactions commit in any order: transaction A may take position 6 and
//! commit while B, holding position 5, is still running. A reader that took 6
//! and then asked for "after 6" would never see 5. So each row records its
//! writing transaction (`transaction_id`, xid8), and readers take only rows
//! whose transaction is older than `pg_snapshot_xmin(pg_current_snapshot())`,
//! the oldest transaction still running anywhere in the cluster. All older
//! transactions are finished, and any transaction still to commit has an xid
//! at or above that horizon, so ordering by `(transaction_id, global_position)`
//! gives an order in which nothing can ever appear behind a reader's cursor.
//! The price: a long-running transaction anywhere in the cluster holds the
//! horizon back (readers wait, they never skip).

mod group_commit;

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::Instant,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use self::group_commit::{Append, GroupCommit, Written};
use super::{
    AppendOptions, AppendResult, EventMetadata, EventStore, EventStoreError, NewEvent, StoredEvent,
    Upcasters, check_batch, classify_existing, i64_version, u64_version,
};

/// The event store on PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresEventStore {
    pool: PgPool,
    upcasters: Upcasters,
    /// Started by the first append (it needs the runtime), shared by clones.
    writers: Arc<OnceLock<GroupCommit>>,
    group_commit: bool,
}

const COLUMNS: &str = "event_id, stream_id, stream_type, version, global_position, event_type, \
                       schema_version, payload, metadata, recorded_at";

/// Appends, each to a different stream, in one statement (one append, or a
/// group commit batch): per stream the guard, then the events of the appends
/// whose stream is at their expected version, then their outbox rows. One row
/// per inserted event: its stream, version, position and commit time.
const APPEND_MANY: &str = "
WITH input AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::uuid[], $6::text[],
                         $7::int4[], $8::jsonb[], $9::jsonb[]) WITH ORDINALITY
        AS i(stream_id, stream_type, expected, version, event_id, event_type, schema_version, payload,
             metadata, ord)
), guard AS (
    SELECT s.stream_id,
           (SELECT COALESCE(MAX(e.version), 0) FROM events e WHERE e.stream_id = s.stream_id) AS current
    FROM (SELECT DISTINCT stream_id FROM input) s
), inserted AS (
    INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload, metadata)
    SELECT i.event_id, i.stream_id, i.stream_type, i.version, i.event_type, i.schema_version, i.payload,
           i.metadata
    FROM input i JOIN guard g ON g.stream_id = i.stream_id AND g.current = i.expected
    ORDER BY i.ord
    RETURNING event_id, stream_id, stream_type, version, global_position, event_type, schema_version,
              payload, metadata, recorded_at
), outboxed AS (
    INSERT INTO outbox (event_id, stream_id, stream_type, stream_version, global_position, event_type,
                        schema_version, payload, metadata, created_at)
    SELECT event_id, stream_id, stream_type, version, global_position, event_type, schema_version,
           payload, metadata, recorded_at
    FROM inserted
)
SELECT stream_id, version, global_position, recorded_at FROM inserted";

/// Settled events after a cursor. The cursor is the (transaction, position)
/// of the event at `$1`, or of the nearest earlier one if `$1` is not an
/// event's position (0: no cursor, read from the start).
const READ_ALL: &str = "
WITH cursor AS (
    SELECT transaction_id, global_position FROM events
    WHERE global_position <= $1 ORDER BY global_position DESC LIMIT 1
)
SELECT event_id, stream_id, stream_type, version, global_position, event_type, schema_version,
       payload, metadata, recorded_at
FROM events
WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
  -- One row comparison (no OR), so that it bounds the index scan instead of
  -- filtering every settled row before the cursor; xid8 '0' sorts first.
  AND (transaction_id, global_position) > (COALESCE((SELECT transaction_id FROM cursor), '0'::xid8),
                                           COALESCE((SELECT global_position FROM cursor), 0))
ORDER BY transaction_id, global_position
LIMIT $2";

const HEAD: &str = "
SELECT global_position FROM events
WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id DESC, global_position DESC
LIMIT 1";

#[derive(sqlx::FromRow)]
struct EventRow {
    event_id: Uuid,
    stream_id: Uuid,
    stream_type: String,
    version: i64,
    global_position: i64,
    event_type: String,
    schema_version: i32,
    payload: Value,
    metadata: Json<EventMetadata>,
    recorded_at: DateTime<Utc>,
}

impl PostgresEventStore {
    /// A store on `pool` (migrated), upcasting with `upcasters`.
    pub fn new(pool: PgPool, upcasters: Upcasters) -> Self {
        Self {
            pool,
            upcasters,
            writers: Arc::default(),
            group_commit: true,
        }
    }

    /// Off: every append commits in a transaction of its own.
    pub fn with_group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    fn writers(&self) -> &GroupCommit {
        self.writers.get_or_init(|| GroupCommit::start(self.pool.clone()))
    }

    fn decode(&self, row: EventRow) -> Result<StoredEvent, EventStoreError> {
        let payload = self
            .upcasters
            .upcast(&row.event_type, row.schema_version, row.payload)
            .map_err(anyhow::Error::msg)?;
        Ok(StoredEvent {
            event_id: row.event_id,
            stream_id: row.stream_id,
            stream_type: row.stream_type,
            version: u64_version(row.version)?,
            global_position: row.global_position,
            event_type: row.event_type,
            schema_version: row.schema_version,
            payload,
            metadata: row.metadata.0,
            recorded_at: row.recorded_at,
        })
    }

    /// Appends `events` after the stream's current version inside a caller's
    /// transaction, so another table's write and the events commit together
    /// (the saga store records operator actions this way). The caller must
    /// serialise writers of the stream (a row lock); a collision is an error.
    pub(crate) async fn append_in(
        conn: &mut PgConnection,
        stream_id: Uuid,
        stream_type: &str,
        events: &[NewEvent],
    ) -> Result<(), EventStoreError> {
        check_batch(events)?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1")
                .bind(stream_id)
                .fetch_one(&mut *conn)
                .await?;
        let expected = u64_version(current)?;
        let append = Append {
            stream_id,
            expected_version: expected,
            events: events.to_vec(),
            options: AppendOptions {
                stream_type: stream_type.to_string(),
                ..Default::default()
            },
        };
        match Self::write_many(conn, &[&append]).await?.pop().flatten() {
            Some(_) => Ok(()),
            None => Err(EventStoreError::Conflict {
                expected,
                actual: expected + 1,
            }),
        }
    }

    /// Inserts the events of `appends` (each to a different stream) in one
    /// statement, then each written append's options. One outcome per append:
    /// `None` when its guard refused (nothing of it was written).
    async fn write_many(
        conn: &mut PgConnection,
        appends: &[&Append],
    ) -> Result<Vec<Option<(Vec<i64>, DateTime<Utc>)>>, EventStoreError> {
        let events = appends
            .iter()
            .flat_map(|a| a.events.iter().enumerate().map(move |(i, e)| (*a, i, e)));
        let mut streams = Vec::new();
        let mut types = Vec::new();
        let mut expected = Vec::new();
        let mut versions = Vec::new();
        let mut ids = Vec::new();
        let mut event_types = Vec::new();
        let mut schemas = Vec::new();
        let mut payloads = Vec::new();
        let mut metadata = Vec::new();
        for (append, offset, event) in events {
            // In range: the caller checked expected_version + events.len().
            let base = append.expected_version as i64;
            streams.push(append.stream_id);
            types.push(append.options.stream_type.as_str());
            expected.push(base);
            versions.push(base + 1 + offset as i64);
            ids.push(event.event_id);
            event_types.push(event.event_type.as_str());
            schemas.push(event.schema_version);
            payloads.push(&event.payload);
            metadata.push(serde_json::to_value(&event.metadata).map_err(anyhow::Error::from)?);
        }
        let rows: Vec<(Uuid, i64, i64, DateTime<Utc>)> = sqlx::query_as(APPEND_MANY)
            .bind(streams)
            .bind(types)
            .bind(expected)
            .bind(versions)
            .bind(ids)
            .bind(event_types)
            .bind(schemas)
            .bind(payloads)
            .bind(metadata)
            .fetch_all(&mut *conn)
            .await?;
        // Per stream: (version, position) of each event written, and when.
        type Written = (Vec<(i64, i64)>, DateTime<Utc>);
        let mut written: HashMap<Uuid, Written> = HashMap::new();
        for (stream, version, position, at) in rows {
            let entry = written.entry(stream).or_insert_with(|| (Vec::new(), at));
            entry.0.push((version, position));
        }
        let mut outcomes = Vec::with_capacity(appends.len());
        for append in appends {
            match written.remove(&append.stream_id) {
                Some((mut positions, at)) if positions.len() == append.events.len() => {
                    Self::apply_options(conn, &append.options).await?;
                    positions.sort_unstable();
                    outcomes.push(Some((positions.into_iter().map(|(_, p)| p).collect(), at)));
                }
                Some(_) => return Err(anyhow::anyhow!("an append was written in part").into()),
                None => outcomes.push(None),
            }
        }
        Ok(outcomes)
    }

    /// Writes what the options ask for, in the events' transaction.
    async fn apply_options(conn: &mut PgConnection, options: &AppendOptions) -> Result<(), EventStoreError> {
        if let Some(saga) = &options.start_saga {
            sqlx::query(
                "INSERT INTO sagas (saga_id, order_id, status, idempotency_seed, deadline, next_run_at, \
                 created_at, updated_at) VALUES ($1, $2, 'RUNNING', $3, $4, now(), now(), now())",
            )
            .bind(saga.saga_id)
            .bind(saga.order_id)
            .bind(&saga.idempotency_seed)
            .bind(saga.deadline)
            .execute(&mut *conn)
            .await?;
        }
        if let Some(cancel) = &options.request_cancel {
            // The first reason wins; waking the saga now makes it compensate promptly.
            sqlx::query(
                "UPDATE sagas SET cancel_requested = true, cancel_reason = COALESCE(cancel_reason, $2), \
                 next_run_at = now(), updated_at = now() WHERE order_id = $1",
            )
            .bind(cancel.order_id)
            .bind(&cancel.reason)
            .execute(&mut *conn)
            .await?;
        }
        if let Some(done) = &options.complete_idempotency {
            let updated = sqlx::query(
                "UPDATE idempotency_keys SET status = 'done', response = $3, lease_until = NULL, \
                 updated_at = now() WHERE customer_id = $1 AND key = $2",
            )
            .bind(&done.customer_id)
            .bind(&done.key)
            .bind(&done.response)
            .execute(&mut *conn)
            .await?;
            if updated.rows_affected() != 1 {
                return Err(anyhow::anyhow!("idempotency key to complete was never claimed").into());
            }
        }
        Ok(())
    }

    /// After a refused or colliding insert: an idempotent repeat, or a conflict.
    async fn explain_refusal(
        &self,
        stream_id: Uuid,
        expected_version: u64,
        events: &[NewEvent],
    ) -> Result<AppendResult, EventStoreError> {
        let actual = self.stream_version(stream_id).await?;
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM events WHERE event_id = ANY($1)"
        )))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let existing = rows
            .into_iter()
            .map(|r| self.decode(r))
            .collect::<Result<Vec<_>, _>>()?;
        classify_existing(stream_id, expected_version, actual, events, &existing)
    }
}

#[async_trait]
impl EventStore for PostgresEventStore {
    #[tracing::instrument(skip(self, events, options), fields(events = events.len()))]
    async fn append(
        &self,
        stream_id: Uuid,
        expected_version: u64,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, EventStoreError> {
        check_batch(&events)?;
        i64_version(expected_version + events.len() as u64)?;
        let started = Instant::now();
        let append = Append {
            stream_id,
            expected_version,
            events,
            options,
        };
        let written = if self.group_commit {
            self.writers().submit(append).await?
        } else {
            group_commit::commit_alone(&self.pool, append).await?
        };
        match written {
            Written::Committed(global_positions, recorded_at) => {
                super::APPENDED.notify_one();
                crate::metrics::event_store_append("postgres", started.elapsed());
                Ok(AppendResult {
                    new_version: expected_version + global_positions.len() as u64,
                    global_positions,
                    recorded_at,
                    already_stored: false,
                })
            }
            Written::Refused(events) => self.explain_refusal(stream_id, expected_version, &events).await,
        }
    }

    async fn read_stream(
        &self,
        stream_id: Uuid,
        from_version: u64,
    ) -> Result<Vec<StoredEvent>, EventStoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version"
        )))
        .bind(stream_id)
        .bind(i64_version(from_version)?)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| self.decode(r)).collect()
    }

    async fn read_all(&self, after_position: i64, limit: usize) -> Result<Vec<StoredEvent>, EventStoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(READ_ALL)
            .bind(after_position)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|r| self.decode(r)).collect()
    }

    async fn head_position(&self) -> Result<i64, EventStoreError> {
        let head: Option<i64> = sqlx::query_scalar(HEAD).fetch_optional(&self.pool).await?;
        Ok(head.unwrap_or(0))
    }

    async fn stream_version(&self, stream_id: Uuid) -> Result<u64, EventStoreError> {
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1")
                .bind(stream_id)
                .fetch_one(&self.pool)
                .await?;
        u64_version(version)
    }
}
