//! Fuzzing event decoding and upcasting with proptest: every order event
//! round-trips through the store's codec, an `OrderCreated` stored at schema v1
//! decodes as today's event, the read side decodes what the write side
//! wrote, and no payload (random JSON, or a valid one with a field mangled)
//! panics the codec, the upcasters or the projections; bus entries decode or
//! are refused.
//!
//! Long run: `PROPTEST_CASES=100000 cargo test --test integration fuzz_events`.

use chrono::Utc;
use commerce::{
    bus::EventEnvelope,
    domain::{
        money::{Currency, Money},
        order::{
            CancellationRequested, InventoryReserved, OrderCancelled, OrderConfirmed, OrderCreated,
            OrderEvent, OrderLine, PaymentAuthorized, PaymentCaptured, PersonalData, ShippingAddress,
            ShippingArranged,
        },
    },
    store::event_store::{EventMetadata, OrderCodec, StoredEvent},
};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9_-]{0,12}", "\\PC{0,24}"]
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn any_line(currency: Currency) -> impl Strategy<Value = OrderLine> {
    (text(), text(), 1u32..=999, 1i64..=100_000_000).prop_map(move |(id, name, quantity, minor)| {
        let unit_price = Money::from_minor_units(minor, currency);
        OrderLine {
            product_id: id,
            product_name: name,
            quantity,
            line_total: unit_price.checked_mul(quantity).expect("small"),
            unit_price,
        }
    })
}

fn any_address() -> impl Strategy<Value = ShippingAddress> {
    (text(), text(), text(), text(), text(), text(), "[A-Z]{2}").prop_map(
        |(recipient_name, line1, line2, city, region, postal_code, country)| ShippingAddress {
            recipient_name,
            line1,
            line2,
            city,
            region,
            postal_code,
            country,
        },
    )
}

fn any_created() -> impl Strategy<Value = OrderCreated> {
    prop::sample::select(Currency::ALL.to_vec()).prop_flat_map(|currency| {
        (
            uuid(),
            text(),
            uuid(),
            prop::collection::vec(any_line(currency), 1..6),
            any_address(),
            text(),
            prop::option::of(uuid()),
        )
            .prop_map(
                move |(order_id, customer_id, cart_id, items, address, method, saga_id)| {
                    let total = items.iter().try_fold(Money::zero(currency), |sum, line| {
                        sum.checked_add(&line.line_total)
                    });
                    OrderCreated {
                        order_id,
                        customer_id,
                        cart_id,
                        currency,
                        total: total.expect("small"),
                        items,
                        personal: PersonalData {
                            shipping_address: address,
                            payment_method: method,
                        },
                        saga_id,
                    }
                },
            )
    })
}

fn any_event() -> impl Strategy<Value = OrderEvent> {
    prop_oneof![
        any_created().prop_map(|c| OrderEvent::Created(Box::new(c))),
        text().prop_map(
            |authorization_id| OrderEvent::PaymentAuthorized(PaymentAuthorized { authorization_id })
        ),
        text().prop_map(|reservation_id| OrderEvent::InventoryReserved(InventoryReserved { reservation_id })),
        (text(), text()).prop_map(|(shipment_id, tracking_number)| {
            OrderEvent::ShippingArranged(ShippingArranged {
                shipment_id,
                tracking_number,
            })
        }),
        text().prop_map(|capture_id| OrderEvent::PaymentCaptured(PaymentCaptured { capture_id })),
        Just(OrderEvent::Confirmed(OrderConfirmed {})),
        (text(), text()).prop_map(|(reason, requested_by)| {
            OrderEvent::CancellationRequested(CancellationRequested { reason, requested_by })
        }),
        (
            text(),
            proptest::sample::select(commerce::domain::reason::ErrorReason::ALL)
        )
            .prop_map(|(reason, reason_code)| {
                OrderEvent::Cancelled(OrderCancelled { reason, reason_code })
            }),
    ]
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::from),
        Just(json!("1e999")),
        Just(json!("NaN")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,14}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn event_types() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "OrderCreated",
            "PaymentAuthorized",
            "InventoryReserved",
            "ShippingArranged",
            "PaymentCaptured",
            "OrderConfirmed",
            "CancellationRequested",
            "OrderCancelled",
        ])
        .prop_map(String::from),
        "\\PC{0,20}",
    ]
}

