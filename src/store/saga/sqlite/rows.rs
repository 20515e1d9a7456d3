//! Rows of the saga tables as SQLite returns them (UUIDs as TEXT, times as
//! INTEGER milliseconds), and their decoding.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::saga::{
    SagaRecord, SagaStoreError, SiblingRefs, StepRecord, count, parse_status, parse_step, parse_step_status,
};

pub(super) fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(super) fn at(ms: i64) -> Result<DateTime<Utc>, SagaStoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| anyhow::anyhow!("stored time {ms} out of range").into())
}

pub(super) fn uuid(text: &str) -> Result<Uuid, SagaStoreError> {
    Uuid::from_str(text).map_err(|e| anyhow::anyhow!("stored uuid {text:?}: {e}").into())
}

#[derive(sqlx::FromRow)]
pub(super) struct SagaRow {
    pub(super) saga_id: String,
    pub(super) order_id: String,
    pub(super) idempotency_seed: String,
    pub(super) status: String,
    pub(super) current_step: Option<String>,
    pub(super) past_pivot: bool,
    pub(super) cancel_requested: bool,
    pub(super) cancel_reason: Option<String>,
    pub(super) deadline: i64,
    pub(super) next_run_at: i64,
    pub(super) compensation_reason: Option<String>,
    pub(super) last_error: Option<String>,
    pub(super) authorization_id: Option<String>,
    pub(super) reservation_id: Option<String>,
    pub(super) shipment_id: Option<String>,
    pub(super) tracking_number: Option<String>,
    pub(super) capture_id: Option<String>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

impl SagaRow {
    pub(super) fn decode(self, steps: Vec<StepRecord>) -> Result<SagaRecord, SagaStoreError> {
        Ok(SagaRecord {
            saga_id: uuid(&self.saga_id)?,
            order_id: uuid(&self.order_id)?,
            seed: self.idempotency_seed,
            status: parse_status(&self.status)?,
            current_step: self.current_step.as_deref().map(parse_step).transpose()?,
            past_pivot: self.past_pivot,
            cancel_requested: self.cancel_requested,
            cancel_reason: self.cancel_reason,
            deadline: at(self.deadline)?,
            next_run_at: at(self.next_run_at)?,
            compensation_reason: self.compensation_reason,
            last_error: self.last_error,
            refs: SiblingRefs {
                authorization_id: self.authorization_id,
                reservation_id: self.reservation_id,
                shipment_id: self.shipment_id,
                tracking_number: self.tracking_number,
                capture_id: self.capture_id,
            },
            created_at: at(self.created_at)?,
            updated_at: at(self.updated_at)?,
            steps,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct StepRow {
    pub(super) saga_id: String,
    pub(super) step: String,
    pub(super) status: String,
    pub(super) attempts: i32,
    pub(super) round_attempts: i32,
    pub(super) idempotency_key: String,
    pub(super) last_error: Option<String>,
    pub(super) last_grpc_code: Option<String>,
    pub(super) started_at: Option<i64>,
    pub(super) finished_at: Option<i64>,
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
            started_at: self.started_at.map(at).transpose()?,
            finished_at: self.finished_at.map(at).transpose()?,
            duration_ms: self.duration_ms,
        })
    }
}
