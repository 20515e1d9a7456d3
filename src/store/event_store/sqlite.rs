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

use chrono::{DateTime, Utc};
use sqlx::{Sqlite, SqliteConnection, SqlitePool};

use super::{
    AppendWritten, EventStoreError, NewEvent, StreamAppend, Upcasters, check_batch, i64_version, u64_version,
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

    /// Inserts the batch (the write lock is held).
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
            positions.push(position);
        }
        Ok(positions)
    }
}

sql_event_store!(SqliteEventStore);

type Db = Sqlite;

const IN_IDS: &str = "IN (SELECT value FROM json_each($1))";

/// Everything after a position: SQLite commits in position order (see the
/// module documentation), so every event is settled.
const READ_ALL: &str = "SELECT event_id, stream_id, stream_type, version, global_position, event_type, \
                        schema_version, payload, metadata, recorded_at \
                        FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2";

const HEAD: &str = "SELECT global_position FROM events ORDER BY global_position DESC LIMIT 1";