/// An event as the store returns it: the payload upcast from `schema_version`.
fn stored(event_type: &str, schema_version: i32, payload: Value) -> Result<StoredEvent, String> {
    Ok(StoredEvent {
        event_id: Uuid::now_v7(),
        stream_id: Uuid::now_v7(),
        stream_type: "order".into(),
        version: 1,
        global_position: 1,
        event_type: event_type.into(),
        schema_version,
        payload: OrderCodec::upcasters().upcast(event_type, schema_version, payload)?,
        metadata: EventMetadata::default(),
        recorded_at: Utc::now(),
    })
}

/// The v1 shape of an `OrderCreated` v2 payload: personal data at the top, no saga id.
fn downgrade_to_v1(mut payload: Value) -> Value {
    let obj = payload.as_object_mut().expect("an object");
    let personal = obj.remove("personal").expect("v2 has personal");
    obj.remove("saga_id");
    obj.insert("shipping_address".into(), personal["shipping_address"].clone());
    obj.insert("payment_method".into(), personal["payment_method"].clone());
    payload
}

/// `payload` with the value at one pseudo-randomly chosen key replaced.
fn mangle(payload: &mut Value, pick: usize, replacement: Value) {
    match payload {
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(pick % map.len()).cloned().expect("in range");
            let value = map.get_mut(&key).expect("present");
            if pick.is_multiple_of(3) && (value.is_object() || value.is_array()) {
                mangle(value, pick / 3, replacement);
            } else if pick.is_multiple_of(7) {
                map.remove(&key);
            } else {
                *value = replacement;
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let len = items.len();
            mangle(&mut items[pick % len], pick / 2, replacement);
        }
        other => *other = replacement,
    }
}

proptest! {
    #[test]
    fn every_order_event_round_trips_through_the_codec(event in any_event()) {
        let new = OrderCodec.encode(&event, &EventMetadata::default()).expect("encodes");
        prop_assert_eq!(new.schema_version, OrderCodec::schema_version(&event));
        let stored = stored(&new.event_type, new.schema_version, new.payload).expect("current schema");
        let back = OrderCodec.decode(&stored).expect("decodes");
        prop_assert_eq!(&back, &event);
        // The read side reads exactly what the write side wrote.
        let projected = commerce::projections::order_event::decode(&stored).expect("the projections accept it");
        prop_assert_eq!(projected, event);
    }

    #[test]
    fn an_order_created_stored_at_schema_v1_decodes_as_todays_event(created in any_created()) {
        let event = OrderEvent::Created(Box::new(created.clone()));
        let new = OrderCodec.encode(&event, &EventMetadata::default()).expect("encodes");
        let v1 = downgrade_to_v1(new.payload);
        let back = OrderCodec.decode(&stored("OrderCreated", 1, v1).expect("upcasts")).expect("decodes");
        prop_assert_eq!(back, OrderEvent::Created(Box::new(OrderCreated { saga_id: None, ..created })));
    }

    #[test]
    fn random_payloads_never_panic_the_codec_or_the_upcasters(
        event_type in event_types(), schema_version in -2i32..5, payload in any_json()
    ) {
        let Ok(stored) = stored(&event_type, schema_version, payload) else {
            return Ok(()); // A corrupt old payload is an upcasting error: fine, no panic.
        };
        let _ = OrderCodec.decode(&stored);
        let _ = commerce::projections::order_event::decode(&stored);
    }

    #[test]
    fn a_valid_payload_with_one_field_mangled_is_decoded_or_refused_never_panics(
        event in any_event(), v1 in any::<bool>(), pick in any::<usize>(), replacement in any_json()
    ) {
        let new = OrderCodec.encode(&event, &EventMetadata::default()).expect("encodes");
        let (version, mut payload) = match (&event, v1) {
            (OrderEvent::Created(_), true) => (1, downgrade_to_v1(new.payload)),
            _ => (new.schema_version, new.payload),
        };
        mangle(&mut payload, pick, replacement);
        if let Ok(stored) = stored(&new.event_type, version, payload)
            && let Ok(decoded) = OrderCodec.decode(&stored)
        {
            // Whatever decodes is a well-formed event again.
            prop_assert_eq!(decoded.event_type(), event.event_type());
            if let OrderEvent::Created(c) = &decoded {
                for line in &c.items {
                    prop_assert_eq!(line.unit_price.amount().scale(), line.unit_price.currency().decimals());
                }
            }
        }
    }

    #[test]
    fn bus_entries_decode_or_are_refused_never_panic(raw in prop_oneof![
        any_json().prop_map(|v| v.to_string()),
        "\\PC{0,64}",
    ]) {
        if let Ok(envelope) = serde_json::from_str::<EventEnvelope>(&raw) {
            prop_assert_eq!(serde_json::from_str::<EventEnvelope>(&envelope.encode()).ok(), Some(envelope));
        }
    }
}
