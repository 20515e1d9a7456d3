//! The order event codec: domain [`OrderEvent`]s to stored JSON and back,
//! with a type name and a schema version per event, and the upcasters of
//! older schemas. This is the one place that knows the stored shape of order
//! events (and where personal data can be encrypted per customer).

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use uuid::Uuid;

use super::{EventMetadata, NewEvent, StoredEvent, Upcast, Upcasters};
use crate::{
    domain::{order::OrderEvent, reason::ErrorReason},
    saga::plan::Step,
};

/// Current schema version of `OrderCreated`. v1 kept `shipping_address` and
/// `payment_method` at the top level; v2 groups them under `personal` (so
/// they can be encrypted together) and adds `saga_id`.
pub const ORDER_CREATED_SCHEMA: i32 = 2;

/// Current schema version of `OrderCancelled`. v1 had only the `reason`
/// text; v2 adds `reason_code` (an [`ErrorReason`] name).
pub const ORDER_CANCELLED_SCHEMA: i32 = 2;

/// Encodes and decodes order events.
#[derive(Debug, Clone, Default)]
pub struct OrderCodec;

impl OrderCodec {
    /// The upcasters of every older order event schema.
    pub fn upcasters() -> Upcasters {
        Upcasters::new([
            Upcast {
                event_type: "OrderCreated",
                from_version: 1,
                apply: order_created_v1_to_v2,
            },
            Upcast {
                event_type: "OrderCancelled",
                from_version: 1,
                apply: order_cancelled_v1_to_v2,
            },
        ])
    }

    /// The schema version `event` is written with.
    pub fn schema_version(event: &OrderEvent) -> i32 {
        match event {
            OrderEvent::Created(_) => ORDER_CREATED_SCHEMA,
            OrderEvent::Cancelled(_) => ORDER_CANCELLED_SCHEMA,
            _ => 1,
        }
    }

    /// A new event (fresh UUID v7 id) for the store.
    pub fn encode(&self, event: &OrderEvent, metadata: &EventMetadata) -> anyhow::Result<NewEvent> {
        let payload = match event {
            OrderEvent::Created(e) => to_json(&**e)?,
            OrderEvent::PaymentAuthorized(e) => to_json(e)?,
            OrderEvent::InventoryReserved(e) => to_json(e)?,
            OrderEvent::ShippingArranged(e) => to_json(e)?,
            OrderEvent::PaymentCaptured(e) => to_json(e)?,
            OrderEvent::Confirmed(e) => to_json(e)?,
            OrderEvent::CancellationRequested(e) => to_json(e)?,
            OrderEvent::Cancelled(e) => to_json(e)?,
        };
        Ok(NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event.event_type().to_string(),
            schema_version: Self::schema_version(event),
            payload,
            metadata: metadata.clone(),
        })
    }

    /// The domain event of a stored (already upcast) event.
    pub fn decode(&self, stored: &StoredEvent) -> anyhow::Result<OrderEvent> {
        // Read in place: cloning the payload's tree for each decode showed in
        // the projections' catch-up profile (BTreeMap clone and drop).
        let payload = &stored.payload;
        let event = match stored.event_type.as_str() {
            "OrderCreated" => OrderEvent::Created(Box::new(from_json(payload)?)),
            "PaymentAuthorized" => OrderEvent::PaymentAuthorized(from_json(payload)?),
            "InventoryReserved" => OrderEvent::InventoryReserved(from_json(payload)?),
            "ShippingArranged" => OrderEvent::ShippingArranged(from_json(payload)?),
            "PaymentCaptured" => OrderEvent::PaymentCaptured(from_json(payload)?),
            "OrderConfirmed" => OrderEvent::Confirmed(from_json(payload)?),
            "CancellationRequested" => OrderEvent::CancellationRequested(from_json(payload)?),
            "OrderCancelled" => OrderEvent::Cancelled(from_json(payload)?),
            other => anyhow::bail!("unknown order event type {other:?}"),
        };
        Ok(event)
    }
}

fn to_json<T: Serialize>(event: &T) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(event)?)
}

fn from_json<T: DeserializeOwned>(payload: &Value) -> anyhow::Result<T> {
    Ok(T::deserialize(payload)?)
}

/// v1 -> v2: move `shipping_address` and `payment_method` under `personal`.
fn order_created_v1_to_v2(mut payload: Value) -> Result<Value, String> {
    let obj = payload
        .as_object_mut()
        .ok_or("OrderCreated v1 is not an object")?;
    let address = obj
        .remove("shipping_address")
        .ok_or("OrderCreated v1 has no shipping_address")?;
    let method = obj
        .remove("payment_method")
        .ok_or("OrderCreated v1 has no payment_method")?;
    obj.insert(
        "personal".into(),
        serde_json::json!({"shipping_address": address, "payment_method": method}),
    );
    Ok(payload)
}

