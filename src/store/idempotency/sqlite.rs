//! Idempotency keys on SQLite (timestamps in epoch milliseconds, see 0002).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{SqliteConnection, SqlitePool};

use crate::store::columns::{DbJson, DbUuid};

use super::{
    Claim, ClaimOutcome, IdempotencyCompletion, IdempotencyStore, IdempotencyStoreError, PURGEABLE, classify,
};
use crate::store::Purge;

/// Idempotency keys on SQLite.
#[derive(Clone, Debug)]
pub struct SqliteIdempotencyStore {
    pool: SqlitePool,
}

impl SqliteIdempotencyStore {
    /// A store on `pool` (migrated).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Marks a claimed key done inside a unit of work's transaction; a key
    /// that was never claimed fails the whole unit.
    pub(crate) async fn complete(
        conn: &mut SqliteConnection,
        done: &IdempotencyCompletion,
    ) -> Result<(), IdempotencyStoreError> {
        let updated = sqlx::query(
            "UPDATE idempotency_keys SET status = 'done', response = ?, lease_until = NULL, updated_at = ? \
             WHERE customer_id = ? AND key = ?",
        )
        .bind(done.response.to_string())
        .bind(Utc::now().timestamp_millis())
        .bind(&done.customer_id)
        .bind(&done.key)
        .execute(&mut *conn)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(anyhow::anyhow!("idempotency key to complete was never claimed").into());
        }
        Ok(())
    }
}

/// See the PostgreSQL store's `CLAIM`.
const CLAIM: &str = "
INSERT INTO idempotency_keys (customer_id, key, request_hash, status, order_id, lease_until, created_at, updated_at, progress)
VALUES (?1, ?2, ?3, 'in_flight', ?4, ?5 + ?6, ?5, ?5, ?7)
ON CONFLICT (customer_id, key) DO UPDATE
    SET lease_until = excluded.lease_until, updated_at = ?5,
        progress = COALESCE(idempotency_keys.progress, excluded.progress)
    WHERE idempotency_keys.status = 'in_flight'
      AND idempotency_keys.request_hash = excluded.request_hash
      AND (idempotency_keys.lease_until IS NULL OR idempotency_keys.lease_until <= ?5)
RETURNING order_id, progress";

#[async_trait]
impl IdempotencyStore for SqliteIdempotencyStore {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, IdempotencyStoreError> {
        let now = Utc::now().timestamp_millis();
        let lease = i64::try_from(claim.lease.as_millis()).unwrap_or(i64::MAX / 2);
        let claimed: Option<(DbUuid, Option<DbJson>)> = sqlx::query_as(CLAIM)
            .bind(&claim.customer_id)
            .bind(&claim.key)
            .bind(&claim.request_hash)
            .bind(claim.order_id.to_string())
            .bind(now)
            .bind(lease)
            .bind(claim.snapshot.as_ref().map(Value::to_string))
            .fetch_optional(&self.pool)
            .await?;
        if let Some((order_id, snapshot)) = claimed {
            return Ok(ClaimOutcome::Claimed {
                order_id: order_id.0,
                snapshot: snapshot.map(|s| s.0),
            });
        }
        let existing: Option<(String, String, Option<DbJson>)> = sqlx::query_as(
            "SELECT request_hash, status, response FROM idempotency_keys WHERE customer_id = ? AND key = ?",
        )
        .bind(&claim.customer_id)
        .bind(&claim.key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match existing {
            Some((hash, status, response)) => classify(claim, &hash, &status, response.map(|r| r.0)),
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
            "UPDATE idempotency_keys SET progress = ?, updated_at = ? \
             WHERE customer_id = ? AND key = ? AND status = 'in_flight'",
        )
        .bind(snapshot.to_string())
        .bind(Utc::now().timestamp_millis())
        .bind(customer_id)
        .bind(key)
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
            "UPDATE idempotency_keys SET status = 'refused', response = ?, lease_until = NULL, updated_at = ? \
             WHERE customer_id = ? AND key = ? AND status = 'in_flight'",
        )
        .bind(response.to_string())
        .bind(Utc::now().timestamp_millis())
        .bind(customer_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release(&self, customer_id: &str, key: &str) -> Result<(), IdempotencyStoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET lease_until = NULL, updated_at = ? \
             WHERE customer_id = ? AND key = ? AND status = 'in_flight'",
        )
        .bind(Utc::now().timestamp_millis())
        .bind(customer_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn forget_customer(&self, customer_id: &str) -> Result<u64, IdempotencyStoreError> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET request_hash = ?, updated_at = ? \
             WHERE customer_id = ? AND request_hash <> ?",
        )
        .bind(super::FORGOTTEN_REQUEST_HASH)
        .bind(Utc::now().timestamp_millis())
        .bind(customer_id)
        .bind(super::FORGOTTEN_REQUEST_HASH)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge(&self, before: DateTime<Utc>, purge: Purge) -> Result<u64, IdempotencyStoreError> {
        let purgeable = PURGEABLE.replace('$', "?");
        let sql = match purge {
            Purge::Count => format!("SELECT count(*) FROM idempotency_keys WHERE {purgeable} AND ?2 > 0"),
            Purge::Delete(_) => format!(
                "DELETE FROM idempotency_keys WHERE (customer_id, key) IN (SELECT customer_id, key \
                 FROM idempotency_keys WHERE {purgeable} ORDER BY updated_at LIMIT ?2)"
            ),
        };
        // SQL-SAFE: constant text (PURGEABLE, placeholders per backend) chosen by `match`; values bound.
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(before.timestamp_millis())
            .bind(purge.limit());
        let n = match purge {
            Purge::Count => {
                let count: i64 = sqlx::Row::try_get(&query.fetch_one(&self.pool).await?, 0)?;
                u64::try_from(count).unwrap_or(0)
            }
            Purge::Delete(_) => query.execute(&self.pool).await?.rows_affected(),
        };
        Ok(n)
    }
}
