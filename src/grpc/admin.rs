//! `commerce.v1.AdminService` over gRPC: converts messages and calls [`crate::app`] for admin tools.

use tonic::{Request, Response, Status};

use crate::{
    app::App,
    auth::principal,
    proto::commerce::v1::{
        ForgetCustomerRequest, ForgetCustomerResponse, admin_service_server::AdminService,
    },
};

/// The `AdminService` implementation.
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

// RPCs not implemented yet answer UNIMPLEMENTED (generated default stubs).
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
            forgotten_at: Some(pbjson_types::Timestamp {
                seconds: at.timestamp(),
                nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
            }),
        }))
    }
}
