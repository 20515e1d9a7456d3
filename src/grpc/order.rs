//! `commerce.v1.OrderService` over gRPC: converts messages and calls [`crate::app`] for orders.
//! CreateOrder and CancelOrder are the write side; the queries belong to the read side.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::{
    app::{App, orders::OrderView, queries::HistoryEntry},
    auth,
    grpc::convert,
    proto::commerce::v1::{
        self as pb, CancelOrderRequest, CancelOrderResponse, CreateOrderRequest, CreateOrderResponse,
        GetOrderHistoryRequest, GetOrderHistoryResponse, GetOrderRequest, GetOrderResponse,
        ListOrdersRequest, ListOrdersResponse, WatchOrderRequest, WatchOrderResponse,
        order_service_server::OrderService,
    },
    store::saga::AttemptOutcome,
};

/// The stream WatchOrder answers with.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchOrderResponse, Status>> + Send>>;

/// Serves `commerce.v1.OrderService`, for gRPC clients and for the REST shim
/// (which calls these same methods): converts messages, then calls [`App`].
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

#[tonic::async_trait]
impl OrderService for OrderGrpc {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let principal = auth::customer(&request)?;
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
        let principal = auth::customer(&request)?;
        let request = request.into_inner();
        let view = self
            .app
            .orders
            .cancel_order(&principal, &request.order_id, &request.reason)
            .await?;
        self.app.sagas.wake();
        Ok(Response::new(CancelOrderResponse {
            order: Some(convert::order(&view)),
        }))
    }

    // ---- read side (the queries of crate::app::queries) ----

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let principal = auth::customer(&request)?;
        let request = request.into_inner();
        let detail = self
            .app
            .queries
            .get_order(&principal, &request.order_id, request.min_version)
            .await?;
        Ok(Response::new(GetOrderResponse {
            order: Some(convert::order(&OrderView::from(detail))),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let principal = auth::customer(&request)?;
        let request = request.into_inner();
        let status = pb::OrderStatus::try_from(request.status)
            .map(convert::domain_status)
            .map_err(|_| crate::error::AppError::invalid("status", "unknown order status"))?;
        let page = self
            .app
            .queries
            .list_orders(&principal, request.page_size, &request.page_token, status)
            .await?;
        Ok(Response::new(ListOrdersResponse {
            orders: page
                .orders
                .into_iter()
                .map(|summary| {
                    // The list keeps no personal data: leave it out of the message.
                    let mut order = convert::order(&OrderView::from(summary));
                    order.shipping_address = None;
                    order
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_order_history(
        &self,
        request: Request<GetOrderHistoryRequest>,
    ) -> Result<Response<GetOrderHistoryResponse>, Status> {
        let principal = auth::customer(&request)?;
        let entries = self
            .app
            .queries
            .order_history(&principal, &request.get_ref().order_id)
            .await?;
        Ok(Response::new(GetOrderHistoryResponse {
            entries: entries.into_iter().map(history_entry).collect(),
        }))
    }

    async fn watch_order(
        &self,
        request: Request<WatchOrderRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let principal = auth::customer(&request)?;
        let changes = self
            .app
            .queries
            .watch_order(
                &principal,
                &request.get_ref().order_id,
                request.get_ref().after_version,
            )
            .await?;
        let stream = ReceiverStream::new(changes).map(|change| {
            change
                .map(|detail| WatchOrderResponse {
                    order: Some(convert::order(&OrderView::from(detail))),
                })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// One timeline entry as the proto shows it.
fn history_entry(entry: HistoryEntry) -> pb::OrderHistoryEntry {
    let occurred_at = Some(convert::timestamp(entry.occurred_at()));
    let entry = match entry {
        HistoryEntry::Event(event) => pb::order_history_entry::Entry::Event(pb::OrderEvent {
            event_id: event.event_id.to_string(),
            version: i64::try_from(event.version).unwrap_or(i64::MAX),
            event_type: event.event_type,
            schema_version: event.schema_version,
            global_position: event.global_position,
            payload: serde_json::from_value(event.payload).ok(),
        }),
        HistoryEntry::Attempt(attempt) => {
            let end = attempt.end.as_ref();
            pb::order_history_entry::Entry::StepAttempt(pb::SagaStepAttempt {
                step: attempt.step.name().to_string(),
                attempt: i32::try_from(attempt.attempt).unwrap_or(i32::MAX),
                outcome: match end.map(|e| e.outcome) {
                    Some(AttemptOutcome::Succeeded) => "succeeded",
                    Some(AttemptOutcome::Refused) => "refused",
                    Some(AttemptOutcome::Transient) => "transient_error",
                    // Sent, no answer recorded (in flight, or lost in a crash).
                    None => "in_flight",
                }
                .to_string(),
                grpc_code: end.and_then(|e| e.grpc_code.clone()).unwrap_or_default(),
                latency_ms: end.map_or(0, |e| e.latency_ms),
                trace_id: end.and_then(|e| e.trace_id.clone()).unwrap_or_default(),
                error: end.and_then(|e| e.error.clone()).unwrap_or_default(),
            })
        }
    };
    pb::OrderHistoryEntry {
        occurred_at,
        entry: Some(entry),
    }
}
