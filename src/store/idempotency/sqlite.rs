//! Idempotency keys on SQLite: the statements of the shared implementation
//! (`sql_idempotency_store!`); timestamps in epoch milliseconds (see 0002),
//! from SQLite's clock, the process's.

use chrono::{DateTime, Utc};
use sqlx::{Sqlite, SqlitePool};

use super::{IdempotencyStoreError, PURGEABLE};
use crate::store::columns::DbTime;

sql_idempotency_store!(
    /// Idempotency keys on SQLite.
    SqliteIdempotencyStore: Sqlite
);

/// See the PostgreSQL store's `CLAIM`.
const CLAIM: &str = "INSERT INTO idempotency_keys (customer_id, key, request_hash, status, order_id, \
         lease_until, created_at, updated_at, progress) \
     VALUES ($1, $2, $3, 'in_flight', $4, CAST(unixepoch('subsec') * 1000 AS INTEGER) + $5, \
         CAST(unixepoch('subsec') * 1000 AS INTEGER), CAST(unixepoch('subsec') * 1000 AS INTEGER), $6) \
     ON CONFLICT (customer_id, key) DO UPDATE \
         SET lease_until = excluded.lease_until, updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER), \
             progress = COALESCE(idempotency_keys.progress, excluded.progress) \
         WHERE idempotency_keys.status = 'in_flight' \
           AND idempotency_keys.request_hash = excluded.request_hash \
           AND (idempotency_keys.lease_until IS NULL \
                OR idempotency_keys.lease_until <= CAST(unixepoch('subsec') * 1000 AS INTEGER)) \
     RETURNING order_id, progress";

const COMPLETE: &str = "UPDATE idempotency_keys SET status = 'done', response = $3, lease_until = NULL, \
     updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) WHERE customer_id = $1 AND key = $2";

const SAVE_SNAPSHOT: &str = "UPDATE idempotency_keys SET progress = $3, \
     updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) WHERE customer_id = $1 AND key = $2 AND status = 'in_flight'";

const REFUSE: &str = "UPDATE idempotency_keys SET status = 'refused', response = $3, lease_until = NULL, \
     updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) WHERE customer_id = $1 AND key = $2 AND status = 'in_flight'";

const RELEASE: &str = "UPDATE idempotency_keys SET lease_until = NULL, \
     updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) WHERE customer_id = $1 AND key = $2 AND status = 'in_flight'";

const FORGET: &str = "UPDATE idempotency_keys SET request_hash = $2, \
     updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) WHERE customer_id = $1 AND request_hash <> $2";

/// Deletes up to `limit` purgeable keys, oldest first.
async fn delete_keys(
    pool: &SqlitePool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, IdempotencyStoreError> {
    // SQL-SAFE: constant text (PURGEABLE); values bound.
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM idempotency_keys WHERE (customer_id, key) IN (SELECT customer_id, key \
         FROM idempotency_keys WHERE {PURGEABLE} ORDER BY updated_at LIMIT $2)"
    )))
    .bind(DbTime(before))
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
