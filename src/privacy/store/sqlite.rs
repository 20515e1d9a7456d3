//! The key store on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqlitePool;

use super::{
    DELETE, KeyStore, LOAD, RECORD_FORGET, StoredKey, TOMBSTONE, Tombstone, TombstoneRow, destroyed_count,
    inserted, stored_key,
};
use crate::{
    privacy::PrivacyError,
    store::columns::{DbTime, DbUuid},
};

/// [`KeyStore`] on SQLite (migration 0005 applied).
#[derive(Clone, Debug)]
pub struct SqliteKeyStore {
    pool: SqlitePool,
}

impl SqliteKeyStore {
    /// The key store of a migrated pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl KeyStore for SqliteKeyStore {
    async fn load(&self, customer_id: &str) -> Result<Option<StoredKey>, PrivacyError> {
        let row = sqlx::query_as(LOAD)
            .bind(customer_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(stored_key(customer_id, row))
    }

    async fn insert(&self, key: StoredKey) -> Result<StoredKey, PrivacyError> {
        // SQLite has no clock default in this schema: the process's time.
        sqlx::query(
            "INSERT INTO customer_keys (customer_id, key_id, wrapped_key, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(&key.customer_id)
        .bind(DbUuid(key.key_id))
        .bind(&key.wrapped)
        .bind(DbTime(Utc::now()))
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
