//! Drives one claimed saga: asks [`plan`](super::plan) what to do, records
//! each attempt in the database *before* sending it and its outcome *after*
//! (with the next write: the next step's start, or the release), and
//! releases the saga when it must wait (backoff, operator) or is done.
//!
//! # One transaction per step
//! A step's order command is decided right after its sibling call but not
//! written then: its events ([`OrderChange`]) travel with the step's outcome
//! and are committed in the same unit of work as the next write (the next
//! step's start, or the release), fenced by the lease. So a step costs one
//! transaction: its start record, carrying the previous step's outcome and
//! order events. If the order moved meanwhile (a customer's cancel request),
//! the command is decided again and the write retried.
//!
//! A local step (ConfirmOrder, CancelOrder) sends nothing out of the process,
//! so it has no start write of its own: its command is decided on top of the
//! previous step's order change, and its start, its end and both steps'
//! events commit with the release. A saga handed over by CreateOrder
//! ([`handoff`]) has its first start written by CreateOrder's commit. So an
//! order's critical path holds CreateOrder's commits, one start write per
//! sibling step after the first, and the release.
//!
//! # Crash safety
//! Every effect is keyed: a sibling call carries `{seed}:{step}`, and order
//! commands are idempotent. So whatever point a crash interrupts — before the
//! IN_PROGRESS record, between it and the call, between the call and the
//! outcome record — the next owner simply re-sends the step with the same key
//! and gets the first answer back. No step result is ever guessed.
//!
//! # Uncertain steps and compensation
//! A forward step whose answer was lost may or may not have taken effect. Its
//! compensation first re-sends it with its own key to learn the id (or the
//! refusal, in which case there is nothing to undo), then undoes it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use tracing::Instrument;

use super::{
    plan::{
        Decision, Outcome, RetryPolicy, SagaState, SagaStatus, Schedule, Step, StepStatus, idempotency_key,
    },
    ports::{FailureKind, OrderChange, OrderFacts, OrderPort, SagaPorts, Siblings},
};
use crate::{
    domain::order::Order,
    metrics,
    shutdown::Shutdown,
    store::{
        saga::{
            AttemptEnd, AttemptOutcome, AttemptWrite, CancelFlag, FencedWrite, Lease, Release, SagaColumns,
            SagaRecord, SagaStore, SagaStoreError, SagaWrite, StepRecord,
        },
        unit_of_work::{UnitOfWork, UnitOfWorkCommitter, UnitOfWorkError},
    },
};

mod effects;
mod handoff;

pub use self::handoff::HandedOver;

/// Runs sagas for one worker pool (one lease owner).
pub struct Engine {
    store: Arc<dyn SagaStore>,
    units: Arc<dyn UnitOfWorkCommitter>,
    siblings: Arc<dyn Siblings>,
    orders: Arc<dyn OrderPort>,
    policy: RetryPolicy,
    lease: Lease,
    /// Drives begun, numbering each drive's lease ([`Engine::next_lease`]).
    drives: AtomicU64,
    shutdown: Shutdown,
}

/// One drive's inputs.
struct Drive {
    record: SagaRecord,
    /// The lease its writes are fenced by.
    lease: Lease,
    /// An attempt already recorded as started (a hand-off), sent first.
    first: Option<Begun>,
    /// The order's facts, when known already.
    facts: Option<OrderFacts>,
    /// The order as committed, when known already (a hand-off): the basis
    /// of the first step's command, which then reads nothing.
    order: Option<Order>,
}

/// What a step's order command is decided on.
#[derive(Clone, Copy)]
struct OrderBasis<'a> {
    /// The order as this drive last committed it (`None`: read it).
    committed: Option<&'a Order>,
    /// A change decided but not committed yet, which a local step's
    /// command goes on top of.
    pending: Option<&'a OrderChange>,
}

/// An attempt's outcome not yet written.
#[derive(Debug, Clone)]
struct Unwritten {
    /// Its step row (and the forward step it undid, if any).
    rows: Vec<StepRecord>,
    /// Its attempt's end (and, for a local step, its start and the
    /// previous step's end before it).
    attempts: Vec<AttemptWrite>,
    /// The order events its command decided.
    order: Option<OrderChange>,
}

