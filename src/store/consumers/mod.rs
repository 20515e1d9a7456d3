//! Named durable consumers of the public order-event feed
//! (`commerce.events.v1`): one row per consumer in the `event_consumers` table
//! of migration 0006, the only module that writes it.
//!
//! A consumer is a name, an optional filter of public event type names, and a
//! checkpoint: the global position of the last event it acknowledged. The
//! feed ([`crate::app::events`]) resumes a consumer's stream after that
//! position in the settled log's order; this store only keeps it durably.

mod postgres;
mod sqlite;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use self::{postgres::PostgresConsumerStore, sqlite::SqliteConsumerStore};
use crate::{
    error::AppError,
    store::columns::{DbJson, DbTime},
};

/// Consumer store failures.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerStoreError {
    /// A consumer of that name exists already.
    #[error("consumer {0:?} already exists")]
    AlreadyExists(String),
    /// The database is unreachable or overloaded; retrying later may succeed.
    #[error("consumer store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (a bug, corrupt data).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ConsumerStoreError {
    fn from(err: sqlx::Error) -> Self {
        if let Some(why) = crate::db::unavailable(&err) {
            Self::Unavailable(why)
        } else {
            Self::Other(anyhow::Error::new(err).context("consumer store query"))
        }
    }
}

impl From<ConsumerStoreError> for AppError {
    fn from(err: ConsumerStoreError) -> Self {
        match err {
            ConsumerStoreError::AlreadyExists(_) => AppError::AlreadyExists(err.to_string()),
            ConsumerStoreError::Unavailable(why) => AppError::Unavailable(why),
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
    event_types: DbJson,
    acked_position: i64,
    acked_at: DbTime,
    created_at: DbTime,
    created_by: String,
}

/// The columns of [`ConsumerRow`], in a SELECT or RETURNING.
const CONSUMER_COLUMNS: &str = "name, event_types, acked_position, acked_at, created_at, created_by";

impl ConsumerRow {
    fn decode(self) -> Result<ConsumerRecord, ConsumerStoreError> {
        let event_types: Vec<String> = serde_json::from_value(self.event_types.0)
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

fn decode_all(rows: Vec<ConsumerRow>) -> Result<Vec<ConsumerRecord>, ConsumerStoreError> {
    rows.into_iter().map(ConsumerRow::decode).collect()
}
