//! Rows of the saga tables, one struct per row for both backends (the
//! [column types](crate::store::columns) decode each database's form), their
//! decoding into records, and what both backends' statements share: the
//! column lists and the binding of the saga columns a write sets.

use std::collections::HashMap;

use sqlx::{Database, Encode, Type, query::Query};
use uuid::Uuid;

use super::decode::{count, parse_outcome, parse_status, parse_step, parse_step_status};
use crate::domain::reason::ErrorReason;
use crate::saga::plan::SagaStatus;
use crate::store::{
    columns::{DbTime, DbUuid},
    saga::{
        AttemptEnd, AttemptRecord, OperatorActionRecord, SagaColumns, SagaCount, SagaPurge, SagaRecord,
        SagaStoreError, SiblingRefs, StepRecord,
    },
};

/// The columns of [`SagaRow`], in a SELECT or RETURNING.
pub(super) const SAGA_COLUMNS: &str = "saga_id, order_id, idempotency_seed, status, current_step, past_pivot, \
    cancel_requested, cancel_reason, deadline, next_run_at, compensation_reason, last_error, \
    authorization_id, reservation_id, shipment_id, tracking_number, capture_id, created_at, updated_at, \
    customer_id, failure_reason_code";

/// The columns of [`StepRow`], in a SELECT.
pub(super) const STEP_COLUMNS: &str = "saga_id, step, status, attempts, round_attempts, idempotency_key, \
    last_error, last_grpc_code, started_at, finished_at, duration_ms";

/// The columns of [`AttemptRow`], in a SELECT.
pub(super) const ATTEMPT_COLUMNS: &str = "step, attempt, worker, idempotency_key, started_at, finished_at, \
    outcome, grpc_code, error, latency_ms, trace_id";

/// Binds the ten saga columns a worker or an operator sets, in the order
/// both backends' `SET` lists name them (status, current step, pivot,
/// compensation reason, last error, then the five sibling refs).
pub(super) fn bind_columns<'q, DB>(
    query: Query<'q, DB, <DB as Database>::Arguments>,
    columns: &'q SagaColumns,
) -> Query<'q, DB, <DB as Database>::Arguments>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
{
    query
        .bind(columns.status.as_str())
        .bind(columns.current_step.map(|s| s.name()))
        .bind(columns.past_pivot)
        .bind(columns.compensation_reason.as_deref())
        .bind(columns.last_error.as_deref())
        .bind(columns.refs.authorization_id.as_deref())
        .bind(columns.refs.reservation_id.as_deref())
        .bind(columns.refs.shipment_id.as_deref())
        .bind(columns.refs.tracking_number.as_deref())
        .bind(columns.refs.capture_id.as_deref())
}

/// The failure code a write sets, bound after every other value of the
/// statement (its placeholder is the statement's last).
pub(super) fn failure_code_text(columns: &SagaColumns) -> Option<&'static str> {
    columns.failure_code.map(ErrorReason::as_str)
}

/// `(status, current_step, count)` rows of [`super::SagaStore::count`]'s GROUP BY.
pub(super) fn step_counts(
    rows: Vec<(String, Option<String>, i64, Option<DbTime>)>,
) -> Result<Vec<SagaCount>, SagaStoreError> {
    rows.into_iter()
        .map(|(status, step, n, last)| {
            Ok(SagaCount {
                status: parse_status(&status)?,
                current_step: step.as_deref().map(parse_step).transpose()?,
                count: u64::try_from(n).unwrap_or(0),
                last_updated: last.map(|t| t.0),
            })
        })
        .collect()
}

/// The counts row of a purge statement: sagas, steps, attempts, operator actions.
pub(super) fn purge_counts((sagas, steps, attempts, actions): (i64, i64, i64, i64)) -> SagaPurge {
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    SagaPurge {
        sagas: n(sagas),
        steps: n(steps),
        attempts: n(attempts),
        operator_actions: n(actions),
    }
}

/// `(status, count)` rows of `SELECT status, count(*) .. GROUP BY status`.
pub(super) fn status_counts(rows: Vec<(String, i64)>) -> Result<Vec<(SagaStatus, u64)>, SagaStoreError> {
    rows.into_iter()
        .map(|(status, n)| Ok((parse_status(&status)?, u64::try_from(n).unwrap_or(0))))
        .collect()
}

#[derive(sqlx::FromRow)]
pub(super) struct SagaRow {
    pub(super) saga_id: DbUuid,
    order_id: DbUuid,
    idempotency_seed: String,
    status: String,
    current_step: Option<String>,
    past_pivot: bool,
    cancel_requested: bool,
    cancel_reason: Option<String>,
    deadline: DbTime,
    next_run_at: DbTime,
    compensation_reason: Option<String>,
    last_error: Option<String>,
    authorization_id: Option<String>,
    reservation_id: Option<String>,
    shipment_id: Option<String>,
    tracking_number: Option<String>,
    capture_id: Option<String>,
    created_at: DbTime,
    updated_at: DbTime,
    customer_id: Option<String>,
    failure_reason_code: Option<String>,
}