/// Attempts of a step write whose order events meet a moved order.
const ORDER_ATTEMPTS: u32 = 4;

/// An attempt recorded as started, about to be sent.
struct Begun {
    step: Step,
    key: String,
    row: StepRecord,
}

/// When a halted saga would run again by itself: never (an operator or a
/// customer cancel makes it due again).
fn far_future() -> DateTime<Utc> {
    Utc::now() + TimeDelta::days(36_500)
}

impl Engine {
    /// An engine writing as `lease.owner`.
    pub fn new(ports: SagaPorts, policy: RetryPolicy, lease: Lease, shutdown: Shutdown) -> Self {
        let SagaPorts {
            store,
            units,
            siblings,
            orders,
        } = ports;
        Self {
            store,
            units,
            siblings,
            orders,
            policy,
            lease,
            drives: AtomicU64::new(0),
            shutdown,
        }
    }

    /// The saga store this engine writes through; the worker claims due sagas from it.
    pub fn store(&self) -> &Arc<dyn SagaStore> {
        &self.store
    }

    /// The lease this engine claims with.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// A lease of this engine's owner for one claim or hand-off: the owner
    /// with a drive number, so that every drive's writes are fenced by a
    /// token of its own. Fenced by the owner alone, a drive that outlived its
    /// lease (a stalled database, a hand-off that waited) could not be told
    /// from this same replica's later claim of the saga, and both would write.
    pub fn next_lease(&self) -> Lease {
        let drive = self.drives.fetch_add(1, Ordering::Relaxed);
        Lease {
            owner: format!("{}:{drive}", self.lease.owner),
            duration: self.lease.duration,
        }
    }

    /// Drives a saga claimed with [`Self::lease`] until it is done or must
    /// wait, then releases it. A lost lease ends the drive silently: the new
    /// owner goes on.
    pub async fn drive(&self, record: SagaRecord) -> Result<(), SagaStoreError> {
        self.drive_leased(record, self.lease.clone()).await
    }

    /// Drives a saga claimed with `lease` (see [`Self::next_lease`]).
    pub async fn drive_leased(&self, record: SagaRecord, lease: Lease) -> Result<(), SagaStoreError> {
        self.run(Drive {
            record,
            lease,
            first: None,
            facts: None,
            order: None,
        })
        .await
    }

    async fn run(&self, mut drive: Drive) -> Result<(), SagaStoreError> {
        // The order's facts, read once per drive (unless handed over with
        // it); they also carry the trace of the request that placed the
        // order, which the saga's spans continue.
        let order_id = drive.record.order_id;
        if drive.facts.is_none() {
            drive.facts = self.orders.facts(order_id).await.ok();
        }
        let traceparent = match drive.facts.as_ref() {
            Some(facts) => facts.traceparent.clone(),
            None => self.orders.traceparent(order_id).await,
        };
        let span = tracing::info_span!("saga", saga_id = %drive.record.saga_id, order_id = %order_id);
        crate::telemetry::continue_trace(&span, traceparent.as_deref());
        let result = self.drive_inner(drive).instrument(span.clone()).await;
        match &result {
            Err(SagaStoreError::LeaseLost) => {
                span.in_scope(|| tracing::warn!("saga lease lost; another worker owns it now"));
                Ok(())
            }
            Err(e) => {
                span.in_scope(
                    || tracing::error!(error = %e, "saga drive stopped; resumes when the lease expires"),
                );
                result
            }
            Ok(()) => result,
        }
    }

