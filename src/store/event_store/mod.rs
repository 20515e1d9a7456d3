//! The event store: append-only streams with optimistic concurrency, and a
//! global log for subscribers (the projections' sweep, the event feed, and
//! the relay that publishes it to the bus, [`crate::relay`]).
//!
//! # Guarantees (checked by the conformance suite in `tests/api/event_store.rs`)
//! - **Optimistic concurrency.** [`EventStore::append`] names the version the
//!   caller decided on; if the stream moved, nothing is written and the caller
//!   gets [`EventStoreError::Conflict`]. Versions are gapless from 1.
//! - **Idempotent append.** Appending events whose ids are already stored at
//!   exactly those versions of that stream succeeds without writing anything
//!   ([`AppendResult::already_stored`]): a retry after a lost reply is harmless.
//! - **One transaction, one write path.** Events are appended only through a
//!   [unit of work](crate::store::unit_of_work) (a lone append is a unit of
//!   one: `UnitOfWorkCommitter::append`), which calls this module's writers
//!   (`PostgresEventStore::write_appends`, `SqliteEventStore::write_append`)
//!   inside its transaction; the events commit together with whatever other
//!   tables the unit writes. The [`EventStore`] port itself only reads.
//!
//! # Tables written here
//! `events`, by the writers above, and nothing else: the relay publishes
//! the settled log and keeps its own cursor
//! ([`crate::store::relay_cursor`]).
//! - **Readers never skip.** [`EventStore::read_all`] returns only *settled*
//!   events (every transaction that could still commit an event before them has
//!   finished), in settled order. See the backend modules for how.
//! - **Upcasting.** Payloads are stored with their schema version and returned
//!   upcast to the current schema by [`Upcasters`].

/// The [`EventStore`] implementation of a backend's store `$name` (a struct
/// with `pool` and `upcasters` fields), and its `explain_refusal`: the
/// statements are the same on both databases but for `IN_IDS` (a list
/// condition given the ids as one [`DbList`](crate::store::columns::DbList)
/// parameter) and the reads of the settled log (`READ_ALL`, `HEAD`: see
/// [`EventStore::read_all`] on its order), which each backend's module
/// defines with `Db`, its sqlx database; the rest is written once, here.
/// Expanded in a child module (`super::` is this one).
macro_rules! sql_event_store {
    ($name:ident) => {
        impl $name {
            fn decode(&self, row: super::EventRow) -> Result<super::StoredEvent, super::EventStoreError> {
                row.decode(&self.upcasters)
            }

            /// The events `query` selects ([`super::EVENT_COLUMNS`]), decoded.
            async fn events_by(
                &self,
                query: sqlx::query::QueryAs<'_, Db, super::EventRow, <Db as sqlx::Database>::Arguments>,
            ) -> Result<Vec<super::StoredEvent>, super::EventStoreError> {
                let rows = query.fetch_all(&self.pool).await?;
                rows.into_iter().map(|r| self.decode(r)).collect()
            }

            /// After a refused append (its transaction rolled back, or its
            /// insert collided): an idempotent repeat, or a conflict.
            pub(crate) async fn explain_refusal(
                &self,
                stream_id: uuid::Uuid,
                expected_version: u64,
                events: &[super::NewEvent],
            ) -> Result<super::AppendResult, super::EventStoreError> {
                use super::EventStore as _;
                let actual = self.stream_version(stream_id).await?;
                let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
                let sql = format!(
                    "SELECT {} FROM events WHERE event_id {IN_IDS}",
                    super::EVENT_COLUMNS
                );
                // SQL-SAFE: only constants (EVENT_COLUMNS, IN_IDS) are spliced.
                let query =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(crate::store::columns::DbList(&ids));
                let existing = self.events_by(query).await?;
                super::classify_existing(stream_id, expected_version, actual, events, &existing)
            }
        }

        #[async_trait::async_trait]
        impl super::EventStore for $name {
            async fn read_stream(
                &self,
                stream_id: uuid::Uuid,
                from_version: u64,
            ) -> Result<Vec<super::StoredEvent>, super::EventStoreError> {
                let from = super::i64_version(from_version)?;
                let sql = format!(
                    "SELECT {} FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version",
                    super::EVENT_COLUMNS
                );
                // SQL-SAFE: only constants (EVENT_COLUMNS, IN_IDS) are spliced.
                let query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(crate::store::columns::DbUuid(stream_id))
                    .bind(from);
                self.events_by(query).await
            }

            async fn read_all(
                &self,
                after_position: i64,
                limit: usize,
            ) -> Result<Vec<super::StoredEvent>, super::EventStoreError> {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                self.events_by(sqlx::query_as(READ_ALL).bind(after_position).bind(limit))
                    .await
            }

            async fn head_position(&self) -> Result<i64, super::EventStoreError> {
                let head: Option<i64> = sqlx::query_scalar(HEAD).fetch_optional(&self.pool).await?;
                Ok(head.unwrap_or(0))
            }

            async fn event_at(
                &self,
                position: i64,
            ) -> Result<Option<super::StoredEvent>, super::EventStoreError> {
                let sql = format!(
                    "SELECT {} FROM events WHERE global_position = $1",
                    super::EVENT_COLUMNS
                );
                // SQL-SAFE: only constants (EVENT_COLUMNS, IN_IDS) are spliced.
                let query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(position);
                Ok(self.events_by(query).await?.pop())
            }

            async fn stream_version(&self, stream_id: uuid::Uuid) -> Result<u64, super::EventStoreError> {
                let version: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1")
                        .bind(crate::store::columns::DbUuid(stream_id))
                        .fetch_one(&self.pool)
                        .await?;
                super::u64_version(version)
            }
        }
    };
}

