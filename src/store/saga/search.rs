//! What ListSagas, CountSagas and the bulk retry select sagas by: the
//! [`SagaFilter`], its one SQL rendering for both backends, and the rule that
//! gives a saga its failure reason code (the `failure_reason_code` column the
//! filter matches, written with the saga's other columns).
//!
//! SQL-SAFE: [`push_filter`] appends constant fragments; every value is bound.

use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, QueryBuilder, Type};
use uuid::Uuid;

use super::StepRecord;
use crate::{
    domain::reason::ErrorReason,
    saga::plan::{SagaState, SagaStatus, Step, StepStatus},
    store::columns::{DbTime, DbUuid},
};

/// Which sagas a search matches; every part left empty matches all. Time
/// ranges are half-open: `after` inclusive, `before` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SagaFilter {
    /// Any of these statuses (empty: any status).
    pub statuses: Vec<SagaStatus>,
    /// The step running, due next, or (FAILED, COMPENSATION_FAILED) the one that failed.
    pub current_step: Option<Step>,
    /// The saga's [`failure_code`].
    pub failure_code: Option<ErrorReason>,
    /// The customer whose order it fulfils (token subject).
    pub customer_id: Option<String>,
    /// The order it fulfils.
    pub order_id: Option<Uuid>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Last changed at or after.
    pub updated_after: Option<DateTime<Utc>>,
    /// Last changed before.
    pub updated_before: Option<DateTime<Utc>>,
    /// Last changed at or before (the bulk retry's snapshot bound: what its dry run saw).
    pub updated_at_most: Option<DateTime<Utc>>,
}

/// A page position: after this (created_at, saga_id), newest first.
pub type Cursor = (DateTime<Utc>, Uuid);

/// How many sagas of one status have one current step (CountSagas sums the
/// steps, the bulk retry's dry run the statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaCount {
    pub status: SagaStatus,
    /// The current step (None for finished sagas).
    pub current_step: Option<Step>,
    /// Sagas in this status at this step.
    pub count: u64,
    /// The latest `updated_at` among them.
    pub last_updated: Option<DateTime<Utc>>,
}

/// Appends ` WHERE ..` for `filter` (and the keyset position `after`) to a
/// statement selecting from `sagas`; the caller adds ORDER BY / GROUP BY.
pub(super) fn push_filter<DB>(sql: &mut QueryBuilder<DB>, filter: &SagaFilter, after: Option<Cursor>)
where
    DB: Database,
    for<'t> DbTime: Encode<'t, DB> + Type<DB>,
    for<'t> DbUuid: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
{
    sql.push(" WHERE 1 = 1");
    if !filter.statuses.is_empty() {
        sql.push(" AND status IN (");
        let mut list = sql.separated(", ");
        for status in &filter.statuses {
            list.push_bind(status.as_str().to_string());
        }
        sql.push(")");
    }
    let texts = [
        ("current_step", filter.current_step.map(|s| s.name().to_string())),
        (
            "failure_reason_code",
            filter.failure_code.map(|c| c.as_str().to_string()),
        ),
        ("customer_id", filter.customer_id.clone()),
    ];
    for (column, value) in texts {
        if let Some(value) = value {
            sql.push(format!(" AND {column} = ")).push_bind(value);
        }
    }
    if let Some(order_id) = filter.order_id {
        sql.push(" AND order_id = ").push_bind(DbUuid(order_id));
    }
    let times = [
        ("created_at >= ", filter.created_after),
        ("created_at < ", filter.created_before),
        ("updated_at >= ", filter.updated_after),
        ("updated_at < ", filter.updated_before),
        ("updated_at <= ", filter.updated_at_most),
    ];
    for (condition, value) in times {
        if let Some(at) = value {
            sql.push(format!(" AND {condition}")).push_bind(DbTime(at));
        }
    }
    if let Some((at, id)) = after {
        // Spelled out rather than as a row comparison, which SQLite's planner
        // does not turn into an index range.
        sql.push(" AND (created_at < ")
            .push_bind(DbTime(at))
            .push(" OR (created_at = ")
            .push_bind(DbTime(at))
            .push(" AND saga_id < ")
            .push_bind(DbUuid(id))
            .push("))");
    }
}

/// gRPC codes of a sibling's business refusal (as `grpc_siblings::classify` decides).
const REFUSAL_CODES: &[&str] = &[
    "FAILED_PRECONDITION",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "OUT_OF_RANGE",
];

/// Why a saga failed or compensates, as a `commerce.v1.ErrorReason`; `None`
/// while it runs forward and once it completed.
/// - COMPENSATING, COMPENSATED, COMPENSATION_FAILED: why it compensates, the
///   code its cancelled order keeps ([`SagaState::cancellation_code`]).
/// - FAILED: why its forward step halted: DEADLINE_EXCEEDED or
///   DEPENDENCY_UNAVAILABLE when it ran out of retries, or the step's refusal
///   code when a sibling refused it past the pivot.
pub fn failure_code(state: &SagaState, steps: &[StepRecord]) -> Option<ErrorReason> {
    match state.status {
        SagaStatus::Running | SagaStatus::Completed => None,
        SagaStatus::Compensating | SagaStatus::Compensated | SagaStatus::CompensationFailed => {
            Some(state.cancellation_code())
        }
        SagaStatus::Failed => {
            let failed = steps
                .iter()
                .find(|s| s.status == StepStatus::Failed && !s.step.is_compensation());
            let code = failed.and_then(|s| s.last_grpc_code.as_deref());
            Some(match (failed, code) {
                (_, Some("DEADLINE_EXCEEDED")) => ErrorReason::DeadlineExceeded,
                (Some(step), Some(code)) if REFUSAL_CODES.contains(&code) => step.step.refusal_code(),
                _ => ErrorReason::DependencyUnavailable,
            })
        }
    }
}
