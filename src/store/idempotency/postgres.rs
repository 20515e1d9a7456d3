//! Idempotency keys on PostgreSQL: the statements of the shared
//! implementation (`sql_idempotency_store!`), on the database clock.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres};

use super::{IdempotencyStoreError, PURGEABLE};
use crate::store::columns::DbTime;

sql_idempotency_store!(
    /// Idempotency keys on PostgreSQL.
    PostgresIdempotencyStore: Postgres
);

/// Inserts the claim, or takes over an in-flight claim of the same request
/// whose lease ran out (or was released). Returns a row only when this
/// request now holds the key.
const CLAIM: &str = "
INSERT INTO idempotency_keys (customer_id, key, request_hash, status, order_id, lease_until, progress)
VALUES ($1, $2, $3, 'in_flight', $4, clock_timestamp() + $5 * interval '1 millisecond', $6)
ON CONFLICT (customer_id, key) DO UPDATE
    SET lease_until = EXCLUDED.lease_until, updated_at = now(),
        progress = COALESCE(idempotency_keys.progress, EXCLUDED.progress)
    WHERE idempotency_keys.status = 'in_flight'
      AND idempotency_keys.request_hash = EXCLUDED.request_hash
      AND (idempotency_keys.lease_until IS NULL OR idempotency_keys.lease_until <= clock_timestamp())
RETURNING order_id, progress";

const COMPLETE: &str = "UPDATE idempotency_keys SET status = 'done', response = $3, lease_until = NULL, \
                        updated_at = now() WHERE customer_id = $1 AND key = $2";

const SAVE_SNAPSHOT: &str = "UPDATE idempotency_keys SET progress = $3, updated_at = now() \
                             WHERE customer_id = $1 AND key = $2 AND status = 'in_flight'";

const REFUSE: &str = "UPDATE idempotency_keys SET status = 'refused', response = $3, lease_until = NULL, \
                      updated_at = now() WHERE customer_id = $1 AND key = $2 AND status = 'in_flight'";

const RELEASE: &str = "UPDATE idempotency_keys SET lease_until = NULL, updated_at = now() \
                       WHERE customer_id = $1 AND key = $2 AND status = 'in_flight'";

const FORGET: &str = "UPDATE idempotency_keys SET request_hash = $2, updated_at = now() \
                      WHERE customer_id = $1 AND request_hash <> $2";

/// Deletes up to `limit` purgeable keys, oldest first; skips keys a
/// concurrent request holds locked.
async fn delete_keys(pool: &PgPool, before: DateTime<Utc>, limit: i64) -> Result<u64, IdempotencyStoreError> {
    // SQL-SAFE: constant text (PURGEABLE); values bound.
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH k AS (SELECT customer_id, key FROM idempotency_keys WHERE {PURGEABLE} \
             ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
         d AS (DELETE FROM idempotency_keys i USING k \
             WHERE i.customer_id = k.customer_id AND i.key = k.key RETURNING 1) \
         SELECT count(*) FROM d"
    )))
    .bind(DbTime(before))
    .bind(limit)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
