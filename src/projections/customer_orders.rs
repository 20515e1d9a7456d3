//! The customer order list: one summary row per order (no personal data),
//! indexed for "my orders, newest first" (ListOrders).

use super::{ProjectionError, ReadModel, error::started_or_poison};
pub use crate::store::read_models::rows::{CustomerOrder, OrderSummary};
use crate::{
    domain::order::{OrderEvent, OrderStatus},
    store::event_store::StoredEvent,
};

/// The summary after `event`; shared by every order-shaped read model.
pub fn next_summary(
    state: Option<OrderSummary>,
    stored: &StoredEvent,
    event: &OrderEvent,
) -> Result<OrderSummary, ProjectionError> {
    let mut order = started_or_poison(state, stored, event, |created| OrderSummary {
        order_id: stored.stream_id,
        customer_id: created.customer_id.clone(),
        cart_id: created.cart_id,
        saga_id: created.saga_id,
        status: OrderStatus::Pending,
        item_count: created.items.iter().map(|line| line.quantity).sum(),
        items: created.items.clone(),
        currency: created.currency,
        total: created.total,
        cancellation_reason: String::new(),
        cancellation_reason_code: None,
        cancellation_requested: None,
        version: 0,
        created_at: stored.recorded_at,
        updated_at: stored.recorded_at,
    })?;
    match event {
        OrderEvent::PaymentAuthorized(_) => order.status = OrderStatus::PaymentAuthorized,
        OrderEvent::InventoryReserved(_) => order.status = OrderStatus::InventoryReserved,
        OrderEvent::ShippingArranged(_) => order.status = OrderStatus::ShippingArranged,
        OrderEvent::Confirmed(_) => order.status = OrderStatus::Confirmed,
        OrderEvent::Cancelled(cancelled) => {
            order.status = OrderStatus::Cancelled;
            order.cancellation_reason = cancelled.reason.clone();
            order.cancellation_reason_code = Some(cancelled.reason_code);
        }
        OrderEvent::CancellationRequested(requested) => {
            // The first request's reason stands: the aggregate records one request
            // per order, and a stream holding more would still show the first.
            order
                .cancellation_requested
                .get_or_insert_with(|| requested.reason.clone());
        }
        OrderEvent::Created(_) | OrderEvent::PaymentCaptured(_) => {}
    }
    order.version = stored.version;
    order.updated_at = stored.recorded_at;
    Ok(order)
}

impl ReadModel for CustomerOrder {
    const NAME: &'static str = "customer_orders";

    fn apply(state: Option<Self>, stored: &StoredEvent, event: &OrderEvent) -> Result<Self, ProjectionError> {
        next_summary(state.map(|row| row.0), stored, event).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projections::{fold, fold_stream, order_detail::OrderDetail, samples::SampleOrder};

    #[test]
    fn a_confirmed_order_folds_to_confirmed_with_its_lines_and_totals() {
        let order = SampleOrder::new("alice", 2);
        let row: CustomerOrder = fold_stream(&order.confirmed_events(1)).unwrap().unwrap();
        assert_eq!(row.0.status, OrderStatus::Confirmed);
        assert_eq!(row.0.version, 6);
        assert_eq!(row.0.items.len(), 2);
        assert_eq!(row.0.total, order.total());
        assert_eq!(row.0.item_count, order.item_count());
        assert_eq!(row.0.saga_id, Some(order.saga_id));
        assert_eq!(row.0.customer_id, "alice");
    }

    #[test]
    fn duplicates_are_skipped_and_gaps_are_reported_not_applied() {
        let order = SampleOrder::new("bob", 1);
        let events = order.confirmed_events(1);
        let first = fold::<CustomerOrder>(Default::default(), &events[..2]).unwrap();
        assert_eq!(first.applied, 2);
        let current = first.changed.into_iter().map(|r| (r.0.order_id, r)).collect();
        // v2 again (duplicate), then v4 and v5 (v3 missing).
        let batch = vec![events[1].clone(), events[3].clone(), events[4].clone()];
        let second = fold::<CustomerOrder>(current, &batch).unwrap();
        assert_eq!((second.applied, second.duplicates), (0, 1));
        assert!(second.changed.is_empty());
        assert_eq!(second.gaps.len(), 1);
        assert_eq!((second.gaps[0].have, second.gaps[0].wanted), (2, 4));
    }

    #[test]
    fn the_first_cancellation_request_is_kept_while_under_way_and_after_the_order_ends() {
        use crate::domain::order::CancellationRequested;
        let order = SampleOrder::new("dora", 1);
        let request = |reason: &str| {
            OrderEvent::CancellationRequested(CancellationRequested {
                reason: reason.into(),
                requested_by: "dora".into(),
            })
        };
        // Cancelled: created, requested, (a second request, which the
        // aggregate never appends but the fold must not take), cancelled.
        let mut life = order.cancelled("found it cheaper");
        life.insert(2, request("changed my mind"));
        let events = order.stored(&life, 1);
        let first = Some("found it cheaper".to_string());
        let under_way: CustomerOrder = fold_stream(&events[..2]).unwrap().unwrap();
        assert_eq!(under_way.0.status, OrderStatus::Pending);
        assert_eq!(
            (under_way.0.version, &under_way.0.cancellation_requested),
            (2, &first)
        );
        assert_eq!(under_way.0.cancellation_reason, "", "not cancelled yet");
        let again: CustomerOrder = fold_stream(&events[..3]).unwrap().unwrap();
        assert_eq!((again.0.version, &again.0.cancellation_requested), (3, &first));
        let ended: OrderDetail = fold_stream(&events).unwrap().unwrap();
        assert_eq!(ended.summary.status, OrderStatus::Cancelled);
        assert_eq!(ended.summary.cancellation_requested, first);

        // Confirmed: a request during the capture (past the pivot) stays visible.
        let mut life = order.confirmed();
        life.insert(4, request("too late"));
        let confirmed: CustomerOrder = fold_stream(&order.stored(&life, 1)).unwrap().unwrap();
        assert_eq!(confirmed.0.status, OrderStatus::Confirmed);
        assert_eq!(confirmed.0.cancellation_requested.as_deref(), Some("too late"));

        // Nobody asked.
        let plain: CustomerOrder = fold_stream(&order.confirmed_events(1)).unwrap().unwrap();
        assert_eq!(plain.0.cancellation_requested, None);
    }

    #[test]
    fn a_cancellation_keeps_its_reason_and_a_stream_without_creation_is_poison() {
        let order = SampleOrder::new("carol", 1);
        let row: CustomerOrder = fold_stream(&order.cancelled_events(1, "out of stock"))
            .unwrap()
            .unwrap();
        assert_eq!(row.0.status, OrderStatus::Cancelled);
        assert_eq!(row.0.cancellation_reason, "out of stock");
        let events = order.confirmed_events(1);
        let err = fold_stream::<CustomerOrder>(&events[1..2]);
        assert!(err.is_ok(), "a gap at the start is reported, not applied");
        let mut orphan = events[1].clone();
        orphan.version = 1;
        assert!(matches!(
            fold_stream::<CustomerOrder>(&[orphan]),
            Err(ProjectionError::Poison { .. })
        ));
    }
}
