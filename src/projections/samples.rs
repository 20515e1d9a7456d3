//! Sample order streams, for tests and for benchmarking the rebuild: the
//! event types and payloads an order's life produces.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use super::ORDER_STREAM;
use crate::bus::EventEnvelope;

/// One sample order: a customer, some lines, an address.
#[derive(Debug, Clone)]
pub struct SampleOrder {
    /// The order (stream) id.
    pub order_id: Uuid,
    /// The owner.
    pub customer_id: String,
    /// (product id, quantity, unit price) lines.
    pub lines: Vec<(String, i32, Decimal)>,
    /// When the first event is recorded.
    pub created_at: DateTime<Utc>,
}

impl SampleOrder {
    /// An order of `customer` with `lines` lines (quantities 1, 2, ...).
    pub fn new(customer: &str, lines: usize) -> Self {
        Self {
            order_id: Uuid::now_v7(),
            customer_id: customer.to_string(),
            lines: (1..=lines)
                .map(|i| {
                    (
                        format!("sku-{i}"),
                        i as i32,
                        Decimal::new(1999 + i as i64 * 100, 2),
                    )
                })
                .collect(),
            created_at: Utc::now(),
        }
    }

    /// Sum of line totals.
    pub fn total(&self) -> Decimal {
        self.lines.iter().map(|(_, q, p)| Decimal::from(*q) * p).sum()
    }

    /// Sum of quantities.
    pub fn item_count(&self) -> i32 {
        self.lines.iter().map(|(_, q, _)| q).sum()
    }

    /// The `OrderCreated` payload.
    pub fn created_payload(&self) -> Value {
        let items: Vec<Value> = self
            .lines
            .iter()
            .map(|(product, quantity, price)| {
                json!({
                    "product_id": product,
                    "product_name": format!("Product {product}"),
                    "quantity": quantity,
                    "unit_price": price.to_string(),
                    "line_total": (Decimal::from(*quantity) * price).to_string(),
                })
            })
            .collect();
        json!({
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "cart_id": Uuid::new_v4(),
            "items": items,
            "currency": "USD",
            "total": self.total().to_string(),
            "personal": {
                "payment_method": "pm_card_visa",
                "shipping_address": {
                    "recipient_name": "Pat Doe", "line1": "1 Main St", "line2": "",
                    "city": "Springfield", "region": "IL", "postal_code": "62701", "country": "US"
                }
            }
        })
    }

    /// (event type, payload) of a confirmed order's life.
    pub fn confirmed_payloads(&self) -> Vec<(String, Value)> {
        let mut events = vec![("OrderCreated".to_string(), self.created_payload())];
        for step in [
            "PaymentAuthorized",
            "InventoryReserved",
            "ShippingArranged",
            "PaymentCaptured",
            "OrderConfirmed",
        ] {
            events.push((step.to_string(), json!({ "order_id": self.order_id })));
        }
        events
    }

    /// (event type, payload) of an order cancelled for `reason`.
    pub fn cancelled_payloads(&self, reason: &str) -> Vec<(String, Value)> {
        vec![
            ("OrderCreated".to_string(), self.created_payload()),
            (
                "CancellationRequested".to_string(),
                json!({ "order_id": self.order_id, "reason": reason }),
            ),
            (
                "OrderCancelled".to_string(),
                json!({ "order_id": self.order_id, "reason": reason }),
            ),
        ]
    }

    /// Envelopes of a confirmed order, at global positions from `first_position`.
    pub fn confirmed_events(&self, first_position: i64) -> Vec<EventEnvelope> {
        self.envelopes(self.confirmed_payloads(), first_position)
    }

    /// Envelopes of an order cancelled for `reason`.
    pub fn cancelled_events(&self, first_position: i64, reason: &str) -> Vec<EventEnvelope> {
        self.envelopes(self.cancelled_payloads(reason), first_position)
    }

    fn envelopes(&self, payloads: Vec<(String, Value)>, first_position: i64) -> Vec<EventEnvelope> {
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, (event_type, payload))| EventEnvelope {
                event_id: Uuid::now_v7(),
                stream_id: self.order_id,
                stream_type: ORDER_STREAM.to_string(),
                version: i as u64 + 1,
                global_position: first_position + i as i64,
                event_type,
                schema_version: 1,
                payload,
                recorded_at: self.created_at + Duration::milliseconds(i as i64),
            })
            .collect()
    }
}
