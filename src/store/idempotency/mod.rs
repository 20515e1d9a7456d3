//! Command idempotency keys (CreateOrder): one row per (customer, key) in the
//! `idempotency_keys` table of migration 0002.
//!
//! Life of a key: [`IdempotencyStore::claim`] inserts it `in_flight` with a
//! lease and the order id every attempt will use; the request then either
//! completes it `done` in the unit of work that appends the order's events
//! ([`IdempotencyCompletion`], written by this module's backends inside
//! [`crate::store::unit_of_work`]), or records a business refusal ([`IdempotencyStore::refuse`]), or, on a transient failure,
//! [`IdempotencyStore::release`]s the lease so that a retry can resume at once.
//! A claim whose lease ran out (a crashed request) can be taken over by a
//! retry of the same request.

/// A backend's store `$name` on sqlx database `$db` (named `Db` in its
/// module), its [`IdempotencyStore`] implementation and its `complete`: the
/// binds and the decoding are the same on both databases, so they are
/// written once, here; each backend's file states its statements (`CLAIM`,
/// `COMPLETE`, `SAVE_SNAPSHOT`, `REFUSE`, `RELEASE`, `FORGET`: the clocks
/// differ) and its `delete_keys` (the purge's delete). Expanded in a child module (`super::` is
/// this one).
macro_rules! sql_idempotency_store {
    ($(#[$doc:meta])* $name:ident: $db:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
        }

        type Db = $db;

        use crate::store::columns::{DbJson, DbUuid};

        impl $name {
            /// A store on `pool` (migrated).
            pub fn new(pool: sqlx::Pool<Db>) -> Self {
                Self { pool }
            }

            /// Marks a claimed key done inside a unit of work's transaction; a key
            /// that was never claimed fails the whole unit.
            pub(crate) async fn complete(
                conn: &mut <Db as sqlx::Database>::Connection,
                done: &super::IdempotencyCompletion,
            ) -> Result<(), super::IdempotencyStoreError> {
                let updated = sqlx::query(COMPLETE)
                    .bind(&done.customer_id)
                    .bind(&done.key)
                    .bind(DbJson(done.response.clone()))
                    .execute(&mut *conn)
                    .await?;
                if updated.rows_affected() != 1 {
                    return Err(anyhow::anyhow!("idempotency key to complete was never claimed").into());
                }
                Ok(())
            }

            /// Runs one of the statements that change a key in flight (`$1`:
            /// the customer, `$2`: the key, then `value`, if any).
            async fn update_key(
                &self,
                sql: &'static str,
                customer_id: &str,
                key: &str,
                value: Option<DbJson>,
            ) -> Result<u64, super::IdempotencyStoreError> {
                let mut query = sqlx::query(sql).bind(customer_id).bind(key);
                if let Some(value) = value {
                    query = query.bind(value);
                }
                Ok(query.execute(&self.pool).await?.rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl super::IdempotencyStore for $name {
            async fn claim(
                &self,
                claim: &super::Claim,
            ) -> Result<super::ClaimOutcome, super::IdempotencyStoreError> {
                let claimed: Option<(DbUuid, Option<DbJson>)> = sqlx::query_as(CLAIM)
                    .bind(&claim.customer_id)
                    .bind(&claim.key)
                    .bind(&claim.request_hash)
                    .bind(DbUuid(claim.order_id))
                    .bind(i64::try_from(claim.lease.as_millis()).unwrap_or(i64::MAX / 2))
                    .bind(claim.snapshot.clone().map(DbJson))
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some((order_id, snapshot)) = claimed {
                    return Ok(super::ClaimOutcome::Claimed {
                        order_id: order_id.0,
                        snapshot: snapshot.map(|s| s.0),
                    });
                }
                let existing: Option<(String, String, Option<DbJson>)> = sqlx::query_as(super::EXISTING)
                    .bind(&claim.customer_id)
                    .bind(&claim.key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match existing {
                    Some((hash, status, response)) => {
                        super::classify(claim, &hash, &status, response.map(|r| r.0))
                    }
                    // Deleted in between (a purge): just say "retry".
                    None => super::ClaimOutcome::InFlight,
                })
            }

            async fn save_snapshot(
                &self,
                customer_id: &str,
                key: &str,
                snapshot: &serde_json::Value,
            ) -> Result<(), super::IdempotencyStoreError> {
                self.update_key(
                    SAVE_SNAPSHOT,
                    customer_id,
                    key,
                    Some(DbJson(snapshot.clone())),
                )
                .await
                .map(drop)
            }

            async fn refuse(
                &self,
                customer_id: &str,
                key: &str,
                response: &serde_json::Value,
            ) -> Result<(), super::IdempotencyStoreError> {
                self.update_key(REFUSE, customer_id, key, Some(DbJson(response.clone())))
                    .await
                    .map(drop)
            }

            async fn release(
                &self,
                customer_id: &str,
                key: &str,
            ) -> Result<(), super::IdempotencyStoreError> {
                self.update_key(RELEASE, customer_id, key, None)
                    .await
                    .map(drop)
            }

            async fn forget_customer(&self, customer_id: &str) -> Result<u64, super::IdempotencyStoreError> {
                let done = sqlx::query(FORGET)
                    .bind(customer_id)
                    .bind(super::FORGOTTEN_REQUEST_HASH)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn purge(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                purge: crate::store::Purge,
            ) -> Result<u64, super::IdempotencyStoreError> {
                match purge {
                    crate::store::Purge::Count => {
                        // SQL-SAFE: constant text (PURGEABLE); values bound.
                        let sql = format!("SELECT count(*) FROM idempotency_keys WHERE {}", super::PURGEABLE);
                        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                            .bind(crate::store::columns::DbTime(before))
                            .fetch_one(&self.pool)
                            .await?;
                        Ok(u64::try_from(n).unwrap_or(0))
                    }
                    crate::store::Purge::Delete(_) => delete_keys(&self.pool, before, purge.limit()).await,
                }
            }
        }
    };
}

mod postgres;
mod sqlite;

use std::{fmt, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

pub use self::{postgres::PostgresIdempotencyStore, sqlite::SqliteIdempotencyStore};
use crate::{error::AppError, store::Purge};

store_error! {
    /// Idempotency store failures (a completion of a key never claimed is `Other`).
    pub enum IdempotencyStoreError("idempotency store", "idempotency store query") {
    }
}

impl From<IdempotencyStoreError> for AppError {
    fn from(err: IdempotencyStoreError) -> Self {
        match err {
            IdempotencyStoreError::Unavailable(why) => AppError::unavailable(why),
            IdempotencyStoreError::Other(source) => AppError::Internal(source),
        }
    }
}

/// Marks a claimed key done as part of a unit of work, so that the key's
/// answer exists exactly when the order's events do.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyCompletion {
    /// Owner of the key.
    pub customer_id: String,
    /// The client's key.
    pub key: String,
    /// The answer to give every repeat of the request.
    pub response: Value,
}

/// A request asking for its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Owner of the key (keys are scoped per customer).
    pub customer_id: String,
    /// The client's key.
    pub key: String,
    /// Hash of the canonical request, customer included.
    pub request_hash: String,
    /// The order id to use if this claim creates the row.
    pub order_id: Uuid,
    /// How long the claim blocks other attempts unless completed or released.
    pub lease: Duration,
    /// Checkout snapshot to record with the claim when the key has none yet
    /// (saves a [`IdempotencyStore::save_snapshot`] round trip); an earlier
    /// attempt's recorded snapshot is kept and returned instead.
    pub snapshot: Option<Value>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// This request holds the key now: work on `order_id`, resuming from
    /// `snapshot` if an earlier attempt recorded one.
    Claimed {
        /// The order id of the key (the proposed one, or the first attempt's).
        order_id: Uuid,
        /// The checkout snapshot recorded under the key (by this claim or an
        /// earlier attempt), if any.
        snapshot: Option<Value>,
    },
    /// Another attempt holds the key and its lease has not run out.
    InFlight,
    /// Completed: answer with this response.
    Done(Value),
    /// Refused for a business reason: answer with this refusal.
    Refused(Value),
    /// The key was used with a different request.
    DifferentRequest,
}

/// CreateOrder's idempotency keys: a repeat of a request gets the first
/// answer and never makes a second order. One conformance suite
/// (`api::idempotency_store`) runs against every implementation.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + fmt::Debug {
    /// Claims the key: see [`ClaimOutcome`].
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, IdempotencyStoreError>;

    /// Records the checkout snapshot the holder orders from.
    async fn save_snapshot(
        &self,
        customer_id: &str,
        key: &str,
        snapshot: &Value,
    ) -> Result<(), IdempotencyStoreError>;

    /// Remembers a business refusal as the key's answer (only while in flight).
    async fn refuse(
        &self,
        customer_id: &str,
        key: &str,
        response: &Value,
    ) -> Result<(), IdempotencyStoreError>;

    /// Ends the holder's lease after a transient failure: the next attempt
    /// may claim at once. Nothing is remembered as the answer.
    async fn release(&self, customer_id: &str, key: &str) -> Result<(), IdempotencyStoreError>;

    /// ForgetCustomer: replaces the request hashes of the customer's keys
    /// with [`FORGOTTEN_REQUEST_HASH`]. A hash of a shipping address is
    /// personal data too (a guessed address can be checked against it); the
    /// keys stay (until retention purges them), so an old key still creates no second order (a retry
    /// with it is a different request). Returns the keys changed.
    async fn forget_customer(&self, customer_id: &str) -> Result<u64, IdempotencyStoreError>;

    /// Retention: keys last changed before `before` (their answer recorded, or
    /// a claim whose lease also ended before then), counted or deleted a batch
    /// at a time. A retry with a purged key is a new request: the retention is
    /// the window in which a client may retry.
    async fn purge(&self, before: DateTime<Utc>, purge: Purge) -> Result<u64, IdempotencyStoreError>;
}

/// The rows a purge takes (`$1` / `?1`: the cutoff; the same text on both backends).
const PURGEABLE: &str =
    "updated_at < $1 AND (status <> 'in_flight' OR lease_until IS NULL OR lease_until < $1)";

/// A key's request hash, status and answer, to classify a claim refused.
const EXISTING: &str =
    "SELECT request_hash, status, response FROM idempotency_keys WHERE customer_id = $1 AND key = $2";

/// The request hash of a forgotten customer's keys: matches no request.
pub const FORGOTTEN_REQUEST_HASH: &str = "forgotten";

/// Classifies an existing row that this claim could not take.
fn classify(claim: &Claim, request_hash: &str, status: &str, response: Option<Value>) -> ClaimOutcome {
    if request_hash != claim.request_hash {
        return ClaimOutcome::DifferentRequest;
    }
    match (status, response) {
        ("done", Some(response)) => ClaimOutcome::Done(response),
        ("refused", Some(response)) => ClaimOutcome::Refused(response),
        _ => ClaimOutcome::InFlight,
    }
}
