//! Where sagas live: the `sagas` row, its steps, attempts and operator
//! actions, on PostgreSQL or SQLite. This module owns those four tables: every
//! statement that writes them is here. Writes that must commit with other
//! tables' (a saga start with OrderCreated, a cancel request with
//! CancellationRequested, a step's outcome with its order event, an operator
//! action with its audit event) are [`SagaWrite`] parts of a
//! [unit of work](crate::store::unit_of_work).
//!
//! # Leases and fencing
//! A worker [`SagaStore::claim_due`]s sagas: it becomes their `lease_owner`
//! until `lease_until`. Every later write of that worker names the owner and
//! only applies while the row still names it ([`SagaStoreError::LeaseLost`]
//! otherwise), and renews the lease. A second replica can only take a saga
//! over once the lease expired, and from then on the first one's writes are
//! refused: two replicas never advance one saga at once. The engine names
//! every claim and hand-off with an owner of its own (the replica's id and a
//! drive number), so the fence also tells a drive that outlived its lease
//! from the same replica's later claim.

#[macro_use]
mod shared;
mod decode;
mod postgres;
mod rows;
mod search;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::{
    postgres::PostgresSagaStore,
    search::{Cursor, SagaCount, SagaFilter, failure_code},
    sqlite::SqliteSagaStore,
};
use crate::saga::plan::{SagaState, SagaStatus, Step, StepState, StepStatus};
use crate::{
    domain::reason::ErrorReason,
    error::AppError,
    store::Purge,
    store::event_store::{EventMetadata, NewEvent},
};

/// The stream type of a saga's audit stream in the event store (stream id =
/// saga id): the operator actions on it, appended in the unit of work that
/// records the action. Order projections skip it.
pub const SAGA_STREAM: &str = "saga";

/// Inserts a saga row (status RUNNING, due now): the one way a saga starts.
/// CreateOrder commits it in the unit of work of the order's first events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaStart {
    /// The saga's id, chosen by CreateOrder (also its audit stream's id).
    pub saga_id: Uuid,
    /// The order it drives.
    pub order_id: Uuid,
    /// The customer who placed the order (ListSagas filters on it).
    pub customer_id: String,
    /// Seed of the saga's per-step idempotency keys. CreateOrder sets it to
    /// `"{order_id}/{client idempotency key}"`: the client's key travels to the
    /// siblings, and two customers who pick the same key never collide there.
    pub idempotency_seed: String,
    /// When the saga gives up and compensates (now + ORDER_TIMEOUT_MINUTES).
    pub deadline: DateTime<Utc>,
}

/// Asks the order's saga to stop and compensate (the first reason wins; the
/// saga becomes due now). A no-op for an order without a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    /// The order whose saga is asked.
    pub order_id: Uuid,
    /// The customer's reason, shown as the compensation reason.
    pub reason: String,
}

/// An operator's retry or skip: applies only if the saga is still at
/// `expected_updated_at`, halted (FAILED or COMPENSATION_FAILED) and not
/// leased by a live worker; [`SagaStoreError::Conflict`] otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorActionWrite {
    /// The saga acted on.
    pub saga_id: Uuid,
    /// The version (`updated_at`) the operator decided on.
    pub expected_updated_at: DateTime<Utc>,
    /// The saga's columns after the action.
    pub columns: SagaColumns,
    /// The step row the action changes.
    pub step: StepRecord,
    /// The action, as recorded in `saga_operator_actions`.
    pub action: OperatorActionRecord,
}

/// The saga store's part of a unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaWrite {
    /// A new saga (CreateOrder).
    Start(SagaStart),
    /// A new saga already leased to a worker of this replica, with that
    /// worker's first write (its first step's start) applied in the same
    /// transaction: CreateOrder hands the saga to a free local worker in
    /// memory, with no wake-up and no claim. The row names the write's
    /// lease owner, so the write's fence holds.
    StartLeased(SagaStart, Box<FencedWrite>),
    /// A customer's cancel request (CancelOrder).
    RequestCancel(CancelRequest),
    /// A worker's lease-fenced progress (a saga step).
    Fenced(FencedWrite),
    /// An operator's retry or skip (SagaAdmin).
    OperatorAction(OperatorActionWrite),
}

/// Ids the siblings answered, needed by later steps and compensations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiblingRefs {
    /// Authorize's answer; capture and the void compensation send it.
    pub authorization_id: Option<String>,
    /// Reserve's answer; the release compensation sends it.
    pub reservation_id: Option<String>,
    /// CreateShipment's shipment id; the cancel compensation sends it.
    pub shipment_id: Option<String>,
    /// CreateShipment's tracking number, recorded on the order.
    pub tracking_number: Option<String>,
    /// Capture's answer, recorded on the order at the pivot.
    pub capture_id: Option<String>,
}

