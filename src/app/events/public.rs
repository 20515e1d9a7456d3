//! What the public feed publishes of a stored event: the domain event decoded
//! by the write side's codec (after the store upcast the payload), with its
//! personal part opened while the customer's key exists. The transports map it
//! onto `commerce.events.v1`; nothing here knows the stored JSON.

use crate::{
    domain::order::OrderEvent,
    store::event_store::{ORDER_STREAM, OrderCodec, StoredEvent},
};

/// The public kinds of order event, by their stable names: what a consumer's
/// filter stores, decoupled from the stored type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PublicEventType {
    /// An order was placed.
    OrderCreated,
    /// The payment was authorized.
    PaymentAuthorized,
    /// Stock was reserved.
    StockReserved,
    /// A shipment was created.
    ShipmentCreated,
    /// The payment was captured.
    PaymentCaptured,
    /// The order is fulfilled.
    OrderConfirmed,
    /// A cancellation was asked for.
    CancellationRequested,
    /// The order is cancelled.
    OrderCancelled,
}

impl PublicEventType {
    /// Every kind, in the order of an order's life.
    pub const ALL: [Self; 8] = [
        Self::OrderCreated,
        Self::PaymentAuthorized,
        Self::StockReserved,
        Self::ShipmentCreated,
        Self::PaymentCaptured,
        Self::OrderConfirmed,
        Self::CancellationRequested,
        Self::OrderCancelled,
    ];

    /// The stable name (stored with a consumer's filter).
    pub fn name(self) -> &'static str {
        match self {
            Self::OrderCreated => "order_created",
            Self::PaymentAuthorized => "payment_authorized",
            Self::StockReserved => "stock_reserved",
            Self::ShipmentCreated => "shipment_created",
            Self::PaymentCaptured => "payment_captured",
            Self::OrderConfirmed => "order_confirmed",
            Self::CancellationRequested => "cancellation_requested",
            Self::OrderCancelled => "order_cancelled",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The kind of a stored order event by its type name
    /// ([`OrderEvent::event_type`]), known before its payload is decoded; None
    /// for a name no order event has.
    pub fn of_type_name(name: &str) -> Option<Self> {
        Some(match name {
            "OrderCreated" => Self::OrderCreated,
            "PaymentAuthorized" => Self::PaymentAuthorized,
            "InventoryReserved" => Self::StockReserved,
            "ShippingArranged" => Self::ShipmentCreated,
            "PaymentCaptured" => Self::PaymentCaptured,
            "OrderConfirmed" => Self::OrderConfirmed,
            "CancellationRequested" => Self::CancellationRequested,
            "OrderCancelled" => Self::OrderCancelled,
            _ => return None,
        })
    }

    /// The kind of a domain event.
    pub fn of(event: &OrderEvent) -> Self {
        match event {
            OrderEvent::Created(_) => Self::OrderCreated,
            OrderEvent::PaymentAuthorized(_) => Self::PaymentAuthorized,
            OrderEvent::InventoryReserved(_) => Self::StockReserved,
            OrderEvent::ShippingArranged(_) => Self::ShipmentCreated,
            OrderEvent::PaymentCaptured(_) => Self::PaymentCaptured,
            OrderEvent::Confirmed(_) => Self::OrderConfirmed,
            OrderEvent::CancellationRequested(_) => Self::CancellationRequested,
            OrderEvent::Cancelled(_) => Self::OrderCancelled,
        }
    }
}

/// Why an order was cancelled, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancellationCode {
    /// The customer or an operator asked.
    Requested,
    /// Payment authorization was refused.
    PaymentDeclined,
    /// Not enough stock.
    OutOfStock,
    /// The address cannot be shipped to.
    Unshippable,
    /// Fulfillment did not finish in time.
    TimedOut,
    /// Anything else.
    Other,
}

