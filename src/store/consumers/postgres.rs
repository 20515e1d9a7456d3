//! Named consumers on PostgreSQL.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::PgPool;

use super::{
    CONSUMER_COLUMNS, ConsumerRecord, ConsumerRow, ConsumerStore, ConsumerStoreError, NewConsumer, decode_all,
};
use crate::store::columns::DbTime;

/// Named consumers on PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresConsumerStore {
    pool: PgPool,
}

impl PostgresConsumerStore {
    /// A store on `pool` (migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl ConsumerStore for PostgresConsumerStore {
    async fn create(&self, new: &NewConsumer) -> Result<ConsumerRecord, ConsumerStoreError> {
        let now = DbTime(Utc::now());
        let row: Option<ConsumerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO event_consumers (name, event_types, acked_position, acked_at, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING {CONSUMER_COLUMNS}"
        )))
        .bind(&new.name)
        .bind(serde_json::json!(new.event_types))
        .bind(new.start_position)
        .bind(now)
        .bind(&new.created_by)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| ConsumerStoreError::AlreadyExists(new.name.clone()))?
            .decode()
    }

    async fn get(&self, name: &str) -> Result<Option<ConsumerRecord>, ConsumerStoreError> {
        let row: Option<ConsumerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CONSUMER_COLUMNS} FROM event_consumers WHERE name = $1"
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
        let deleted = sqlx::query("DELETE FROM event_consumers WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    async fn ack(&self, name: &str, position: i64) -> Result<Option<ConsumerRecord>, ConsumerStoreError> {
        let row: Option<ConsumerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE event_consumers SET acked_position = $2, acked_at = $3 WHERE name = $1 \
             RETURNING {CONSUMER_COLUMNS}"
        )))
        .bind(name)
        .bind(position)
        .bind(DbTime(Utc::now()))
        .fetch_optional(&self.pool)
        .await?;
        row.map(ConsumerRow::decode).transpose()
    }
}
