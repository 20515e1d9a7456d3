//! The saga store on SQLite (embedded).
//!
//! SQLite has one writer at a time, so a claim is a single `UPDATE ...
//! RETURNING` (atomic by itself) and every worker write is a `BEGIN IMMEDIATE`
//! transaction that takes the write lock before checking the fence. Polls
//! first probe with a plain read, so an idle service does not take the write
//! lock every few milliseconds. Times are milliseconds since the epoch from
//! the process clock: one process owns an SQLite file.
//!
//! The reads and the release are written once for both backends
//! (`shared.rs`); this module holds their SQLite text, the claim, the worker
//! and operator writes and the purge.
//!
//! SQL-SAFE: statements are assembled from constant fragments (column lists,
//! CTEs) chosen by `match`; every value is bound.

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool};

use super::decode::{lease_millis, stored_count};
use super::{
    AttemptWrite, CancelFlag, CancelRequest, FINISHED, FencedWrite, Lease, OperatorActionWrite, SagaPurge,
    SagaRecord, SagaStart, SagaStoreError, SagaWrite, StepRecord,
};
use crate::store::Purge;

use super::rows::{SAGA_COLUMNS, SagaRow, bind_columns, failure_code_text, purge_counts};

/// Milliseconds since the epoch, the SQLite time convention of this service.
fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The saga store on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteSagaStore {
    pool: SqlitePool,
}

