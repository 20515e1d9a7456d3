//! `commerce.v1.CartService` over gRPC: converts messages and calls [`crate::app`] for carts.

use crate::{app::App, proto::commerce::v1::cart_service_server::CartService};

/// The `CartService` implementation.
#[derive(Clone)]
pub struct CartGrpc {
    #[allow(dead_code)]
    app: App,
}

impl CartGrpc {
    /// A service over `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

// RPCs not implemented yet answer UNIMPLEMENTED (generated default stubs).
#[tonic::async_trait]
impl CartService for CartGrpc {}
