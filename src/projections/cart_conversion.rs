//! Cart conversion figures for analytics: one row per converted cart (an
//! order), with its value and how it ended; the figures are sums over a
//! period (see `crate::store::read_models`), so redelivery cannot count twice.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use super::{ProjectionError, ReadModel};
use crate::{
    domain::{
        money::{Currency, Money},
        order::OrderEvent,
    },
    store::event_store::StoredEvent,
};

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
    /// Stored form.
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

/// One converted cart.
#[derive(Debug, Clone, PartialEq)]
pub struct CartConversion {
    /// The order the cart became.
    pub order_id: Uuid,
    /// The cart.
    pub cart_id: Uuid,
    /// Its owner.
    pub customer_id: String,
    /// Currency.
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

impl ReadModel for CartConversion {
    const NAME: &'static str = "cart_conversion";
    const TABLE: &'static str = "cart_conversions";

    fn stream_id(&self) -> Uuid {
        self.order_id
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn apply(state: Option<Self>, stored: &StoredEvent, event: &OrderEvent) -> Result<Self, ProjectionError> {
        let mut row = match (state, event) {
            (None, OrderEvent::Created(created)) => Self {
                order_id: stored.stream_id,
                cart_id: created.cart_id,
                customer_id: created.customer_id.clone(),
                currency: created.currency,
                total: created.total,
                item_count: created.items.iter().map(|line| line.quantity).sum(),
                outcome: Outcome::Open,
                converted_at: stored.recorded_at,
                settled_at: None,
                version: 0,
            },
            (None, _) => {
                return Err(ProjectionError::poison(
                    stored,
                    "the stream does not start with OrderCreated",
                ));
            }
            (Some(_), OrderEvent::Created(_)) => {
                return Err(ProjectionError::poison(
                    stored,
                    "OrderCreated after the stream's start",
                ));
            }
            (Some(row), _) => row,
        };
        let ended = match event {
            OrderEvent::Confirmed(_) => Some(Outcome::Confirmed),
            OrderEvent::Cancelled(_) => Some(Outcome::Cancelled),
            _ => None,
        };
        if let Some(outcome) = ended {
            row.outcome = outcome;
            row.settled_at = Some(stored.recorded_at);
        }
        row.version = stored.version;
        Ok(row)
    }
}

/// Conversion figures of one day and currency.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projections::{fold_stream, samples::SampleOrder};

    #[test]
    fn a_conversion_is_open_until_the_order_ends() {
        let order = SampleOrder::new("alice", 2);
        let events = order.confirmed_events(1);
        let open: CartConversion = fold_stream(&events[..4]).unwrap().unwrap();
        assert_eq!((open.outcome, open.settled_at), (Outcome::Open, None));
        let done: CartConversion = fold_stream(&events).unwrap().unwrap();
        assert_eq!(done.outcome, Outcome::Confirmed);
        assert_eq!(done.settled_at, Some(events[5].recorded_at));
        assert_eq!(done.total, order.total());
        let cancelled: CartConversion = fold_stream(&order.cancelled_events(1, "x")).unwrap().unwrap();
        assert_eq!(cancelled.outcome, Outcome::Cancelled);
    }
}
