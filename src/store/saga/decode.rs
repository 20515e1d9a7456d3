//! Decoding shared by both backends: stored names and counts, and the JSON
//! form of step rows that a claim aggregates.

use chrono::{DateTime, Utc};

use super::{AttemptOutcome, Lease, SagaStoreError, StepRecord};
use crate::saga::plan::{SagaStatus, Step, StepStatus};

/// A step row as the claim queries aggregate it (times in microseconds).
#[derive(serde::Deserialize)]
struct StepJson {
    step: String,
    status: String,
    attempts: i32,
    round_attempts: i32,
    idempotency_key: String,
    last_error: Option<String>,
    last_grpc_code: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    duration_ms: i64,
}

/// Step rows from a claim's JSON array, in the order they started.
pub(super) fn steps_from_json(json: &str) -> Result<Vec<StepRecord>, SagaStoreError> {
    let rows: Vec<StepJson> = serde_json::from_str(json).map_err(|e| anyhow::anyhow!("stored steps: {e}"))?;
    let time = |micros: Option<i64>| -> Result<Option<DateTime<Utc>>, SagaStoreError> {
        micros
            .map(|m| {
                DateTime::from_timestamp_micros(m).ok_or_else(|| anyhow::anyhow!("stored time {m}").into())
            })
            .transpose()
    };
    let mut steps = rows
        .into_iter()
        .map(|r| {
            Ok(StepRecord {
                step: parse_step(&r.step)?,
                status: parse_step_status(&r.status)?,
                attempts: count(r.attempts),
                round_attempts: count(r.round_attempts),
                idempotency_key: r.idempotency_key,
                last_error: r.last_error,
                last_grpc_code: r.last_grpc_code,
                started_at: time(r.started_at)?,
                finished_at: time(r.finished_at)?,
                duration_ms: r.duration_ms,
            })
        })
        .collect::<Result<Vec<_>, SagaStoreError>>()?;
    steps.sort_by_key(|s| (s.started_at.is_none(), s.started_at, s.step));
    Ok(steps)
}

/// Parses a stored step name.
pub(super) fn parse_step(name: &str) -> Result<Step, SagaStoreError> {
    Step::parse(name).ok_or_else(|| anyhow::anyhow!("stored step {name:?} unknown").into())
}

/// Parses a stored saga status.
pub(super) fn parse_status(text: &str) -> Result<SagaStatus, SagaStoreError> {
    SagaStatus::parse(text).ok_or_else(|| anyhow::anyhow!("stored saga status {text:?} unknown").into())
}

/// Parses a stored step status.
pub(super) fn parse_step_status(text: &str) -> Result<StepStatus, SagaStoreError> {
    StepStatus::parse(text).ok_or_else(|| anyhow::anyhow!("stored step status {text:?} unknown").into())
}

impl AttemptOutcome {
    /// The outcome as stored.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "SUCCEEDED",
            Self::Refused => "REFUSED",
            Self::Transient => "TRANSIENT",
        }
    }
}

/// Parses a stored attempt outcome.
pub(super) fn parse_outcome(text: &str) -> Result<AttemptOutcome, SagaStoreError> {
    [
        AttemptOutcome::Succeeded,
        AttemptOutcome::Refused,
        AttemptOutcome::Transient,
    ]
    .into_iter()
    .find(|o| o.as_str() == text)
    .ok_or_else(|| anyhow::anyhow!("stored attempt outcome {text:?} unknown").into())
}

/// A stored count as u32 (never negative by construction).
pub(super) fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// A count as stored.
pub(super) fn stored_count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Lease duration in milliseconds, as bound into SQL.
pub(super) fn lease_millis(lease: &Lease) -> i64 {
    i64::try_from(lease.duration.as_millis()).unwrap_or(i64::MAX)
}