impl SagaRow {
    pub(super) fn decode(self, steps: Vec<StepRecord>) -> Result<SagaRecord, SagaStoreError> {
        Ok(SagaRecord {
            saga_id: self.saga_id.0,
            order_id: self.order_id.0,
            customer_id: self.customer_id,
            seed: self.idempotency_seed,
            status: parse_status(&self.status)?,
            current_step: self.current_step.as_deref().map(parse_step).transpose()?,
            past_pivot: self.past_pivot,
            cancel_requested: self.cancel_requested,
            cancel_reason: self.cancel_reason,
            deadline: self.deadline.0,
            next_run_at: self.next_run_at.0,
            compensation_reason: self.compensation_reason,
            last_error: self.last_error,
            failure_code: self
                .failure_reason_code
                .as_deref()
                .map(|code| {
                    ErrorReason::parse(code)
                        .ok_or_else(|| anyhow::anyhow!("unknown failure_reason_code {code:?} in sagas"))
                })
                .transpose()?,
            refs: SiblingRefs {
                authorization_id: self.authorization_id,
                reservation_id: self.reservation_id,
                shipment_id: self.shipment_id,
                tracking_number: self.tracking_number,
                capture_id: self.capture_id,
            },
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
            steps,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct StepRow {
    pub(super) saga_id: DbUuid,
    step: String,
    status: String,
    attempts: i32,
    round_attempts: i32,
    idempotency_key: String,
    last_error: Option<String>,
    last_grpc_code: Option<String>,
    started_at: Option<DbTime>,
    finished_at: Option<DbTime>,
    duration_ms: i64,
}

impl StepRow {
    pub(super) fn decode(self) -> Result<StepRecord, SagaStoreError> {
        Ok(StepRecord {
            step: parse_step(&self.step)?,
            status: parse_step_status(&self.status)?,
            attempts: count(self.attempts),
            round_attempts: count(self.round_attempts),
            idempotency_key: self.idempotency_key,
            last_error: self.last_error,
            last_grpc_code: self.last_grpc_code,
            started_at: self.started_at.map(|t| t.0),
            finished_at: self.finished_at.map(|t| t.0),
            duration_ms: self.duration_ms,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow {
    step: String,
    attempt: i32,
    worker: String,
    idempotency_key: String,
    started_at: DbTime,
    finished_at: Option<DbTime>,
    outcome: Option<String>,
    grpc_code: Option<String>,
    error: Option<String>,
    latency_ms: Option<i64>,
    trace_id: Option<String>,
}

impl AttemptRow {
    pub(super) fn decode(self) -> Result<AttemptRecord, SagaStoreError> {
        let end = match self.outcome.as_deref() {
            None => None,
            Some(outcome) => Some(AttemptEnd {
                outcome: parse_outcome(outcome)?,
                grpc_code: self.grpc_code,
                error: self.error,
                latency_ms: self.latency_ms.unwrap_or(0),
                trace_id: self.trace_id,
            }),
        };
        Ok(AttemptRecord {
            step: parse_step(&self.step)?,
            attempt: count(self.attempt),
            worker: self.worker,
            idempotency_key: self.idempotency_key,
            started_at: self.started_at.0,
            finished_at: self.finished_at.map(|t| t.0),
            end,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct OperatorActionRow {
    saga_id: DbUuid,
    action: String,
    step: String,
    operator: String,
    reason: String,
    at: DbTime,
}

impl OperatorActionRow {
    pub(super) fn decode(self) -> Result<(Uuid, OperatorActionRecord), SagaStoreError> {
        Ok((
            self.saga_id.0,
            OperatorActionRecord {
                action: self.action,
                step: parse_step(&self.step)?,
                operator: self.operator,
                reason: self.reason,
                at: self.at.0,
            },
        ))
    }
}

/// Sagas with their step rows (given in the order the steps started).
pub(super) fn assemble(sagas: Vec<SagaRow>, steps: Vec<StepRow>) -> Result<Vec<SagaRecord>, SagaStoreError> {
    let mut by_saga: HashMap<Uuid, Vec<StepRecord>> = HashMap::new();
    for row in steps {
        by_saga.entry(row.saga_id.0).or_default().push(row.decode()?);
    }
    sagas
        .into_iter()
        .map(|row| {
            let own = by_saga.remove(&row.saga_id.0).unwrap_or_default();
            row.decode(own)
        })
        .collect()
}