    async fn drive_inner(&self, drive: Drive) -> Result<(), SagaStoreError> {
        let Drive {
            mut record,
            lease,
            mut first,
            mut facts,
            order: mut basis,
        } = drive;
        let lease = &lease;
        // An attempt's outcome is written with the next write: the start of
        // the next step, or the release. Until then a crash leaves its step
        // IN_PROGRESS, and the next owner sends it again with its key.
        let mut unwritten: Option<Unwritten> = None;
        loop {
            let mut state = record.state();
            if let Some(begun) = first.take() {
                // Handed over with its start recorded by CreateOrder's commit.
                let order = OrderBasis {
                    committed: basis.as_ref(),
                    pending: None,
                };
                let (outcome, schedule) = self
                    .attempt(&mut record, &mut state, begun, &mut facts, order)
                    .await;
                unwritten = Some(outcome);
                match self.after(&record, lease, &mut unwritten, schedule).await {
                    Some(settled) => return settled,
                    None => continue,
                }
            }
            let decision = state.decide(Utc::now());
            if self.shutdown.is_triggered() && matches!(decision, Decision::Run(_)) {
                // Hand it back, due now: this or another replica resumes it.
                return self.settle(&record, lease, unwritten, Utc::now()).await;
            }
            match decision {
                Decision::Run(step) if step.is_local() => {
                    // Nothing leaves the process: no start record before it;
                    // its start and end commit with the next write.
                    let (begun, started) = self.begin_local(&mut record, &mut state, step, lease);
                    let pending = unwritten.take();
                    let order = OrderBasis {
                        committed: basis.as_ref(),
                        pending: pending.as_ref().and_then(|u| u.order.as_ref()),
                    };
                    let (outcome, schedule) = self
                        .attempt(&mut record, &mut state, begun, &mut facts, order)
                        .await;
                    unwritten = Some(merge_local(pending, started, outcome));
                    if let Some(settled) = self.after(&record, lease, &mut unwritten, schedule).await {
                        return settled;
                    }
                }
                Decision::Run(step) => {
                    let Some(begun) = self
                        .begin(&mut record, &mut state, step, lease, unwritten.take(), &mut basis)
                        .await?
                    else {
                        // The cancel flag changed under us: decide again.
                        continue;
                    };
                    let order = OrderBasis {
                        committed: basis.as_ref(),
                        pending: None,
                    };
                    let (outcome, schedule) = self
                        .attempt(&mut record, &mut state, begun, &mut facts, order)
                        .await;
                    unwritten = Some(outcome);
                    if let Some(settled) = self.after(&record, lease, &mut unwritten, schedule).await {
                        return settled;
                    }
                }
                Decision::Compensate(reason) => {
                    tracing::info!(%reason, "saga compensates");
                    state.start_compensation(reason);
                    sync_columns(&mut record, &state);
                }
                Decision::Finish(status) => {
                    record.status = status;
                    record.current_step = None;
                    tracing::info!(status = status.as_str(), "saga finished");
                    finished_metric(&record);
                    return self.settle(&record, lease, unwritten, far_future()).await;
                }
                Decision::Idle => return self.settle(&record, lease, unwritten, far_future()).await,
            }
        }
    }

    /// What an attempt's schedule asks: go on (`None`), or settle until
    /// its retry or for good (the settle's result).
    async fn after(
        &self,
        record: &SagaRecord,
        lease: &Lease,
        unwritten: &mut Option<Unwritten>,
        schedule: Schedule,
    ) -> Option<Result<(), SagaStoreError>> {
        let at = match schedule {
            Schedule::Now => return None,
            Schedule::At(at) => at,
            Schedule::Halt => {
                finished_metric(record);
                far_future()
            }
        };
        Some(self.settle(record, lease, unwritten.take(), at).await)
    }

    /// Writes what is left (the saga's columns, the last outcome) and gives
    /// the saga up until `at`, in one statement.
    async fn settle(
        &self,
        record: &SagaRecord,
        lease: &Lease,
        unwritten: Option<Unwritten>,
        at: DateTime<Utc>,
    ) -> Result<(), SagaStoreError> {
        let (rows, attempts, order) = split(unwritten);
        let write = FencedWrite {
            steps: rows,
            attempts,
            release: Some(Release {
                next_run_at: at,
                cancel_seen: record.cancel_requested,
            }),
            ..FencedWrite::columns(record.saga_id, lease, SagaColumns::of(record))
        };
        self.commit(write, order, &mut None).await.map(drop)
    }

