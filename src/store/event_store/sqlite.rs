//! The SQLite event store (embedded).
//!
//! SQLite has one writer at a time: every append runs in a unit of work's
//! `BEGIN IMMEDIATE` transaction ([`SqliteEventStore::write_append`]), which takes the write lock before reading the stream's
//! version, so the version check and the insert cannot interleave with
//! another writer. Positions come from `AUTOINCREMENT` inside that locked
//! transaction, so transactions commit in position order and every reader's
//! snapshot is a prefix of the log: reading by position never skips.
//!
//! Storage conventions (see the migration): UUIDs as TEXT, timestamps as
//! INTEGER milliseconds since the epoch, JSON as TEXT.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::{
    AppendResult, AppendWritten, EVENT_COLUMNS, EventRow, EventStore, EventStoreError, NewEvent, StoredEvent,
    StreamAppend, Upcasters, check_batch, classify_existing, i64_version, u64_version,
};

/// The event store on SQLite.
#[derive(Clone, Debug)]
pub struct SqliteEventStore {
    pool: SqlitePool,
    upcasters: Upcasters,
}

/// A time from milliseconds since the epoch, the SQLite timestamp convention
/// of this service.
pub fn from_millis(ms: i64) -> Result<DateTime<Utc>, EventStoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| anyhow::anyhow!("timestamp {ms} out of range").into())
}

impl SqliteEventStore {
    /// A store on `pool` (migrated), upcasting with `upcasters`.
    pub fn new(pool: SqlitePool, upcasters: Upcasters) -> Self {
        Self { pool, upcasters }
    }

    fn decode(&self, row: EventRow) -> Result<StoredEvent, EventStoreError> {
        row.decode(&self.upcasters)
    }

    async fn current_version(tx: &mut SqliteConnection, stream_id: &str) -> Result<u64, EventStoreError> {
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?")
                .bind(stream_id)
                .fetch_one(&mut *tx)
                .await?;
        u64_version(version)
    }

    /// Writes `append` inside a caller's write transaction (`BEGIN
    /// IMMEDIATE`: the version read stays true until commit), at `now`
    /// (milliseconds). `None` when the stream is not at the expected version
    /// or an event id is taken: nothing of it is written, and the caller
    /// rolls back and explains with [`SqliteEventStore::explain_refusal`].
    pub(crate) async fn write_append(
        conn: &mut SqliteConnection,
        append: &StreamAppend,
        now: i64,
    ) -> Result<Option<AppendWritten>, EventStoreError> {
        check_batch(&append.events)?;
        let stream = append.stream_id.to_string();
        let current = Self::current_version(conn, &stream).await?;
        let expected = append.expected_version.unwrap_or(current);
        i64_version(expected + append.events.len() as u64)?;
        if current != expected {
            return Ok(None);
        }
        let inserted =
            Self::insert_events(conn, &stream, expected, &append.events, &append.stream_type, now).await;
        match inserted {
            Ok(global_positions) => Ok(Some(AppendWritten {
                new_version: expected + append.events.len() as u64,
                global_positions,
                recorded_at: from_millis(now)?,
            })),
            // The version was free, so an event id is taken (another stream).
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// After a refused append (its transaction rolled back): an idempotent
    /// repeat, or a conflict.
    pub(crate) async fn explain_refusal(
        &self,
        stream_id: Uuid,
        expected_version: u64,
        events: &[NewEvent],
    ) -> Result<AppendResult, EventStoreError> {
        let actual = self.stream_version(stream_id).await?;
        let existing = self.existing(events).await?;
        classify_existing(stream_id, expected_version, actual, events, &existing)
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

    async fn existing(&self, events: &[NewEvent]) -> Result<Vec<StoredEvent>, EventStoreError> {
        let mut found = Vec::new();
        for event in events {
            let row: Option<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?"
            )))
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
    async fn read_stream(
        &self,
        stream_id: Uuid,
        from_version: u64,
    ) -> Result<Vec<StoredEvent>, EventStoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version >= ? ORDER BY version"
        )))
        .bind(stream_id.to_string())
        .bind(i64_version(from_version)?)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| self.decode(r)).collect()
    }

    async fn read_all(&self, after_position: i64, limit: usize) -> Result<Vec<StoredEvent>, EventStoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > ? ORDER BY global_position LIMIT ?"
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

    async fn event_at(&self, position: i64) -> Result<Option<StoredEvent>, EventStoreError> {
        let row: Option<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE global_position = ?"
        )))
        .bind(position)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.decode(r)).transpose()
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