mod codec;
mod postgres;
mod sqlite;
mod upcast;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub(crate) use self::postgres::is_unique_violation;
pub use self::{
    codec::{ORDER_CREATED_SCHEMA, OrderCodec},
    postgres::{AppendWritten, PostgresEventStore},
    sqlite::SqliteEventStore,
    upcast::{Upcast, Upcasters},
};
use crate::{
    error::AppError,
    store::columns::{DbJson, DbTime, DbUuid},
};

/// The stream type of order streams.
pub const ORDER_STREAM: &str = "order";

/// Notified after every commit that wrote events in this process: the relay
/// wakes on it instead of waiting for its next poll. Only a hint
/// (appends of other replicas are found by the poll), so one process-wide
/// signal serves every store in it.
pub static APPENDED: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);

/// Tracing context and provenance of an event, stored beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The request or workflow the event belongs to (e.g. the request id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// What directly caused it (e.g. a command id or a previous event id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The client's idempotency key of the command that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// An event to append. The id is chosen by the caller so that a retried
/// append is recognised as the same event.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id (UUID v7 recommended: index-friendly).
    pub event_id: Uuid,
    /// Type name, e.g. `OrderCreated`.
    pub event_type: String,
    /// Schema version of `payload`, from 1.
    pub schema_version: i32,
    /// The event as JSON.
    pub payload: Value,
    /// The request and command the event comes from.
    pub metadata: EventMetadata,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Unique over the whole log.
    pub event_id: Uuid,
    /// The stream (aggregate id).
    pub stream_id: Uuid,
    /// The stream's type, e.g. [`ORDER_STREAM`].
    pub stream_type: String,
    /// Position in the stream, from 1, gapless.
    pub version: u64,
    /// Position in the global log: unique, but see [`EventStore::read_all`] on order.
    pub global_position: i64,
    /// The event's name, e.g. `OrderCreated`: what the payload means.
    pub event_type: String,
    /// Schema version the payload was *stored* with (for audit); `payload`
    /// itself is always upcast to the current schema.
    pub schema_version: i32,
    /// The payload at the current schema.
    pub payload: Value,
    /// The request and command the event came from.
    pub metadata: EventMetadata,
    /// When the append committed (transaction time).
    pub recorded_at: DateTime<Utc>,
}

