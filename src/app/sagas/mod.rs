//! Sagas in the application layer: the worker pool's start, and the operator
//! API (list, get, retry or skip with a dry run) that SagaAdmin serves.

mod bulk;
mod order_port;
mod search;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use self::{
    bulk::{BulkOutcome, BulkRetryInput, BulkRetryReport, BulkRetryResult, BulkStep},
    order_port::OrderAppPort,
    search::{FAILURE_CODES, FilterInput, SagaPage},
};
use crate::{
    auth::Principal,
    config::SagaSettings,
    db::Db,
    error::{AppError, Resource},
    saga::{
        engine::Engine,
        grpc_siblings::{GrpcSiblings, SiblingUrls},
        plan::{OperatorError, PlannedStep, RetryPolicy, Step, StepStatus},
        ports::{OrderPort, SagaPorts, Siblings},
        worker::{LocalWorkers, PoolSettings, listen_for_wakeups, run_pool},
    },
    shutdown::Shutdown,
    store::{
        event_store::StreamAppend,
        saga::{
            AttemptRecord, Lease, OperatorActionRecord, OperatorActionWrite, SAGA_STREAM, SagaColumns,
            SagaRecord, SagaStore, SagaStoreError, SagaWrite, StepRecord, failure_code,
        },
        unit_of_work::{UnitOfWork, UnitOfWorkCommitter},
    },
};

/// A saga as operators see it.
#[derive(Debug, Clone)]
pub struct SagaView {
    /// The saga as stored; its `steps` hold only the steps started.
    pub record: SagaRecord,
    /// Started steps in execution order, then the steps still to come (PENDING).
    pub steps: Vec<StepRecord>,
    /// Operator actions, oldest first.
    pub actions: Vec<OperatorActionRecord>,
}

/// What RetrySaga asks.
#[derive(Debug, Clone, Default)]
pub struct RetryInput {
    /// Saga id (UUID).
    pub saga_id: String,
    /// Only show the plan.
    pub dry_run: bool,
    /// Skip the failed step instead of retrying it.
    pub skip_failed_step: bool,
    /// Why (required to skip).
    pub reason: String,
    /// Act only if the saga is still at this version (`updated_at`): a bulk
    /// retry acts on the state its batch read, never on a newer one.
    pub expected_updated_at: Option<DateTime<Utc>>,
}

/// What RetrySaga answers.
#[derive(Debug, Clone)]
pub struct RetryOutcome {
    /// The saga after the action (unchanged by a dry run).
    pub saga: SagaView,
    /// Steps that run (or would run), with their keys.
    pub plan: Vec<PlannedStep>,
}

/// The sagas of this service.
#[derive(Clone)]
pub struct SagaApp {
    settings: SagaSettings,
    store: Arc<dyn SagaStore>,
    units: Arc<dyn UnitOfWorkCommitter>,
    siblings: Arc<dyn Siblings>,
    orders: Arc<dyn OrderPort>,
    urls: SiblingUrls,
    local: LocalWorkers,
    owner: String,
}

/// Longest accepted operator reason.
const MAX_REASON: usize = 500;

impl SagaApp {
    /// Sagas kept in `store`, committing through `units`, calling the
    /// siblings at `urls` over gRPC.
    pub fn new(
        settings: SagaSettings,
        store: Arc<dyn SagaStore>,
        units: Arc<dyn UnitOfWorkCommitter>,
        urls: SiblingUrls,
        orders: Arc<dyn OrderPort>,
    ) -> anyhow::Result<Self> {
        let parts = SagaPorts {
            store,
            units,
            siblings: Arc::new(GrpcSiblings::new(&urls, settings.call_timeout)?),
            orders,
        };
        Ok(Self::with_parts(settings, parts, urls))
    }

    /// Sagas over explicit parts (a simulation plugs in its own siblings).
    pub fn with_parts(settings: SagaSettings, parts: SagaPorts, urls: SiblingUrls) -> Self {
        let SagaPorts {
            store,
            units,
            siblings,
            orders,
        } = parts;
        let owner = crate::bus::lease_holder_name();
        Self {
            settings,
            store,
            units,
            siblings,
            orders,
            urls,
            local: LocalWorkers::default(),
            owner,
        }
    }

