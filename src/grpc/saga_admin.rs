//! `commerce.v1.SagaAdmin` over gRPC: converts messages and calls
//! [`crate::app::sagas`]. Admin role required (checked in the app layer).

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use crate::{
    app::{
        App,
        sagas::{BulkOutcome, BulkRetryInput, BulkRetryReport, FilterInput, RetryInput, SagaView},
    },
    auth::principal,
    domain::reason::ErrorReason,
    error::AppError,
    proto::{
        Timestamp,
        commerce::v1::{
            BulkRetryOutcome, BulkRetryResult, BulkRetrySagasRequest, BulkRetrySagasResponse, BulkRetryStep,
            CountSagasRequest, CountSagasResponse, ErrorReason as ProtoErrorReason, GetSagaRequest,
            GetSagaResponse, ListSagasRequest, ListSagasResponse, OperatorAction, PlannedStep,
            RetrySagaRequest, RetrySagaResponse, Saga, SagaFilter, SagaStatus as ProtoSagaStatus,
            SagaStatusCount, SagaStep, SagaStepStatus as ProtoStepStatus, saga_admin_server::SagaAdmin,
        },
        timestamp,
    },
    saga::plan::{SagaStatus, StepStatus},
    store::saga::StepRecord,
};

/// Serves `commerce.v1.SagaAdmin`, the operators' listing, retries and skips
/// of sagas, for gRPC and for the REST shim.
#[derive(Clone)]
pub struct SagaAdminGrpc {
    app: App,
}

impl SagaAdminGrpc {
    /// A service over `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

fn proto_status(status: SagaStatus) -> ProtoSagaStatus {
    match status {
        SagaStatus::Running => ProtoSagaStatus::Running,
        SagaStatus::Compensating => ProtoSagaStatus::Compensating,
        SagaStatus::Completed => ProtoSagaStatus::Completed,
        SagaStatus::Compensated => ProtoSagaStatus::Compensated,
        SagaStatus::Failed => ProtoSagaStatus::Failed,
        SagaStatus::CompensationFailed => ProtoSagaStatus::CompensationFailed,
    }
}

fn status_filter(field: &str, raw: i32) -> Result<Option<SagaStatus>, AppError> {
    let status =
        ProtoSagaStatus::try_from(raw).map_err(|_| AppError::invalid(field, "unknown saga status"))?;
    Ok(match status {
        ProtoSagaStatus::Unspecified => None,
        ProtoSagaStatus::Running => Some(SagaStatus::Running),
        ProtoSagaStatus::Compensating => Some(SagaStatus::Compensating),
        ProtoSagaStatus::Completed => Some(SagaStatus::Completed),
        ProtoSagaStatus::Compensated => Some(SagaStatus::Compensated),
        ProtoSagaStatus::Failed => Some(SagaStatus::Failed),
        ProtoSagaStatus::CompensationFailed => Some(SagaStatus::CompensationFailed),
    })
}

/// A failure reason filter: the proto enum names the domain reasons (a test
/// in `error.rs` keeps them equal).
fn reason_filter(field: &str, raw: i32) -> Result<Option<ErrorReason>, AppError> {
    let reason =
        ProtoErrorReason::try_from(raw).map_err(|_| AppError::invalid(field, "unknown reason code"))?;
    if reason == ProtoErrorReason::Unspecified {
        return Ok(None);
    }
    ErrorReason::parse(reason.as_str_name())
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("proto reason {} has no domain twin", reason.as_str_name()).into())
}

fn time_filter(field: &str, at: Option<Timestamp>) -> Result<Option<DateTime<Utc>>, AppError> {
    at.map(|t| {
        t.to_datetime()
            .ok_or_else(|| AppError::invalid(field, "not a valid timestamp"))
    })
    .transpose()
}

/// The [`SagaFilter`] of a request that carries its fields at the top level
/// (ListSagas; CountSagas, with `$status` 0: it has none), so that all three
/// RPCs convert their filter by one function, [`filter_input`].
macro_rules! top_level_filter {
    ($r:ident, $status:expr) => {
        SagaFilter {
            status: $status,
            current_step: $r.current_step,
            failure_reason_code: $r.failure_reason_code,
            customer_id: $r.customer_id,
            order_id: $r.order_id,
            created_after: $r.created_after,
            created_before: $r.created_before,
            updated_after: $r.updated_after,
            updated_before: $r.updated_before,
        }
    };
}

