//! `commerce.v1.OrderService` over gRPC: converts messages and calls [`crate::app`] for orders.
//! CreateOrder and CancelOrder are the write side; the queries belong to the read side.

use tonic::{Request, Response, Status};

use crate::{
    app::App,
    auth,
    grpc::convert,
    proto::commerce::v1::{
        CancelOrderRequest, CancelOrderResponse, CreateOrderRequest, CreateOrderResponse,
        order_service_server::OrderService,
    },
};

/// The `OrderService` implementation.
#[derive(Clone)]
pub struct OrderGrpc {
    app: App,
}

impl OrderGrpc {
    /// A service over `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

// RPCs not implemented here answer UNIMPLEMENTED (generated default stubs).
#[tonic::async_trait]
impl OrderService for OrderGrpc {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let principal = auth::principal(&request)?;
        let view = self
            .app
            .orders
            .create_order(&principal, request.into_inner().into())
            .await?;
        Ok(Response::new(CreateOrderResponse {
            order: Some(convert::order(&view)),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        let principal = auth::principal(&request)?;
        let request = request.into_inner();
        let view = self
            .app
            .orders
            .cancel_order(&principal, &request.order_id, &request.reason)
            .await?;
        Ok(Response::new(CancelOrderResponse {
            order: Some(convert::order(&view)),
        }))
    }
}