    /// Tells the workers a saga is due now (CancelOrder calls it after its
    /// commit; CreateOrder wakes them through [`LocalWorkers::wake`] only
    /// when it could not hand its saga over; other replicas hear the
    /// database trigger).
    pub fn wake(&self) {
        self.local.wake();
    }

    /// This replica's worker slots, which CreateOrder hands new sagas to
    /// (free ones once [`Self::start_workers`] started them).
    pub fn local_workers(&self) -> &LocalWorkers {
        &self.local
    }

    /// Where the siblings are (the embedded stubs' address in `serve`).
    pub fn sibling_urls(&self) -> &SiblingUrls {
        &self.urls
    }

    /// The retry policy from the configuration.
    pub fn policy(settings: &SagaSettings) -> RetryPolicy {
        RetryPolicy {
            forward_retries: settings.retry_attempts,
            compensation_retries: settings.compensation_retry_attempts,
            base_delay: settings.retry_delay,
            max_delay: std::time::Duration::from_secs(300),
        }
    }

    /// Starts this replica's workers (and, on PostgreSQL, the wake-up
    /// listener) until `shutdown`; `None` when ENABLE_SAGA_ORCHESTRATION is
    /// off or SAGA_WORKERS is 0.
    pub fn start_workers(&self, db: Db, shutdown: Shutdown) -> Option<JoinHandle<()>> {
        if !self.settings.enabled {
            tracing::info!("saga orchestration disabled: orders stay PENDING");
            return None;
        }
        if self.settings.workers == 0 {
            tracing::info!("SAGA_WORKERS=0: sagas are left to the other replicas");
            return None;
        }
        let ports = SagaPorts {
            store: self.store.clone(),
            units: self.units.clone(),
            siblings: self.siblings.clone(),
            orders: self.orders.clone(),
        };
        let engine = Arc::new(Engine::new(
            ports,
            Self::policy(&self.settings),
            Lease {
                owner: self.owner.clone(),
                duration: self.settings.lease,
            },
            shutdown.clone(),
        ));
        let poll = match db {
            Db::Postgres(_) => std::time::Duration::from_millis(100),
            Db::Sqlite(_) => std::time::Duration::from_millis(20),
        };
        let settings = PoolSettings {
            workers: self.settings.workers,
            poll,
        };
        let listener = tokio::spawn(listen_for_wakeups(db, self.local.wake_signal(), shutdown.clone()));
        self.local.install(&engine, settings.workers.max(1), &shutdown);
        let pool = run_pool(engine, settings, self.local.clone(), shutdown);
        Some(tokio::spawn(async move {
            pool.await;
            listener.abort();
        }))
    }

    /// One saga with its steps and operator actions. Admin only.
    #[tracing::instrument(skip(self, principal))]
    pub async fn get(&self, principal: &Principal, saga_id: &str) -> Result<SagaView, AppError> {
        principal.require_admin()?;
        let record = self.load(saga_id).await?;
        self.view(record).await
    }

    /// The saga of an order (for the order's history), if it has one.
    pub async fn for_order(&self, order_id: Uuid) -> Result<Option<SagaRecord>, AppError> {
        Ok(self.store.find_by_order(order_id).await?)
    }

    /// Every attempt of a saga, in the order they were sent.
    pub async fn attempts(&self, saga_id: Uuid) -> Result<Vec<AttemptRecord>, AppError> {
        Ok(self.store.attempts(saga_id).await?)
    }

