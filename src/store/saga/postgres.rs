//! The saga store on PostgreSQL.
//!
//! Claims use `FOR UPDATE SKIP LOCKED`, so replicas polling together each get
//! different sagas without waiting on each other. Every worker write is ONE
//! statement (data-modifying CTEs): the fenced saga update, the step upsert and
//! the attempt rows commit together in one round trip, and the steps and
//! attempts only land if the fence let the saga update through. Lease times
//! use the database clock, the one clock all replicas share.
//!
//! The reads, the release and the binds are written once for both backends
//! (`shared.rs`, `rows.rs`); this module holds their PostgreSQL text, the
//! claim, the worker and operator writes and the purge.
//!
//! SQL-SAFE: statements are assembled from constant fragments (column lists,
//! CTEs, numbered placeholders) chosen by `match` or by which rows a write
//! has; every value is bound.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, Postgres, Row};

use super::decode::lease_millis;
use super::rows::{
    ATTEMPT_CONFLICT, ATTEMPT_END_COLUMNS, ATTEMPT_END_SET, ATTEMPT_INSERT, SAGA_COLUMNS, SET_COLUMNS,
    STEP_CONFLICT, STEP_INSERT, SagaRow, finished_values, purge_counts, split_attempts, started_values,
    step_values, steps_from_json,
};
use super::{
    CancelFlag, FINISHED, FencedWrite, Lease, OperatorActionWrite, SagaPurge, SagaRecord, SagaStoreError,
};
use crate::store::{
    Purge,
    columns::{DbTime, DbUuid, PgArrays},
};

sql_saga_store!(
    /// The saga store on PostgreSQL.
    PostgresSagaStore: Postgres
);

/// Statements read the database clock (`now()`): a unit of work stamps nothing.
type Stamp = ();

