//! `commerce.v1.AdminService` over gRPC: converts messages and calls [`crate::app`] for admin tools.

use crate::{app::App, proto::commerce::v1::admin_service_server::AdminService};

/// The `AdminService` implementation.
#[derive(Clone)]
pub struct AdminGrpc {
    #[allow(dead_code)]
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
impl AdminService for AdminGrpc {}