    /// Records the start of an attempt of `step` (with the previous
    /// attempt's outcome) *before* anything is sent. Only applies if the
    /// cancel flag is still the one the decision was made with; otherwise the
    /// outcome is written alone and `None` says: decide again.
    async fn begin(
        &self,
        record: &mut SagaRecord,
        state: &mut SagaState,
        step: Step,
        lease: &Lease,
        unwritten: Option<Unwritten>,
        basis: &mut Option<Order>,
    ) -> Result<Option<Begun>, SagaStoreError> {
        let (begun, started) = self.started(record, state, step, lease);
        let (mut rows, mut attempts, order) = split(unwritten.clone());
        rows.retain(|r| r.step != step);
        rows.push(begun.row.clone());
        attempts.push(started);
        let mut columns = SagaColumns::of(record);
        columns.current_step = Some(step);
        let write = FencedWrite {
            steps: rows,
            attempts,
            expect_cancel: Some(record.cancel_requested),
            ..FencedWrite::columns(record.saga_id, lease, columns)
        };
        match self.commit(write, order, basis).await {
            Ok(flag) => {
                apply_cancel_flag(record, &flag);
                record.current_step = Some(step);
                put_step(record, begun.row.clone());
                Ok(Some(begun))
            }
            Err(SagaStoreError::LeaseLost) => {
                // Lost lease, or a cancel arrived: this write tells which.
                let (rows, attempts, order) = split(unwritten);
                let write = FencedWrite {
                    steps: rows,
                    attempts,
                    ..FencedWrite::columns(record.saga_id, lease, SagaColumns::of(record))
                };
                let flag = self.commit(write, order, basis).await?;
                apply_cancel_flag(record, &flag);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A new attempt of `step` (counted in `state`): its step row and its
    /// start record, not yet written.
    fn started(
        &self,
        record: &SagaRecord,
        state: &mut SagaState,
        step: Step,
        lease: &Lease,
    ) -> (Begun, AttemptWrite) {
        let key = idempotency_key(&record.seed, step);
        state.begin(step);
        let started_at = Utc::now();
        let mut row = record.step(step).cloned().unwrap_or_else(|| StepRecord {
            step,
            status: StepStatus::Pending,
            attempts: 0,
            round_attempts: 0,
            idempotency_key: key.clone(),
            last_error: None,
            last_grpc_code: None,
            started_at: None,
            finished_at: None,
            duration_ms: 0,
        });
        let progress = state.step(step);
        row.status = StepStatus::InProgress;
        row.attempts = progress.attempts;
        row.round_attempts = progress.round_attempts;
        row.started_at.get_or_insert(started_at);
        row.finished_at = None;
        let started = AttemptWrite::Started {
            step,
            attempt: row.attempts,
            worker: lease.owner.clone(),
            idempotency_key: key.clone(),
            started_at,
        };
        (Begun { step, key, row }, started)
    }

    /// Begins an attempt of a local step in memory only: its start record
    /// travels with its outcome ([`merge_local`]).
    fn begin_local(
        &self,
        record: &mut SagaRecord,
        state: &mut SagaState,
        step: Step,
        lease: &Lease,
    ) -> (Begun, AttemptWrite) {
        let (begun, started) = self.started(record, state, step, lease);
        record.current_step = Some(step);
        put_step(record, begun.row.clone());
        (begun, started)
    }

    /// Sends a begun attempt and applies its outcome to the record (in
    /// memory: it is written with the next write). Returns it and when to go on.
    async fn attempt(
        &self,
        record: &mut SagaRecord,
        state: &mut SagaState,
        begun: Begun,
        facts: &mut Option<OrderFacts>,
        order: OrderBasis<'_>,
    ) -> (Unwritten, Schedule) {
        let Begun { step, key, mut row } = begun;
        let attempt = row.attempts;
        let span = tracing::info_span!("saga_step", step = step.name(), attempt, idempotency_key = %key);
        let clock = Instant::now();
        let result = self
            .call(step, &key, record, facts, order)
            .instrument(span.clone())
            .await;
        let latency = clock.elapsed();
        let trace_id = span.in_scope(current_trace_id);

        let outcome = match &result {
            Ok(_) => Outcome::Succeeded,
            Err(e) if e.kind == FailureKind::Refused => Outcome::Refused(e.message.clone()),
            Err(e) => Outcome::Transient(format!("{}: {}", e.code, e.message)),
        };
        let finished_at = Utc::now();
        let jitter = rand::rng().random_range(0..1000);
        let schedule = state.record(step, &outcome, &self.policy, finished_at, jitter);
        span.in_scope(|| log_outcome(&outcome, &schedule, latency));
        step_metric(step, &outcome, &schedule, latency);

        row.status = state.step(step).status;
        row.duration_ms += millis(latency);
        row.last_grpc_code = Some(result.as_ref().map_or_else(|e| e.code.clone(), |_| "OK".into()));
        if let Err(e) = &result {
            row.last_error = Some(e.message.clone());
            record.last_error = Some(format!("{step}: {e}"));
        }
        if matches!(
            row.status,
            StepStatus::Succeeded | StepStatus::Refused | StepStatus::Failed
        ) {
            row.finished_at = Some(finished_at);
        }
        let mut rows = vec![row];
        if outcome == Outcome::Succeeded
            && let Some(undone) = step.undoes().and_then(|forward| record.step(forward))
        {
            rows.push(StepRecord {
                status: StepStatus::Compensated,
                ..undone.clone()
            });
        }
        sync_columns(record, state);
        record.current_step = state.next_step();
        for row in &rows {
            put_step(record, row.clone());
        }
        let end = AttemptWrite::Finished {
            step,
            attempt,
            finished_at,
            end: AttemptEnd {
                outcome: match outcome {
                    Outcome::Succeeded => AttemptOutcome::Succeeded,
                    Outcome::Refused(_) => AttemptOutcome::Refused,
                    Outcome::Transient(_) => AttemptOutcome::Transient,
                },
                grpc_code: rows[0].last_grpc_code.clone(),
                error: result.as_ref().err().map(|e| e.message.clone()),
                latency_ms: millis(latency),
                trace_id,
            },
        };
        let order = result.ok().flatten();
        (
            Unwritten {
                rows,
                attempts: vec![end],
                order,
            },
            schedule,
        )
    }

    /// Commits a fenced write and the order events that go with it as one
    /// unit of work. When the order moved since the command was decided, the
    /// command is decided again on it as stored (a refusal then stops the
    /// drive: the step is still recorded as started and resumes after the
    /// lease). `basis` follows: the order after the committed events, or
    /// unknown (`None`: the next decision reads it) after a conflict.
    async fn commit(
        &self,
        write: FencedWrite,
        mut order: Option<OrderChange>,
        basis: &mut Option<Order>,
    ) -> Result<CancelFlag, SagaStoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let unit = UnitOfWork {
                appends: order.iter().map(|change| change.append.clone()).collect(),
                saga: Some(SagaWrite::Fenced(write.clone())),
                idempotency: None,
            };
            match self.units.commit(unit).await {
                Ok(committed) => {
                    for status in order.iter().flat_map(|change| &change.statuses_after) {
                        metrics::order_status_transition(status);
                    }
                    if let Some(change) = order {
                        *basis = Some(change.after);
                    }
                    return committed
                        .cancel_flag
                        .ok_or_else(|| anyhow::anyhow!("a fenced write read back no cancel flag").into());
                }
                Err(UnitOfWorkError::Conflict { stream_id, .. }) if attempt < ORDER_ATTEMPTS => {
                    let Some(change) = order.take() else {
                        return Err(anyhow::anyhow!("a saga write without order events conflicted").into());
                    };
                    *basis = None;
                    order = self
                        .orders
                        .decide(stream_id, None, change.commands)
                        .await
                        .map_err(|e| anyhow::anyhow!("order command decided again: {e}"))?;
                }
                Err(err) => return Err(store_error(err)),
            }
        }
    }
}

/// The parts of an unwritten outcome, empty when there is none.
fn split(unwritten: Option<Unwritten>) -> (Vec<StepRecord>, Vec<AttemptWrite>, Option<OrderChange>) {
    unwritten.map_or_else(Default::default, |u| (u.rows, u.attempts, u.order))
}

/// A local step's attempt folded into the write still pending before it:
/// the previous outcome's rows and attempt end, then the local step's start
/// and end (the saga store writes a start and end of one attempt as one
/// finished row). The order change: the local step's when it succeeded (it
/// was decided on top of the pending one, so it holds both), else the
/// pending one.
fn merge_local(pending: Option<Unwritten>, started: AttemptWrite, local: Unwritten) -> Unwritten {
    let succeeded = local
        .attempts
        .iter()
        .any(|a| matches!(a, AttemptWrite::Finished { end, .. } if end.outcome == AttemptOutcome::Succeeded));
    let Some(pending) = pending else {
        let mut attempts = vec![started];
        attempts.extend(local.attempts);
        return Unwritten { attempts, ..local };
    };
    let mut rows = pending.rows;
    rows.retain(|r| !local.rows.iter().any(|l| l.step == r.step));
    rows.extend(local.rows);
    let mut attempts = pending.attempts;
    attempts.push(started);
    attempts.extend(local.attempts);
    let order = if succeeded { local.order } else { pending.order };
    Unwritten {
        rows,
        attempts,
        order,
    }
}

/// A unit of work's failure as the engine acts on it.
fn store_error(err: UnitOfWorkError) -> SagaStoreError {
    match err {
        UnitOfWorkError::LeaseLost => SagaStoreError::LeaseLost,
        UnitOfWorkError::Conflict { .. } | UnitOfWorkError::SagaChanged => SagaStoreError::Conflict,
        UnitOfWorkError::Unavailable(why) => SagaStoreError::Unavailable(why),
        UnitOfWorkError::Other(source) => SagaStoreError::Other(source),
    }
}

fn sync_columns(record: &mut SagaRecord, state: &SagaState) {
    record.status = state.status;
    record.past_pivot = state.past_pivot;
    record.compensation_reason.clone_from(&state.compensation_reason);
}

fn apply_cancel_flag(record: &mut SagaRecord, flag: &CancelFlag) {
    record.cancel_requested = flag.cancel_requested;
    record.cancel_reason.clone_from(&flag.cancel_reason);
}

fn put_step(record: &mut SagaRecord, row: StepRecord) {
    match record.steps.iter_mut().find(|s| s.step == row.step) {
        Some(existing) => *existing = row,
        None => record.steps.push(row),
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The trace id of the current span, when traces are exported.
fn current_trace_id() -> Option<String> {
    let traceparent = crate::telemetry::current_traceparent()?;
    traceparent.split('-').nth(1).map(String::from)
}

fn log_outcome(outcome: &Outcome, schedule: &Schedule, latency: Duration) {
    let latency_ms = millis(latency);
    match (outcome, schedule) {
        (Outcome::Succeeded, _) => tracing::debug!(latency_ms, "saga step succeeded"),
        (Outcome::Refused(why), _) => tracing::info!(latency_ms, reason = %why, "saga step refused"),
        (Outcome::Transient(why), Schedule::At(at)) => {
            let retry_at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            tracing::warn!(latency_ms, error = %why, retry_at, "saga step failed; retrying");
        }
        (Outcome::Transient(why), _) => tracing::error!(latency_ms, error = %why, "saga step out of retries"),
    }
}

fn step_metric(step: Step, outcome: &Outcome, schedule: &Schedule, latency: Duration) {
    let kind = match (outcome, schedule) {
        (Outcome::Succeeded, _) => metrics::StepOutcome::Succeeded,
        (Outcome::Refused(_), Schedule::Halt) | (Outcome::Transient(_), Schedule::Halt) => {
            metrics::StepOutcome::Failed
        }
        (Outcome::Refused(_), _) => metrics::StepOutcome::Refused,
        (Outcome::Transient(_), _) => metrics::StepOutcome::TransientError,
    };
    metrics::saga_step(step.name(), kind, latency);
    if matches!(schedule, Schedule::At(_)) {
        metrics::saga_retry(step.name());
    }
}

fn finished_metric(record: &SagaRecord) {
    let outcome = match record.status {
        SagaStatus::Completed => "completed",
        SagaStatus::Compensated => "compensated",
        SagaStatus::Failed => "failed",
        SagaStatus::CompensationFailed => "compensation_failed",
        SagaStatus::Running | SagaStatus::Compensating => return,
    };
    let elapsed = (Utc::now() - record.created_at).to_std().unwrap_or_default();
    metrics::saga_finished(outcome, elapsed);
}
