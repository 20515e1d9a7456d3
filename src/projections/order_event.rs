//! How the projections read an order event: the write side's codec decodes
//! it into the domain [`OrderEvent`] (one definition of the stored shape), and
//! [`project_personal`] is the one place that takes the personal fields.

use crate::{
    domain::order::{OrderCreated, OrderEvent, OrderStatus, PersonalData},
    store::event_store::{OrderCodec, StoredEvent},
};

use super::ProjectionError;

/// The domain event of a stored event; an event that does not decode (an
/// unknown type, a corrupt payload) is poison.
pub fn decode(event: &StoredEvent) -> Result<OrderEvent, ProjectionError> {
    OrderCodec
        .decode(event)
        .map_err(|e| ProjectionError::poison(event, format!("{e:#}")))
}

/// The personal data a read model keeps of an order, as the event gives it.
pub fn project_personal(created: &OrderCreated) -> PersonalData {
    created.personal.clone()
}

/// Every status, in lifecycle order.
pub const STATUSES: [OrderStatus; 6] = [
    OrderStatus::Pending,
    OrderStatus::PaymentAuthorized,
    OrderStatus::InventoryReserved,
    OrderStatus::ShippingArranged,
    OrderStatus::Confirmed,
    OrderStatus::Cancelled,
];

/// Parses a stored status name (`OrderStatus::as_str`).
pub fn parse_status(name: &str) -> Option<OrderStatus> {
    STATUSES.into_iter().find(|status| status.as_str() == name)
/// Personal data of an order, as the event carries it (the security work
/// encrypts it per customer; the read model keeps what the event gives).
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PersonalFields {
    /// Payment method reference.
    pub payment_method: String,
    /// Shipping address, as a JSON object.
    pub shipping_address: serde_json::Value,
}

crate::redacted_debug!(PersonalFields);

/// The payload of `OrderCreated`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderCreated {
    /// The ordering customer.
    pub customer_id: String,
    /// The converted cart.
    #[serde(default)]
    pub cart_id: String,
    /// Lines.
    pub items: Vec<OrderLine>,
    /// ISO 4217 currency.
    pub currency: String,
    /// Sum of line totals.
    pub total: Decimal,
    /// Personal data (see [`personal_fields`]).
    #[serde(default)]
    pub personal: serde_json::Value,
}

/// An order event, as far as the projections care.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderFact {
    /// The order exists.
    Created(Box<OrderCreated>),
    /// The status moved forward to this one.
    Advanced(OrderStatus),
    /// The order was cancelled.
    Cancelled {
        /// Why.
        reason: String,
    },
    /// An event that changes nothing the read models show (e.g.
    /// `PaymentCaptured`, `CancellationRequested`, or a type added later).
    Other,
}

#[derive(Deserialize)]
struct Reason {
    #[serde(default)]
    reason: String,
}

impl OrderFact {
    /// Reads `event`; a payload that does not fit its type is poison.
    pub fn parse(event: &EventEnvelope) -> Result<Self, ProjectionError> {
        let poison = |e: serde_json::Error| ProjectionError::poison(event, format!("bad payload: {e}"));
        Ok(match event.event_type.as_str() {
            "OrderCreated" => Self::Created(Box::new(
                serde_json::from_value(event.payload.clone()).map_err(poison)?,
            )),
            "PaymentAuthorized" => Self::Advanced(OrderStatus::PaymentAuthorized),
            "InventoryReserved" => Self::Advanced(OrderStatus::InventoryReserved),
            "ShippingArranged" => Self::Advanced(OrderStatus::ShippingArranged),
            "OrderConfirmed" => Self::Advanced(OrderStatus::Confirmed),
            "OrderCancelled" => {
                let Reason { reason } = serde_json::from_value(event.payload.clone()).map_err(poison)?;
                Self::Cancelled { reason }
            }
            _ => Self::Other,
        })
    }
}

/// The one place that reads personal fields out of an `OrderCreated`
/// payload's `personal` object.
pub fn personal_fields(personal: &serde_json::Value) -> PersonalFields {
    PersonalFields {
        payment_method: personal
            .get("payment_method")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
        shipping_address: personal
            .get("shipping_address")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({})),
    }
}
