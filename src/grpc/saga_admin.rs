//! `commerce.v1.SagaAdmin` over gRPC: converts messages and calls [`crate::app`] for sagas.

use crate::{app::App, proto::commerce::v1::saga_admin_server::SagaAdmin};

/// The `SagaAdmin` implementation.
#[derive(Clone)]
pub struct SagaAdminGrpc {
    #[allow(dead_code)]
    app: App,
}

impl SagaAdminGrpc {
    /// A service over `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

// RPCs not implemented yet answer UNIMPLEMENTED (generated default stubs).
#[tonic::async_trait]
impl SagaAdmin for SagaAdminGrpc {}
