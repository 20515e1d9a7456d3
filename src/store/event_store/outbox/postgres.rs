//! The outbox on PostgreSQL: each round holds a transaction advisory lock, so
//! replicas take turns instead of racing (racing would only publish twice,
//! but turns keep the bus tidy).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::{BACKLOG, COLUMNS, Outbox, OutboxRow, PURGEABLE, envelopes, sql_limit};
use crate::{bus::EventBus, store::Purge};

/// Key of the relay's advisory lock ("outbox" in ASCII).
const ADVISORY_KEY: i64 = 0x6f7574626f78;

/// The outbox on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresOutbox {
    pool: PgPool,
}

impl PostgresOutbox {
    /// The outbox of a migrated pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// One round inside `tx`, which holds the advisory lock on success.
    async fn round(tx: &mut PgConnection, bus: &dyn EventBus, limit: usize) -> anyhow::Result<usize> {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(ADVISORY_KEY)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(0);
        }
        let rows: Vec<OutboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1"
        )))
        .bind(sql_limit(limit))
        .fetch_all(&mut *tx)
        .await?;
        let (ids, events) = envelopes(rows)?;
        if ids.is_empty() {
            return Ok(0);
        }
        bus.publish(&events).await?;
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        Ok(ids.len())
    }
}

#[async_trait]
impl Outbox for PostgresOutbox {
    async fn publish_pending(&self, bus: &dyn EventBus, limit: usize) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        // Roll back at once on failure: a rollback left to the drop would keep
        // the advisory lock until the connection is reused.
        match Self::round(&mut tx, bus, limit).await {
            Ok(published) => {
                tx.commit().await?;
                Ok(published)
            }
            Err(error) => {
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }

    async fn purge_published(&self, before: DateTime<Utc>, purge: Purge) -> anyhow::Result<u64> {
        let sql = match purge {
            Purge::Count => format!("SELECT count(*) FROM ({PURGEABLE}) p"),
            Purge::Delete(_) => format!(
                "WITH d AS (DELETE FROM outbox WHERE id IN ({PURGEABLE}) RETURNING 1) SELECT count(*) FROM d"
            ),
        };
        // SQL-SAFE: constant text (PURGEABLE, placeholders per backend) chosen by `match`; values bound.
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(before)
            .bind(purge.limit())
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn backlog(&self) -> anyhow::Result<u64> {
        let count: i64 = sqlx::query_scalar(BACKLOG).fetch_one(&self.pool).await?;
        Ok(count.max(0) as u64)
    }
}
