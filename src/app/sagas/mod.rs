//! Sagas in the application layer: the worker pool's start, and the operator
//! API (list, get, retry or skip with a dry run) that SagaAdmin serves.

mod order_port;

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use tokio::{sync::Notify, task::JoinHandle};
use uuid::Uuid;

pub use self::order_port::OrderAppPort;
use crate::{
    auth::Principal,
    config::SagaSettings,
    db::Db,
    error::{AppError, Resource},
    saga::{
        engine::Engine,
        grpc_siblings::{GrpcSiblings, SiblingUrls},
        plan::{OperatorError, PlannedStep, RetryPolicy, SagaStatus, Step, StepStatus},
        ports::{OrderPort, SagaPorts, Siblings},
        worker::{PoolSettings, listen_for_wakeups, run_pool},
    },
    shutdown::Shutdown,
    store::{
        event_store::StreamAppend,
        saga::{
            AttemptRecord, Cursor, Lease, OperatorActionRecord, OperatorActionWrite, SAGA_STREAM,
            SagaColumns, SagaRecord, SagaStore, SagaWrite, StepRecord,
        },
        unit_of_work::{UnitOfWork, UnitOfWorkCommitter},
    },
};

/// A saga as operators see it.
#[derive(Debug, Clone)]
pub struct SagaView {
    /// The stored saga.
    pub record: SagaRecord,
    /// Started steps in execution order, then the steps still to come (PENDING).
    pub steps: Vec<StepRecord>,
    /// Operator actions, oldest first.
    pub actions: Vec<OperatorActionRecord>,
}

/// One page of ListSagas.
#[derive(Debug, Clone)]
pub struct SagaPage {
    /// Sagas, newest first.
    pub sagas: Vec<SagaView>,
    /// Token of the next page; empty on the last.
    pub next_page_token: String,
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
    wake: Arc<Notify>,
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
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        let owner = format!(
            "{host}-{}-{}",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            settings,
            store,
            units,
            siblings,
            orders,
            urls,
            wake: Arc::new(Notify::new()),
            owner,
        }
    }

    /// Tells the workers a saga is due now (CreateOrder, CancelOrder call it
    /// after their commit; other replicas hear the database trigger).
    pub fn wake(&self) {
        self.wake.notify_one();
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
        let listener = tokio::spawn(listen_for_wakeups(db, self.wake.clone(), shutdown.clone()));
        let pool = run_pool(engine, settings, self.wake.clone(), shutdown);
        Some(tokio::spawn(async move {
            pool.await;
            listener.abort();
        }))
    }

    /// Sagas newest first, optionally of one status. Admin only.
    #[tracing::instrument(skip(self, principal))]
    pub async fn list(
        &self,
        principal: &Principal,
        status: Option<SagaStatus>,
        page_size: i32,
        page_token: &str,
    ) -> Result<SagaPage, AppError> {
        principal.require_admin()?;
        let limit = match page_size {
            0 => 20,
            1..=100 => usize::try_from(page_size).unwrap_or(20),
            _ => return Err(AppError::invalid("page_size", "must be 0 to 100")),
        };
        let after = decode_token(page_token)?;
        let mut records = self.store.list(status, after, limit + 1).await?;
        let next_page_token = if records.len() > limit {
            records.truncate(limit);
            records
                .last()
                .map(|r| encode_token(r.created_at, r.saga_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        // One query for the page's operator actions, not one per saga.
        let ids: Vec<Uuid> = records.iter().map(|r| r.saga_id).collect();
        let actions = self.store.operator_actions_of(&ids).await?;
        let now = Utc::now();
        let sagas = records
            .into_iter()
            .map(|record| {
                let own = actions
                    .iter()
                    .filter(|(id, _)| *id == record.saga_id)
                    .map(|(_, a)| a.clone())
                    .collect();
                view_of(record, own, now)
            })
            .collect();
        Ok(SagaPage {
            sagas,
            next_page_token,
        })
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
        let reason = input.reason.trim().to_string();
        if reason.chars().count() > MAX_REASON {
            return Err(AppError::invalid("reason", "must be at most 500 characters"));
        }
        if input.skip_failed_step && reason.is_empty() {
            return Err(AppError::invalid("reason", "is required to skip a step"));
        }
        if let Some(problem) = crate::domain::text::text_problem(&reason, input.skip_failed_step) {
            return Err(AppError::invalid("reason", problem));
        }
        let record = self.load(&input.saga_id).await?;
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

/// `created_at` (microseconds) and id of the last saga of a page, opaque.
fn encode_token(created_at: DateTime<Utc>, saga_id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{saga_id}", created_at.timestamp_micros()))
}

fn decode_token(token: &str) -> Result<Option<Cursor>, AppError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || AppError::invalid("page_token", "not a token from a previous response");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = raw.split_once(':').ok_or_else(bad)?;
    let at = crate::app::paging::page_token_time(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok(Some((at, Uuid::parse_str(id).map_err(|_| bad())?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_invalid() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(decode_token(&encode_token(at, id)).unwrap(), Some((at, id)));
        assert_eq!(decode_token("").unwrap(), None);
        assert!(matches!(decode_token("%%%"), Err(AppError::InvalidArgument(_))));
    }
}
