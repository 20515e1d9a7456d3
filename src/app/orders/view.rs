//! [`OrderView`]: an order as the write side sees it (the fold of its
//! events), the shape both transports answer with.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    money::{Currency, Money},
    order::{Order, OrderLine, OrderStatus, ShippingAddress},
    reason::ErrorReason,
};

/// An order, flattened for replies. `Debug` leaves out the personal fields.
#[derive(Clone, PartialEq, Eq)]
pub struct OrderView {
    /// Also the id of the order's event stream.
    pub order_id: Uuid,
    /// The `sub` of the token that placed the order.
    pub customer_id: String,
    /// The cart it was created from.
    pub cart_id: Uuid,
    /// As of `version`.
    pub status: OrderStatus,
    /// Lines with price snapshot.
    pub items: Vec<OrderLine>,
    /// The cart's currency; every line and the total are in it.
    pub currency: Currency,
    /// Sum of the line totals.
    pub total: Money,
    /// The payment service's reference; "[erased]" once the customer is
    /// forgotten.
    pub payment_method: String,
    /// "[erased]" fields once the customer is forgotten.
    pub shipping_address: ShippingAddress,
    /// Why it was cancelled, once CANCELLED.
    pub cancellation_reason: Option<String>,
    /// The same as a code, once CANCELLED.
    pub cancellation_reason_code: Option<ErrorReason>,
    /// The reason of the first accepted cancellation request, while the saga compensates and
    /// after the order ends (None when nobody asked, or the order was cancelled at once,
    /// without a saga). The read models keep it too ([`OrderSummary`]).
    ///
    /// [`OrderSummary`]: crate::store::read_models::OrderSummary
    pub cancellation_requested: Option<String>,
    /// Stream version this view reflects.
    pub version: u64,
    /// When the first event was recorded.
    pub created_at: DateTime<Utc>,
    /// When the last event was recorded.
    pub updated_at: DateTime<Utc>,
    /// The fulfillment saga, if one drives the order.
    pub saga_id: Option<Uuid>,
    /// Sum of the quantities.
    pub item_count: u32,
}

impl OrderView {
    /// The view of a placed order; None for an empty (never placed) state.
    pub fn from_order(order: &Order, created_at: DateTime<Utc>, updated_at: DateTime<Utc>) -> Option<Self> {
        let placed = order.placed.as_ref()?;
        Some(Self {
            order_id: placed.order_id,
            customer_id: placed.customer_id.clone(),
            cart_id: placed.cart_id,
            status: order.status,
            items: placed.items.clone(),
            currency: placed.currency,
            total: placed.total,
            payment_method: placed.personal.payment_method.clone(),
            shipping_address: placed.personal.shipping_address.clone(),
            cancellation_reason: order.cancellation_reason.clone(),
            cancellation_reason_code: order.cancellation_reason_code,
            cancellation_requested: order.cancellation_requested.as_ref().map(|r| r.reason.clone()),
            version: order.version,
            created_at,
            updated_at,
            saga_id: placed.saga_id,
            item_count: order.item_count(),
        })
    }
}

impl std::fmt::Debug for OrderView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderView")
            .field("order_id", &self.order_id)
            .field("customer_id", &self.customer_id)
            .field("status", &self.status)
            .field("total", &self.total)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}
