//! The order detail read model: everything GetOrder and WatchOrder show,
//! personal fields included (as the event carries them).

use uuid::Uuid;

use super::{
    ProjectionError, ReadModel,
    customer_orders::OrderSummary,
    order_event::{OrderFact, PersonalFields, personal_fields},
};
use crate::bus::EventEnvelope;

/// A row of the order detail read model.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderDetail {
    /// Everything but the personal data.
    pub summary: OrderSummary,
    /// Payment method and shipping address.
    pub personal: PersonalFields,
}

impl ReadModel for OrderDetail {
    const NAME: &'static str = "order_detail";
    const TABLE: &'static str = "order_details";

    fn stream_id(&self) -> Uuid {
        self.summary.order_id
    }

    fn version(&self) -> u64 {
        self.summary.version
    }

    fn apply(state: Option<Self>, event: &EventEnvelope, fact: &OrderFact) -> Result<Self, ProjectionError> {
        let (summary, personal) = match state {
            Some(Self { summary, personal }) => (Some(summary), personal),
            None => (None, PersonalFields::default()),
        };
        let personal = match fact {
            OrderFact::Created(created) => personal_fields(&created.personal),
            _ => personal,
        };
        Ok(Self {
            summary: OrderSummary::next(summary, event, fact)?,
            personal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projections::{fold_stream, order_event::OrderStatus, samples::SampleOrder};

    #[test]
    fn the_detail_keeps_the_personal_fields_of_the_creation() {
        let order = SampleOrder::new("alice", 3);
        let events = order.confirmed_events(1);
        let row: OrderDetail = fold_stream(&events[..3]).unwrap().unwrap();
        assert_eq!(row.summary.status, OrderStatus::InventoryReserved);
        assert_eq!(row.personal.payment_method, "pm_card_visa");
        assert_eq!(row.personal.shipping_address["city"], "Springfield");
        assert_eq!(row.summary.created_at, events[0].recorded_at);
        assert_eq!(row.summary.updated_at, events[2].recorded_at);
    }
}
