//! What the engine drives, behind traits: the sibling services and the order.
//! The tonic implementation of [`Siblings`] lives in [`super::grpc_siblings`];
//! a simulation can plug in its own, with seeded faults.

use async_trait::async_trait;
use uuid::Uuid;

/// How a failed call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A business "no" (FAILED_PRECONDITION, INVALID_ARGUMENT, NOT_FOUND,
    /// OUT_OF_RANGE): the call had no effect and retrying will not change it.
    Refused,
    /// Anything that may pass (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED,
    /// RESOURCE_EXHAUSTED, UNKNOWN, INTERNAL, a connect error...).
    Transient,
}

/// A call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CallError {
    /// Refused or transient.
    pub kind: FailureKind,
    /// gRPC code name (e.g. `UNAVAILABLE`), or `LOCAL` for the order itself.
    pub code: String,
    /// What the callee said.
    pub message: String,
}

impl CallError {
    /// A refusal.
    pub fn refused(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Refused,
            code: code.into(),
            message: message.into(),
        }
    }

    /// A transient failure.
    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Transient,
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Where to ship (`Debug` prints no field).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ShippingAddress {
    /// Recipient.
    pub recipient_name: String,
    /// Street and number.
    pub line1: String,
    /// Apartment, suite.
    pub line2: String,
    /// City.
    pub city: String,
    /// Region.
    pub region: String,
    /// Postal code.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

crate::redacted_debug!(ShippingAddress);

/// What the steps need to know about the order (folded from its events).
/// `Debug` leaves out the payment method and the address.
#[derive(Clone, PartialEq, Eq)]
pub struct OrderFacts {
    /// The order.
    pub order_id: Uuid,
    /// Total, decimal string.
    pub total: String,
    /// ISO 4217.
    pub currency: String,
    /// Payment method reference.
    pub payment_method: String,
    /// (product id, quantity) per line.
    pub lines: Vec<(String, i32)>,
    /// Where to ship.
    pub address: ShippingAddress,
    /// W3C `traceparent` of the request that placed the order, when known:
    /// the saga's spans continue that trace.
    pub traceparent: Option<String>,
}

impl std::fmt::Debug for OrderFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderFacts")
            .field("order_id", &self.order_id)
            .field("total", &self.total)
            .field("currency", &self.currency)
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl OrderFacts {
    /// Items to ship.
    pub fn item_count(&self) -> i32 {
        self.lines.iter().map(|(_, q)| *q).fold(0, i32::saturating_add)
    }
}

/// The three siblings. Every mutating call carries its idempotency key; the
/// implementation adds the deadline and the trace context.
#[async_trait]
pub trait Siblings: Send + Sync {
    /// Holds the order's total; the authorization id.
    async fn authorize(&self, key: &str, order: &OrderFacts) -> Result<String, CallError>;
    /// Captures an authorization; the capture id.
    async fn capture(&self, key: &str, authorization_id: &str) -> Result<String, CallError>;
    /// Voids an authorization.
    async fn void(&self, key: &str, authorization_id: &str) -> Result<(), CallError>;
    /// Reserves every line; the reservation id.
    async fn reserve(&self, key: &str, order: &OrderFacts) -> Result<String, CallError>;
    /// Releases a reservation.
    async fn release(&self, key: &str, reservation_id: &str) -> Result<(), CallError>;
    /// Creates the shipment; (shipment id, tracking number).
    async fn create_shipment(&self, key: &str, order: &OrderFacts) -> Result<(String, String), CallError>;
    /// Cancels a shipment.
    async fn cancel_shipment(&self, key: &str, shipment_id: &str) -> Result<(), CallError>;
}

/// What the saga tells the order (commands of the Order aggregate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Payment authorized.
    MarkPaymentAuthorized {
        /// From the payment service.
        authorization_id: String,
    },
    /// Stock reserved.
    MarkInventoryReserved {
        /// From the inventory service.
        reservation_id: String,
    },
    /// Shipment created.
    MarkShippingArranged {
        /// From the shipping service.
        shipment_id: String,
        /// Carrier tracking number.
        tracking_number: String,
    },
    /// Payment captured.
    MarkPaymentCaptured {
        /// From the payment service.
        capture_id: String,
    },
    /// Fulfilled.
    Confirm,
    /// Compensated.
    Cancel {
        /// Why.
        reason: String,
    },
}

/// The order, as the saga sees it.
#[async_trait]
pub trait OrderPort: Send + Sync {
    /// The facts the steps need. Build them from `OrderApp::load_until`,
    /// which opens the sealed personal data (address, payment method); a raw
    /// stored payload only holds it encrypted (see `crate::privacy`).
    async fn facts(&self, order_id: Uuid) -> Result<OrderFacts, CallError>;

    /// Applies a command. Idempotent: a command whose effect the order already
    /// shows succeeds without a new event (a resumed step re-applies it).
    async fn apply(&self, order_id: Uuid, command: OrderCommand) -> Result<(), CallError>;

    /// The W3C `traceparent` of the request that placed the order, so that the
    /// saga's spans (and the sibling calls under them) join that request's
    /// trace. Best effort: None when unknown (default).
    async fn traceparent(&self, _order_id: Uuid) -> Option<String> {
        None
    }
}
