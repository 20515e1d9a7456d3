//! The key store on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{
    DELETE, KeyStore, LOAD, RECORD_FORGET, StoredKey, TOMBSTONE, Tombstone, TombstoneRow, destroyed_count,
    inserted, stored_key,
};
use crate::{
    privacy::PrivacyError,
    store::columns::{DbTime, DbUuid},
};

/// [`KeyStore`] on PostgreSQL (migration 0005 applied).
#[derive(Clone, Debug)]
pub struct PostgresKeyStore {
    pool: PgPool,
}

impl PostgresKeyStore {
    /// The key store of a migrated pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl KeyStore for PostgresKeyStore {
    async fn load(&self, customer_id: &str) -> Result<Option<StoredKey>, PrivacyError> {
        let row = sqlx::query_as(LOAD)
            .bind(customer_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(stored_key(customer_id, row))
    }

    async fn insert(&self, key: StoredKey) -> Result<StoredKey, PrivacyError> {
        // created_at takes the column's default, the database clock.
        sqlx::query(
            "INSERT INTO customer_keys (customer_id, key_id, wrapped_key) VALUES ($1, $2, $3) \
             ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(&key.customer_id)
        .bind(DbUuid(key.key_id))
        .bind(&key.wrapped)
        .execute(&self.pool)
        .await?;
        inserted(self.load(&key.customer_id).await?)
    }

    async fn forget(
        &self,
        customer_id: &str,
        forgotten_by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Tombstone, PrivacyError> {
        let mut tx = self.pool.begin().await?;
        let destroyed = sqlx::query(DELETE)
            .bind(customer_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let existing: Option<TombstoneRow> = sqlx::query_as(TOMBSTONE)
            .bind(customer_id)
            .fetch_optional(&mut *tx)
            .await?;
        if destroyed > 0 || existing.is_none() {
            sqlx::query(RECORD_FORGET)
                .bind(customer_id)
                .bind(DbTime(at))
                .bind(forgotten_by)
                .bind(reason)
                .bind(destroyed_count(destroyed))
                .execute(&mut *tx)
                .await?;
        }
        let record: TombstoneRow = sqlx::query_as(TOMBSTONE)
            .bind(customer_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(record.into())
    }

    async fn tombstone(&self, customer_id: &str) -> Result<Option<Tombstone>, PrivacyError> {
        let row: Option<TombstoneRow> = sqlx::query_as(TOMBSTONE)
            .bind(customer_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Into::into))
    }
}
