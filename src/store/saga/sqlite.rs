//! The saga store on SQLite (embedded).
//!
//! SQLite has one writer at a time, so a claim is a single `UPDATE ...
//! RETURNING` (atomic by itself) and every worker write is a `BEGIN IMMEDIATE`
//! transaction that takes the write lock before checking the fence. Polls
//! first probe with a plain read, so an idle service does not take the write
//! lock every few milliseconds. Times are milliseconds since the epoch from
//! the process clock: one process owns an SQLite file.
//!
//! The reads, the release and the binds are written once for both backends
//! (`shared.rs`, `rows.rs`); this module holds their SQLite text, the claim,
//! the worker and operator writes and the purge.
//!
//! SQL-SAFE: statements are assembled from constant fragments (column lists,
//! conflict clauses) chosen by `match`; every value is bound.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::decode::lease_millis;
use super::rows::{
    ATTEMPT_CONFLICT, ATTEMPT_END_COLUMNS, ATTEMPT_END_SET, ATTEMPT_INSERT, SAGA_COLUMNS, SET_COLUMNS,
    STEP_CONFLICT, STEP_INSERT, SagaRow, finished_values, purge_counts, split_attempts, started_values,
    step_values,
};
use super::{
    CancelFlag, FINISHED, FencedWrite, Lease, OperatorActionWrite, SagaPurge, SagaRecord, SagaStoreError,
    StepRecord,
};
use crate::store::{
    Purge,
    columns::{ColumnSink, DbTime, DbUuid},
};

sql_saga_store!(
    /// The saga store on SQLite.
    SqliteSagaStore: Sqlite
);

/// A unit of work's one time (milliseconds since the epoch), bound as the
/// last value of each of its statements: every part reads back the same.
type Stamp = i64;

