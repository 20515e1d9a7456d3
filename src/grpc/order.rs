//! `commerce.v1.OrderService` over gRPC: converts messages and calls [`crate::app`] for orders.

use crate::{app::App, proto::commerce::v1::order_service_server::OrderService};

/// The `OrderService` implementation.
#[derive(Clone)]
pub struct OrderGrpc {
    #[allow(dead_code)]
    app: App,
}

impl OrderGrpc {
    /// A service over `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

// RPCs not implemented yet answer UNIMPLEMENTED (generated default stubs).
#[tonic::async_trait]
impl OrderService for OrderGrpc {}