/// A `saga_steps` row: one forward step or compensation and how its attempts went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    /// Which step (a forward step or a compensation).
    pub step: Step,
    /// Where the step stands.
    pub status: StepStatus,
    /// Attempts ever made, operator retries included.
    pub attempts: u32,
    /// Attempts since the last operator retry.
    pub round_attempts: u32,
    /// Key sent to the sibling.
    pub idempotency_key: String,
    /// The last failed attempt's error, shown by GetSaga.
    pub last_error: Option<String>,
    /// gRPC code name of the last call.
    pub last_grpc_code: Option<String>,
    /// When the first attempt was recorded; steps are listed in this order.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its current end state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Time spent in calls.
    pub duration_ms: i64,
}

/// A saga as stored, with its steps in the order they started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaRecord {
    /// The saga's id (also its audit stream's id).
    pub saga_id: Uuid,
    /// The order it drives.
    pub order_id: Uuid,
    /// The customer who placed the order (None for sagas started before it was kept and
    /// never matched by migration 0009's backfill).
    pub customer_id: Option<String>,
    /// Seed of the step keys (`{order_id}/{client key}`).
    pub seed: String,
    /// Where the saga stands.
    pub status: SagaStatus,
    /// Step running or due next.
    pub current_step: Option<Step>,
    /// Capture succeeded: from here the saga only moves forward, never compensates.
    pub past_pivot: bool,
    /// CancelOrder asked for compensation.
    pub cancel_requested: bool,
    /// The reason CancelOrder gave (the first request's), shown as the compensation reason.
    pub cancel_reason: Option<String>,
    /// Compensate if not done by then.
    pub deadline: DateTime<Utc>,
    /// When a worker picks it up next.
    pub next_run_at: DateTime<Utc>,
    /// Why it compensates: a refusal, the deadline, or a cancel request.
    pub compensation_reason: Option<String>,
    /// The last error of any step, shown by ListSagas.
    pub last_error: Option<String>,
    /// Why it failed or compensates, as stored ([`failure_code`]).
    pub failure_code: Option<ErrorReason>,
    /// The ids the siblings answered.
    pub refs: SiblingRefs,
    /// When CreateOrder started it (with the order).
    pub created_at: DateTime<Utc>,
    /// Last change; the version operator actions compare against.
    pub updated_at: DateTime<Utc>,
    /// Every step started so far, in the order they started.
    pub steps: Vec<StepRecord>,
}

impl SagaRecord {
    /// The pure state the rules decide on.
    pub fn state(&self) -> SagaState {
        SagaState {
            status: self.status,
            past_pivot: self.past_pivot,
            cancel_requested: self.cancel_requested,
            cancel_reason: self.cancel_reason.clone(),
            deadline: self.deadline,
            compensation_reason: self.compensation_reason.clone(),
            steps: self
                .steps
                .iter()
                .map(|s| {
                    (
                        s.step,
                        StepState {
                            status: s.status,
                            attempts: s.attempts,
                            round_attempts: s.round_attempts,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The row of `step`, if started.
    pub fn step(&self, step: Step) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.step == step)
    }
}

/// The saga-level columns a worker (or operator) writes, all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaColumns {
    /// Where the saga stands.
    pub status: SagaStatus,
    /// Step running or due next.
    pub current_step: Option<Step>,
    /// Capture succeeded: from here the saga only moves forward, never compensates.
    pub past_pivot: bool,
    /// Why it compensates: a refusal, the deadline, or a cancel request.
    pub compensation_reason: Option<String>,
    /// The last error of any step, shown by ListSagas.
    pub last_error: Option<String>,
    /// The ids the siblings answered.
    pub refs: SiblingRefs,
    /// Why it failed or compensates ([`failure_code`] of the columns' status).
    pub failure_code: Option<ErrorReason>,
}

impl SagaColumns {
    /// The columns of `record`, to change and write back.
    pub fn of(record: &SagaRecord) -> Self {
        Self {
            status: record.status,
            current_step: record.current_step,
            past_pivot: record.past_pivot,
            compensation_reason: record.compensation_reason.clone(),
            last_error: record.last_error.clone(),
            refs: record.refs.clone(),
            failure_code: failure_code(&record.state(), &record.steps),
        }
    }
}

/// How a sibling (or order) call of an attempt came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The call did what the step asked.
    Succeeded,
    /// A business "no": retrying will not change it.
    Refused,
    /// A failure that may pass: the step is retried.
    Transient,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptEnd {
    /// How the call came out.
    pub outcome: AttemptOutcome,
    /// gRPC code name, when a call answered.
    pub grpc_code: Option<String>,
    /// The error text of a refused or failed call (None on success).
    pub error: Option<String>,
    /// Duration of the call.
    pub latency_ms: i64,
    /// Trace id of the call's span, when tracing is on.
    pub trace_id: Option<String>,
}

/// The attempt part of a worker write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptWrite {
    /// Recorded before the call.
    Started {
        /// The step whose sibling call this attempt is.
        step: Step,
        /// Attempt number (1-based, over the step's whole life).
        attempt: u32,
        /// The lease owner making the call (which replica, which process).
        worker: String,
        /// The idempotency key sent with the call: the same for every attempt of a step.
        idempotency_key: String,
        /// When it was recorded, just before the call.
        started_at: DateTime<Utc>,
    },
    /// Recorded after the call.
    Finished {
        /// The step whose attempt ended.
        step: Step,
        /// Which attempt ended (as recorded when it started).
        attempt: u32,
        /// When the answer (or the failure) came.
        finished_at: DateTime<Utc>,
        /// How the call came out.
        end: AttemptEnd,
    },
}

/// One attempt as stored (for the order's audit trail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The step whose sibling call this attempt was.
    pub step: Step,
    /// Attempt number, from 1 over the step's whole life.
    pub attempt: u32,
    /// Worker that sent it.
    pub worker: String,
    /// The idempotency key sent with the call.
    pub idempotency_key: String,
    /// When it was recorded, just before the call.
    pub started_at: DateTime<Utc>,
    /// Answered at; None while in flight (or lost in a crash).
    pub finished_at: Option<DateTime<Utc>>,
    /// How it ended, once it did.
    pub end: Option<AttemptEnd>,
}

/// An operator action as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorActionRecord {
    /// "retry" or "skip", as SagaAdmin named the action; picks the audit event's type.
    pub action: String,
    /// The step it applied to.
    pub step: Step,
    /// Token subject of the operator.
    pub operator: String,
    /// The reason the operator gave (required by SagaAdmin).
    pub reason: String,
    /// When it was applied.
    pub at: DateTime<Utc>,
}

