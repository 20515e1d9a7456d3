//! Rows of the saga tables as PostgreSQL returns them, and their decoding.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::saga::{
    AttemptEnd, AttemptRecord, SagaRecord, SagaStoreError, SiblingRefs, StepRecord, count, parse_outcome,
    parse_status, parse_step, parse_step_status,
};

#[derive(sqlx::FromRow)]
pub(super) struct SagaRow {
    pub(super) saga_id: Uuid,
    pub(super) order_id: Uuid,
    pub(super) idempotency_seed: String,
    pub(super) status: String,
    pub(super) current_step: Option<String>,
    pub(super) past_pivot: bool,
    pub(super) cancel_requested: bool,
    pub(super) cancel_reason: Option<String>,
    pub(super) deadline: DateTime<Utc>,
    pub(super) next_run_at: DateTime<Utc>,
    pub(super) compensation_reason: Option<String>,
    pub(super) last_error: Option<String>,
    pub(super) authorization_id: Option<String>,
    pub(super) reservation_id: Option<String>,
    pub(super) shipment_id: Option<String>,
    pub(super) tracking_number: Option<String>,
    pub(super) capture_id: Option<String>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct StepRow {
    pub(super) saga_id: Uuid,
    pub(super) step: String,
    pub(super) status: String,
    pub(super) attempts: i32,
    pub(super) round_attempts: i32,
    pub(super) idempotency_key: String,
    pub(super) last_error: Option<String>,
    pub(super) last_grpc_code: Option<String>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) finished_at: Option<DateTime<Utc>>,
    pub(super) duration_ms: i64,
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
            started_at: self.started_at,
            finished_at: self.finished_at,
            duration_ms: self.duration_ms,
        })
    }
}

impl SagaRow {
    pub(super) fn decode(self, steps: Vec<StepRecord>) -> Result<SagaRecord, SagaStoreError> {
        Ok(SagaRecord {
            saga_id: self.saga_id,
            order_id: self.order_id,
            seed: self.idempotency_seed,
            status: parse_status(&self.status)?,
            current_step: self.current_step.as_deref().map(parse_step).transpose()?,
            past_pivot: self.past_pivot,
            cancel_requested: self.cancel_requested,
            cancel_reason: self.cancel_reason,
            deadline: self.deadline,
            next_run_at: self.next_run_at,
            compensation_reason: self.compensation_reason,
            last_error: self.last_error,
            refs: SiblingRefs {
                authorization_id: self.authorization_id,
                reservation_id: self.reservation_id,
                shipment_id: self.shipment_id,
                tracking_number: self.tracking_number,
                capture_id: self.capture_id,
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
            steps,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow {
    pub(super) step: String,
    pub(super) attempt: i32,
    pub(super) worker: String,
    pub(super) idempotency_key: String,
    pub(super) started_at: DateTime<Utc>,
    pub(super) finished_at: Option<DateTime<Utc>>,
    pub(super) outcome: Option<String>,
    pub(super) grpc_code: Option<String>,
    pub(super) error: Option<String>,
    pub(super) latency_ms: Option<i64>,
    pub(super) trace_id: Option<String>,
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
            started_at: self.started_at,
            finished_at: self.finished_at,
            end,
        })
    }
}
