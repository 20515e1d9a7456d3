//! The saga store on PostgreSQL.
//!
//! Claims use `FOR UPDATE SKIP LOCKED`, so replicas polling together each get
//! different sagas without waiting on each other. Every worker write is ONE
//! statement (data-modifying CTEs): the fenced saga update, the step upsert and
//! the attempt row commit together in one round trip, and the step and attempt
//! only land if the fence let the saga update through. Lease times use the
//! database clock, the one clock all replicas share.
//!
//! The reads and the release are written once for both backends
//! (`shared.rs`); this module holds their PostgreSQL text, the claim, the
//! worker and operator writes and the purge.
//!
//! SQL-SAFE: statements are assembled from constant fragments (column lists,
//! CTEs) chosen by `match`; every value is bound.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool, Postgres, Row, postgres::PgArguments, query::Query};

use super::decode::{lease_millis, stored_count};
use super::rows::{SAGA_COLUMNS, SagaRow, bind_columns, failure_code_text, purge_counts};
use super::{
    AttemptEnd, AttemptWrite, CancelFlag, CancelRequest, FINISHED, FencedWrite, Lease, OperatorActionWrite,
    SagaPurge, SagaRecord, SagaStart, SagaStoreError, SagaWrite, StepRecord,
};
use crate::store::Purge;

/// The saga store on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresSagaStore {
    pool: PgPool,
}

