//! Named consumers on SQLite (embedded).

use async_trait::async_trait;
use chrono::Utc;
use sqlx::SqlitePool;

use super::{
    CONSUMER_COLUMNS, ConsumerRecord, ConsumerRow, ConsumerStore, ConsumerStoreError, NewConsumer, decode_all,
};
use crate::store::columns::DbTime;

/// Named consumers on SQLite (embedded).
#[derive(Clone, Debug)]
pub struct SqliteConsumerStore {
    pool: SqlitePool,
}

impl SqliteConsumerStore {
    /// A store on `pool` (migrated).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl ConsumerStore for SqliteConsumerStore {
    async fn create(&self, new: &NewConsumer) -> Result<ConsumerRecord, ConsumerStoreError> {
        let now = DbTime(Utc::now());
        let row: Option<ConsumerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO event_consumers (name, event_types, acked_position, acked_at, created_at, created_by) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING {CONSUMER_COLUMNS}"
        )))
        .bind(&new.name)
        // JSON as TEXT (the SQLite convention of this service).
        .bind(serde_json::to_string(&new.event_types).map_err(anyhow::Error::from)?)
        .bind(new.start_position)
        .bind(now)
        .bind(now)
        .bind(&new.created_by)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| ConsumerStoreError::AlreadyExists(new.name.clone()))?
            .decode()
    }

    async fn get(&self, name: &str) -> Result<Option<ConsumerRecord>, ConsumerStoreError> {
        let row: Option<ConsumerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CONSUMER_COLUMNS} FROM event_consumers WHERE name = ?"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ConsumerRow::decode).transpose()
    }

    async fn list(&self) -> Result<Vec<ConsumerRecord>, ConsumerStoreError> {
        let rows: Vec<ConsumerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CONSUMER_COLUMNS} FROM event_consumers ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await?;
        decode_all(rows)
    }

    async fn delete(&self, name: &str) -> Result<bool, ConsumerStoreError> {
        let deleted = sqlx::query("DELETE FROM event_consumers WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    async fn ack(&self, name: &str, position: i64) -> Result<Option<ConsumerRecord>, ConsumerStoreError> {
        let row: Option<ConsumerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE event_consumers SET acked_position = ?, acked_at = ? WHERE name = ? \
             RETURNING {CONSUMER_COLUMNS}"
        )))
        .bind(position)
        .bind(DbTime(Utc::now()))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ConsumerRow::decode).transpose()
    }
}
