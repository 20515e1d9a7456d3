//! Named durable consumers of the public order-event feed
//! (`commerce.events.v1`): one row per consumer in the `event_consumers` table
//! of migration 0006, the only module that writes it.
//!
//! A consumer is a name, an optional filter of public event type names, and a
//! checkpoint: the global position of the last event it acknowledged. The
//! feed ([`crate::app::events`]) resumes a consumer's stream after that
//! position in the settled log's order; this store only keeps it durably.

/// The [`ConsumerStore`] implementation of a backend's store `$name` (a
/// struct with a `pool` field): the statements and row types are the same on
/// both databases, so it is written once, here, and each backend's file
/// states only its pool. Expanded in a child module (`super::` is this one).
macro_rules! sql_consumer_store {
    ($name:ident) => {
        #[async_trait::async_trait]
        impl super::ConsumerStore for $name {
            async fn create(
                &self,
                new: &super::NewConsumer,
            ) -> Result<super::ConsumerRecord, super::ConsumerStoreError> {
                let now = super::DbTime(super::Utc::now());
                let row: Option<super::ConsumerRow> = sqlx::query_as(super::CREATE)
                    .bind(&new.name)
                    .bind(super::types_json(&new.event_types)?)
                    .bind(new.start_position)
                    .bind(now)
                    .bind(&new.created_by)
                    .fetch_optional(&self.pool)
                    .await?;
                row.ok_or_else(|| super::ConsumerStoreError::AlreadyExists(new.name.clone()))?
                    .decode()
            }

            async fn get(
                &self,
                name: &str,
            ) -> Result<Option<super::ConsumerRecord>, super::ConsumerStoreError> {
                let row: Option<super::ConsumerRow> = sqlx::query_as(super::GET)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(super::ConsumerRow::decode).transpose()
            }

            async fn list(&self) -> Result<Vec<super::ConsumerRecord>, super::ConsumerStoreError> {
                let rows: Vec<super::ConsumerRow> = sqlx::query_as(super::LIST).fetch_all(&self.pool).await?;
                rows.into_iter().map(super::ConsumerRow::decode).collect()
            }

            async fn delete(&self, name: &str) -> Result<bool, super::ConsumerStoreError> {
                let deleted = sqlx::query(super::DELETE)
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
                Ok(deleted.rows_affected() == 1)
            }

            async fn ack(
                &self,
                name: &str,
                position: i64,
            ) -> Result<Option<super::ConsumerRecord>, super::ConsumerStoreError> {
                let row: Option<super::ConsumerRow> = sqlx::query_as(super::ACK)
                    .bind(name)
                    .bind(position)
                    .bind(super::DbTime(super::Utc::now()))
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(super::ConsumerRow::decode).transpose()
            }
        }
    };
}

mod postgres;
mod sqlite;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use self::{postgres::PostgresConsumerStore, sqlite::SqliteConsumerStore};
use crate::{error::AppError, store::columns::DbTime};

store_error! {
    /// Why a consumer call failed: a name taken (ALREADY_EXISTS for the
    /// client), the database unreachable, or anything else.
    pub enum ConsumerStoreError("consumer store", "consumer store query") {
        /// A consumer of that name exists already.
        #[error("consumer {0:?} already exists")]
        AlreadyExists(String),
    }
}

impl From<ConsumerStoreError> for AppError {
    fn from(err: ConsumerStoreError) -> Self {
        match err {
            ConsumerStoreError::AlreadyExists(_) => AppError::AlreadyExists(err.to_string()),
            ConsumerStoreError::Unavailable(why) => AppError::unavailable(why),
            ConsumerStoreError::Other(source) => AppError::Internal(source),
        }
    }
}

/// A consumer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Unique name.
    pub name: String,
    /// Public event type names it receives; empty: all.
    pub event_types: Vec<String>,
    /// Global position of the last acknowledged event (0: none yet).
    pub acked_position: i64,
    /// When the checkpoint last moved (the creation time before any ack).
    pub acked_at: DateTime<Utc>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Token subject of the admin who created it.
    pub created_by: String,
}

/// A consumer to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConsumer {
    /// Unique name (validated by the caller).
    pub name: String,
    /// Public event type names; empty: all.
    pub event_types: Vec<String>,
    /// The checkpoint it starts from (0: the first event; the head: from now).
    pub start_position: i64,
    /// Token subject of the admin creating it.
    pub created_by: String,
}

/// Named consumers and their checkpoints.
#[async_trait]
pub trait ConsumerStore: Send + Sync + fmt::Debug {
    /// Inserts `new`, or [`ConsumerStoreError::AlreadyExists`].
    async fn create(&self, new: &NewConsumer) -> Result<ConsumerRecord, ConsumerStoreError>;

    /// The consumer named `name`.
    async fn get(&self, name: &str) -> Result<Option<ConsumerRecord>, ConsumerStoreError>;

    /// Every consumer, by name.
    async fn list(&self) -> Result<Vec<ConsumerRecord>, ConsumerStoreError>;

    /// Deletes the consumer; false when there was none.
    async fn delete(&self, name: &str) -> Result<bool, ConsumerStoreError>;

    /// Stores `position` as the consumer's checkpoint (durable when this
    /// returns); None when there is no such consumer.
    async fn ack(&self, name: &str, position: i64) -> Result<Option<ConsumerRecord>, ConsumerStoreError>;
}

/// A row as both backends return it.
#[derive(sqlx::FromRow)]
struct ConsumerRow {
    name: String,
    /// JSON array text (TEXT on both databases: the same binding on both).
    event_types: String,
    acked_position: i64,
    acked_at: DbTime,
    created_at: DbTime,
    created_by: String,
}

/// Inserts a consumer unless the name is taken (then no row comes back).
const CREATE: &str = "INSERT INTO event_consumers \
     (name, event_types, acked_position, acked_at, created_at, created_by) VALUES ($1, $2, $3, $4, $4, $5) \
     ON CONFLICT (name) DO NOTHING \
     RETURNING name, event_types, acked_position, acked_at, created_at, created_by";

/// A consumer by name.
const GET: &str = "SELECT name, event_types, acked_position, acked_at, created_at, created_by \
                   FROM event_consumers WHERE name = $1";

/// Every consumer, by name.
const LIST: &str = "SELECT name, event_types, acked_position, acked_at, created_at, created_by \
                    FROM event_consumers ORDER BY name";

/// Deletes a consumer.
const DELETE: &str = "DELETE FROM event_consumers WHERE name = $1";

/// Moves a consumer's checkpoint.
const ACK: &str = "UPDATE event_consumers SET acked_position = $2, acked_at = $3 WHERE name = $1 \
                   RETURNING name, event_types, acked_position, acked_at, created_at, created_by";

fn types_json(types: &[String]) -> Result<String, ConsumerStoreError> {
    Ok(serde_json::to_string(types).map_err(anyhow::Error::from)?)
}

impl ConsumerRow {
    fn decode(self) -> Result<ConsumerRecord, ConsumerStoreError> {
        let event_types: Vec<String> = serde_json::from_str(&self.event_types)
            .map_err(|e| anyhow::anyhow!("stored event types of consumer {:?}: {e}", self.name))?;
        Ok(ConsumerRecord {
            name: self.name,
            event_types,
            acked_position: self.acked_position,
            acked_at: self.acked_at.0,
            created_at: self.created_at.0,
            created_by: self.created_by,
        })
    }
}
