//! `commerce.v1.SagaAdmin` over gRPC: converts messages and calls
//! [`crate::app::sagas`]. Admin role required (checked in the app layer).

use tonic::{Request, Response, Status};

use crate::{
    app::{
        App,
        sagas::{RetryInput, SagaView},
    },
    auth::principal,
    error::AppError,
    proto::{
        commerce::v1::{
            GetSagaRequest, GetSagaResponse, ListSagasRequest, ListSagasResponse, OperatorAction,
            PlannedStep, RetrySagaRequest, RetrySagaResponse, Saga, SagaStatus as ProtoSagaStatus, SagaStep,
            SagaStepStatus as ProtoStepStatus, saga_admin_server::SagaAdmin,
        },
        timestamp,
    },
    saga::plan::{SagaStatus, StepStatus},
    store::saga::StepRecord,
};

/// The `SagaAdmin` implementation.
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

fn status_filter(raw: i32) -> Result<Option<SagaStatus>, AppError> {
    let status =
        ProtoSagaStatus::try_from(raw).map_err(|_| AppError::invalid("status", "unknown saga status"))?;
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
        let page = self
            .app
            .sagas
            .list(&principal, status_filter(r.status)?, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(ListSagasResponse {
            sagas: page.sagas.iter().map(proto_saga).collect(),
            next_page_token: page.next_page_token,
        }))
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
