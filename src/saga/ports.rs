//! What the engine drives, behind traits: the sibling services, the order,
//! and the stores it records its progress in. The tonic implementation of
//! [`Siblings`] lives in [`super::grpc_siblings`]; a simulation can plug in
//! its own, with seeded faults.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::order::{Order, OrderCommand, ShippingAddress};
use crate::store::{event_store::StreamAppend, saga::SagaStore, unit_of_work::UnitOfWorkCommitter};

/// Everything the saga runtime reads and writes through.
#[derive(Clone)]
pub struct SagaPorts {
    /// Reads and claims sagas.
    pub store: Arc<dyn SagaStore>,
    /// Commits each step's progress with its order events (and operator
    /// actions with their audit events), one transaction each.
    pub units: Arc<dyn UnitOfWorkCommitter>,
    /// The payment, inventory and shipping services.
    pub siblings: Arc<dyn Siblings>,
    /// The order, as the saga sees it.
    pub orders: Arc<dyn OrderPort>,
}

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
    /// Decides whether the saga retries the call or gives up on the step.
    pub kind: FailureKind,
    /// gRPC code name (e.g. `UNAVAILABLE`), or `LOCAL` for the order itself.
    pub code: String,
    /// What the callee said.
    pub message: String,
}

impl CallError {
    /// A business refusal: the step fails without retries.
    pub fn refused(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Refused,
            code: code.into(),
            message: message.into(),
        }
    }

    /// A failure worth retrying with backoff.
    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Transient,
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What the steps need to know about the order (folded from its events).
/// `Debug` leaves out the payment method and the address.
#[derive(Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub order_id: Uuid,
    /// Decimal string, as the payment service takes it (no float on the wire).
    pub total: String,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    /// The payment service's reference (e.g. `pm_card_visa`), opened from
    /// the sealed personal data.
    pub payment_method: String,
    /// (product id, quantity) per line.
    pub lines: Vec<(String, i32)>,
    /// Opened from the sealed personal data.
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
    /// The facts of a placed order (its personal data opened), with the
    /// trace of the request that placed it; `None` until it is placed.
    pub fn of_order(order_id: Uuid, order: &Order, traceparent: Option<String>) -> Option<Self> {
        let placed = order.placed.as_ref()?;
        Some(Self {
            order_id,
            total: placed.total.to_string(),
            currency: placed.currency.code().to_string(),
            payment_method: placed.personal.payment_method.clone(),
            lines: placed
                .items
                .iter()
                .map(|line| {
                    (
                        line.product_id.clone(),
                        i32::try_from(line.quantity).unwrap_or(i32::MAX),
                    )
                })
                .collect(),
            address: placed.personal.shipping_address.clone(),
            traceparent,
        })
    }

    /// Units over all lines, as CreateShipment's `item_count` (saturating).
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
    /// Voids an authorization (compensation: no money moves).
    async fn void(&self, key: &str, authorization_id: &str) -> Result<(), CallError>;
    /// Reserves every line; the reservation id.
    async fn reserve(&self, key: &str, order: &OrderFacts) -> Result<String, CallError>;
    /// Releases a reservation (compensation: the stock is available again).
    async fn release(&self, key: &str, reservation_id: &str) -> Result<(), CallError>;
    /// Creates the shipment; (shipment id, tracking number).
    async fn create_shipment(&self, key: &str, order: &OrderFacts) -> Result<(String, String), CallError>;
    /// Cancels a shipment (compensation).
    async fn cancel_shipment(&self, key: &str, shipment_id: &str) -> Result<(), CallError>;
}

/// A saga command decided on the order but not yet written: the order's new
/// events, committed in the unit of work that records the step's outcome, so
/// that a step costs one transaction. If the order moved before that commit,
/// the command is decided again.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderChange {
    /// The commands, to decide again on a moved order.
    pub commands: Vec<OrderCommand>,
    /// The events at the order's version when decided.
    pub append: StreamAppend,
    /// Each status the events lead the order to, in turn (counted in the
    /// status-transition metric once committed).
    pub statuses_after: Vec<&'static str>,
    /// The order with the events applied: the basis of the drive's next
    /// decision once they are committed.
    pub after: Order,
}

/// The order, as the saga sees it.
#[async_trait]
pub trait OrderPort: Send + Sync {
    /// The facts the steps need. Build them from `OrderApp::load_until`,
    /// which opens the sealed personal data (address, payment method); a raw
    /// stored payload only holds it encrypted (see `crate::privacy`).
    async fn facts(&self, order_id: Uuid) -> Result<OrderFacts, CallError>;

    /// Decides `commands`, in turn, on `basis` (the order as this drive
    /// last committed it: no read) or else on the order as stored, writing
    /// nothing: the change to commit with the step (all their events, one
    /// append at the basis's version), or `None` when the order already
    /// shows their effect (a resumed step decides it again). A refusal of any
    /// is an error, as the sibling's would be. A basis that is stale (the
    /// customer asked to cancel since) makes the commit conflict, and the
    /// engine decides again on the order as stored. More than one command: a
    /// local step (ConfirmOrder) decided on top of the previous step's change,
    /// not yet committed, so that both commit in one unit of work.
    async fn decide(
        &self,
        order_id: Uuid,
        basis: Option<Order>,
        commands: Vec<OrderCommand>,
    ) -> Result<Option<OrderChange>, CallError>;

    /// The W3C `traceparent` of the request that placed the order, so that the
    /// saga's spans (and the sibling calls under them) join that request's
    /// trace. Best effort: None when unknown (default).
    async fn traceparent(&self, _order_id: Uuid) -> Option<String> {
        None
    }
}
