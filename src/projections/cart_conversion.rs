//! Cart conversion figures for analytics: one row per converted cart (an
//! order), with its value and how it ended; the figures are sums over a
//! period (see `crate::store::read_models`), so redelivery cannot count twice.

use super::{ProjectionError, ReadModel, error::started_or_poison};
pub use crate::store::read_models::rows::{CartConversion, ConversionFigures, Outcome};
use crate::{domain::order::OrderEvent, store::event_store::StoredEvent};

impl ReadModel for CartConversion {
    const NAME: &'static str = "cart_conversion";

    fn apply(state: Option<Self>, stored: &StoredEvent, event: &OrderEvent) -> Result<Self, ProjectionError> {
        let mut row = started_or_poison(state, stored, event, |created| CartConversion {
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
        })?;
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
