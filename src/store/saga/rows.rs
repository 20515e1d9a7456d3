//! Rows of the saga tables, one struct per row for both backends (the
//! [column types](crate::store::columns) decode each database's form), their
//! decoding into records, and what both backends' statements share: the
//! column lists, the conflict clauses, and the values a write binds, given
//! to a [`ColumnSink`] (a row of a `VALUES` list on SQLite, a column array
//! of an `UNNEST` on PostgreSQL).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::decode::{count, parse_outcome, parse_status, parse_step, parse_step_status, stored_count};
use crate::domain::reason::ErrorReason;
use crate::saga::plan::SagaStatus;
use crate::store::{
    columns::{ColumnSink, DbTime, DbUuid},
    saga::{
        AttemptEnd, AttemptRecord, AttemptWrite, OperatorActionRecord, SagaCount, SagaPurge, SagaRecord,
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

/// The saga columns a worker's or an operator's write sets, as `$3..$12` of
/// both backends' statements (`$1` is the saga id, `$2` what the write is
/// fenced by), bound by the backend's `bind_fenced` or `bind_operator`.
pub(super) const SET_COLUMNS: &str = "status = $3, current_step = $4, past_pivot = $5, \
    compensation_reason = $6, last_error = $7, authorization_id = $8, reservation_id = $9, \
    shipment_id = $10, tracking_number = $11, capture_id = $12";

/// The insert of step rows: the saga id, then [`step_values`].
pub(super) const STEP_INSERT: &str = "INSERT INTO saga_steps (saga_id, step, compensation, status, attempts, \
    round_attempts, idempotency_key, last_error, last_grpc_code, started_at, finished_at, duration_ms) ";

/// A step row written again keeps the time its first attempt started.
pub(super) const STEP_CONFLICT: &str = " ON CONFLICT (saga_id, step) DO UPDATE SET status = excluded.status, \
    attempts = excluded.attempts, round_attempts = excluded.round_attempts, \
    idempotency_key = excluded.idempotency_key, last_error = excluded.last_error, \
    last_grpc_code = excluded.last_grpc_code, started_at = COALESCE(saga_steps.started_at, excluded.started_at), \
    finished_at = excluded.finished_at, duration_ms = excluded.duration_ms";

/// The insert of attempts a write starts: the saga id, then [`started_values`].
pub(super) const ATTEMPT_INSERT: &str = "INSERT INTO saga_attempts (saga_id, step, attempt, worker, \
    idempotency_key, started_at, finished_at, outcome, grpc_code, error, latency_ms, trace_id) ";

/// An attempt recorded again (a late hand-off records its attempt again
/// before sending it) takes the new worker, start and end.
pub(super) const ATTEMPT_CONFLICT: &str = " ON CONFLICT (saga_id, step, attempt) DO UPDATE SET \
    worker = excluded.worker, started_at = excluded.started_at, finished_at = excluded.finished_at, \
    outcome = excluded.outcome, grpc_code = excluded.grpc_code, error = excluded.error, \
    latency_ms = excluded.latency_ms, trace_id = excluded.trace_id";

/// The columns of [`finished_values`], as a row source `x` names them.
pub(super) const ATTEMPT_END_COLUMNS: &str =
    "step, attempt, finished_at, outcome, grpc_code, error, latency_ms, trace_id";

/// Sets an attempt's end from the row source `x` of [`ATTEMPT_END_COLUMNS`].
pub(super) const ATTEMPT_END_SET: &str = "finished_at = x.finished_at, outcome = x.outcome, \
    grpc_code = x.grpc_code, error = x.error, latency_ms = x.latency_ms, trace_id = x.trace_id";

/// A step row's values after its saga id, in [`STEP_INSERT`]'s order.
pub(super) fn step_values(sink: &mut impl ColumnSink, step: &StepRecord) {
    sink.value(step.step.name())
        .value(step.step.is_compensation())
        .value(step.status.as_str())
        .value(stored_count(step.attempts))
        .value(stored_count(step.round_attempts))
        .value(step.idempotency_key.clone())
        .value(step.last_error.clone())
        .value(step.last_grpc_code.clone())
        .value(step.started_at.map(DbTime))
        .value(step.finished_at.map(DbTime))
        .value(step.duration_ms);
}

/// An attempt a write starts, with its end when the same write ends it (a
/// local step's attempt starts and ends in one write).
pub(super) struct StartedAttempt<'a> {
    step: &'static str,
    attempt: i32,
    worker: &'a str,
    idempotency_key: &'a str,
    started_at: DateTime<Utc>,
    end: Option<(DateTime<Utc>, &'a AttemptEnd)>,
}

/// An attempt a write ends that an earlier write started.
pub(super) struct FinishedAttempt<'a> {
    step: &'static str,
    attempt: i32,
    finished_at: DateTime<Utc>,
    end: &'a AttemptEnd,
}

/// The attempts a write starts (with their end, when it also ends them) and
/// the ones it ends that an earlier write started.
pub(super) fn split_attempts(
    attempts: &[AttemptWrite],
) -> (Vec<StartedAttempt<'_>>, Vec<FinishedAttempt<'_>>) {
    let mut started: Vec<StartedAttempt<'_>> = Vec::new();
    let mut finished = Vec::new();
    for write in attempts {
        match write {
            AttemptWrite::Started {
                step,
                attempt,
                worker,
                idempotency_key,
                started_at,
            } => started.push(StartedAttempt {
                step: step.name(),
                attempt: stored_count(*attempt),
                worker,
                idempotency_key,
                started_at: *started_at,
                end: None,
            }),
            AttemptWrite::Finished {
                step,
                attempt,
                finished_at,
                end,
            } => {
                let (step, attempt) = (step.name(), stored_count(*attempt));
                match started
                    .iter_mut()
                    .find(|s| s.step == step && s.attempt == attempt)
                {
                    Some(row) => row.end = Some((*finished_at, end)),
                    None => finished.push(FinishedAttempt {
                        step,
                        attempt,
                        finished_at: *finished_at,
                        end,
                    }),
                }
            }
        }
    }
    (started, finished)
}

/// A started attempt's values after its saga id, in [`ATTEMPT_INSERT`]'s order.
pub(super) fn started_values(sink: &mut impl ColumnSink, started: &StartedAttempt<'_>) {
    let end = started.end.map(|(_, end)| end);
    sink.value(started.step)
        .value(started.attempt)
        .value(started.worker.to_owned())
        .value(started.idempotency_key.to_owned())
        .value(DbTime(started.started_at))
        .value(started.end.map(|(at, _)| DbTime(at)))
        .value(end.map(|e| e.outcome.as_str()))
        .value(end.and_then(|e| e.grpc_code.clone()))
        .value(end.and_then(|e| e.error.clone()))
        .value(end.map(|e| e.latency_ms))
        .value(end.and_then(|e| e.trace_id.clone()));
}

/// An ended attempt's values, in [`ATTEMPT_END_COLUMNS`]' order.
pub(super) fn finished_values(sink: &mut impl ColumnSink, finished: &FinishedAttempt<'_>) {
    let end = finished.end;
    sink.value(finished.step)
        .value(finished.attempt)
        .value(DbTime(finished.finished_at))
        .value(end.outcome.as_str())
        .value(end.grpc_code.clone())
        .value(end.error.clone())
        .value(end.latency_ms)
        .value(end.trace_id.clone());
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

/// A `saga_steps` row, read by a SELECT or, on PostgreSQL, from the JSON
/// array a claim aggregates (times in microseconds there).
#[derive(sqlx::FromRow, serde::Deserialize)]
pub(super) struct StepRow {
    pub(super) saga_id: DbUuid,
    step: String,
    status: String,
    attempts: i32,
    round_attempts: i32,
    idempotency_key: String,
    last_error: Option<String>,
    last_grpc_code: Option<String>,
    #[serde(deserialize_with = "micros")]
    started_at: Option<DbTime>,
    #[serde(deserialize_with = "micros")]
    finished_at: Option<DbTime>,
    duration_ms: i64,
}

/// A time of the claim's JSON: microseconds since the epoch, or null.
fn micros<'de, D: serde::Deserializer<'de>>(json: D) -> Result<Option<DbTime>, D::Error> {
    let micros: Option<i64> = serde::Deserialize::deserialize(json)?;
    micros
        .map(|m| {
            DateTime::from_timestamp_micros(m)
                .map(DbTime)
                .ok_or_else(|| serde::de::Error::custom(format!("stored time {m}")))
        })
        .transpose()
}

/// Step rows from a claim's JSON array, in the order they started.
pub(super) fn steps_from_json(json: &str) -> Result<Vec<StepRecord>, SagaStoreError> {
    let rows: Vec<StepRow> = serde_json::from_str(json).map_err(|e| anyhow::anyhow!("stored steps: {e}"))?;
    let mut steps = rows
        .into_iter()
        .map(StepRow::decode)
        .collect::<Result<Vec<_>, _>>()?;
    steps.sort_by_key(|s| (s.started_at.is_none(), s.started_at, s.step));
    Ok(steps)
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
