//! The rows of the read-model tables, as the store reads and writes them.
//!
//! They live here, in the storage layer, so that the store maps columns without
//! knowing how a row is computed: [`crate::projections`] folds events into these
//! types, and the queries read them back.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{
    money::{Currency, Money},
    order::{OrderLine, OrderStatus, PersonalData},
    reason::ErrorReason,
};

/// A row of a read-model table: one per order stream, carrying the version of the
/// last event folded in (upserts never lower it).
pub trait StoredRow: Sized + Clone + Send + Sync + 'static {
    /// The live table.
    const TABLE: &'static str;

    /// The stream the row was folded from (its primary key, `order_id`).
    fn stream_id(&self) -> Uuid;

    /// The version of the last event folded in.
    fn version(&self) -> u64;
}

/// An order without its personal data: the list row, and the shared part of
/// the detail row.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderSummary {
    /// Order id (= its stream id).
    pub order_id: Uuid,
    /// Owner.
    pub customer_id: String,
    /// The converted cart.
    pub cart_id: Uuid,
    /// The fulfillment saga, when orchestration is on.
    pub saga_id: Option<Uuid>,
    /// Current status.
    pub status: OrderStatus,
    /// Lines with the price snapshot.
    pub items: Vec<OrderLine>,
    /// Currency of every amount.
    pub currency: Currency,
    /// Sum of line totals.
    pub total: Money,
    /// Sum of quantities.
    pub item_count: u32,
    /// Why it was cancelled; empty unless CANCELLED.
    pub cancellation_reason: String,
    /// The same as a code; None unless CANCELLED (and for rows projected
    /// before codes were stored, until `commerce rebuild-projections`).
    pub cancellation_reason_code: Option<ErrorReason>,
    /// The reason of the first accepted cancellation request (`CancellationRequested`);
    /// None when nobody asked, when the order was cancelled without a saga (at once, no
    /// request), and for rows projected before it was stored, until `commerce
    /// rebuild-projections`. Kept once the order ends, CANCELLED or CONFIRMED (a request
    /// that came after the capture).
    pub cancellation_requested: Option<String>,
    /// Version of the stream folded in.
    pub version: u64,
    /// When the order was created (its first event's time).
    pub created_at: DateTime<Utc>,
    /// When the last event was recorded.
    pub updated_at: DateTime<Utc>,
}

/// A row of the customer order list (`customer_orders`).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerOrder(pub OrderSummary);

impl StoredRow for CustomerOrder {
    const TABLE: &'static str = "customer_orders";

    fn stream_id(&self) -> Uuid {
        self.0.order_id
    }

    fn version(&self) -> u64 {
        self.0.version
    }
}

/// A row of the order detail read model (`order_details`).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderDetail {
    /// Everything but the personal data.
    pub summary: OrderSummary,
    /// Payment method and shipping address, as the creation event gave them.
    pub personal: PersonalData,
}

impl StoredRow for OrderDetail {
    const TABLE: &'static str = "order_details";

    fn stream_id(&self) -> Uuid {
        self.summary.order_id
    }

    fn version(&self) -> u64 {
        self.summary.version
    }
}

/// How a converted cart's order ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Fulfillment still running.
    Open,
    /// Confirmed.
    Confirmed,
    /// Cancelled.
    Cancelled,
}

impl Outcome {
    /// The stored form (the `outcome` column).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Open, Self::Confirmed, Self::Cancelled]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One converted cart (`cart_conversions`).
#[derive(Debug, Clone, PartialEq)]
pub struct CartConversion {
    /// The order the cart became.
    pub order_id: Uuid,
    /// The cart.
    pub cart_id: Uuid,
    /// Its owner.
    pub customer_id: String,
    /// Currency of `total`.
    pub currency: Currency,
    /// Order value.
    pub total: Money,
    /// Items ordered.
    pub item_count: u32,
    /// How it ended so far.
    pub outcome: Outcome,
    /// When the cart was converted (the order created).
    pub converted_at: DateTime<Utc>,
    /// When the order reached its terminal status.
    pub settled_at: Option<DateTime<Utc>>,
    /// Version of the order stream folded in.
    pub version: u64,
}

impl StoredRow for CartConversion {
    const TABLE: &'static str = "cart_conversions";

    fn stream_id(&self) -> Uuid {
        self.order_id
    }

    fn version(&self) -> u64 {
        self.version
    }
}

/// Conversion figures of one day and currency: sums over `cart_conversions`, so a
/// redelivered event cannot count twice.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ConversionFigures {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Carts converted into orders that day.
    pub converted: i64,
    /// Of those, orders confirmed.
    pub confirmed: i64,
    /// Of those, orders cancelled.
    pub cancelled: i64,
    /// Value of all converted carts.
    pub converted_value: Decimal,
    /// Value of the confirmed ones.
    pub confirmed_value: Decimal,
}
