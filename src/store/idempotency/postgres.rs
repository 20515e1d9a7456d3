//! Idempotency keys on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    Claim, ClaimOutcome, IdempotencyCompletion, IdempotencyStore, IdempotencyStoreError, PURGEABLE, classify,
};
use crate::store::Purge;

/// Idempotency keys on PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresIdempotencyStore {
    pool: PgPool,
}

impl PostgresIdempotencyStore {
    /// A store on `pool` (migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Marks a claimed key done inside a unit of work's transaction; a key
    /// that was never claimed fails the whole unit.
    pub(crate) async fn complete(
        conn: &mut PgConnection,
        done: &IdempotencyCompletion,
    ) -> Result<(), IdempotencyStoreError> {
        let updated = sqlx::query(
            "UPDATE idempotency_keys SET status = 'done', response = $3, lease_until = NULL, \
             updated_at = now() WHERE customer_id = $1 AND key = $2",
        )
        .bind(&done.customer_id)
        .bind(&done.key)
        .bind(&done.response)
        .execute(&mut *conn)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(anyhow::anyhow!("idempotency key to complete was never claimed").into());
        }
        Ok(())
    }
}

/// Inserts the claim, or takes over an in-flight claim of the same request
/// whose lease ran out (or was released). Returns a row only when this
/// request now holds the key.
const CLAIM: &str = "
INSERT INTO idempotency_keys (customer_id, key, request_hash, status, order_id, lease_until, progress)
VALUES ($1, $2, $3, 'in_flight', $4, clock_timestamp() + make_interval(secs => $5), $6)
ON CONFLICT (customer_id, key) DO UPDATE
    SET lease_until = EXCLUDED.lease_until, updated_at = now(),
        progress = COALESCE(idempotency_keys.progress, EXCLUDED.progress)
    WHERE idempotency_keys.status = 'in_flight'
      AND idempotency_keys.request_hash = EXCLUDED.request_hash
      AND (idempotency_keys.lease_until IS NULL OR idempotency_keys.lease_until <= clock_timestamp())
RETURNING order_id, progress";

#[async_trait]
impl IdempotencyStore for PostgresIdempotencyStore {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, IdempotencyStoreError> {
        let claimed: Option<(Uuid, Option<Value>)> = sqlx::query_as(CLAIM)
            .bind(&claim.customer_id)
            .bind(&claim.key)
            .bind(&claim.request_hash)
            .bind(claim.order_id)
            .bind(claim.lease.as_secs_f64())
            .bind(&claim.snapshot)
            .fetch_optional(&self.pool)
            .await?;
        if let Some((order_id, snapshot)) = claimed {
            return Ok(ClaimOutcome::Claimed { order_id, snapshot });
        }
        let existing: Option<(String, String, Option<Value>)> = sqlx::query_as(
            "SELECT request_hash, status, response FROM idempotency_keys WHERE customer_id = $1 AND key = $2",
        )
        .bind(&claim.customer_id)
        .bind(&claim.key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match existing {
            Some((hash, status, response)) => classify(claim, &hash, &status, response),
            // Deleted in between (nothing deletes keys today): just say "retry".
            None => ClaimOutcome::InFlight,
        })
    }

    async fn save_snapshot(
        &self,
        customer_id: &str,
        key: &str,
        snapshot: &Value,
    ) -> Result<(), IdempotencyStoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET progress = $3, updated_at = now() \
             WHERE customer_id = $1 AND key = $2 AND status = 'in_flight'",
        )
        .bind(customer_id)
        .bind(key)
        .bind(snapshot)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn refuse(
        &self,
        customer_id: &str,
        key: &str,
        response: &Value,
    ) -> Result<(), IdempotencyStoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = 'refused', response = $3, lease_until = NULL, updated_at = now() \
             WHERE customer_id = $1 AND key = $2 AND status = 'in_flight'",
        )
        .bind(customer_id)
        .bind(key)
        .bind(response)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release(&self, customer_id: &str, key: &str) -> Result<(), IdempotencyStoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET lease_until = NULL, updated_at = now() \
             WHERE customer_id = $1 AND key = $2 AND status = 'in_flight'",
        )
        .bind(customer_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn forget_customer(&self, customer_id: &str) -> Result<u64, IdempotencyStoreError> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET request_hash = $2, updated_at = now() \
             WHERE customer_id = $1 AND request_hash <> $2",
        )
        .bind(customer_id)
        .bind(super::FORGOTTEN_REQUEST_HASH)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge(&self, before: DateTime<Utc>, purge: Purge) -> Result<u64, IdempotencyStoreError> {
        let sql = match purge {
            Purge::Count => format!("SELECT count(*) FROM idempotency_keys WHERE {PURGEABLE} AND $2 > 0"),
            Purge::Delete(_) => format!(
                "WITH k AS (SELECT customer_id, key FROM idempotency_keys WHERE {PURGEABLE} \
                     ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
                 d AS (DELETE FROM idempotency_keys i USING k \
                     WHERE i.customer_id = k.customer_id AND i.key = k.key RETURNING 1) \
                 SELECT count(*) FROM d"
            ),
        };
        // SQL-SAFE: constant text (PURGEABLE, placeholders per backend) chosen by `match`; values bound.
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(before)
            .bind(purge.limit())
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