fn stamped(query: Statement<'_>, now: Stamp) -> Statement<'_> {
    query.bind(now)
}

const IN_IDS: &str = "IN (SELECT value FROM json_each($1))";

const RELEASE: &str = "UPDATE sagas SET lease_owner = NULL, lease_until = NULL, \
     next_run_at = CASE WHEN cancel_requested = 1 AND NOT $3 THEN CAST(unixepoch('subsec') * 1000 AS INTEGER) \
     ELSE $4 END WHERE saga_id = $1 AND lease_owner = $2";

const START: &str = "INSERT INTO sagas (saga_id, order_id, status, idempotency_seed, deadline, next_run_at, \
     created_at, updated_at, customer_id, lease_owner) VALUES ($1, $2, 'RUNNING', $3, $4, $7, $7, $7, $5, $6)";

const REQUEST_CANCEL: &str = "UPDATE sagas SET cancel_requested = 1, cancel_reason = COALESCE(cancel_reason, $2), \
     next_run_at = $3, updated_at = $3 WHERE order_id = $1";

const DUE: &str = "(status IN ('RUNNING', 'COMPENSATING') OR (status = 'FAILED' AND cancel_requested = 1)) \
    AND next_run_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1)";

/// Upserts the step rows of saga `id` in one statement.
async fn upsert_steps(
    tx: &mut SqliteConnection,
    id: DbUuid,
    steps: &[StepRecord],
) -> Result<(), SagaStoreError> {
    if steps.is_empty() {
        return Ok(());
    }
    let mut sql = QueryBuilder::<Sqlite>::new(STEP_INSERT);
    sql.push_values(steps, |mut row, step| step_values(row.value(id), step));
    sql.push(STEP_CONFLICT).build().execute(&mut *tx).await?;
    Ok(())
}

impl SqliteSagaStore {
    async fn claim(&self, lease: &Lease, limit: usize) -> Result<Vec<SagaRecord>, SagaStoreError> {
        let now = Utc::now().timestamp_millis();
        let due: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM sagas WHERE {DUE} LIMIT 1"
        )))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let rows: Vec<SagaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE sagas SET lease_owner = ?2, lease_until = ?1 + ?3 \
             WHERE saga_id IN (SELECT saga_id FROM sagas WHERE {DUE} ORDER BY next_run_at LIMIT ?4) \
             RETURNING {SAGA_COLUMNS}"
        )))
        .bind(now)
        .bind(&lease.owner)
        .bind(lease_millis(lease))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        self.with_steps(rows).await
    }

    async fn write_alone(&self, write: &FencedWrite) -> Result<CancelFlag, SagaStoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let flag = Self::write_fenced(&mut tx, write, Utc::now().timestamp_millis()).await?;
        tx.commit().await?;
        Ok(flag)
    }

    async fn purge(&self, before: DateTime<Utc>, purge: Purge) -> Result<SagaPurge, SagaStoreError> {
        // One write transaction: the count and the delete see the same sagas;
        // their children go with them (foreign keys are on, ON DELETE CASCADE).
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let chosen = format!(
            "SELECT saga_id FROM sagas WHERE status IN {FINISHED} AND updated_at < ?1 ORDER BY updated_at LIMIT ?2"
        );
        let counts = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT (SELECT count(*) FROM ({chosen})), \
             (SELECT count(*) FROM saga_steps WHERE saga_id IN ({chosen})), \
             (SELECT count(*) FROM saga_attempts WHERE saga_id IN ({chosen})), \
             (SELECT count(*) FROM saga_operator_actions WHERE saga_id IN ({chosen}))"
        )))
        .bind(DbTime(before))
        .bind(purge.limit())
        .fetch_one(&mut *tx)
        .await?;
        if let Purge::Delete(_) = purge {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM sagas WHERE saga_id IN ({chosen})"
            )))
            .bind(DbTime(before))
            .bind(purge.limit())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(purge_counts(counts))
    }

    /// A worker's fenced write in `tx`, a write transaction: the fenced saga
    /// update ([`bind_fenced`]'s `$1..$18`, `$19` the time), then the step
    /// rows, the attempts started (with their end when the write also ends
    /// them) and the attempts ended.
    /// A saga handed to a local worker at once: its row, named the lease's
    /// owner, then its first write under that lease.
    async fn write_start_leased(
        tx: &mut SqliteConnection,
        start: &super::SagaStart,
        first: &FencedWrite,
        now: Stamp,
    ) -> Result<CancelFlag, SagaStoreError> {
        Self::write_start(tx, start, Some(&first.lease.owner), now).await?;
        Self::write_fenced(tx, first, now).await
    }

    async fn write_fenced(
        tx: &mut SqliteConnection,
        write: &FencedWrite,
        now: Stamp,
    ) -> Result<CancelFlag, SagaStoreError> {
        let sql = format!(
            "UPDATE sagas SET {SET_COLUMNS}, updated_at = $19, failure_reason_code = $18, \
             lease_owner = CASE WHEN $15 THEN NULL ELSE lease_owner END, \
             lease_until = CASE WHEN $15 THEN NULL ELSE $19 + $13 END, \
             next_run_at = CASE WHEN NOT $15 THEN next_run_at \
                 WHEN cancel_requested = 1 AND NOT $17 THEN $19 ELSE $16 END \
             WHERE saga_id = $1 AND lease_owner = $2 AND ($14 IS NULL OR cancel_requested = $14) \
             RETURNING cancel_requested, cancel_reason"
        );
        let query = stamped(bind_fenced(sqlx::query(sqlx::AssertSqlSafe(sql)), write), now);
        let flag = cancel_flag(query.fetch_optional(&mut *tx).await?)?;
        let id = DbUuid(write.saga_id);
        upsert_steps(tx, id, &write.steps).await?;
        let (started, finished) = split_attempts(&write.attempts);
        if !started.is_empty() {
            let mut sql = QueryBuilder::<Sqlite>::new(ATTEMPT_INSERT);
            sql.push_values(&started, |mut row, a| started_values(row.value(id), a));
            sql.push(ATTEMPT_CONFLICT).build().execute(&mut *tx).await?;
        }
        if !finished.is_empty() {
            let mut sql = QueryBuilder::<Sqlite>::new(format!("WITH x ({ATTEMPT_END_COLUMNS}) AS ("));
            sql.push_values(&finished, |mut row, a| finished_values(&mut row, a));
            sql.push(format!(
                ") UPDATE saga_attempts SET {ATTEMPT_END_SET} FROM x WHERE saga_attempts.saga_id = "
            ))
            .push_bind(id)
            .push(" AND saga_attempts.step = x.step AND saga_attempts.attempt = x.attempt");
            sql.build().execute(&mut *tx).await?;
        }
        Ok(flag)
    }

    /// An operator action in `tx`, a write transaction: fenced by version
    /// and status instead of a lease (no live worker may hold the saga).
    async fn write_operator_action(
        tx: &mut SqliteConnection,
        write: &OperatorActionWrite,
        now: Stamp,
    ) -> Result<(), SagaStoreError> {
        let sql = format!(
            "UPDATE sagas SET {SET_COLUMNS}, updated_at = $14, next_run_at = $14, lease_owner = NULL, \
             lease_until = NULL, failure_reason_code = $13 WHERE saga_id = $1 AND updated_at = $2 \
             AND status IN ('FAILED', 'COMPENSATION_FAILED') AND (lease_until IS NULL OR lease_until < $14)"
        );
        let query = stamped(bind_operator(sqlx::query(sqlx::AssertSqlSafe(sql)), write), now);
        if query.execute(&mut *tx).await?.rows_affected() == 0 {
            return Err(SagaStoreError::Conflict);
        }
        let id = DbUuid(write.saga_id);
        upsert_steps(tx, id, std::slice::from_ref(&write.step)).await?;
        let insert = sqlx::query(
            "INSERT INTO saga_operator_actions (saga_id, action, step, operator, reason, at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        );
        bind_action(insert.bind(id), &write.action)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}
