//! The order detail read model: everything GetOrder and WatchOrder show,
//! personal fields included (as the event carries them).

use super::{ProjectionError, ReadModel, customer_orders::next_summary, order_event::project_personal};
pub use crate::store::read_models::rows::OrderDetail;
use crate::{domain::order::OrderEvent, store::event_store::StoredEvent};

impl ReadModel for OrderDetail {
    const NAME: &'static str = "order_detail";

    fn apply(state: Option<Self>, stored: &StoredEvent, event: &OrderEvent) -> Result<Self, ProjectionError> {
        let (summary, personal) = match state {
            Some(Self { summary, personal }) => (Some(summary), Some(personal)),
            None => (None, None),
        };
        // Refuses a stream that does not start with OrderCreated.
        let summary = next_summary(summary, stored, event)?;
        let personal = match event {
            OrderEvent::Created(created) => project_personal(created),
            _ => personal.ok_or_else(|| ProjectionError::poison(stored, "no OrderCreated folded"))?,
        };
        Ok(Self { summary, personal })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::order::OrderStatus,
        projections::{fold_stream, samples::SampleOrder},
    };

    #[test]
    fn the_detail_keeps_the_personal_fields_of_the_creation() {
        let order = SampleOrder::new("alice", 3);
        let events = order.confirmed_events(1);
        let row: OrderDetail = fold_stream(&events[..3]).unwrap().unwrap();
        assert_eq!(row.summary.status, OrderStatus::InventoryReserved);
        assert_eq!(row.personal.payment_method, "pm_card_visa");
        assert_eq!(row.personal.shipping_address.city, "Springfield");
        assert_eq!(row.summary.created_at, events[0].recorded_at);
        assert_eq!(row.summary.updated_at, events[2].recorded_at);
    }
}
