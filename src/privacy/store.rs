//! Where wrapped data keys and erasure records live: a small trait with one
//! SQL implementation for both backends (PostgreSQL and the embedded SQLite).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PrivacyError;
use crate::db::Db;

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
    /// Why.
    pub reason: String,
    /// Data keys destroyed by forgets of this customer so far.
    pub keys_destroyed: i64,
}

/// Storage of data keys and erasure records.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
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

/// [`KeyStore`] on the service's database.
#[derive(Clone, Debug)]
pub struct SqlKeyStore {
    db: Db,
}

impl SqlKeyStore {
    /// A store on `db` (migration 0005 applied).
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[derive(sqlx::FromRow)]
struct PgTombstone {
    customer_id: String,
    forgotten_at: DateTime<Utc>,
    forgotten_by: String,
    reason: String,
    keys_destroyed: i64,
}

#[derive(sqlx::FromRow)]
struct LiteTombstone {
    customer_id: String,
    forgotten_at: i64,
    forgotten_by: String,
    reason: String,
    keys_destroyed: i64,
}

impl From<PgTombstone> for Tombstone {
    fn from(row: PgTombstone) -> Self {
        Self {
            customer_id: row.customer_id,
            forgotten_at: row.forgotten_at,
            forgotten_by: row.forgotten_by,
            reason: row.reason,
            keys_destroyed: row.keys_destroyed,
        }
    }
}

impl TryFrom<LiteTombstone> for Tombstone {
    type Error = PrivacyError;
    fn try_from(row: LiteTombstone) -> Result<Self, PrivacyError> {
        Ok(Self {
            forgotten_at: DateTime::from_timestamp_millis(row.forgotten_at)
                .ok_or_else(|| PrivacyError::Corrupt("tombstone time out of range".into()))?,
            customer_id: row.customer_id,
            forgotten_by: row.forgotten_by,
            reason: row.reason,
            keys_destroyed: row.keys_destroyed,
        })
    }
}

const TOMBSTONE: &str = "SELECT customer_id, forgotten_at, forgotten_by, reason, keys_destroyed FROM forgotten_customers WHERE customer_id = $1";

// An upsert: a forget that destroyed a key (or the first forget) records itself.
const RECORD_FORGET: &str = "INSERT INTO forgotten_customers (customer_id, forgotten_at, forgotten_by, reason, keys_destroyed) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_id) DO UPDATE SET forgotten_at = excluded.forgotten_at, \
     forgotten_by = excluded.forgotten_by, reason = excluded.reason, \
     keys_destroyed = forgotten_customers.keys_destroyed + excluded.keys_destroyed";

#[async_trait]
impl KeyStore for SqlKeyStore {
    async fn load(&self, customer_id: &str) -> Result<Option<StoredKey>, PrivacyError> {
        let sql = "SELECT key_id, wrapped_key FROM customer_keys WHERE customer_id = $1";
        let row = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_as::<_, (Uuid, Vec<u8>)>(sql)
                    .bind(customer_id)
                    .fetch_optional(pool)
                    .await?
            }
            Db::Sqlite(pool) => sqlx::query_as::<_, (String, Vec<u8>)>(sql)
                .bind(customer_id)
                .fetch_optional(pool)
                .await?
                .map(|(id, wrapped)| Ok::<_, PrivacyError>((parse_uuid(&id)?, wrapped)))
                .transpose()?,
        };
        Ok(row.map(|(key_id, wrapped)| StoredKey {
            customer_id: customer_id.to_string(),
            key_id,
            wrapped,
        }))
    }

    async fn insert(&self, key: StoredKey) -> Result<StoredKey, PrivacyError> {
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO customer_keys (customer_id, key_id, wrapped_key) VALUES ($1, $2, $3) \
                     ON CONFLICT (customer_id) DO NOTHING",
                )
                .bind(&key.customer_id)
                .bind(key.key_id)
                .bind(&key.wrapped)
                .execute(pool)
                .await?;
            }
            Db::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO customer_keys (customer_id, key_id, wrapped_key, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (customer_id) DO NOTHING",
                )
                .bind(&key.customer_id)
                .bind(key.key_id.to_string())
                .bind(&key.wrapped)
                .bind(Utc::now().timestamp_millis())
                .execute(pool)
                .await?;
            }
        }
        // Whoever won the insert, the stored key is the one every replica uses.
        self.load(&key.customer_id)
            .await?
            .ok_or_else(|| PrivacyError::Corrupt("a data key vanished right after its insert".into()))
    }

    async fn forget(
        &self,
        customer_id: &str,
        forgotten_by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Tombstone, PrivacyError> {
        let delete = "DELETE FROM customer_keys WHERE customer_id = $1";
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let destroyed = sqlx::query(delete)
                    .bind(customer_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let existing: Option<PgTombstone> = sqlx::query_as(TOMBSTONE)
                    .bind(customer_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if destroyed > 0 || existing.is_none() {
                    sqlx::query(RECORD_FORGET)
                        .bind(customer_id)
                        .bind(at)
                        .bind(forgotten_by)
                        .bind(reason)
                        .bind(i64::try_from(destroyed).unwrap_or(i64::MAX))
                        .execute(&mut *tx)
                        .await?;
                }
                let record: PgTombstone = sqlx::query_as(TOMBSTONE)
                    .bind(customer_id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(record.into())
            }
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let destroyed = sqlx::query(delete)
                    .bind(customer_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let existing: Option<LiteTombstone> = sqlx::query_as(TOMBSTONE)
                    .bind(customer_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if destroyed > 0 || existing.is_none() {
                    sqlx::query(RECORD_FORGET)
                        .bind(customer_id)
                        .bind(at.timestamp_millis())
                        .bind(forgotten_by)
                        .bind(reason)
                        .bind(i64::try_from(destroyed).unwrap_or(i64::MAX))
                        .execute(&mut *tx)
                        .await?;
                }
                let record: LiteTombstone = sqlx::query_as(TOMBSTONE)
                    .bind(customer_id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                record.try_into()
            }
        }
    }

    async fn tombstone(&self, customer_id: &str) -> Result<Option<Tombstone>, PrivacyError> {
        match &self.db {
            Db::Postgres(pool) => Ok(sqlx::query_as::<_, PgTombstone>(TOMBSTONE)
                .bind(customer_id)
                .fetch_optional(pool)
                .await?
                .map(Into::into)),
            Db::Sqlite(pool) => sqlx::query_as::<_, LiteTombstone>(TOMBSTONE)
                .bind(customer_id)
                .fetch_optional(pool)
                .await?
                .map(TryInto::try_into)
                .transpose(),
        }
    }
}

fn parse_uuid(text: &str) -> Result<Uuid, PrivacyError> {
    text.parse()
        .map_err(|_| PrivacyError::Corrupt(format!("stored key id {text:?} is not a UUID")))
}