/// The filter the application takes; field names under `prefix` in errors.
fn filter_input(prefix: &str, f: SagaFilter) -> Result<FilterInput, AppError> {
    let name = |field: &str| format!("{prefix}{field}");
    Ok(FilterInput {
        status: status_filter(&name("status"), f.status)?,
        current_step: f.current_step,
        failure_code: reason_filter(&name("failure_reason_code"), f.failure_reason_code)?,
        customer_id: f.customer_id,
        order_id: f.order_id,
        created_after: time_filter(&name("created_after"), f.created_after)?,
        created_before: time_filter(&name("created_before"), f.created_before)?,
        updated_after: time_filter(&name("updated_after"), f.updated_after)?,
        updated_before: time_filter(&name("updated_before"), f.updated_before)?,
    })
}

fn bulk_response(report: BulkRetryReport) -> BulkRetrySagasResponse {
    match report {
        BulkRetryReport::DryRun {
            matched,
            steps,
            confirmation_token,
            snapshot_at,
            expires_at,
        } => BulkRetrySagasResponse {
            dry_run: true,
            matched: i64::try_from(matched).unwrap_or(i64::MAX),
            steps: steps
                .iter()
                .map(|s| BulkRetryStep {
                    step: s.step.name().into(),
                    compensation: s.step.is_compensation(),
                    count: i64::try_from(s.count).unwrap_or(i64::MAX),
                })
                .collect(),
            confirmation_token,
            expires_at: Some(timestamp(expires_at)),
            snapshot_at: snapshot_at.map(timestamp),
            ..BulkRetrySagasResponse::default()
        },
        BulkRetryReport::Batch {
            snapshot_at,
            results,
            next_page_token,
        } => {
            let count = |outcome| {
                let n = results.iter().filter(|r| r.outcome == outcome).count();
                i32::try_from(n).unwrap_or(i32::MAX)
            };
            BulkRetrySagasResponse {
                dry_run: false,
                snapshot_at: Some(timestamp(snapshot_at)),
                processed: i32::try_from(results.len()).unwrap_or(i32::MAX),
                succeeded: count(BulkOutcome::Retried),
                skipped: count(BulkOutcome::Skipped),
                results: results
                    .iter()
                    .map(|r| BulkRetryResult {
                        saga_id: r.saga_id.to_string(),
                        step: r.step.map(|s| s.name().to_string()).unwrap_or_default(),
                        outcome: match r.outcome {
                            BulkOutcome::Retried => BulkRetryOutcome::Retried,
                            BulkOutcome::Skipped => BulkRetryOutcome::Skipped,
                        }
                        .into(),
                        detail: r.detail.clone(),
                    })
                    .collect(),
                next_page_token,
                ..BulkRetrySagasResponse::default()
            }
        }
    }
}

fn proto_step_status(status: StepStatus) -> ProtoStepStatus {
    match status {
        StepStatus::Pending => ProtoStepStatus::Pending,
        StepStatus::InProgress => ProtoStepStatus::InProgress,
        StepStatus::Succeeded => ProtoStepStatus::Succeeded,
        StepStatus::Refused => ProtoStepStatus::Refused,
        StepStatus::Failed => ProtoStepStatus::Failed,
        StepStatus::Skipped => ProtoStepStatus::Skipped,
        StepStatus::Compensated => ProtoStepStatus::Compensated,
    }
}

fn proto_step(step: &StepRecord) -> SagaStep {
    SagaStep {
        name: step.step.name().into(),
        compensation: step.step.is_compensation(),
        status: proto_step_status(step.status).into(),
        attempts: i32::try_from(step.attempts).unwrap_or(i32::MAX),
        idempotency_key: step.idempotency_key.clone(),
        last_error: step.last_error.clone().unwrap_or_default(),
        last_grpc_code: step.last_grpc_code.clone().unwrap_or_default(),
        started_at: step.started_at.map(timestamp),
        finished_at: step.finished_at.map(timestamp),
        duration_ms: step.duration_ms,
    }
}