impl PostgresSagaStore {
    /// A store on a migrated pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool (the worker listens for wake-ups on it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// One worker write, as one statement: the fenced saga update `s` ($1..$17:
/// id, owner, columns, lease, expected cancel flag, release), the step rows
/// ($18..$28), attempts started ($29..$33, with $43..$48: the end of an
/// attempt that starts and ends in this write, a local step's) and finished
/// ($34..$41), the last three as parallel arrays that only apply where `s`
/// went through, and the failure code ($42). An attempt that starts here is
/// inserted finished: the statement's parts all see the snapshot from before
/// it, so `finished` could not update a row that `started` inserts.
fn write_sql() -> String {
    format!(
        "WITH s AS (UPDATE sagas SET status = $3, current_step = $4, past_pivot = $5, \
            compensation_reason = $6, last_error = $7, authorization_id = $8, reservation_id = $9, \
            shipment_id = $10, tracking_number = $11, capture_id = $12, updated_at = now(), \
            failure_reason_code = $42, \
            lease_owner = CASE WHEN $15 THEN NULL ELSE lease_owner END, \
            lease_until = CASE WHEN $15 THEN NULL ELSE now() + $13 * interval '1 millisecond' END, \
            next_run_at = CASE WHEN NOT $15 THEN next_run_at \
                WHEN cancel_requested AND NOT $17 THEN now() ELSE $16 END \
            WHERE saga_id = $1 AND lease_owner = $2 AND ($14::bool IS NULL OR cancel_requested = $14) \
            RETURNING saga_id, cancel_requested, cancel_reason), \
        st AS ({}), \
        started AS (INSERT INTO saga_attempts (saga_id, step, attempt, worker, idempotency_key, started_at, \
            finished_at, outcome, grpc_code, error, latency_ms, trace_id) \
            SELECT s.saga_id, x.* FROM s, \
            UNNEST($29::text[], $30::int4[], $31::text[], $32::text[], $33::timestamptz[], \
                $43::timestamptz[], $44::text[], $45::text[], $46::text[], $47::int8[], $48::text[]) AS x \
            ON CONFLICT (saga_id, step, attempt) DO UPDATE SET worker = EXCLUDED.worker, \
            started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome, \
            grpc_code = EXCLUDED.grpc_code, error = EXCLUDED.error, latency_ms = EXCLUDED.latency_ms, \
            trace_id = EXCLUDED.trace_id), \
        finished AS (UPDATE saga_attempts a SET finished_at = x.finished_at, outcome = x.outcome, \
            grpc_code = x.grpc_code, error = x.error, latency_ms = x.latency_ms, trace_id = x.trace_id \
            FROM s, UNNEST($34::text[], $35::int4[], $36::timestamptz[], $37::text[], $38::text[], \
                $39::text[], $40::int8[], $41::text[]) \
                AS x (step, attempt, finished_at, outcome, grpc_code, error, latency_ms, trace_id) \
            WHERE a.saga_id = s.saga_id AND a.step = x.step AND a.attempt = x.attempt) \
        SELECT cancel_requested, cancel_reason FROM s",
        step_upsert(18)
    )
}

/// An attempt started in a write: step, attempt, worker, key, start, and
/// its end when the same write ends it.
type StartedRow<'a> = (
    &'a str,
    i32,
    &'a str,
    &'a str,
    DateTime<Utc>,
    Option<(DateTime<Utc>, &'a AttemptEnd)>,
);
/// An attempt ended in a write (started by an earlier one).
type FinishedRow<'a> = (&'a str, i32, DateTime<Utc>, &'a AttemptEnd);

/// The attempts a write starts (with their end, when it also ends them) and
/// the ones it ends that an earlier write started.
fn split_attempts(attempts: &[AttemptWrite]) -> (Vec<StartedRow<'_>>, Vec<FinishedRow<'_>>) {
    let mut started: Vec<StartedRow<'_>> = Vec::new();
    let mut finished: Vec<FinishedRow<'_>> = Vec::new();
    for attempt in attempts {
        match attempt {
            AttemptWrite::Started {
                step,
                attempt,
                worker,
                idempotency_key,
                started_at,
            } => started.push((
                step.name(),
                stored_count(*attempt),
                worker.as_str(),
                idempotency_key.as_str(),
                *started_at,
                None,
            )),
            AttemptWrite::Finished {
                step,
                attempt,
                finished_at,
                end,
            } => {
                let (name, number) = (step.name(), stored_count(*attempt));
                match started.iter_mut().find(|s| s.0 == name && s.1 == number) {
                    Some(row) => row.5 = Some((*finished_at, end)),
                    None => finished.push((name, number, *finished_at, end)),
                }
            }
        }
    }
    (started, finished)
}

/// The upsert of every step row given as parallel arrays from `$first` on
/// (11 of them), only where the saga update `s` went through.
fn step_upsert(first: usize) -> String {
    let p: Vec<String> = (first..first + 11).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO saga_steps (saga_id, step, compensation, status, attempts, round_attempts, \
         idempotency_key, last_error, last_grpc_code, started_at, finished_at, duration_ms) \
         SELECT s.saga_id, x.* FROM s, UNNEST({}::text[], {}::bool[], {}::text[], {}::int4[], {}::int4[], \
         {}::text[], {}::text[], {}::text[], {}::timestamptz[], {}::timestamptz[], {}::int8[]) AS x \
         ON CONFLICT (saga_id, step) DO UPDATE SET status = EXCLUDED.status, attempts = EXCLUDED.attempts, \
         round_attempts = EXCLUDED.round_attempts, idempotency_key = EXCLUDED.idempotency_key, \
         last_error = EXCLUDED.last_error, last_grpc_code = EXCLUDED.last_grpc_code, \
         started_at = COALESCE(saga_steps.started_at, EXCLUDED.started_at), \
         finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10]
    )
}

