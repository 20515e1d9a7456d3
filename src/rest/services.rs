//! What the shim's handlers call and share: the tonic service objects (built once
//! by startup, served by gRPC too) and the decoded schema.

use std::sync::Arc;

use super::schema::Schema;
use crate::{
    app::App,
    grpc::{
        admin::AdminGrpc, cart::CartGrpc, events::OrderEventGrpc, order::OrderGrpc, saga_admin::SagaAdminGrpc,
    },
};

/// The tonic service objects the shim calls: the very ones the gRPC server
/// serves (startup builds them once), so both transports share every rule.
/// Field names are the services' snake_case names, as the generated table uses.
#[derive(Clone)]
pub struct Services {
    /// `commerce.v1.CartService`.
    pub cart_service: CartGrpc,
    /// `commerce.v1.OrderService`.
    pub order_service: OrderGrpc,
    /// `commerce.v1.SagaAdmin`.
    pub saga_admin: SagaAdminGrpc,
    /// `commerce.v1.AdminService`.
    pub admin_service: AdminGrpc,
    /// `commerce.events.v1.OrderEventService`.
    pub order_event_service: OrderEventGrpc,
}

impl Services {
    /// One object per service over `app`.
    pub fn new(app: &App) -> Self {
        Self {
            cart_service: CartGrpc::new(app.clone()),
            order_service: OrderGrpc::new(app.clone()),
            saga_admin: SagaAdminGrpc::new(app.clone()),
            admin_service: AdminGrpc::new(app.clone()),
            order_event_service: OrderEventGrpc::new(app.clone()),
        }
    }
}

/// What every REST request needs.
pub(crate) struct Shared {
    pub(super) services: Arc<Services>,
    pub(super) schema: Schema,
    pub(super) max_body_bytes: usize,
    /// SSE_HEARTBEAT_SECONDS: silence after which a server stream sends a heartbeat.
    pub(super) sse_heartbeat: std::time::Duration,
}