/// The proto view of a saga.
pub fn proto_saga(view: &SagaView) -> Saga {
    let r = &view.record;
    Saga {
        saga_id: r.saga_id.to_string(),
        order_id: r.order_id.to_string(),
        status: proto_status(r.status).into(),
        current_step: if r.status.is_terminal() {
            String::new()
        } else {
            r.current_step.map(|s| s.name().to_string()).unwrap_or_default()
        },
        past_pivot: r.past_pivot,
        steps: view.steps.iter().map(proto_step).collect(),
        last_error: r.last_error.clone().unwrap_or_default(),
        compensation_reason: r.compensation_reason.clone().unwrap_or_default(),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        deadline: Some(timestamp(r.deadline)),
        failure_reason_code: r
            .failure_code
            .and_then(|code| ProtoErrorReason::from_str_name(code.as_str()))
            .unwrap_or(ProtoErrorReason::Unspecified)
            .into(),
        customer_id: r.customer_id.clone().unwrap_or_default(),
        operator_actions: view
            .actions
            .iter()
            .map(|a| OperatorAction {
                action: a.action.clone(),
                step: a.step.name().into(),
                operator: a.operator.clone(),
                reason: a.reason.clone(),
                at: Some(timestamp(a.at)),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl SagaAdmin for SagaAdminGrpc {
    async fn list_sagas(
        &self,
        request: Request<ListSagasRequest>,
    ) -> Result<Response<ListSagasResponse>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let filter = filter_input("", top_level_filter!(r, r.status))?;
        let page = self
            .app
            .sagas
            .list(&principal, &filter, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(ListSagasResponse {
            sagas: page.sagas.iter().map(proto_saga).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn count_sagas(
        &self,
        request: Request<CountSagasRequest>,
    ) -> Result<Response<CountSagasResponse>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let filter = filter_input("", top_level_filter!(r, 0))?;
        let counts = self.app.sagas.count(&principal, &filter).await?;
        let total = counts.iter().map(|(_, n)| *n).sum::<u64>();
        Ok(Response::new(CountSagasResponse {
            counts: counts
                .into_iter()
                .map(|(status, count)| SagaStatusCount {
                    status: proto_status(status).into(),
                    count: i64::try_from(count).unwrap_or(i64::MAX),
                })
                .collect(),
            total: i64::try_from(total).unwrap_or(i64::MAX),
        }))
    }

    async fn bulk_retry_sagas(
        &self,
        request: Request<BulkRetrySagasRequest>,
    ) -> Result<Response<BulkRetrySagasResponse>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let input = BulkRetryInput {
            filter: filter_input("filter.", r.filter.unwrap_or_default())?,
            reason: r.reason,
            confirmation_token: r.confirmation_token,
            page_token: r.page_token,
            batch_size: r.batch_size,
        };
        let report = self.app.sagas.bulk_retry(&principal, input).await?;
        Ok(Response::new(bulk_response(report)))
    }

    async fn get_saga(&self, request: Request<GetSagaRequest>) -> Result<Response<GetSagaResponse>, Status> {
        let principal = principal(&request)?;
        let view = self
            .app
            .sagas
            .get(&principal, &request.into_inner().saga_id)
            .await?;
        Ok(Response::new(GetSagaResponse {
            saga: Some(proto_saga(&view)),
        }))
    }

    async fn retry_saga(
        &self,
        request: Request<RetrySagaRequest>,
    ) -> Result<Response<RetrySagaResponse>, Status> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let outcome = self
            .app
            .sagas
            .retry(
                &principal,
                RetryInput {
                    saga_id: r.saga_id,
                    dry_run: r.dry_run,
                    skip_failed_step: r.skip_failed_step,
                    reason: r.reason,
                    expected_updated_at: None,
                },
            )
            .await?;
        Ok(Response::new(RetrySagaResponse {
            saga: Some(proto_saga(&outcome.saga)),
            plan: outcome
                .plan
                .iter()
                .map(|p| PlannedStep {
                    step: p.step.name().into(),
                    idempotency_key: p.idempotency_key.clone(),
                    compensation: p.step.is_compensation(),
                })
                .collect(),
        }))
    }
}
