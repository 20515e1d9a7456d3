//! The order's commands: imperative requests that the aggregate accepts
//! (emitting events) or refuses (with an [`super::OrderError`]).

use uuid::Uuid;

use super::event::PersonalData;
use crate::domain::{cart::CartItem, money::Currency};

/// Places an order from a cart snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    /// The new order's id.
    pub order_id: Uuid,
    /// Owner.
    pub customer_id: String,
    /// The cart ordered.
    pub cart_id: Uuid,
    /// The cart's lines (their prices become the snapshot).
    pub items: Vec<CartItem>,
    /// The cart's currency.
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
        /// Provider's authorization id.
        authorization_id: String,
    },
    /// Record the stock reservation.
    MarkInventoryReserved {
        /// Reservation id.
        reservation_id: String,
    },
    /// Record the shipment.
    MarkShippingArranged {
        /// Shipment id.
        shipment_id: String,
        /// Tracking number.
        tracking_number: String,
    },
    /// Record the capture (the pivot).
    MarkPaymentCaptured {
        /// Capture id.
        capture_id: String,
    },
    /// Confirm a captured order.
    Confirm,
    /// Ask for cancellation (the saga compensates, then cancels).
    RequestCancellation {
        /// Why.
        reason: String,
        /// Who asks.
        requested_by: String,
    },
    /// Cancel now (the saga after compensating, or directly without a saga).
    Cancel {
        /// Why.
        reason: String,
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
