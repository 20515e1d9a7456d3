//! What the projections read out of an order event: the payload of each event
//! type, parsed leniently (fields a projection does not use are ignored, an
//! event type it does not know only advances the stream's version).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::ProjectionError;
use crate::bus::EventEnvelope;

/// Status of an order as the read models keep it (the names of the proto's
/// `OrderStatus` without prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Created; fulfillment running.
    Pending,
    /// Payment authorized.
    PaymentAuthorized,
    /// Stock reserved.
    InventoryReserved,
    /// Shipment created.
    ShippingArranged,
    /// Captured and confirmed. Terminal.
    Confirmed,
    /// Cancelled. Terminal.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::PaymentAuthorized,
        Self::InventoryReserved,
        Self::ShippingArranged,
        Self::Confirmed,
        Self::Cancelled,
    ];

    /// The stored form, e.g. `PAYMENT_AUTHORIZED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::PaymentAuthorized => "PAYMENT_AUTHORIZED",
            Self::InventoryReserved => "INVENTORY_RESERVED",
            Self::ShippingArranged => "SHIPPING_ARRANGED",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// True for CONFIRMED and CANCELLED: nothing changes afterwards.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Confirmed | Self::Cancelled)
    }
}

/// One line of an order, with the price snapshot taken at order time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Product id.
    pub product_id: String,
    /// Display name at order time.
    pub product_name: String,
    /// Quantity.
    pub quantity: i32,
    /// Unit price.
    pub unit_price: Decimal,
    /// quantity x unit_price.
    pub line_total: Decimal,
}

/// Personal data of an order, as the event carries it (the security work
/// encrypts it per customer; the read model keeps what the event gives).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PersonalFields {
    /// Payment method reference.
    pub payment_method: String,
    /// Shipping address, as a JSON object.
    pub shipping_address: serde_json::Value,
}

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
