//! The SQLite event store (embedded).
//!
//! SQLite has one writer at a time: every append runs in a `BEGIN IMMEDIATE`
//! transaction, which takes the write lock before reading the stream's
//! version, so the version check and the insert cannot interleave with
//! another writer. Positions come from `AUTOINCREMENT` inside that locked
//! transaction, so transactions commit in position order and every reader's
//! snapshot is a prefix of the log: reading by position never skips.
//!
//! Storage conventions (see the migration): UUIDs as TEXT, timestamps as
//! INTEGER milliseconds since the epoch, JSON as TEXT.

use std::{str::FromStr, time::Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use uuid::Uuid;

use super::{
    AppendOptions, AppendResult, EventMetadata, EventStore, EventStoreError, NewEvent, StoredEvent,
    Upcasters, check_batch, classify_existing, i64_version, u64_version,
};

/// The event store on SQLite.
#[derive(Clone, Debug)]
pub struct SqliteEventStore {
    pool: SqlitePool,
    upcasters: Upcasters,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    event_id: String,
    stream_id: String,
    stream_type: String,
    version: i64,
    global_position: i64,
    event_type: String,
    schema_version: i32,
    payload: String,
    metadata: String,
    recorded_at: i64,
}

const SELECT: &str = "SELECT event_id, stream_id, stream_type, version, global_position, event_type, \
                      schema_version, payload, metadata, recorded_at FROM events";

/// Milliseconds since the epoch, the SQLite timestamp convention of this service.
pub fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The inverse of [`millis`].
pub fn from_millis(ms: i64) -> Result<DateTime<Utc>, EventStoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| anyhow::anyhow!("timestamp {ms} out of range").into())
}

fn parse_uuid(text: &str) -> Result<Uuid, EventStoreError> {
    Uuid::from_str(text).map_err(|e| anyhow::anyhow!("stored uuid {text:?}: {e}").into())
}

impl SqliteEventStore {
    /// A store on `pool` (migrated), upcasting with `upcasters`.
    pub fn new(pool: SqlitePool, upcasters: Upcasters) -> Self {
        Self { pool, upcasters }
    }

    fn decode(&self, row: EventRow) -> Result<StoredEvent, EventStoreError> {
        let stored: serde_json::Value =
            serde_json::from_str(&row.payload).map_err(|e| anyhow::anyhow!("stored payload: {e}"))?;
        let payload = self
            .upcasters
            .upcast(&row.event_type, row.schema_version, stored)
            .map_err(anyhow::Error::msg)?;
        let metadata: EventMetadata =
            serde_json::from_str(&row.metadata).map_err(|e| anyhow::anyhow!("stored metadata: {e}"))?;
        Ok(StoredEvent {
            event_id: parse_uuid(&row.event_id)?,
            stream_id: parse_uuid(&row.stream_id)?,
            stream_type: row.stream_type,
            version: u64_version(row.version)?,
            global_position: row.global_position,
            event_type: row.event_type,
            schema_version: row.schema_version,
            payload,
            metadata,
            recorded_at: from_millis(row.recorded_at)?,
        })
    }

    async fn current_version(tx: &mut SqliteConnection, stream_id: &str) -> Result<u64, EventStoreError> {
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?")
                .bind(stream_id)
                .fetch_one(&mut *tx)
                .await?;
        u64_version(version)
    }

    /// Appends `events` after the stream's current version inside a caller's
    /// write transaction (`BEGIN IMMEDIATE`), so another table's write and the
    /// events commit together (the saga store records operator actions this way).
    pub(crate) async fn append_in(
        conn: &mut SqliteConnection,
        stream_id: Uuid,
        stream_type: &str,
        events: &[NewEvent],
    ) -> Result<(), EventStoreError> {
        check_batch(events)?;
        let stream = stream_id.to_string();
        let current = Self::current_version(conn, &stream).await?;
        Self::insert_events(conn, &stream, current, events, stream_type, millis(Utc::now())).await?;
        Ok(())
    }

    /// Inserts the batch and its outbox rows (the write lock is held).
    async fn insert_events(
        tx: &mut SqliteConnection,
        stream_id: &str,
        expected_version: u64,
        events: &[NewEvent],
        stream_type: &str,
        now: i64,
    ) -> Result<Vec<i64>, sqlx::Error> {
        let mut positions = Vec::with_capacity(events.len());
        for (offset, event) in events.iter().enumerate() {
            // In range: the caller checked expected_version + events.len().
            let version = (expected_version + 1 + offset as u64) as i64;
            let payload = event.payload.to_string();
            let metadata =
                serde_json::to_string(&event.metadata).map_err(|e| sqlx::Error::Encode(e.into()))?;
            let event_id = event.event_id.to_string();
            let position: i64 = sqlx::query_scalar(
                "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, \
                 payload, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING global_position",
            )
            .bind(&event_id)
            .bind(stream_id)
            .bind(stream_type)
            .bind(version)
            .bind(&event.event_type)
            .bind(event.schema_version)
            .bind(&payload)
            .bind(&metadata)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO outbox (event_id, stream_id, stream_type, stream_version, global_position, \
                 event_type, schema_version, payload, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&event_id)
            .bind(stream_id)
            .bind(stream_type)
            .bind(version)
            .bind(position)
            .bind(&event.event_type)
            .bind(event.schema_version)
            .bind(&payload)
            .bind(&metadata)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            positions.push(position);
        }
        Ok(positions)
    }

