//! [`Siblings`] over gRPC: one lazily connected channel per sibling, a
//! deadline on every call, the idempotency key in the body (and in the
//! `idempotency-key` metadata, for proxies and logs) and the W3C trace context.
//! Requests go gzip-compressed; compressed answers are accepted.

use std::time::Duration;

use async_trait::async_trait;
use tonic::{Code, Request, Status, transport::Channel};

use super::ports::{CallError, OrderFacts, Siblings};
use crate::{
    metrics::grpc_code_name,
    proto::{
        inventory::v1::{
            ReleaseRequest, ReserveRequest, StockLine, inventory_service_client::InventoryServiceClient,
        },
        payment::v1::{
            AuthorizeRequest, CaptureRequest, VoidRequest, payment_service_client::PaymentServiceClient,
        },
        shipping::v1::{
            CancelShipmentRequest, CreateShipmentRequest, Destination,
            shipping_service_client::ShippingServiceClient,
        },
    },
    telemetry::inject_trace_context,
    wire::compressed_client,
};

/// Where the siblings are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiblingUrls {
    /// payment.v1.PaymentService.
    pub payment: String,
    /// inventory.v1.InventoryService.
    pub inventory: String,
    /// shipping.v1.ShippingService.
    pub shipping: String,
}

/// The siblings over gRPC.
#[derive(Clone)]
pub struct GrpcSiblings {
    payment: PaymentServiceClient<Channel>,
    inventory: InventoryServiceClient<Channel>,
    shipping: ShippingServiceClient<Channel>,
    timeout: Duration,
}

fn channel(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(url.to_string())
        .map_err(|e| anyhow::anyhow!("sibling URL {url:?}: {e}"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy())
}

impl GrpcSiblings {
    /// Clients of `urls`; connections open on first use (a sibling that is
    /// down at start only makes its calls fail transiently).
    pub fn new(urls: &SiblingUrls, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            payment: compressed_client!(PaymentServiceClient::new(channel(&urls.payment, timeout)?)),
            inventory: compressed_client!(InventoryServiceClient::new(channel(&urls.inventory, timeout)?)),
            shipping: compressed_client!(ShippingServiceClient::new(channel(&urls.shipping, timeout)?)),
            timeout,
        })
    }

    /// A request with the deadline, the key and the current trace context.
    fn request<T>(&self, key: &str, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        if let Ok(value) = key.parse() {
            request.metadata_mut().insert("idempotency-key", value);
        }
        inject_trace_context(request.metadata_mut());
        request
    }
}

/// A business refusal only for the codes that mean "no, and it will stay no";
/// everything else (including auth and config problems) is retried and then
/// left FAILED for an operator rather than cancelling the customer's order.
pub fn classify(status: &Status) -> CallError {
    let code = grpc_code_name(status.code());
    match status.code() {
        Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound | Code::OutOfRange => {
            CallError::refused(code, status.message())
        }
        _ => CallError::transient(code, status.message()),
    }
}

#[async_trait]
impl Siblings for GrpcSiblings {
    async fn authorize(&self, key: &str, order: &OrderFacts) -> Result<String, CallError> {
        let request = self.request(
            key,
            AuthorizeRequest {
                idempotency_key: key.to_string(),
                order_id: order.order_id.to_string(),
                amount: order.total.clone(),
                currency: order.currency.clone(),
                payment_method: order.payment_method.clone(),
            },
        );
        let response = self
            .payment
            .clone()
            .authorize(request)
            .await
            .map_err(|s| classify(&s))?;
        Ok(response.into_inner().authorization_id)
    }

    async fn capture(&self, key: &str, authorization_id: &str) -> Result<String, CallError> {
        let request = self.request(
            key,
            CaptureRequest {
                idempotency_key: key.to_string(),
                authorization_id: authorization_id.to_string(),
            },
        );
        let response = self
            .payment
            .clone()
            .capture(request)
            .await
            .map_err(|s| classify(&s))?;
        Ok(response.into_inner().capture_id)
    }

    async fn void(&self, key: &str, authorization_id: &str) -> Result<(), CallError> {
        let request = self.request(
            key,
            VoidRequest {
                idempotency_key: key.to_string(),
                authorization_id: authorization_id.to_string(),
            },
        );
        self.payment
            .clone()
            .void(request)
            .await
            .map_err(|s| classify(&s))?;
        Ok(())
    }

    async fn reserve(&self, key: &str, order: &OrderFacts) -> Result<String, CallError> {
        let request = self.request(
            key,
            ReserveRequest {
                idempotency_key: key.to_string(),
                order_id: order.order_id.to_string(),
                lines: order
                    .lines
                    .iter()
                    .map(|(product_id, quantity)| StockLine {
                        product_id: product_id.clone(),
                        quantity: *quantity,
                    })
                    .collect(),
            },
        );
        let response = self
            .inventory
            .clone()
            .reserve(request)
            .await
            .map_err(|s| classify(&s))?;
        Ok(response.into_inner().reservation_id)
    }

    async fn release(&self, key: &str, reservation_id: &str) -> Result<(), CallError> {
        let request = self.request(
            key,
            ReleaseRequest {
                idempotency_key: key.to_string(),
                reservation_id: reservation_id.to_string(),
            },
        );
        self.inventory
            .clone()
            .release(request)
            .await
            .map_err(|s| classify(&s))?;
        Ok(())
    }

    async fn create_shipment(&self, key: &str, order: &OrderFacts) -> Result<(String, String), CallError> {
        let a = &order.address;
        let request = self.request(
            key,
            CreateShipmentRequest {
                idempotency_key: key.to_string(),
                order_id: order.order_id.to_string(),
                destination: Some(Destination {
                    recipient_name: a.recipient_name.clone(),
                    line1: a.line1.clone(),
                    line2: a.line2.clone(),
                    city: a.city.clone(),
                    region: a.region.clone(),
                    postal_code: a.postal_code.clone(),
                    country: a.country.clone(),
                }),
                item_count: order.item_count(),
            },
        );
        let response = self
            .shipping
            .clone()
            .create_shipment(request)
            .await
            .map_err(|s| classify(&s))?;
        let response = response.into_inner();
        Ok((response.shipment_id, response.tracking_number))
    }

    async fn cancel_shipment(&self, key: &str, shipment_id: &str) -> Result<(), CallError> {
        let request = self.request(
            key,
            CancelShipmentRequest {
                idempotency_key: key.to_string(),
                shipment_id: shipment_id.to_string(),
            },
        );
        self.shipping
            .clone()
            .cancel_shipment(request)
            .await
            .map_err(|s| classify(&s))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lasting_refusals_compensate() {
        for code in [Code::FailedPrecondition, Code::InvalidArgument, Code::NotFound] {
            assert_eq!(
                classify(&Status::new(code, "no")).kind,
                super::super::ports::FailureKind::Refused
            );
        }
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::ResourceExhausted,
            Code::Unknown,
            Code::Internal,
            Code::Unauthenticated,
        ] {
            let err = classify(&Status::new(code, "later"));
            assert_eq!(err.kind, super::super::ports::FailureKind::Transient, "{code:?}");
            assert_eq!(err.code, grpc_code_name(code));
        }
    }
}