/// Events to append to one stream, as a value: the event store's part of a
/// unit of work ([`crate::store::unit_of_work`]), and what its group commit
/// queues.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    /// The stream (aggregate id).
    pub stream_id: Uuid,
    /// The stream's type, e.g. [`ORDER_STREAM`].
    pub stream_type: String,
    /// The version the caller decided on (0 for a new stream). `None`
    /// appends after whatever the stream holds: only for a stream whose
    /// writers are serialised by other means (a saga's audit stream, written
    /// under its saga row's version check).
    pub expected_version: Option<u64>,
    /// What to append (at least one event).
    pub events: Vec<NewEvent>,
}

/// The outcome of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append (the last appended event's).
    pub new_version: u64,
    /// Global positions of the appended events, in order.
    pub global_positions: Vec<i64>,
    /// The events' `recorded_at` (one transaction, one time), so that a reply
    /// built from the append shows the same time as every later read.
    pub recorded_at: DateTime<Utc>,
    /// True when these exact events were already stored (an idempotent
    /// repeat): nothing was written (and nothing else of a unit of work).
    pub already_stored: bool,
}

store_error! {
    /// Why an append or read failed: a version conflict (the caller reads
    /// again and decides again), the database unreachable, or anything else.
    pub enum EventStoreError("event store", "event store query") {
        /// The stream is not at the expected version: someone else appended first.
        #[error("version conflict: expected version {expected}, stream is at {actual}")]
        Conflict {
            /// The version the caller decided on.
            expected: u64,
            /// The stream's version now.
            actual: u64,
        },
    }
}

impl From<EventStoreError> for AppError {
    fn from(err: EventStoreError) -> Self {
        match err {
            EventStoreError::Conflict { .. } => {
                AppError::aborted(crate::error::ErrorReason::ConcurrentModification, err.to_string())
            }
            EventStoreError::Unavailable(msg) => AppError::unavailable(msg),
            EventStoreError::Other(source) => AppError::Internal(source),
        }
    }
}

/// The event log's read side (appends go through a
/// [unit of work](crate::store::unit_of_work)); see the module documentation
/// for its guarantees.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug {
    /// The stream's events with version >= `from_version` (1 or 0 for all), in
    /// version order; empty for an unknown stream.
    async fn read_stream(
        &self,
        stream_id: Uuid,
        from_version: u64,
    ) -> Result<Vec<StoredEvent>, EventStoreError>;

    /// Up to `limit` settled events after the event at `after_position`
    /// (0: from the start), in settled order.
    ///
    /// Checkpoint with the `global_position` of the **last event you
    /// processed** and pass it back. On PostgreSQL the settled order is
    /// (writing transaction, position): an event of an older transaction can
    /// carry a larger position than one of a younger transaction, so never
    /// compare positions to decide whether an event was seen; only this call
    /// knows the order. The cursor must be a position this call (or
    /// [`EventStore::head_position`]) returned.
    async fn read_all(&self, after_position: i64, limit: usize) -> Result<Vec<StoredEvent>, EventStoreError>;

    /// The position of the last settled event (0 when none): a reader whose
    /// checkpoint equals it has seen everything settled.
    async fn head_position(&self) -> Result<i64, EventStoreError>;

    /// The stream's current version (0 for an unknown stream).
    async fn stream_version(&self, stream_id: Uuid) -> Result<u64, EventStoreError>;

    /// The event at global `position`, settled or not (None when no event has
    /// it): tells a cursor a client hands back from one it made up.
    async fn event_at(&self, position: i64) -> Result<Option<StoredEvent>, EventStoreError>;
}

