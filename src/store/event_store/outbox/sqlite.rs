//! The outbox on SQLite: one process owns the database file, so there is no
//! other relay to take turns with.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqlitePool;

use super::{BACKLOG, COLUMNS, Outbox, OutboxRow, PURGEABLE, envelopes, sql_limit};
use crate::{bus::EventBus, store::Purge};

/// The outbox on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteOutbox {
    pool: SqlitePool,
}

impl SqliteOutbox {
    /// The outbox of a migrated pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn publish_pending(&self, bus: &dyn EventBus, limit: usize) -> anyhow::Result<usize> {
        let rows: Vec<OutboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?1"
        )))
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        let (ids, events) = envelopes(rows)?;
        if ids.is_empty() {
            return Ok(0);
        }
        bus.publish(&events).await?;
        sqlx::query(
            "UPDATE outbox SET published_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) \
             WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::Value::from(ids.clone()).to_string())
        .execute(&self.pool)
        .await?;
        Ok(ids.len())
    }

    async fn purge_published(&self, before: DateTime<Utc>, purge: Purge) -> anyhow::Result<u64> {
        let chosen = PURGEABLE.replace('$', "?");
        let query = match purge {
            Purge::Count => format!("SELECT count(*) FROM ({chosen})"),
            Purge::Delete(_) => format!("DELETE FROM outbox WHERE id IN ({chosen})"),
        };
        // SQL-SAFE: constant text (PURGEABLE, placeholders per backend) chosen by `match`; values bound.
        let query = sqlx::query(sqlx::AssertSqlSafe(query))
            .bind(before.timestamp_millis())
            .bind(purge.limit());
        Ok(match purge {
            Purge::Count => {
                let n: i64 = sqlx::Row::try_get(&query.fetch_one(&self.pool).await?, 0)?;
                n.max(0) as u64
            }
            Purge::Delete(_) => query.execute(&self.pool).await?.rows_affected(),
        })
    }

    async fn backlog(&self) -> anyhow::Result<u64> {
        let count: i64 = sqlx::query_scalar(BACKLOG).fetch_one(&self.pool).await?;
        Ok(count.max(0) as u64)
    }
}