    async fn apply_options(
        tx: &mut Transaction<'static, Sqlite>,
        options: &AppendOptions,
        now: i64,
    ) -> Result<(), EventStoreError> {
        if let Some(saga) = &options.start_saga {
            sqlx::query(
                "INSERT INTO sagas (saga_id, order_id, status, idempotency_seed, deadline, next_run_at, \
                 created_at, updated_at) VALUES (?, ?, 'RUNNING', ?, ?, ?, ?, ?)",
            )
            .bind(saga.saga_id.to_string())
            .bind(saga.order_id.to_string())
            .bind(&saga.idempotency_seed)
            .bind(millis(saga.deadline))
            .bind(now)
            .bind(now)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        if let Some(cancel) = &options.request_cancel {
            sqlx::query(
                "UPDATE sagas SET cancel_requested = 1, cancel_reason = COALESCE(cancel_reason, ?), \
                 next_run_at = ?, updated_at = ? WHERE order_id = ?",
            )
            .bind(&cancel.reason)
            .bind(now)
            .bind(now)
            .bind(cancel.order_id.to_string())
            .execute(&mut **tx)
            .await?;
        }
        if let Some(done) = &options.complete_idempotency {
            let updated = sqlx::query(
                "UPDATE idempotency_keys SET status = 'done', response = ?, lease_until = NULL, updated_at = ? \
                 WHERE customer_id = ? AND key = ?",
            )
            .bind(done.response.to_string())
            .bind(now)
            .bind(&done.customer_id)
            .bind(&done.key)
            .execute(&mut **tx)
            .await?;
            if updated.rows_affected() != 1 {
                return Err(anyhow::anyhow!("idempotency key to complete was never claimed").into());
            }
        }
        Ok(())
    }

    async fn existing(&self, events: &[NewEvent]) -> Result<Vec<StoredEvent>, EventStoreError> {
        let mut found = Vec::new();
        for event in events {
            let row: Option<EventRow> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE event_id = ?")))
                    .bind(event.event_id.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(row) = row {
                found.push(self.decode(row)?);
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
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
        let stream = stream_id.to_string();
        // IMMEDIATE: take the write lock now, so the version we read stays true
        // until we commit (a deferred transaction could fail to upgrade).
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let actual = Self::current_version(&mut tx, &stream).await?;
        if actual != expected_version {
            tx.rollback().await?;
            let existing = self.existing(&events).await?;
            return classify_existing(stream_id, expected_version, actual, &events, &existing);
        }
        // Millisecond precision: what a later read returns, exactly.
        let now = millis(Utc::now());
        let inserted = Self::insert_events(
            &mut tx,
            &stream,
            expected_version,
            &events,
            &options.stream_type,
            now,
        )
        .await;
        let positions = match inserted {
            Ok(positions) => positions,
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                // The version was free, so an event id is taken (another stream).
                tx.rollback().await?;
                let existing = self.existing(&events).await?;
                return classify_existing(stream_id, expected_version, actual, &events, &existing);
            }
            Err(other) => return Err(other.into()),
        };
        Self::apply_options(&mut tx, &options, now).await?;
        tx.commit().await?;
        super::APPENDED.notify_one();
        crate::metrics::event_store_append("sqlite", started.elapsed());
        Ok(AppendResult {
            new_version: expected_version + events.len() as u64,
            global_positions: positions,
            recorded_at: from_millis(now)?,
            already_stored: false,
        })
    }

    async fn read_stream(
        &self,
        stream_id: Uuid,
        from_version: u64,
    ) -> Result<Vec<StoredEvent>, EventStoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SELECT} WHERE stream_id = ? AND version >= ? ORDER BY version"
        )))
        .bind(stream_id.to_string())
        .bind(i64_version(from_version)?)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| self.decode(r)).collect()
    }

    async fn read_all(&self, after_position: i64, limit: usize) -> Result<Vec<StoredEvent>, EventStoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SELECT} WHERE global_position > ? ORDER BY global_position LIMIT ?"
        )))
        .bind(after_position)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| self.decode(r)).collect()
    }

    async fn head_position(&self) -> Result<i64, EventStoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(global_position) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(head.unwrap_or(0))
    }

    async fn stream_version(&self, stream_id: Uuid) -> Result<u64, EventStoreError> {
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?")
                .bind(stream_id.to_string())
                .fetch_one(&self.pool)
                .await?;
        u64_version(version)
    }
}