impl OperatorActionRecord {
    /// The audit event of this action on the saga's own stream
    /// ([`SAGA_STREAM`]): `SagaStepSkipped` or `SagaStepRetried`. It is
    /// appended in the unit of work that records the action, so neither
    /// exists without the other.
    pub fn audit_event(&self, saga_id: Uuid, order_id: Uuid) -> NewEvent {
        let event_type = if self.action == "skip" {
            "SagaStepSkipped"
        } else {
            "SagaStepRetried"
        };
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload: serde_json::json!({
                "saga_id": saga_id,
                "order_id": order_id,
                "step": self.step.name(),
                "operator": self.operator,
                "reason": self.reason,
                "at": self.at.to_rfc3339(),
            }),
            metadata: EventMetadata {
                causation_id: Some(saga_id.to_string()),
                ..Default::default()
            },
        }
    }
}

/// A worker's claim on sagas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The owner id written into `lease_owner` (unique per process).
    pub owner: String,
    /// How long a claim or write keeps the saga.
    pub duration: Duration,
}

/// Gives the lease up as part of a write: the saga is due again at
/// `next_run_at`, or at once if a cancel arrived that the worker did not see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// When the saga is due again.
    pub next_run_at: DateTime<Utc>,
    /// The cancel flag the worker decided with.
    pub cancel_seen: bool,
}

/// A worker's write, fenced by its lease: applies only while the saga row
/// names `lease.owner` (and renews the lease, or releases it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencedWrite {
    /// The saga the worker holds the lease of.
    pub saga_id: Uuid,
    /// The lease the write is fenced by (renewed by it).
    pub lease: Lease,
    /// The saga row's columns after the step.
    pub columns: SagaColumns,
    /// Step rows to upsert.
    pub steps: Vec<StepRecord>,
    /// Attempt rows to start or finish.
    pub attempts: Vec<AttemptWrite>,
    /// Apply only while `cancel_requested` still has this value: a worker
    /// never records (and so never sends) a step decided on a stale flag.
    pub expect_cancel: Option<bool>,
    /// Release the lease in the same statement.
    pub release: Option<Release>,
}

impl FencedWrite {
    /// A write of `columns` alone.
    pub fn columns(saga_id: Uuid, lease: &Lease, columns: SagaColumns) -> Self {
        Self {
            saga_id,
            lease: lease.clone(),
            columns,
            steps: Vec::new(),
            attempts: Vec::new(),
            expect_cancel: None,
            release: None,
        }
    }
}

/// The cancel request as a fenced write reads it back: CancelOrder may have
/// set it since the worker claimed the saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelFlag {
    /// CancelOrder asked for compensation.
    pub cancel_requested: bool,
    /// The reason CancelOrder stored, which the worker may not have seen when it claimed the
    /// saga.
    pub cancel_reason: Option<String>,
}

