//! The sibling stubs: payment, inventory and shipping over real gRPC, served
//! by `commerce stubs` or embedded in `serve` on a loopback port. Each applies
//! an idempotency key once, keeps a ledger readable over gRPC, and injects
//! faults from the configuration and from magic inputs (see the README).

pub mod faults;
pub mod inventory;
pub mod ledger;
pub mod payment;
pub mod shipping;

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;

use crate::{
    config::StubSettings,
    proto::{
        inventory::v1::inventory_service_server::InventoryServiceServer,
        payment::v1::payment_service_server::PaymentServiceServer,
        shipping::v1::shipping_service_server::ShippingServiceServer,
    },
    wire::compressed_server,
};

/// The services of the stubs port, fully qualified (for health and reflection).
pub const STUB_SERVICE_NAMES: &[&str] = &[
    "payment.v1.PaymentService",
    "inventory.v1.InventoryService",
    "shipping.v1.ShippingService",
];

/// The three stubs of one process, sharing one fault injector.
#[derive(Clone)]
pub struct Stubs {
    pub payment: payment::PaymentStub,
    pub inventory: inventory::InventoryStub,
    pub shipping: shipping::ShippingStub,
}

impl Stubs {
    /// Stubs with the configured faults and default stock.
    pub fn from_settings(settings: &StubSettings) -> Self {
        let faults = Arc::new(faults::Faults::from_settings(settings));
        Self {
            payment: payment::PaymentStub::new(faults.clone()),
            inventory: inventory::InventoryStub::new(faults.clone(), settings.default_stock),
            shipping: shipping::ShippingStub::new(faults),
        }
    }
}

/// Serves the three stubs (plus health and reflection) on `listener` until
/// `shutdown` resolves.
pub async fn serve_stubs(
    listener: TcpListener,
    stubs: Stubs,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in STUB_SERVICE_NAMES {
        reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let (reflection_v1, reflection_v1alpha) = crate::wire::reflection(STUB_SERVICE_NAMES)?;
    tonic::transport::Server::builder()
        // Each call's span joins the caller's trace (W3C `traceparent` in the metadata).
        // tower-http logs every non-OK gRPC code at ERROR; a stub's refusals (a declined card,
        // out of stock) and its injected UNAVAILABLE answers are the outcomes it exists for.
        .layer(
            tower_http::trace::TraceLayer::new_for_grpc()
                .make_span_with(crate::telemetry::request_span)
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .add_service(compressed_server!(health, true))
        .add_service(compressed_server!(reflection_v1, true))
        .add_service(compressed_server!(reflection_v1alpha, true))
        .add_service(compressed_server!(PaymentServiceServer::new(stubs.payment), true))
        .add_service(compressed_server!(
            InventoryServiceServer::new(stubs.inventory),
            true
        ))
        .add_service(compressed_server!(
            ShippingServiceServer::new(stubs.shipping),
            true
        ))
        .serve_with_incoming_shutdown(crate::transport::incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// Stubs running inside `serve` on a loopback port, reached over real gRPC
/// like remote siblings.
pub struct EmbeddedStubs {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: crate::shutdown::ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

impl EmbeddedStubs {
    /// Binds a loopback port and starts serving.
    pub async fn start(settings: &StubSettings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = crate::shutdown::channel();
        let stubs = Stubs::from_settings(settings);
        let task = tokio::spawn(async move {
            if let Err(e) = serve_stubs(listener, stubs, async move { stopped.wait().await }).await {
                tracing::error!(error = format!("{e:#}"), "embedded stubs stopped");
            }
        });
        tracing::info!(%url, "embedded sibling stubs serving");
        Ok(Self { url, stop, task })
    }

    /// Stops serving (after the saga workers, which call them, have stopped).
    pub async fn stop(self) {
        self.stop.trigger();
        let _ = self.task.await;
    }
}
