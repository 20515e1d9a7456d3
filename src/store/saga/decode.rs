//! Stored names and counts, as both backends store them.

use super::{AttemptOutcome, Lease, SagaStoreError};
use crate::saga::plan::{SagaStatus, Step, StepStatus};

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