fn bind_steps<'q>(
    query: Query<'q, Postgres, PgArguments>,
    steps: &'q [StepRecord],
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(steps.iter().map(|s| s.step.name()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.step.is_compensation()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.status.as_str()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| stored_count(s.attempts)).collect::<Vec<_>>())
        .bind(
            steps
                .iter()
                .map(|s| stored_count(s.round_attempts))
                .collect::<Vec<_>>(),
        )
        .bind(
            steps
                .iter()
                .map(|s| s.idempotency_key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(steps.iter().map(|s| s.last_error.as_deref()).collect::<Vec<_>>())
        .bind(
            steps
                .iter()
                .map(|s| s.last_grpc_code.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(steps.iter().map(|s| s.started_at).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.finished_at).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.duration_ms).collect::<Vec<_>>())
}

sql_saga_store!(PostgresSagaStore);

type Db = Postgres;

const IN_IDS: &str = "= ANY($1)";

const RELEASE: &str = "UPDATE sagas SET lease_owner = NULL, lease_until = NULL, \
     next_run_at = CASE WHEN cancel_requested AND NOT $3 THEN now() ELSE $4 END \
     WHERE saga_id = $1 AND lease_owner = $2";

impl PostgresSagaStore {
    async fn claim(&self, lease: &Lease, limit: usize) -> Result<Vec<SagaRecord>, SagaStoreError> {
        // One round trip: the claim, and each claimed saga's steps as JSON.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH c AS (UPDATE sagas SET lease_owner = $1, lease_until = now() + $2 * interval '1 millisecond' \
             WHERE saga_id IN (SELECT saga_id FROM sagas \
                 WHERE (status IN ('RUNNING', 'COMPENSATING') OR (status = 'FAILED' AND cancel_requested)) \
                   AND next_run_at <= now() AND (lease_until IS NULL OR lease_until < now()) \
                 ORDER BY next_run_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING {SAGA_COLUMNS}) \
             SELECT c.*, COALESCE((SELECT json_agg(json_build_object('step', st.step, 'status', st.status, \
                 'attempts', st.attempts, 'round_attempts', st.round_attempts, \
                 'idempotency_key', st.idempotency_key, 'last_error', st.last_error, \
                 'last_grpc_code', st.last_grpc_code, \
                 'started_at', (extract(epoch FROM st.started_at) * 1000000)::bigint, \
                 'finished_at', (extract(epoch FROM st.finished_at) * 1000000)::bigint, \
                 'duration_ms', st.duration_ms)) FROM saga_steps st WHERE st.saga_id = c.saga_id), \
                 '[]'::json)::text AS steps_json FROM c"
        )))
        .bind(&lease.owner)
        .bind(lease_millis(lease))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let saga = SagaRow::from_row(row)?;
                let steps = super::decode::steps_from_json(row.try_get("steps_json")?)?;
                saga.decode(steps)
            })
            .collect()
    }

    async fn write_alone(&self, write: &FencedWrite) -> Result<CancelFlag, SagaStoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::write_fenced(&mut conn, write).await
    }

    async fn purge(&self, before: DateTime<Utc>, purge: Purge) -> Result<SagaPurge, SagaStoreError> {
        // The children are counted in the statement's snapshot, then go with
        // their saga (ON DELETE CASCADE). The chosen sagas are locked, so no
        // child row can be added between the count and the delete.
        let (lock, delete) = match purge {
            Purge::Count => ("", "SELECT saga_id FROM s"),
            Purge::Delete(_) => (
                "FOR UPDATE SKIP LOCKED",
                "DELETE FROM sagas WHERE saga_id IN (SELECT saga_id FROM s) RETURNING saga_id",
            ),
        };
        let counts = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH s AS (SELECT saga_id FROM sagas WHERE status IN {FINISHED} AND updated_at < $1 \
                 ORDER BY updated_at LIMIT $2 {lock}), \
             st AS (SELECT count(*) AS n FROM saga_steps WHERE saga_id IN (SELECT saga_id FROM s)), \
             a AS (SELECT count(*) AS n FROM saga_attempts WHERE saga_id IN (SELECT saga_id FROM s)), \
             o AS (SELECT count(*) AS n FROM saga_operator_actions WHERE saga_id IN (SELECT saga_id FROM s)), \
             d AS ({delete}) \
             SELECT (SELECT count(*) FROM d), (SELECT n FROM st), (SELECT n FROM a), (SELECT n FROM o)"
        )))
        .bind(before)
        .bind(purge.limit())
        .fetch_one(&self.pool)
        .await?;
        Ok(purge_counts(counts))
    }
}

