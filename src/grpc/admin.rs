//! `commerce.v1.AdminService` over gRPC: converts messages and calls [`crate::app`] for admin tools.

use tonic::{Request, Response, Status};

use crate::{
    app::App,
    auth::principal,
    bus::DeadLetter,
    proto::{
        commerce::v1::{
            self as pb, ForgetCustomerRequest, ForgetCustomerResponse, GetProjectionStatusRequest,
            GetProjectionStatusResponse, ListDeadLettersRequest, ListDeadLettersResponse,
            ReplayDeadLettersRequest, ReplayDeadLettersResponse, admin_service_server::AdminService,
        },
        timestamp,
    },
};

/// Serves `commerce.v1.AdminService` (forgetting customers, dead letters,
/// projection status), for gRPC and for the REST shim.
#[derive(Clone)]
pub struct AdminGrpc {
    app: App,
}

impl AdminGrpc {
    /// A service over `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

fn dead_letter(letter: DeadLetter) -> pb::DeadLetter {
    let event = letter.event().ok();
    pb::DeadLetter {
        id: letter.id,
        projection: letter.group,
        event_id: event.as_ref().map(|e| e.event_id.to_string()).unwrap_or_default(),
        event_type: event.map(|e| e.event_type).unwrap_or_default(),
        deliveries: i64::try_from(letter.deliveries).unwrap_or(i64::MAX),
        error: letter.error,
        dead_lettered_at: Some(timestamp(letter.dead_lettered_at)),
    }
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn forget_customer(
        &self,
        request: Request<ForgetCustomerRequest>,
    ) -> Result<Response<ForgetCustomerResponse>, Status> {
        let caller = principal(&request)?;
        let message = request.into_inner();
        let at =
            crate::app::privacy::forget_customer(&self.app, &caller, &message.customer_id, &message.reason)
                .await?;
        Ok(Response::new(ForgetCustomerResponse {
            forgotten_at: Some(crate::proto::timestamp(at)),
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let principal = principal(&request)?;
        let letters = self
            .app
            .queries
            .dead_letters(&principal, request.get_ref().page_size)
            .await?;
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: letters.into_iter().map(dead_letter).collect(),
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<ReplayDeadLettersRequest>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        let principal = principal(&request)?;
        let replayed = self
            .app
            .queries
            .replay_dead_letters(&principal, &request.get_ref().ids)
            .await?;
        Ok(Response::new(ReplayDeadLettersResponse {
            replayed: i64::try_from(replayed).unwrap_or(i64::MAX),
        }))
    }

    async fn get_projection_status(
        &self,
        request: Request<GetProjectionStatusRequest>,
    ) -> Result<Response<GetProjectionStatusResponse>, Status> {
        let principal = principal(&request)?;
        let states = self.app.queries.projection_status(&principal).await?;
        Ok(Response::new(GetProjectionStatusResponse {
            projections: states
                .into_iter()
                .map(|s| pb::ProjectionStatus {
                    name: s.name,
                    checkpoint: s.checkpoint,
                    head: s.head,
                    lag_events: s.lag_events,
                    rebuilding: s.rebuilding,
                    rebuild_replayed: s.rebuild_replayed,
                    rebuild_total: s.rebuild_total,
                })
                .collect(),
        }))
    }
}