fn stamped(query: Statement<'_>, (): Stamp) -> Statement<'_> {
    query
}

const IN_IDS: &str = "= ANY($1)";

const RELEASE: &str = "UPDATE sagas SET lease_owner = NULL, lease_until = NULL, \
     next_run_at = CASE WHEN cancel_requested AND NOT $3 THEN now() ELSE $4 END \
     WHERE saga_id = $1 AND lease_owner = $2";

const START: &str = "INSERT INTO sagas (saga_id, order_id, status, idempotency_seed, deadline, next_run_at, \
     created_at, updated_at, customer_id, lease_owner) \
     VALUES ($1, $2, 'RUNNING', $3, $4, now(), now(), now(), $5, $6)";

const REQUEST_CANCEL: &str = "UPDATE sagas SET cancel_requested = true, \
     cancel_reason = COALESCE(cancel_reason, $2), next_run_at = now(), updated_at = now() WHERE order_id = $1";

/// A statement's CTEs that write rows given as arrays (one per column, bound
/// after the statement's other values), numbered on from those. Rows a write
/// does not have get no CTE and no parameters.
struct ArrayCtes {
    sql: String,
    arrays: Vec<PgArrays>,
    next: usize,
}

impl ArrayCtes {
    /// CTEs after `head`, a statement whose own values are `$1..$values`.
    fn after(head: String, values: usize) -> Self {
        Self {
            sql: head,
            arrays: Vec::new(),
            next: values + 1,
        }
    }

    /// Adds the CTE `name` writing `rows`: `body` is given their
    /// `UNNEST($n, ..)`.
    fn add<R>(
        &mut self,
        name: &str,
        rows: &[R],
        values: fn(&mut PgArrays, &R),
        body: impl FnOnce(&str) -> String,
    ) {
        if rows.is_empty() {
            return;
        }
        let mut arrays = PgArrays::default();
        for row in rows {
            values(arrays.row(), row);
        }
        let params: Vec<String> = (self.next..self.next + arrays.width())
            .map(|i| format!("${i}"))
            .collect();
        self.next += arrays.width();
        let _ = write!(
            self.sql,
            ", {name} AS ({})",
            body(&format!("UNNEST({})", params.join(", ")))
        );
        self.arrays.push(arrays);
    }

    /// The statement, ending with `tail`, and its arrays to bind after its
    /// other values.
    fn finish(self, tail: &str) -> (String, Vec<PgArrays>) {
        (format!("{} {tail}", self.sql), self.arrays)
    }
}

/// Binds `arrays` after `query`'s other values.
fn bind_arrays(mut query: Statement<'_>, arrays: Vec<PgArrays>) -> Result<Statement<'_>, SagaStoreError> {
    for columns in arrays {
        query = columns.bind(query)?;
    }
    Ok(query)
}

/// The upsert of step rows `x`, only where the saga update `s` went through.
fn step_upsert(unnest: &str) -> String {
    format!("{STEP_INSERT} SELECT s.saga_id, x.* FROM s, {unnest} AS x {STEP_CONFLICT}")
}

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
             SELECT c.*, COALESCE((SELECT json_agg(json_build_object('saga_id', st.saga_id, \
                 'step', st.step, 'status', st.status, \
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
            .map(|row| SagaRow::from_row(row)?.decode(steps_from_json(row.try_get("steps_json")?)?))
            .collect()
    }

    async fn write_alone(&self, write: &FencedWrite) -> Result<CancelFlag, SagaStoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::write_fenced(&mut conn, write, ()).await
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

    /// A worker's fenced write, as one statement on `conn`: the fenced saga
    /// update `s` ([`bind_fenced`]'s `$1..$18`), then, only where `s` went
    /// through, its step and attempt rows ([`Self::fenced_rows`]).
    async fn write_fenced(
        conn: &mut PgConnection,
        write: &FencedWrite,
        (): Stamp,
    ) -> Result<CancelFlag, SagaStoreError> {
        let head = format!(
            "WITH s AS (UPDATE sagas SET {SET_COLUMNS}, updated_at = now(), failure_reason_code = $18, \
                lease_owner = CASE WHEN $15 THEN NULL ELSE lease_owner END, \
                lease_until = CASE WHEN $15 THEN NULL ELSE now() + $13 * interval '1 millisecond' END, \
                next_run_at = CASE WHEN NOT $15 THEN next_run_at \
                    WHEN cancel_requested AND NOT $17 THEN now() ELSE $16 END \
                WHERE saga_id = $1 AND lease_owner = $2 AND ($14::bool IS NULL OR cancel_requested = $14) \
                RETURNING saga_id, cancel_requested, cancel_reason)"
        );
        let (sql, arrays) = Self::fenced_rows(head, 18, write);
        let query = bind_fenced(sqlx::query(sqlx::AssertSqlSafe(sql)), write);
        cancel_flag(bind_arrays(query, arrays)?.fetch_optional(&mut *conn).await?)
    }

    /// A saga handed to a local worker at once, as one statement on `conn`:
    /// its row inserted with the first fenced write's values already in it
    /// (the same `$1..$18`, applied to a saga that is not being cancelled;
    /// then the start's order, seed, deadline and customer), and that write's
    /// step and attempt rows. An insert and an update in one statement could
    /// not see each other's row, so the insert takes the update's values.
    async fn write_start_leased(
        conn: &mut PgConnection,
        start: &super::SagaStart,
        first: &FencedWrite,
        (): Stamp,
    ) -> Result<CancelFlag, SagaStoreError> {
        let head = "WITH s AS (INSERT INTO sagas (saga_id, lease_owner, status, current_step, past_pivot, \
                compensation_reason, last_error, authorization_id, reservation_id, shipment_id, \
                tracking_number, capture_id, lease_until, next_run_at, failure_reason_code, order_id, \
                idempotency_seed, deadline, customer_id, created_at, updated_at) \
            SELECT $1, CASE WHEN $15 THEN NULL ELSE $2 END, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                CASE WHEN $15 THEN NULL ELSE now() + $13 * interval '1 millisecond' END, \
                CASE WHEN $15 THEN $16 ELSE now() END, $18, $19, $20, $21, $22, now(), now() \
            WHERE $14::bool IS NOT TRUE \
            RETURNING saga_id, cancel_requested, cancel_reason)"
            .to_string();
        let (sql, arrays) = Self::fenced_rows(head, 22, first);
        let query = bind_fenced(sqlx::query(sqlx::AssertSqlSafe(sql)), first)
            .bind(DbUuid(start.order_id))
            .bind(&start.idempotency_seed)
            .bind(DbTime(start.deadline))
            .bind(&start.customer_id);
        cancel_flag(bind_arrays(query, arrays)?.fetch_optional(&mut *conn).await?)
    }

    /// The statement of a fenced write after its saga CTE `head` (which binds
    /// `$1..$values` and returns the written saga as `s`): the step rows, the
    /// attempts started (inserted with their end when the write also ends
    /// them: the statement's parts all see the snapshot from before it, so an
    /// update could not see a row another part inserts) and the attempts
    /// ended, each only where `s` went through; with their arrays.
    fn fenced_rows(head: String, values: usize, write: &FencedWrite) -> (String, Vec<PgArrays>) {
        let (started, finished) = split_attempts(&write.attempts);
        let mut ctes = ArrayCtes::after(head, values);
        ctes.add("st", &write.steps, step_values, step_upsert);
        ctes.add("started", &started, started_values, |x| {
            format!("{ATTEMPT_INSERT} SELECT s.saga_id, x.* FROM s, {x} AS x {ATTEMPT_CONFLICT}")
        });
        ctes.add("finished", &finished, finished_values, |x| {
            format!(
                "UPDATE saga_attempts a SET {ATTEMPT_END_SET} FROM s, {x} AS x ({ATTEMPT_END_COLUMNS}) \
                 WHERE a.saga_id = s.saga_id AND a.step = x.step AND a.attempt = x.attempt"
            )
        });
        ctes.finish("SELECT cancel_requested, cancel_reason FROM s")
    }

    /// An operator action, as one statement on `conn`: fenced by version and
    /// status instead of a lease (no live worker may hold the saga).
    /// pg_notify wakes the replicas' workers at commit.
    async fn write_operator_action(
        conn: &mut PgConnection,
        write: &OperatorActionWrite,
        (): Stamp,
    ) -> Result<(), SagaStoreError> {
        let mut ctes = ArrayCtes::after(
            format!(
                "WITH s AS (UPDATE sagas SET {SET_COLUMNS}, updated_at = now(), failure_reason_code = $13, \
                    next_run_at = now(), lease_owner = NULL, lease_until = NULL \
                    WHERE saga_id = $1 AND updated_at = $2 AND status IN ('FAILED', 'COMPENSATION_FAILED') \
                      AND (lease_until IS NULL OR lease_until < now()) RETURNING saga_id), \
                a AS (INSERT INTO saga_operator_actions (saga_id, action, step, operator, reason, at) \
                    SELECT s.saga_id, $14, $15, $16, $17, $18 FROM s RETURNING id), \
                n AS (SELECT pg_notify('commerce_sagas', s.saga_id::text) FROM s)"
            ),
            18,
        );
        ctes.add("st", std::slice::from_ref(&write.step), step_values, step_upsert);
        let (sql, arrays) =
            ctes.finish("SELECT (SELECT count(*) FROM a) AS applied, (SELECT count(*) FROM n) AS notified");
        let query = bind_action(
            bind_operator(sqlx::query(sqlx::AssertSqlSafe(sql)), write),
            &write.action,
        );
        let applied: i64 = bind_arrays(query, arrays)?
            .fetch_one(&mut *conn)
            .await?
            .try_get("applied")?;
        if applied == 0 {
            return Err(SagaStoreError::Conflict);
        }
        Ok(())
    }
}