/// Rows of the saga tables a retention purge removed (or would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SagaPurge {
    /// `sagas` rows.
    pub sagas: u64,
    /// `saga_steps` rows.
    pub steps: u64,
    /// `saga_attempts` rows.
    pub attempts: u64,
    /// `saga_operator_actions` rows.
    pub operator_actions: u64,
}

/// The statuses a retention purge takes: nothing will ever run again.
pub(crate) const FINISHED: &str = "('COMPLETED', 'COMPENSATED')";

store_error! {
    /// Why a saga store call failed; a unit of work maps these to its own errors.
    pub enum SagaStoreError("saga store", "saga store query") {
        /// The lease was lost (expired and claimed by another worker): stop.
        #[error("saga lease lost")]
        LeaseLost,
        /// The saga changed since it was read (operator action raced a worker).
        #[error("saga changed concurrently")]
        Conflict,
    }
}

impl From<SagaStoreError> for AppError {
    fn from(err: SagaStoreError) -> Self {
        match err {
            SagaStoreError::LeaseLost | SagaStoreError::Conflict => AppError::aborted(
                crate::error::ErrorReason::ConcurrentModification,
                "the saga changed meanwhile; read it again and retry",
            ),
            SagaStoreError::Unavailable(why) => AppError::unavailable(why),
            SagaStoreError::Other(e) => AppError::Internal(e),
        }
    }
}

/// Storage of sagas. One conformance suite runs against every implementation.
#[async_trait]
pub trait SagaStore: Send + Sync + std::fmt::Debug {
    /// Claims up to `limit` sagas that are due (RUNNING or COMPENSATING, or
    /// FAILED with a cancel request) and not leased by a live worker.
    async fn claim_due(&self, lease: &Lease, limit: usize) -> Result<Vec<SagaRecord>, SagaStoreError>;

    /// Writes the saga columns, step rows and attempts in one transaction of
    /// their own, fenced by the write's lease (renewed, or released with
    /// [`FencedWrite::release`]). [`SagaStoreError::LeaseLost`] when the
    /// lease is gone or, with [`FencedWrite::expect_cancel`], when the cancel
    /// flag is not the expected one. A write that must commit with other
    /// tables goes through a unit of work as [`SagaWrite::Fenced`].
    async fn write(&self, write: &FencedWrite) -> Result<CancelFlag, SagaStoreError>;

    /// Gives the saga up until `next_run_at` (sooner if a cancel arrived that
    /// the worker did not see: `cancel_seen` says what it saw).
    async fn release(
        &self,
        lease: &Lease,
        saga_id: Uuid,
        next_run_at: DateTime<Utc>,
        cancel_seen: bool,
    ) -> Result<(), SagaStoreError>;

    /// A saga by its id, with its steps.
    async fn get(&self, saga_id: Uuid) -> Result<Option<SagaRecord>, SagaStoreError>;

    /// The saga of an order.
    async fn find_by_order(&self, order_id: Uuid) -> Result<Option<SagaRecord>, SagaStoreError>;

    /// Sagas matching `filter`, newest first (created_at, then id), after `cursor`.
    async fn list(
        &self,
        filter: &SagaFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<SagaRecord>, SagaStoreError>;

    /// How many sagas matching `filter` there are per status and current step.
    async fn count(&self, filter: &SagaFilter) -> Result<Vec<SagaCount>, SagaStoreError>;

    /// Every attempt of a saga, in the order they were sent.
    async fn attempts(&self, saga_id: Uuid) -> Result<Vec<AttemptRecord>, SagaStoreError>;

    /// How many sagas are in each status (for the `sagas` gauge).
    async fn count_by_status(&self) -> Result<Vec<(SagaStatus, u64)>, SagaStoreError>;

    /// Retention: finished sagas (COMPLETED, COMPENSATED) last changed before
    /// `before`, with their steps, attempts and operator actions (the saga's
    /// audit stream in the event store stays, as every event does), counted or
    /// deleted a batch of sagas at a time.
    async fn purge_finished(&self, before: DateTime<Utc>, purge: Purge) -> Result<SagaPurge, SagaStoreError>;

    /// Operator actions on these sagas, oldest first, with their saga's id
    /// (one query for a whole ListSagas page).
    async fn operator_actions_of(
        &self,
        saga_ids: &[Uuid],
    ) -> Result<Vec<(Uuid, OperatorActionRecord)>, SagaStoreError>;

    /// Operator actions on one saga, oldest first.
    async fn operator_actions(&self, saga_id: Uuid) -> Result<Vec<OperatorActionRecord>, SagaStoreError> {
        let actions = self.operator_actions_of(std::slice::from_ref(&saga_id)).await?;
        Ok(actions.into_iter().map(|(_, action)| action).collect())
    }
}