    /// Retries (or skips) the failed step of a FAILED or COMPENSATION_FAILED
    /// saga, or with `dry_run` only says what that would run. Admin only.
    #[tracing::instrument(skip(self, principal, input), fields(saga_id = %input.saga_id))]
    pub async fn retry(&self, principal: &Principal, input: RetryInput) -> Result<RetryOutcome, AppError> {
        principal.require_admin()?;
        let reason = operator_reason(&input.reason, input.skip_failed_step.then_some("to skip a step"))?;
        let record = self.load(&input.saga_id).await?;
        if input
            .expected_updated_at
            .is_some_and(|expected| expected != record.updated_at)
        {
            return Err(SagaStoreError::Conflict.into());
        }
        let now = Utc::now();
        let mut state = record.state();
        if input.dry_run {
            let plan = state
                .dry_run(input.skip_failed_step, &record.seed, now)
                .map_err(operator_error)?;
            let saga = self.view(record).await?;
            return Ok(RetryOutcome { saga, plan });
        }
        let step = if input.skip_failed_step {
            state.operator_skip()
        } else {
            state.operator_retry()
        }
        .map_err(operator_error)?;
        let plan = state.plan(&record.seed, now);

        let mut columns = SagaColumns::of(&record);
        columns.status = state.status;
        columns.current_step = state.next_step();
        columns.failure_code = failure_code(&state, &record.steps);
        let progress = state.step(step);
        let row = StepRecord {
            status: progress.status,
            round_attempts: progress.round_attempts,
            finished_at: (progress.status == StepStatus::Skipped).then_some(now),
            ..record
                .step(step)
                .cloned()
                .unwrap_or_else(|| pending_row(&record, step))
        };
        let action = OperatorActionRecord {
            action: if input.skip_failed_step { "skip" } else { "retry" }.into(),
            step,
            operator: principal.subject.clone(),
            reason: reason.clone(),
            at: now,
        };
        let audit = action.audit_event(record.saga_id, record.order_id);
        let unit = UnitOfWork {
            appends: vec![StreamAppend {
                stream_id: record.saga_id,
                stream_type: SAGA_STREAM.into(),
                expected_version: None,
                events: vec![audit],
            }],
            saga: Some(SagaWrite::OperatorAction(OperatorActionWrite {
                saga_id: record.saga_id,
                expected_updated_at: record.updated_at,
                columns,
                step: row,
                action: action.clone(),
            })),
            idempotency: None,
        };
        self.units.commit(unit).await?;
        tracing::info!(action = %action.action, step = step.name(), operator = %action.operator, "operator action on saga");
        self.wake();
        let saga = self.load(&input.saga_id).await?;
        let saga = self.view(saga).await?;
        Ok(RetryOutcome { saga, plan })
    }

    async fn load(&self, saga_id: &str) -> Result<SagaRecord, AppError> {
        let id =
            Uuid::parse_str(saga_id.trim()).map_err(|_| AppError::invalid("saga_id", "must be a UUID"))?;
        self.store
            .get(id)
            .await?
            .ok_or_else(|| AppError::not_found(Resource::Saga, id))
    }

    async fn view(&self, record: SagaRecord) -> Result<SagaView, AppError> {
        let actions = self.store.operator_actions(record.saga_id).await?;
        Ok(view_of(record, actions, Utc::now()))
    }
}

/// An operator's reason, trimmed and checked: at most [`MAX_REASON`]
/// characters, no control characters, and not empty when `required_for`
/// says what needs it.
fn operator_reason(raw: &str, required_for: Option<&str>) -> Result<String, AppError> {
    let reason = raw.trim().to_string();
    if reason.chars().count() > MAX_REASON {
        return Err(AppError::invalid("reason", "must be at most 500 characters"));
    }
    if let Some(what) = required_for
        && reason.is_empty()
    {
        return Err(AppError::invalid("reason", format!("is required {what}")));
    }
    if let Some(problem) = crate::domain::text::text_problem(&reason, required_for.is_some()) {
        return Err(AppError::invalid("reason", problem));
    }
    Ok(reason)
}

/// The operator's view: started steps, then those still to come as PENDING.
fn view_of(record: SagaRecord, actions: Vec<OperatorActionRecord>, now: DateTime<Utc>) -> SagaView {
    let mut steps = record.steps.clone();
    for planned in record.state().plan(&record.seed, now) {
        if !steps.iter().any(|s| s.step == planned.step) {
            steps.push(pending_row(&record, planned.step));
        }
    }
    SagaView {
        record,
        steps,
        actions,
    }
}

fn pending_row(record: &SagaRecord, step: Step) -> StepRecord {
    StepRecord {
        step,
        status: StepStatus::Pending,
        attempts: 0,
        round_attempts: 0,
        idempotency_key: crate::saga::plan::idempotency_key(&record.seed, step),
        last_error: None,
        last_grpc_code: None,
        started_at: None,
        finished_at: None,
        duration_ms: 0,
    }
}

fn operator_error(err: OperatorError) -> AppError {
    AppError::failed_precondition(crate::error::ErrorReason::SagaActionNotAllowed, err.to_string())
}
