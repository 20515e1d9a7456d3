//! The order's commands: imperative requests that the aggregate accepts
//! (emitting events) or refuses (with an [`super::OrderError`]).

use uuid::Uuid;

use super::event::PersonalData;
use crate::domain::{cart::CartItem, money::Currency, reason::ErrorReason};

/// Places an order from a cart snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    /// The new order's id.
    pub order_id: Uuid,
    /// The customer placing it: the only one (besides an admin) who may read or cancel the
    /// order.
    pub customer_id: String,
    /// The cart the lines come from; it is converted (frozen) when the order is created.
    pub cart_id: Uuid,
    /// The cart's lines (their prices become the snapshot).
    pub items: Vec<CartItem>,
    /// Currency of every line; a line priced in another one is refused.
    pub currency: Currency,
    /// Address and payment method, validated.
    pub personal: PersonalData,
    /// The saga that will drive it, if orchestration is on.
    pub saga_id: Option<Uuid>,
}

/// Every command of the Order aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// See [`PlaceOrder`] (boxed: much larger than the others).
    Place(Box<PlaceOrder>),
    /// Record the payment authorization.
    MarkPaymentAuthorized {
        /// Id the payment provider gave the hold; capture and void name it.
        authorization_id: String,
    },
    /// Record the stock reservation.
    MarkInventoryReserved {
        /// Id the inventory service gave the reservation; the release compensation names it.
        reservation_id: String,
    },
    /// Record the shipment the shipping service created.
    MarkShippingArranged {
        /// Id the shipping service gave the shipment; the cancel compensation names it.
        shipment_id: String,
        /// Carrier tracking number, shown to the customer.
        tracking_number: String,
    },
    /// Record the capture (the pivot).
    MarkPaymentCaptured {
        /// Id the payment provider gave the capture (a refund would name it).
        capture_id: String,
    },
    /// Confirm a captured order.
    Confirm,
    /// Ask for cancellation (the saga compensates, then cancels).
    RequestCancellation {
        /// Free text from the caller, kept on the event and shown as the compensation reason.
        reason: String,
        /// The customer id, an admin subject, or "saga" (deadline passed).
        requested_by: String,
    },
    /// Cancel now (the saga after compensating, or directly without a saga).
    Cancel {
        /// Why it is cancelled (the compensation reason, or the customer's), kept on
        /// `OrderCancelled`.
        reason: String,
        /// Why, for programs (see [`ErrorReason`]'s last group).
        code: ErrorReason,
    },
}

impl OrderCommand {
    /// The command's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Place(_) => "PlaceOrder",
            Self::MarkPaymentAuthorized { .. } => "MarkPaymentAuthorized",
            Self::MarkInventoryReserved { .. } => "MarkInventoryReserved",
            Self::MarkShippingArranged { .. } => "MarkShippingArranged",
            Self::MarkPaymentCaptured { .. } => "MarkPaymentCaptured",
            Self::Confirm => "Confirm",
            Self::RequestCancellation { .. } => "RequestCancellation",
            Self::Cancel { .. } => "Cancel",
        }
    }
}