/// v1 -> v2: the code, read from the v1 text. v1 texts came from the saga
/// (`"<step> refused: ..."`, `"cancelled by the customer..."`, `"order timed
/// out..."`) or, without a saga, were the customer's own reason, so any
/// other text was a requested cancellation.
fn order_cancelled_v1_to_v2(mut payload: Value) -> Result<Value, String> {
    let obj = payload
        .as_object_mut()
        .ok_or("OrderCancelled v1 is not an object")?;
    let reason = obj
        .get("reason")
        .and_then(Value::as_str)
        .ok_or("OrderCancelled v1 has no reason")?;
    let refused = reason
        .split_once(" refused: ")
        .and_then(|(step, _)| Step::parse(step));
    let code = match refused {
        Some(step) => step.refusal_code(),
        None if reason.starts_with("order timed out") => ErrorReason::OrderTimedOut,
        None => ErrorReason::CancellationRequested,
    };
    obj.insert("reason_code".into(), Value::from(code.as_str()));
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::domain::order::{OrderCancelled, PaymentAuthorized};

    fn stored(event_type: &str, schema_version: i32, payload: Value) -> StoredEvent {
        StoredEvent {
            event_id: Uuid::now_v7(),
            stream_id: Uuid::now_v7(),
            stream_type: "order".into(),
            version: 1,
            global_position: 1,
            event_type: event_type.into(),
            schema_version,
            payload: OrderCodec::upcasters()
                .upcast(event_type, schema_version, payload)
                .unwrap(),
            metadata: EventMetadata::default(),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn events_round_trip_through_json() {
        let codec = OrderCodec;
        for event in [
            OrderEvent::PaymentAuthorized(PaymentAuthorized {
                authorization_id: "a-1".into(),
            }),
            OrderEvent::Cancelled(OrderCancelled {
                reason: "r".into(),
                reason_code: ErrorReason::OutOfStock,
            }),
        ] {
            let new = codec.encode(&event, &EventMetadata::default()).unwrap();
            assert_eq!(new.event_type, event.event_type());
            let back = codec
                .decode(&stored(&new.event_type, new.schema_version, new.payload))
                .unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn an_order_created_v1_payload_decodes_as_the_current_event() {
        let v1 = json!({
            "order_id": Uuid::nil(), "customer_id": "alice", "cart_id": Uuid::nil(),
            "items": [{"product_id": "p", "product_name": "P", "quantity": 2,
                       "unit_price": {"amount": "1.50", "currency": "USD"},
                       "line_total": {"amount": "3.00", "currency": "USD"}}],
            "currency": "USD", "total": {"amount": "3.00", "currency": "USD"},
            "shipping_address": {"recipient_name": "A", "line1": "L", "city": "C",
                                 "postal_code": "P", "country": "US"},
            "payment_method": "pm_card_visa"
        });
        let OrderEvent::Created(created) = OrderCodec.decode(&stored("OrderCreated", 1, v1)).unwrap() else {
            panic!("not OrderCreated");
        };
        assert_eq!(created.personal.payment_method, "pm_card_visa");
        assert_eq!(created.personal.shipping_address.country, "US");
        assert_eq!(created.saga_id, None);
        assert_eq!(created.total.to_string(), "3.00");
    }

    #[test]
    fn an_order_cancelled_v1_payload_gets_the_code_its_text_stood_for() {
        for (text, code) in [
            (
                "authorize_payment refused: FAILED_PRECONDITION: declined",
                ErrorReason::PaymentDeclined,
            ),
            (
                "reserve_inventory refused: FAILED_PRECONDITION: out of stock",
                ErrorReason::OutOfStock,
            ),
            (
                "create_shipment refused: INVALID_ARGUMENT: nowhere",
                ErrorReason::AddressUnshippable,
            ),
            (
                "confirm_order refused: LOCAL: no",
                ErrorReason::FulfillmentRefused,
            ),
            (
                "order timed out before fulfillment completed",
                ErrorReason::OrderTimedOut,
            ),
            (
                "cancelled by the customer: changed my mind",
                ErrorReason::CancellationRequested,
            ),
            ("found it cheaper", ErrorReason::CancellationRequested),
        ] {
            let v1 = json!({"reason": text});
            let OrderEvent::Cancelled(event) = OrderCodec.decode(&stored("OrderCancelled", 1, v1)).unwrap()
            else {
                panic!("not OrderCancelled");
            };
            assert_eq!((event.reason.as_str(), event.reason_code), (text, code));
        }
    }
}
