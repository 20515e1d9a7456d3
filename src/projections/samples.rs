//! Sample order streams, for tests, the rebuild-rate measurement and the event
//! feed's catch-up bench (`commerce bench --scenario event-catch-up`, so not
//! behind the `testing` feature): the domain events of an order's life, encoded
//! by the write side's codec, so they are exactly what CreateOrder and the saga
//! store.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::{
    domain::{
        money::{Currency, Money},
        order::{
            CancellationRequested, InventoryReserved, OrderCancelled, OrderConfirmed, OrderCreated,
            OrderEvent, OrderLine, PaymentAuthorized, PaymentCaptured, PersonalData, ShippingAddress,
            ShippingArranged,
        },
    },
    store::event_store::{EventMetadata, NewEvent, ORDER_STREAM, OrderCodec, StoredEvent},
};

/// One sample order: a customer, some lines, an address.
#[derive(Debug, Clone)]
pub struct SampleOrder {
    /// The order (stream) id.
    pub order_id: Uuid,
    /// The saga driving it.
    pub saga_id: Uuid,
    /// The customer the sample order belongs to.
    pub customer_id: String,
    /// Lines: product `sku-i`, quantity i, unit price 19.99 + i.
    pub lines: Vec<OrderLine>,
    /// When the first event is recorded (stored events only).
    pub created_at: DateTime<Utc>,
}

impl SampleOrder {
    /// An order of `customer` with `lines` lines.
    pub fn new(customer: &str, lines: usize) -> Self {
        let lines = (1..=lines)
            .map(|i| {
                let unit = Money::from_minor_units(1999 + 100 * i as i64, Currency::Usd);
                let quantity = i as u32;
                OrderLine {
                    product_id: format!("sku-{i}"),
                    product_name: format!("Product {i}"),
                    quantity,
                    unit_price: unit,
                    line_total: Money::from_minor_units(
                        unit.to_minor_units().unwrap_or(0) * i as i64,
                        Currency::Usd,
                    ),
                }
            })
            .collect();
        Self {
            order_id: Uuid::now_v7(),
            saga_id: Uuid::now_v7(),
            customer_id: customer.to_string(),
            lines,
            created_at: Utc::now(),
        }
    }

    /// Sum of line totals.
    pub fn total(&self) -> Money {
        let minor = self
            .lines
            .iter()
            .map(|line| line.line_total.to_minor_units().unwrap_or(0))
            .sum();
        Money::from_minor_units(minor, Currency::Usd)
    }

    /// Units over all lines (what a summary row shows as `item_count`).
    pub fn item_count(&self) -> u32 {
        self.lines.iter().map(|line| line.quantity).sum()
    }

    /// The order's `OrderCreated`, as CreateOrder would append it.
    pub fn created(&self) -> OrderEvent {
        OrderEvent::Created(Box::new(OrderCreated {
            order_id: self.order_id,
            customer_id: self.customer_id.clone(),
            cart_id: Uuid::now_v7(),
            items: self.lines.clone(),
            currency: Currency::Usd,
            total: self.total(),
            personal: PersonalData {
                shipping_address: ShippingAddress {
                    recipient_name: "Pat Doe".into(),
                    line1: "1 Main St".into(),
                    line2: String::new(),
                    city: "Springfield".into(),
                    region: "IL".into(),
                    postal_code: "62701".into(),
                    country: "US".into(),
                },
                payment_method: "pm_card_visa".into(),
            },
            saga_id: Some(self.saga_id),
        }))
    }

    /// The domain events of a confirmed order's life.
    pub fn confirmed(&self) -> Vec<OrderEvent> {
        vec![
            self.created(),
            OrderEvent::PaymentAuthorized(PaymentAuthorized {
                authorization_id: "auth-1".into(),
            }),
            OrderEvent::InventoryReserved(InventoryReserved {
                reservation_id: "res-1".into(),
            }),
            OrderEvent::ShippingArranged(ShippingArranged {
                shipment_id: "ship-1".into(),
                tracking_number: "TRACK1".into(),
            }),
            OrderEvent::PaymentCaptured(PaymentCaptured {
                capture_id: "cap-1".into(),
            }),
            OrderEvent::Confirmed(OrderConfirmed {}),
        ]
    }

    /// The domain events of an order cancelled for `reason`.
    pub fn cancelled(&self, reason: &str) -> Vec<OrderEvent> {
        vec![
            self.created(),
            OrderEvent::CancellationRequested(CancellationRequested {
                reason: reason.into(),
                requested_by: self.customer_id.clone(),
            }),
            OrderEvent::Cancelled(OrderCancelled {
                reason: reason.into(),
                reason_code: crate::domain::reason::ErrorReason::CancellationRequested,
            }),
        ]
    }

    /// `events` encoded for an append.
    pub fn encode(events: &[OrderEvent]) -> Vec<NewEvent> {
        events
            .iter()
            .filter_map(|event| OrderCodec.encode(event, &EventMetadata::default()).ok())
            .collect()
    }

    /// Stored events of a confirmed order, at global positions from `first_position`.
    pub fn confirmed_events(&self, first_position: i64) -> Vec<StoredEvent> {
        self.stored(&self.confirmed(), first_position)
    }

    /// Stored events of an order cancelled for `reason`.
    pub fn cancelled_events(&self, first_position: i64, reason: &str) -> Vec<StoredEvent> {
        self.stored(&self.cancelled(reason), first_position)
    }

    /// `events` of this order as stored, at versions from 1 and global positions from
    /// `first_position`.
    pub fn stored(&self, events: &[OrderEvent], first_position: i64) -> Vec<StoredEvent> {
        Self::encode(events)
            .into_iter()
            .enumerate()
            .map(|(i, new)| StoredEvent {
                event_id: new.event_id,
                stream_id: self.order_id,
                stream_type: ORDER_STREAM.to_string(),
                version: i as u64 + 1,
                global_position: first_position + i as i64,
                event_type: new.event_type,
                schema_version: new.schema_version,
                payload: new.payload,
                metadata: new.metadata,
                recorded_at: self.created_at + Duration::milliseconds(i as i64),
            })
            .collect()
    }
}
