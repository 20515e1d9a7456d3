//! The outbox relay: publishes the events that commands committed (with their
//! outbox rows, in one transaction) to the event bus, in outbox id order, and
//! marks them published.
//!
//! # Guarantees
//! - **Nothing lost.** A row is marked published only after the bus accepted
//!   it; if Redis is down, the relay retries with backoff and the rows wait.
//!   A crash between the publish and the mark publishes the rows again on
//!   restart: delivery is at least once and consumers are idempotent.
//! - **Per-stream order.** A stream's event can only be appended after its
//!   previous one committed (optimistic concurrency), so it has a larger
//!   outbox id and is never visible before it; the relay publishes each batch
//!   in id order on one connection. Events of different streams may be
//!   published in another order than their global positions; nothing relies
//!   on that.
//! - **One relay at a time.** On PostgreSQL each round holds a transaction
//!   advisory lock, so replicas take turns instead of racing (racing would
//!   only duplicate, but turns keep the bus tidy).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{Row, types::Json};
use uuid::Uuid;

use crate::{
    bus::{EventBus, EventEnvelope},
    db::Db,
    shutdown::Shutdown,
    store::event_store::EventMetadata,
};

/// Rows per round.
const BATCH: i64 = 500;
/// Pause after a round that found less than a full batch, unless an append
/// in this process wakes the relay first.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// Longest pause after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Key of the relay's advisory lock ("outbox" in ASCII).
const ADVISORY_KEY: i64 = 0x6f7574626f78;

const COLUMNS: &str = "id, event_id, stream_id, stream_type, stream_version, global_position, event_type, \
                       schema_version, payload, metadata, created_at";

/// The relay from the outbox table to the bus.
pub struct OutboxRelay {
    db: Db,
    bus: Arc<dyn EventBus>,
}

impl OutboxRelay {
    /// A relay from `db`'s outbox to `bus`.
    pub fn new(db: Db, bus: Arc<dyn EventBus>) -> Self {
        Self { db, bus }
    }

    /// Relays until `shutdown` fires (finishing the round in progress).
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(50);
        let mut failing = false;
        while !shutdown.is_triggered() {
            let pause = match self.relay_once().await {
                Ok(published) => {
                    if failing {
                        tracing::info!("outbox relay recovered");
                        failing = false;
                    }
                    backoff = Duration::from_millis(50);
                    if published as i64 == BATCH {
                        continue;
                    }
                    IDLE_POLL
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(error = format!("{error:#}"), "outbox relay failing; retrying");
                        failing = true;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                // While failing, the backoff decides, not new appends.
                () = crate::store::event_store::APPENDED.notified(), if !failing => {}
                _ = shutdown.wait() => break,
            }
        }
    }

    /// One round: publishes up to a batch of unpublished rows and marks them;
    /// returns how many.
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // Roll back at once on failure: a rollback left to the drop
                // would keep the advisory lock until the connection is reused.
                match self.relay_pg(&mut tx).await {
                    Ok(published) => {
                        tx.commit().await?;
                        let backlog = match published {
                            0 => 0,
                            _ => backlog_pg(pool).await.unwrap_or(0),
                        };
                        crate::metrics::outbox_backlog(backlog);
                        Ok(published)
                    }
                    Err(error) => {
                        let _ = tx.rollback().await;
                        Err(error)
                    }
                }
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?1"
                )))
                .bind(BATCH)
                .fetch_all(pool)
                .await?;
                let (ids, events) = sqlite_envelopes(&rows)?;
                if ids.is_empty() {
                    crate::metrics::outbox_backlog(0);
                    return Ok(0);
                }
                self.bus.publish(&events).await?;
                sqlx::query(
                    "UPDATE outbox SET published_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) \
                     WHERE id IN (SELECT value FROM json_each(?1))",
                )
                .bind(serde_json::Value::from(ids.clone()).to_string())
                .execute(pool)
                .await?;
                Ok(ids.len())
            }
        }
    }

    /// One PostgreSQL round inside `tx` (which holds the advisory lock on success).
    async fn relay_pg(&self, tx: &mut sqlx::PgConnection) -> anyhow::Result<usize> {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(ADVISORY_KEY)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(0);
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1"
        )))
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let (ids, events) = pg_envelopes(&rows)?;
        if ids.is_empty() {
            return Ok(0);
        }
        self.bus.publish(&events).await?;
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        Ok(ids.len())
    }
}

async fn backlog_pg(pool: &sqlx::PgPool) -> anyhow::Result<u64> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await?;
    Ok(count.max(0) as u64)
}

fn pg_envelopes(rows: &[sqlx::postgres::PgRow]) -> anyhow::Result<(Vec<i64>, Vec<EventEnvelope>)> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.try_get("id")?);
        let version: i64 = row.try_get("stream_version")?;
        events.push(EventEnvelope {
            event_id: row.try_get("event_id")?,
            stream_id: row.try_get("stream_id")?,
            stream_type: row.try_get("stream_type")?,
            version: u64::try_from(version)?,
            global_position: row.try_get("global_position")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            payload: row.try_get::<Json<serde_json::Value>, _>("payload")?.0,
            metadata: row.try_get::<Json<EventMetadata>, _>("metadata")?.0,
            recorded_at: row.try_get("created_at")?,
        });
    }
    Ok((ids, events))
}

fn sqlite_envelopes(rows: &[sqlx::sqlite::SqliteRow]) -> anyhow::Result<(Vec<i64>, Vec<EventEnvelope>)> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.try_get("id")?);
        let event_id: String = row.try_get("event_id")?;
        let stream_id: String = row.try_get("stream_id")?;
        let version: i64 = row.try_get("stream_version")?;
        let payload: String = row.try_get("payload")?;
        let metadata: String = row.try_get("metadata")?;
        let created: i64 = row.try_get("created_at")?;
        events.push(EventEnvelope {
            event_id: Uuid::parse_str(&event_id)?,
            stream_id: Uuid::parse_str(&stream_id)?,
            stream_type: row.try_get("stream_type")?,
            version: u64::try_from(version)?,
            global_position: row.try_get("global_position")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            payload: serde_json::from_str(&payload)?,
            metadata: serde_json::from_str(&metadata).unwrap_or_default(),
            recorded_at: DateTime::<Utc>::from_timestamp_millis(created)
                .ok_or_else(|| anyhow::anyhow!("outbox row {created} has a bad timestamp"))?,
        });
    }
    Ok((ids, events))
}
