//! The order's events: past-tense facts, serialisable (the store's codec turns
//! them into JSON with a type name and a schema version).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    money::{Currency, Money},
    reason::ErrorReason,
};

/// A postal address, validated by the application layer. Personal data:
/// `Debug` prints no field.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingAddress {
    /// Full name of the recipient.
    pub recipient_name: String,
    /// First address line: street and house number, never empty.
    pub line1: String,
    /// Apartment, suite, etc. (may be empty).
    #[serde(default)]
    pub line2: String,
    /// City or town, never empty.
    pub city: String,
    /// State, province or region (may be empty).
    #[serde(default)]
    pub region: String,
    /// Postal code as the customer wrote it (its format varies by country).
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code, upper case.
    pub country: String,
}

/// The personal data of an order, kept together so that the codec can
/// encrypt it with the customer's key (crypto-shredding erases it by
/// destroying that key, while the rest of the event stays readable).
/// `Debug` prints no field.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalData {
    /// Where the shipping step sends the goods.
    pub shipping_address: ShippingAddress,
    /// Payment method reference from the provider (never card data).
    pub payment_method: String,
}

crate::redacted_debug!(ShippingAddress, PersonalData);

/// One line of an order with the price snapshotted from the cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The catalogue product id, as it was in the cart.
    pub product_id: String,
    /// Display name at order time.
    pub product_name: String,
    /// Units, at least 1.
    pub quantity: u32,
    /// Price of one unit at order time.
    pub unit_price: Money,
    /// `quantity x unit_price`, stored so a reader never recomputes it with other rounding.
    pub line_total: Money,
}

/// The order was placed from a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// The order (= stream) id.
    pub order_id: Uuid,
    /// The customer who placed the order (the token subject).
    pub customer_id: String,
    /// The cart it was created from.
    pub cart_id: Uuid,
    /// Lines with price snapshot.
    pub items: Vec<OrderLine>,
    /// Currency of every amount.
    pub currency: Currency,
    /// Sum of the line totals.
    pub total: Money,
    /// Address and payment method.
    pub personal: PersonalData,
    /// The fulfillment saga started with the order (None when orchestration is off).
    #[serde(default)]
    pub saga_id: Option<Uuid>,
}

/// The payment provider authorized the amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    /// The provider's authorization id.
    pub authorization_id: String,
}

/// The inventory service reserved the stock of every line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReserved {
    /// The inventory service's reservation id.
    pub reservation_id: String,
}

/// A shipment was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingArranged {
    /// The shipping service's shipment id.
    pub shipment_id: String,
    /// Carrier tracking number, shown to the customer from here on.
    pub tracking_number: String,
}

/// The authorized payment was captured: the pivot, no cancellation after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    /// The provider's capture id.
    pub capture_id: String,
}

/// The order is fulfilled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {}

/// Someone asked to cancel; the saga compensates, then cancels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancellationRequested {
    /// Free text given with the request, shown in the order history.
    pub reason: String,
    /// Who asked (a customer id, an admin, "saga").
    pub requested_by: String,
}

/// The order is cancelled. Schema v2 added `reason_code` (v1 events are
/// upcast by the store's codec, which reads the code from the v1 text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// Why it was cancelled: a refusal, the deadline, or the customer's reason.
    pub reason: String,
    /// Why, for programs: which refusal, request or timeout ended the order.
    pub reason_code: ErrorReason,
}

/// Every event of an order stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    /// See [`OrderCreated`] (boxed: much larger than the others).
    Created(Box<OrderCreated>),
    /// The saga's first step held the amount ([`PaymentAuthorized`]).
    PaymentAuthorized(PaymentAuthorized),
    /// Stock is held for the order ([`InventoryReserved`]).
    InventoryReserved(InventoryReserved),
    /// A shipment exists ([`ShippingArranged`]).
    ShippingArranged(ShippingArranged),
    /// The pivot: money taken, no cancellation after it ([`PaymentCaptured`]).
    PaymentCaptured(PaymentCaptured),
    /// The order is fulfilled: terminal ([`OrderConfirmed`]).
    Confirmed(OrderConfirmed),
    /// Someone asked to cancel; the saga compensates ([`CancellationRequested`]).
    CancellationRequested(CancellationRequested),
    /// The order is cancelled: terminal ([`OrderCancelled`]).
    Cancelled(OrderCancelled),
}

impl OrderEvent {
    /// The stored type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Created(_) => "OrderCreated",
            Self::PaymentAuthorized(_) => "PaymentAuthorized",
            Self::InventoryReserved(_) => "InventoryReserved",
            Self::ShippingArranged(_) => "ShippingArranged",
            Self::PaymentCaptured(_) => "PaymentCaptured",
            Self::Confirmed(_) => "OrderConfirmed",
            Self::CancellationRequested(_) => "CancellationRequested",
            Self::Cancelled(_) => "OrderCancelled",
        }
    }
}
