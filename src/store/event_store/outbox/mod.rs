//! The `outbox` table's reading and marking side. The event store inserts an
//! outbox row with every event it appends (same statement or transaction);
//! this module, its other half, hands unpublished rows to the bus and marks
//! them published. The relay ([`crate::outbox`]) decides when to call it and
//! how to back off; it writes no SQL of its own, so every statement that
//! writes `outbox` lives under [`crate::store::event_store`].

mod postgres;
mod sqlite;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use self::{postgres::PostgresOutbox, sqlite::SqliteOutbox};
use crate::{
    bus::{EventBus, EventEnvelope},
    store::{
        Purge,
        columns::{DbJson, DbTime, DbUuid},
        event_store::EventMetadata,
    },
};

/// The outbox of one database, as the relay drives it.
#[async_trait]
pub trait Outbox: Send + Sync + fmt::Debug {
    /// Publishes up to `limit` unpublished rows to `bus` in outbox id order
    /// and marks them published once the bus accepted them (a failed publish
    /// leaves them unpublished, to be sent again). Returns how many rows were
    /// published: 0 when none wait, or when another replica holds the round.
    async fn publish_pending(&self, bus: &dyn EventBus, limit: usize) -> anyhow::Result<usize>;

    /// How many rows wait to be published (the `outbox_backlog` gauge).
    async fn backlog(&self) -> anyhow::Result<u64>;

    /// Retention: rows published before `before`, counted or deleted a batch
    /// at a time (oldest first). Unpublished rows never go; the events they
    /// carried stay in the event store.
    async fn purge_published(&self, before: DateTime<Utc>, purge: Purge) -> anyhow::Result<u64>;
}

/// The rows a purge takes, oldest first (`$1`: the cutoff, `$2`: the batch).
const PURGEABLE: &str =
    "SELECT id FROM outbox WHERE published_at IS NOT NULL AND published_at < $1 ORDER BY id LIMIT $2";

/// The columns of [`OutboxRow`], in a SELECT.
const COLUMNS: &str = "id, event_id, stream_id, stream_type, stream_version, global_position, event_type, \
                       schema_version, payload, metadata, created_at";

/// Rows not yet published.
const BACKLOG: &str = "SELECT count(*) FROM outbox WHERE published_at IS NULL";

/// An outbox row as both backends return it.
#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event_id: DbUuid,
    stream_id: DbUuid,
    stream_type: String,
    stream_version: i64,
    global_position: i64,
    event_type: String,
    schema_version: i32,
    payload: DbJson,
    metadata: DbJson,
    created_at: DbTime,
}

/// The rows' ids (to mark them) and the envelopes to publish, in row order.
fn envelopes(rows: Vec<OutboxRow>) -> anyhow::Result<(Vec<i64>, Vec<EventEnvelope>)> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.id);
        events.push(EventEnvelope {
            event_id: row.event_id.0,
            stream_id: row.stream_id.0,
            stream_type: row.stream_type,
            version: u64::try_from(row.stream_version)?,
            global_position: row.global_position,
            event_type: row.event_type,
            schema_version: row.schema_version,
            payload: row.payload.0,
            // Metadata is tracing context only: a row whose metadata no longer
            // parses is still published, without it.
            metadata: serde_json::from_value::<EventMetadata>(row.metadata.0).unwrap_or_default(),
            recorded_at: row.created_at.0,
        });
    }
    Ok((ids, events))
}

/// The batch size as bound into SQL.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
