//! Where wrapped data keys and erasure records live: the `customer_keys` and
//! `forgotten_customers` tables, written only here. A small trait
//! ([`KeyStore`]) with a PostgreSQL and a SQLite implementation side by side
//! (startup picks one). Rows map through the shared
//! [column types](crate::store::columns), and here even the SQL text is the
//! same on both databases, so the one implementation is written once
//! (`sql_key_store!`) and each backend's file only names its pool.

/// The [`KeyStore`] implementation of a backend's store `$name` (a struct with
/// a `pool` field): the same statements and the same row types on either
/// database, so it is written once, here, and each backend's file states
/// only its pool type. Expanded in a child module of this one (`super::`
/// names this module).
macro_rules! sql_key_store {
    ($name:ident) => {
        #[async_trait::async_trait]
        impl super::KeyStore for $name {
            async fn load(&self, customer_id: &str) -> Result<Option<super::StoredKey>, super::PrivacyError> {
                let row = sqlx::query_as(super::LOAD)
                    .bind(customer_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(super::stored_key(customer_id, row))
            }

            async fn insert(&self, key: super::StoredKey) -> Result<super::StoredKey, super::PrivacyError> {
                sqlx::query(super::INSERT)
                    .bind(&key.customer_id)
                    .bind(super::DbUuid(key.key_id))
                    .bind(&key.wrapped)
                    .bind(super::DbTime(super::Utc::now()))
                    .execute(&self.pool)
                    .await?;
                super::inserted(self.load(&key.customer_id).await?)
            }

            async fn forget(
                &self,
                customer_id: &str,
                forgotten_by: &str,
                reason: &str,
                at: super::DateTime<super::Utc>,
            ) -> Result<super::Tombstone, super::PrivacyError> {
                let mut tx = self.pool.begin().await?;
                let destroyed = sqlx::query(super::DELETE)
                    .bind(customer_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let existing: Option<super::TombstoneRow> = sqlx::query_as(super::TOMBSTONE)
                    .bind(customer_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if destroyed > 0 || existing.is_none() {
                    sqlx::query(super::RECORD_FORGET)
                        .bind(customer_id)
                        .bind(super::DbTime(at))
                        .bind(forgotten_by)
                        .bind(reason)
                        .bind(super::destroyed_count(destroyed))
                        .execute(&mut *tx)
                        .await?;
                }
                let record: super::TombstoneRow = sqlx::query_as(super::TOMBSTONE)
                    .bind(customer_id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(record.into())
            }

            async fn tombstone(
                &self,
                customer_id: &str,
            ) -> Result<Option<super::Tombstone>, super::PrivacyError> {
                let row: Option<super::TombstoneRow> = sqlx::query_as(super::TOMBSTONE)
                    .bind(customer_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Into::into))
            }
        }
    };
}

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::{postgres::PostgresKeyStore, sqlite::SqliteKeyStore};
use super::PrivacyError;
use crate::store::columns::{DbTime, DbUuid};

/// A customer's data key as stored: wrapped by the master key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Whose key.
    pub customer_id: String,
    /// The key's id, written into each ciphertext.
    pub key_id: Uuid,
    /// `nonce || ciphertext` under the master key.
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("customer_id", &self.customer_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The record of an erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// Who was forgotten.
    pub customer_id: String,
    /// When (the first forget, or the last one that destroyed a key).
    pub forgotten_at: DateTime<Utc>,
    /// The admin who asked.
    pub forgotten_by: String,
    /// The reason the admin gave, kept for the audit.
    pub reason: String,
    /// Data keys destroyed by forgets of this customer so far.
    pub keys_destroyed: i64,
}

/// Storage of data keys and erasure records.
#[async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug + 'static {
    /// The customer's key, if they have one.
    async fn load(&self, customer_id: &str) -> Result<Option<StoredKey>, PrivacyError>;

    /// Stores `key` unless the customer already has one, and returns the key
    /// stored now: ours, or the one a concurrent writer (another replica) stored first.
    async fn insert(&self, key: StoredKey) -> Result<StoredKey, PrivacyError>;

    /// Deletes the customer's key and records the erasure, in one transaction.
    /// Repeating it when there is no key left returns the existing record.
    async fn forget(
        &self,
        customer_id: &str,
        forgotten_by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Tombstone, PrivacyError>;

    /// The erasure record of a customer, if they were ever forgotten.
    async fn tombstone(&self, customer_id: &str) -> Result<Option<Tombstone>, PrivacyError>;
}

/// The erasure record's columns, in a SELECT.
const TOMBSTONE: &str = "SELECT customer_id, forgotten_at, forgotten_by, reason, keys_destroyed \
                         FROM forgotten_customers WHERE customer_id = $1";

/// Stores a customer's key unless they have one (a concurrent replica may have won).
const INSERT: &str = "INSERT INTO customer_keys (customer_id, key_id, wrapped_key, created_at) \
                      VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id) DO NOTHING";

/// A customer's stored key.
const LOAD: &str = "SELECT key_id, wrapped_key FROM customer_keys WHERE customer_id = $1";

/// Destroys a customer's key (the erasure itself).
const DELETE: &str = "DELETE FROM customer_keys WHERE customer_id = $1";

/// An upsert: a forget that destroyed a key (or the first forget) records itself.
const RECORD_FORGET: &str = "INSERT INTO forgotten_customers (customer_id, forgotten_at, forgotten_by, reason, keys_destroyed) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_id) DO UPDATE SET forgotten_at = excluded.forgotten_at, \
     forgotten_by = excluded.forgotten_by, reason = excluded.reason, \
     keys_destroyed = forgotten_customers.keys_destroyed + excluded.keys_destroyed";

/// A `forgotten_customers` row as both backends return it.
#[derive(sqlx::FromRow)]
struct TombstoneRow {
    customer_id: String,
    forgotten_at: DbTime,
    forgotten_by: String,
    reason: String,
    keys_destroyed: i64,
}

impl From<TombstoneRow> for Tombstone {
    fn from(row: TombstoneRow) -> Self {
        Self {
            customer_id: row.customer_id,
            forgotten_at: row.forgotten_at.0,
            forgotten_by: row.forgotten_by,
            reason: row.reason,
            keys_destroyed: row.keys_destroyed,
        }
    }
}

/// The key of `customer_id` from its stored `(key_id, wrapped_key)` columns.
fn stored_key(customer_id: &str, row: Option<(DbUuid, Vec<u8>)>) -> Option<StoredKey> {
    row.map(|(key_id, wrapped)| StoredKey {
        customer_id: customer_id.to_string(),
        key_id: key_id.0,
        wrapped,
    })
}

/// Whoever won an insert, the stored key is the one every replica uses.
fn inserted(stored: Option<StoredKey>) -> Result<StoredKey, PrivacyError> {
    stored.ok_or_else(|| PrivacyError::Corrupt("a data key vanished right after its insert".into()))
}

/// Keys destroyed, as the `keys_destroyed` column adds them up.
fn destroyed_count(rows: u64) -> i64 {
    i64::try_from(rows).unwrap_or(i64::MAX)
}