impl PostgresSagaStore {
    /// Writes a unit of work's saga part in `conn`'s transaction. A fenced
    /// write reads back the cancel flag.
    pub(crate) async fn write_part(
        conn: &mut PgConnection,
        part: &SagaWrite,
    ) -> Result<Option<CancelFlag>, SagaStoreError> {
        match part {
            SagaWrite::Start(start) => Self::write_start(conn, start, None).await.map(|()| None),
            SagaWrite::StartLeased(start, first) => {
                Self::write_start(conn, start, Some(&first.lease.owner)).await?;
                Self::write_fenced(conn, first).await.map(Some)
            }
            SagaWrite::RequestCancel(cancel) => Self::write_cancel_request(conn, cancel).await.map(|()| None),
            SagaWrite::Fenced(write) => Self::write_fenced(conn, write).await.map(Some),
            SagaWrite::OperatorAction(action) => {
                Self::write_operator_action(conn, action).await.map(|()| None)
            }
        }
    }

    /// Inserts the saga row, naming `owner` as its lease owner when a local
    /// worker takes it at once (the fenced write that follows sets the lease's end).
    async fn write_start(
        conn: &mut PgConnection,
        saga: &SagaStart,
        owner: Option<&str>,
    ) -> Result<(), SagaStoreError> {
        sqlx::query(
            "INSERT INTO sagas (saga_id, order_id, status, idempotency_seed, deadline, next_run_at, \
             created_at, updated_at, customer_id, lease_owner) \
             VALUES ($1, $2, 'RUNNING', $3, $4, now(), now(), now(), $5, $6)",
        )
        .bind(saga.saga_id)
        .bind(saga.order_id)
        .bind(&saga.idempotency_seed)
        .bind(saga.deadline)
        .bind(&saga.customer_id)
        .bind(owner)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn write_cancel_request(
        conn: &mut PgConnection,
        cancel: &CancelRequest,
    ) -> Result<(), SagaStoreError> {
        // The first reason wins; waking the saga now makes it compensate promptly.
        sqlx::query(
            "UPDATE sagas SET cancel_requested = true, cancel_reason = COALESCE(cancel_reason, $2), \
             next_run_at = now(), updated_at = now() WHERE order_id = $1",
        )
        .bind(cancel.order_id)
        .bind(&cancel.reason)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// A worker's fenced write, as one statement on `conn`.
    async fn write_fenced(
        conn: &mut PgConnection,
        write: &FencedWrite,
    ) -> Result<CancelFlag, SagaStoreError> {
        let lease = &write.lease;
        let (started, finished) = split_attempts(&write.attempts);
        let release = write.release;
        let query = sqlx::query(sqlx::AssertSqlSafe(write_sql()))
            .bind(write.saga_id)
            .bind(&lease.owner);
        let query = bind_columns(query, &write.columns)
            .bind(lease_millis(lease))
            .bind(write.expect_cancel)
            .bind(release.is_some())
            .bind(release.map(|r| r.next_run_at).unwrap_or_else(Utc::now))
            .bind(release.is_some_and(|r| r.cancel_seen));
        let row = bind_steps(query, &write.steps)
            .bind(started.iter().map(|a| a.0).collect::<Vec<_>>())
            .bind(started.iter().map(|a| a.1).collect::<Vec<_>>())
            .bind(started.iter().map(|a| a.2).collect::<Vec<_>>())
            .bind(started.iter().map(|a| a.3).collect::<Vec<_>>())
            .bind(started.iter().map(|a| a.4).collect::<Vec<_>>())
            .bind(finished.iter().map(|a| a.0).collect::<Vec<_>>())
            .bind(finished.iter().map(|a| a.1).collect::<Vec<_>>())
            .bind(finished.iter().map(|a| a.2).collect::<Vec<_>>())
            .bind(finished.iter().map(|a| a.3.outcome.as_str()).collect::<Vec<_>>())
            .bind(
                finished
                    .iter()
                    .map(|a| a.3.grpc_code.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(finished.iter().map(|a| a.3.error.as_deref()).collect::<Vec<_>>())
            .bind(finished.iter().map(|a| a.3.latency_ms).collect::<Vec<_>>())
            .bind(
                finished
                    .iter()
                    .map(|a| a.3.trace_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(failure_code_text(&write.columns))
            .bind(started.iter().map(|a| a.5.map(|(at, _)| at)).collect::<Vec<_>>())
            .bind(
                started
                    .iter()
                    .map(|a| a.5.map(|(_, e)| e.outcome.as_str()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                started
                    .iter()
                    .map(|a| a.5.and_then(|(_, e)| e.grpc_code.as_deref()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                started
                    .iter()
                    .map(|a| a.5.and_then(|(_, e)| e.error.as_deref()))
                    .collect::<Vec<_>>(),
            )
            .bind(
                started
                    .iter()
                    .map(|a| a.5.map(|(_, e)| e.latency_ms))
                    .collect::<Vec<_>>(),
            )
            .bind(
                started
                    .iter()
                    .map(|a| a.5.and_then(|(_, e)| e.trace_id.as_deref()))
                    .collect::<Vec<_>>(),
            )
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(SagaStoreError::LeaseLost)?;
        Ok(CancelFlag {
            cancel_requested: row.try_get("cancel_requested")?,
            cancel_reason: row.try_get("cancel_reason")?,
        })
    }

    /// An operator action, as one statement on `conn`: fenced by version and
    /// status instead of a lease (no live worker may hold the saga).
    /// pg_notify wakes the replicas' workers at commit.
    async fn write_operator_action(
        conn: &mut PgConnection,
        write: &OperatorActionWrite,
    ) -> Result<(), SagaStoreError> {
        let OperatorActionWrite {
            saga_id,
            expected_updated_at,
            columns,
            step,
            action,
        } = write;
        let sql = format!(
            "WITH s AS (UPDATE sagas SET status = $3, current_step = $4, past_pivot = $5, \
                compensation_reason = $6, last_error = $7, authorization_id = $8, reservation_id = $9, \
                shipment_id = $10, tracking_number = $11, capture_id = $12, updated_at = now(), \
                failure_reason_code = $29, next_run_at = now(), lease_owner = NULL, lease_until = NULL \
                WHERE saga_id = $1 AND updated_at = $2 AND status IN ('FAILED', 'COMPENSATION_FAILED') \
                  AND (lease_until IS NULL OR lease_until < now()) RETURNING saga_id), \
            st AS ({}), \
            a AS (INSERT INTO saga_operator_actions (saga_id, action, step, operator, reason, at) \
                SELECT s.saga_id, $24, $25, $26, $27, $28 FROM s RETURNING id), \
            n AS (SELECT pg_notify('commerce_sagas', s.saga_id::text) FROM s) \
            SELECT (SELECT count(*) FROM a) AS applied, (SELECT count(*) FROM n) AS notified",
            step_upsert(13)
        );
        let steps = std::slice::from_ref(step);
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(saga_id)
            .bind(expected_updated_at);
        let query = bind_steps(bind_columns(query, columns), steps)
            .bind(action.action.as_str())
            .bind(action.step.name())
            .bind(action.operator.as_str())
            .bind(action.reason.as_str())
            .bind(action.at)
            .bind(failure_code_text(columns));
        let row = query.fetch_one(&mut *conn).await?;
        let applied: i64 = row.try_get("applied")?;
        if applied == 0 {
            return Err(SagaStoreError::Conflict);
        }
        Ok(())
    }
}