impl CancellationCode {
    /// The code of a recorded cancellation reason, which the saga plan writes
    /// (`"{step} refused: ..."`, the timeout text, `"cancelled by the
    /// customer..."`). Without a saga (ENABLE_SAGA_ORCHESTRATION=false) the
    /// reason is the caller's own text and reads [`CancellationCode::Other`].
    pub fn classify(reason: &str) -> Self {
        const REFUSALS: [(&str, CancellationCode); 3] = [
            ("authorize_payment refused", CancellationCode::PaymentDeclined),
            ("reserve_inventory refused", CancellationCode::OutOfStock),
            ("create_shipment refused", CancellationCode::Unshippable),
        ];
        if let Some((_, code)) = REFUSALS.iter().find(|(prefix, _)| reason.starts_with(prefix)) {
            return *code;
        }
        if reason.starts_with("order timed out") {
            Self::TimedOut
        } else if reason.starts_with("cancelled by the customer") {
            Self::Requested
        } else {
            Self::Other
        }
    }
}

/// One event as the feed publishes it.
#[derive(Debug, Clone)]
pub struct PublishedEvent {
    /// The stored event: position, version, time, metadata (payload opened).
    pub stored: StoredEvent,
    /// The payload decoded (and upcast) into the domain event.
    pub event: OrderEvent,
}

impl PublishedEvent {
    /// The W3C trace id of the request that caused the event, from the
    /// `traceparent` recorded in its metadata (`00-<trace id>-<span>-<flags>`).
    pub fn trace_id(&self) -> Option<&str> {
        let traceparent = self.stored.metadata.correlation_id.as_deref()?;
        let mut parts = traceparent.split('-');
        let (Some("00"), Some(trace_id)) = (parts.next(), parts.next()) else {
            return None;
        };
        (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace_id)
    }

    /// The event's type in the public contract (subscribers filter on it).
    pub fn event_type(&self) -> PublicEventType {
        PublicEventType::of(&self.event)
    }
}

/// The domain event of an order-stream event (None for other streams, e.g.
/// a saga's audit stream, which are not part of the public feed).
pub fn decode(stored: &StoredEvent) -> Option<anyhow::Result<OrderEvent>> {
    (stored.stream_type == ORDER_STREAM).then(|| OrderCodec.decode(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_name_parses_back_and_names_are_unique() {
        let names: std::collections::HashSet<_> = PublicEventType::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), PublicEventType::ALL.len());
        for kind in PublicEventType::ALL {
            assert_eq!(PublicEventType::parse(kind.name()), Some(kind));
        }
        assert_eq!(PublicEventType::parse("OrderCreated"), None);
    }

    #[test]
    fn the_kind_of_a_stored_type_name_is_the_kind_of_its_decoded_event() {
        let order = crate::projections::samples::SampleOrder::new("c", 1);
        let mut lives = order.confirmed();
        lives.extend(order.cancelled("changed my mind"));
        let mut kinds = std::collections::HashSet::new();
        for event in lives {
            let kind = PublicEventType::of(&event);
            assert_eq!(PublicEventType::of_type_name(event.event_type()), Some(kind));
            kinds.insert(kind);
        }
        assert_eq!(kinds.len(), PublicEventType::ALL.len(), "every kind was checked");
        assert_eq!(PublicEventType::of_type_name("SagaStarted"), None);
    }

    #[test]
    fn cancellation_reasons_map_to_stable_codes() {
        let cases = [
            (
                "authorize_payment refused: card declined",
                CancellationCode::PaymentDeclined,
            ),
            (
                "reserve_inventory refused: out of stock",
                CancellationCode::OutOfStock,
            ),
            (
                "create_shipment refused: unshippable",
                CancellationCode::Unshippable,
            ),
            (
                "order timed out before fulfillment completed",
                CancellationCode::TimedOut,
            ),
            ("cancelled by the customer", CancellationCode::Requested),
            (
                "cancelled by the customer: changed my mind",
                CancellationCode::Requested,
            ),
            ("changed my mind", CancellationCode::Other),
        ];
        for (reason, code) in cases {
            assert_eq!(CancellationCode::classify(reason), code, "{reason}");
        }
    }
}