/// Checks that a batch is appendable at all (shared by both backends).
pub(crate) fn check_batch(events: &[NewEvent]) -> Result<(), EventStoreError> {
    if events.is_empty() {
        return Err(anyhow::anyhow!("append of an empty batch").into());
    }
    if let Some(bad) = events
        .iter()
        .find(|e| e.schema_version < 1 || e.event_type.is_empty())
    {
        return Err(anyhow::anyhow!("event {} has no type or a schema version below 1", bad.event_id).into());
    }
    Ok(())
}

/// Decides what a failed version check means, given the events already
/// stored under the batch's ids: an idempotent repeat (every event stored at
/// exactly the version it would get now), or a conflict.
pub(crate) fn classify_existing(
    stream_id: Uuid,
    expected_version: u64,
    actual: u64,
    events: &[NewEvent],
    existing: &[StoredEvent],
) -> Result<AppendResult, EventStoreError> {
    let repeat = !existing.is_empty()
        && existing.len() == events.len()
        && events.iter().enumerate().all(|(i, new)| {
            existing.iter().any(|old| {
                old.event_id == new.event_id
                    && old.stream_id == stream_id
                    && old.version == expected_version + 1 + i as u64
                    && old.event_type == new.event_type
            })
        });
    if repeat {
        let mut positions: Vec<_> = existing
            .iter()
            .map(|e| (e.version, e.global_position, e.recorded_at))
            .collect();
        positions.sort_unstable();
        return Ok(AppendResult {
            new_version: expected_version + events.len() as u64,
            recorded_at: positions.last().map_or_else(Utc::now, |(_, _, at)| *at),
            global_positions: positions.into_iter().map(|(_, p, _)| p).collect(),
            already_stored: true,
        });
    }
    if let Some(clash) = existing.iter().find(|e| e.stream_id != stream_id) {
        return Err(
            anyhow::anyhow!("event id {} is already stored in another stream", clash.event_id).into(),
        );
    }
    crate::metrics::event_store_conflict();
    Err(EventStoreError::Conflict {
        expected: expected_version,
        actual,
    })
}

/// An event row as both backends return it (the column types decode each
/// database's form).
#[derive(sqlx::FromRow)]
struct EventRow {
    event_id: DbUuid,
    stream_id: DbUuid,
    stream_type: String,
    version: i64,
    global_position: i64,
    event_type: String,
    schema_version: i32,
    payload: DbJson,
    metadata: DbJson,
    recorded_at: DbTime,
}

/// The columns of [`EventRow`], in a SELECT.
const EVENT_COLUMNS: &str = "event_id, stream_id, stream_type, version, global_position, event_type, \
                             schema_version, payload, metadata, recorded_at";

impl EventRow {
    /// The stored event, its payload upcast to the current schema.
    fn decode(self, upcasters: &Upcasters) -> Result<StoredEvent, EventStoreError> {
        let payload = upcasters
            .upcast(&self.event_type, self.schema_version, self.payload.0)
            .map_err(anyhow::Error::msg)?;
        let metadata: EventMetadata =
            serde_json::from_value(self.metadata.0).map_err(|e| anyhow::anyhow!("stored metadata: {e}"))?;
        Ok(StoredEvent {
            event_id: self.event_id.0,
            stream_id: self.stream_id.0,
            stream_type: self.stream_type,
            version: u64_version(self.version)?,
            global_position: self.global_position,
            event_type: self.event_type,
            schema_version: self.schema_version,
            payload,
            metadata,
            recorded_at: self.recorded_at.0,
        })
    }
}

fn u64_version(version: i64) -> Result<u64, EventStoreError> {
    u64::try_from(version).map_err(|_| anyhow::anyhow!("negative stream version {version}").into())
}

fn i64_version(version: u64) -> Result<i64, EventStoreError> {
    i64::try_from(version).map_err(|_| anyhow::anyhow!("stream version {version} out of range").into())
}