impl SqliteSagaStore {
    /// A store on a migrated pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

const DUE: &str = "(status IN ('RUNNING', 'COMPENSATING') OR (status = 'FAILED' AND cancel_requested = 1)) \
    AND next_run_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1)";

/// Saga columns as `?2..?11` after the id.
const SET_COLUMNS: &str = "status = ?2, current_step = ?3, past_pivot = ?4, compensation_reason = ?5, \
    last_error = ?6, authorization_id = ?7, reservation_id = ?8, shipment_id = ?9, tracking_number = ?10, \
    capture_id = ?11";

/// Upserts a step row (its first start time is kept).
async fn upsert_step(
    tx: &mut SqliteConnection,
    saga_id: &str,
    step: &StepRecord,
) -> Result<(), SagaStoreError> {
    sqlx::query(
        "INSERT INTO saga_steps (saga_id, step, compensation, status, attempts, round_attempts, \
         idempotency_key, last_error, last_grpc_code, started_at, finished_at, duration_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (saga_id, step) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, \
         round_attempts = excluded.round_attempts, idempotency_key = excluded.idempotency_key, \
         last_error = excluded.last_error, last_grpc_code = excluded.last_grpc_code, \
         started_at = COALESCE(saga_steps.started_at, excluded.started_at), \
         finished_at = excluded.finished_at, duration_ms = excluded.duration_ms",
    )
    .bind(saga_id)
    .bind(step.step.name())
    .bind(step.step.is_compensation())
    .bind(step.status.as_str())
    .bind(stored_count(step.attempts))
    .bind(stored_count(step.round_attempts))
    .bind(step.idempotency_key.as_str())
    .bind(step.last_error.as_deref())
    .bind(step.last_grpc_code.as_deref())
    .bind(step.started_at.map(ms))
    .bind(step.finished_at.map(ms))
    .bind(step.duration_ms)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn write_attempt(
    tx: &mut SqliteConnection,
    saga_id: &str,
    attempt: &AttemptWrite,
) -> Result<(), SagaStoreError> {
    match attempt {
        AttemptWrite::Started {
            step,
            attempt,
            worker,
            idempotency_key,
            started_at,
        } => {
            sqlx::query(
                "INSERT INTO saga_attempts (saga_id, step, attempt, worker, idempotency_key, started_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (saga_id, step, attempt) \
                 DO UPDATE SET worker = excluded.worker, started_at = excluded.started_at",
            )
            .bind(saga_id)
            .bind(step.name())
            .bind(stored_count(*attempt))
            .bind(worker.as_str())
            .bind(idempotency_key.as_str())
            .bind(ms(*started_at))
            .execute(&mut *tx)
            .await?;
        }
        AttemptWrite::Finished {
            step,
            attempt,
            finished_at,
            end,
        } => {
            sqlx::query(
                "UPDATE saga_attempts SET finished_at = ?4, outcome = ?5, grpc_code = ?6, error = ?7, \
                 latency_ms = ?8, trace_id = ?9 WHERE saga_id = ?1 AND step = ?2 AND attempt = ?3",
            )
            .bind(saga_id)
            .bind(step.name())
            .bind(stored_count(*attempt))
            .bind(ms(*finished_at))
            .bind(end.outcome.as_str())
            .bind(end.grpc_code.as_deref())
            .bind(end.error.as_deref())
            .bind(end.latency_ms)
            .bind(end.trace_id.as_deref())
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

sql_saga_store!(SqliteSagaStore);

type Db = Sqlite;

const IN_IDS: &str = "IN (SELECT value FROM json_each($1))";

const RELEASE: &str = "UPDATE sagas SET lease_owner = NULL, lease_until = NULL, \
     next_run_at = CASE WHEN cancel_requested = 1 AND NOT $3 THEN CAST(unixepoch('subsec') * 1000 AS INTEGER) \
     ELSE $4 END WHERE saga_id = $1 AND lease_owner = $2";

impl SqliteSagaStore {
    async fn claim(&self, lease: &Lease, limit: usize) -> Result<Vec<SagaRecord>, SagaStoreError> {
        let now = ms(Utc::now());
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
        let flag = Self::write_fenced(&mut tx, write, ms(Utc::now())).await?;
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
        let (sagas, steps, attempts, actions): (i64, i64, i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT (SELECT count(*) FROM ({chosen})), \
             (SELECT count(*) FROM saga_steps WHERE saga_id IN ({chosen})), \
             (SELECT count(*) FROM saga_attempts WHERE saga_id IN ({chosen})), \
             (SELECT count(*) FROM saga_operator_actions WHERE saga_id IN ({chosen}))"
            )))
            .bind(ms(before))
            .bind(purge.limit())
            .fetch_one(&mut *tx)
            .await?;
        if let Purge::Delete(_) = purge {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM sagas WHERE saga_id IN ({chosen})"
            )))
            .bind(ms(before))
            .bind(purge.limit())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(purge_counts((sagas, steps, attempts, actions)))
    }
}

impl SqliteSagaStore {
    /// Writes a unit of work's saga part in `tx`, a write transaction, at
    /// `now` (milliseconds). A fenced write reads back the cancel flag.
    pub(crate) async fn write_part(
        tx: &mut SqliteConnection,
        part: &SagaWrite,
        now: i64,
    ) -> Result<Option<CancelFlag>, SagaStoreError> {
        match part {
            SagaWrite::Start(start) => Self::write_start(tx, start, None, now).await.map(|()| None),
            SagaWrite::StartLeased(start, first) => {
                Self::write_start(tx, start, Some(&first.lease.owner), now).await?;
                Self::write_fenced(tx, first, now).await.map(Some)
            }
            SagaWrite::RequestCancel(cancel) => {
                Self::write_cancel_request(tx, cancel, now).await.map(|()| None)
            }
            SagaWrite::Fenced(write) => Self::write_fenced(tx, write, now).await.map(Some),
            SagaWrite::OperatorAction(action) => {
                Self::write_operator_action(tx, action, now).await.map(|()| None)
            }
        }
    }

    /// Inserts the saga row, naming `owner` as its lease owner when a local
    /// worker takes it at once (the fenced write that follows sets the lease's end).
    async fn write_start(
        tx: &mut SqliteConnection,
        saga: &SagaStart,
        owner: Option<&str>,
        now: i64,
    ) -> Result<(), SagaStoreError> {
        sqlx::query(
            "INSERT INTO sagas (saga_id, order_id, status, idempotency_seed, deadline, next_run_at, \
             created_at, updated_at, customer_id, lease_owner) VALUES (?, ?, 'RUNNING', ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(saga.saga_id.to_string())
        .bind(saga.order_id.to_string())
        .bind(&saga.idempotency_seed)
        .bind(ms(saga.deadline))
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(&saga.customer_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn write_cancel_request(
        tx: &mut SqliteConnection,
        cancel: &CancelRequest,
        now: i64,
    ) -> Result<(), SagaStoreError> {
        // The first reason wins; waking the saga now makes it compensate promptly.
        sqlx::query(
            "UPDATE sagas SET cancel_requested = 1, cancel_reason = COALESCE(cancel_reason, ?), \
             next_run_at = ?, updated_at = ? WHERE order_id = ?",
        )
        .bind(&cancel.reason)
        .bind(now)
        .bind(now)
        .bind(cancel.order_id.to_string())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// A worker's fenced write in `tx`, a write transaction.
    async fn write_fenced(
        tx: &mut SqliteConnection,
        write: &FencedWrite,
        now: i64,
    ) -> Result<CancelFlag, SagaStoreError> {
        let lease = &write.lease;
        let id = write.saga_id.to_string();
        let release = write.release;
        let sql = format!(
            "UPDATE sagas SET {SET_COLUMNS}, updated_at = ?12, \
             failure_reason_code = ?19, lease_owner = CASE WHEN ?16 THEN NULL ELSE lease_owner END, \
             lease_until = CASE WHEN ?16 THEN NULL ELSE ?12 + ?13 END, \
             next_run_at = CASE WHEN NOT ?16 THEN next_run_at \
                 WHEN cancel_requested = 1 AND NOT ?18 THEN ?12 ELSE ?17 END \
             WHERE saga_id = ?1 AND lease_owner = ?14 AND (?15 IS NULL OR cancel_requested = ?15) \
             RETURNING cancel_requested, cancel_reason"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str());
        let fresh = bind_columns(query, &write.columns)
            .bind(now)
            .bind(lease_millis(lease))
            .bind(&lease.owner)
            .bind(write.expect_cancel)
            .bind(release.is_some())
            .bind(release.map_or(now, |r| ms(r.next_run_at)))
            .bind(release.is_some_and(|r| r.cancel_seen))
            .bind(failure_code_text(&write.columns))
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(SagaStoreError::LeaseLost)?;
        let flag = CancelFlag {
            cancel_requested: fresh.try_get("cancel_requested")?,
            cancel_reason: fresh.try_get("cancel_reason")?,
        };
        for step in &write.steps {
            upsert_step(tx, &id, step).await?;
        }
        for attempt in &write.attempts {
            write_attempt(tx, &id, attempt).await?;
        }
        Ok(flag)
    }

    /// An operator action in `tx`, a write transaction: fenced by version
    /// and status instead of a lease (no live worker may hold the saga).
    async fn write_operator_action(
        tx: &mut SqliteConnection,
        write: &OperatorActionWrite,
        now: i64,
    ) -> Result<(), SagaStoreError> {
        let OperatorActionWrite {
            saga_id,
            expected_updated_at,
            columns,
            step,
            action,
        } = write;
        let id = saga_id.to_string();
        let sql = format!(
            "UPDATE sagas SET {SET_COLUMNS}, updated_at = ?12, next_run_at = ?12, lease_owner = NULL, \
             lease_until = NULL, failure_reason_code = ?14 WHERE saga_id = ?1 AND updated_at = ?13 \
             AND status IN ('FAILED', 'COMPENSATION_FAILED') AND (lease_until IS NULL OR lease_until < ?12)"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str());
        let done = bind_columns(query, columns)
            .bind(now)
            .bind(ms(*expected_updated_at))
            .bind(failure_code_text(columns))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(SagaStoreError::Conflict);
        }
        upsert_step(tx, &id, step).await?;
        sqlx::query(
            "INSERT INTO saga_operator_actions (saga_id, action, step, operator, reason, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(id.as_str())
        .bind(action.action.as_str())
        .bind(action.step.name())
        .bind(action.operator.as_str())
        .bind(action.reason.as_str())
        .bind(ms(action.at))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}
