//! Given/when/then tests of the Order aggregate, and property tests of its
//! invariants over random command sequences.

use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::domain::{
    cart::CartItem,
    money::{Currency, Money},
    reason::ErrorReason,
};

fn usd(text: &str) -> Money {
    Money::parse(text, Currency::Usd).unwrap()
}

fn personal() -> PersonalData {
    PersonalData {
        shipping_address: ShippingAddress {
            recipient_name: "Ada Lovelace".into(),
            line1: "1 Analytical Way".into(),
            line2: String::new(),
            city: "London".into(),
            region: String::new(),
            postal_code: "N1 9GU".into(),
            country: "GB".into(),
        },
        payment_method: "pm_card_visa".into(),
    }
}

fn item(product: &str, quantity: u32, price: &str) -> CartItem {
    CartItem {
        product_id: product.into(),
        product_name: format!("{product} name"),
        quantity,
        unit_price: usd(price),
    }
}

fn place(items: Vec<CartItem>) -> OrderCommand {
    OrderCommand::Place(Box::new(PlaceOrder {
        order_id: Uuid::nil(),
        customer_id: "alice".into(),
        cart_id: Uuid::nil(),
        items,
        currency: Currency::Usd,
        personal: personal(),
        saga_id: None,
    }))
}

/// given(events).when(command) -> the decision.
fn given(commands: Vec<OrderCommand>) -> Order {
    let mut order = Order::default();
    for command in commands {
        for event in order.handle(command).expect("given command accepted") {
            order.apply(&event);
        }
    }
    order
}

fn authorized() -> OrderCommand {
    OrderCommand::MarkPaymentAuthorized {
        authorization_id: "auth-1".into(),
    }
}
fn reserved() -> OrderCommand {
    OrderCommand::MarkInventoryReserved {
        reservation_id: "res-1".into(),
    }
}
fn arranged() -> OrderCommand {
    OrderCommand::MarkShippingArranged {
        shipment_id: "shp-1".into(),
        tracking_number: "TRK1".into(),
    }
}
fn captured() -> OrderCommand {
    OrderCommand::MarkPaymentCaptured {
        capture_id: "cap-1".into(),
    }
}
fn cancel(reason: &str) -> OrderCommand {
    OrderCommand::Cancel {
        reason: reason.into(),
        code: ErrorReason::OutOfStock,
    }
}

#[test]
fn placing_an_order_snapshots_prices_and_totals_the_lines() {
    let events = Order::default()
        .handle(place(vec![item("a", 2, "19.99"), item("b", 1, "0.02")]))
        .unwrap();
    let [OrderEvent::Created(created)] = events.as_slice() else {
        panic!("expected OrderCreated, got {events:?}");
    };
    assert_eq!(created.items[0].line_total, usd("39.98"));
    assert_eq!(created.total, usd("40.00"));
    assert_eq!(created.personal.payment_method, "pm_card_visa");
    let order = Order::from_events(&events);
    assert_eq!(
        (order.version, order.status, order.item_count()),
        (1, OrderStatus::Pending, 3)
    );
}

#[test]
fn placing_is_refused_when_empty_when_already_placed_or_with_a_bad_line() {
    assert_eq!(Order::default().handle(place(vec![])), Err(OrderError::Empty));
    let order = given(vec![place(vec![item("a", 1, "1")])]);
    assert_eq!(
        order.handle(place(vec![item("a", 1, "1")])),
        Err(OrderError::AlreadyPlaced)
    );
    let bad = Order::default().handle(place(vec![item("a", 0, "1")]));
    assert!(matches!(bad, Err(OrderError::InvalidLine { .. })), "{bad:?}");
    let mut euro = item("e", 1, "1");
    euro.unit_price = Money::parse("1", Currency::Eur).unwrap();
    assert!(matches!(
        Order::default().handle(place(vec![euro])),
        Err(OrderError::InvalidLine { .. })
    ));
}

#[test]
fn the_happy_path_walks_every_status_to_confirmed() {
    let mut order = given(vec![place(vec![item("a", 1, "5")])]);
    let steps = [
        (authorized(), OrderStatus::PaymentAuthorized),
        (reserved(), OrderStatus::InventoryReserved),
        (arranged(), OrderStatus::ShippingArranged),
        (captured(), OrderStatus::ShippingArranged),
        (OrderCommand::Confirm, OrderStatus::Confirmed),
    ];
    for (command, status) in steps {
        for event in order.handle(command).unwrap() {
            order.apply(&event);
        }
        assert_eq!(order.status, status);
    }
    assert_eq!(order.version, 6);
}

#[test]
fn steps_out_of_order_are_typed_refusals_and_repeats_are_no_ops() {
    let order = given(vec![place(vec![item("a", 1, "5")])]);
    assert_eq!(
        order.handle(reserved()),
        Err(OrderError::InvalidTransition {
            command: "MarkInventoryReserved",
            status: OrderStatus::Pending
        })
    );
    assert!(matches!(
        order.handle(OrderCommand::Confirm),
        Err(OrderError::InvalidTransition { .. })
    ));
    let order = given(vec![place(vec![item("a", 1, "5")]), authorized()]);
    assert_eq!(order.handle(authorized()), Ok(vec![]), "the same fact again");
    let other = OrderCommand::MarkPaymentAuthorized {
        authorization_id: "auth-2".into(),
    };
    assert!(matches!(
        order.handle(other),
        Err(OrderError::ConflictingFact { .. })
    ));
    assert_eq!(Order::default().handle(authorized()), Err(OrderError::NotFound));
}

#[test]
fn cancellation_is_possible_before_capture_and_refused_after_it() {
    for before in [
        vec![],
        vec![authorized()],
        vec![authorized(), reserved(), arranged()],
    ] {
        let mut commands = vec![place(vec![item("a", 1, "5")])];
        commands.extend(before);
        let order = given(commands);
        let events = order.handle(cancel("changed my mind")).unwrap();
        let cancelled = {
            let mut o = order.clone();
            events.iter().for_each(|e| o.apply(e));
            o
        };
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
        assert_eq!(cancelled.cancellation_reason.as_deref(), Some("changed my mind"));
        assert_eq!(cancelled.cancellation_reason_code, Some(ErrorReason::OutOfStock));
    }
    let past_pivot = given(vec![
        place(vec![item("a", 1, "5")]),
        authorized(),
        reserved(),
        arranged(),
        captured(),
    ]);
    assert_eq!(past_pivot.handle(cancel("late")), Err(OrderError::CaptureIsFinal));
    let request = OrderCommand::RequestCancellation {
        reason: "late".into(),
        requested_by: "alice".into(),
    };
    assert_eq!(past_pivot.handle(request), Err(OrderError::CaptureIsFinal));
}

#[test]
fn a_cancellation_request_is_recorded_once_and_facts_still_arrive_while_it_is_pending() {
    let request = OrderCommand::RequestCancellation {
        reason: "too slow".into(),
        requested_by: "alice".into(),
    };
    let order = given(vec![place(vec![item("a", 1, "5")]), request.clone()]);
    assert!(order.cancellation_requested.is_some());
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(
        order.handle(request.clone()),
        Ok(vec![]),
        "asked twice, recorded once"
    );
    // The saga's authorization happened before it saw the request: still recorded.
    assert_eq!(order.handle(authorized()).unwrap().len(), 1);
    let cancelled = given(vec![place(vec![item("a", 1, "5")]), cancel("x")]);
    assert_eq!(
        cancelled.handle(request),
        Ok(vec![]),
        "already cancelled: nothing to do"
    );
    assert_eq!(cancelled.handle(cancel("again")), Ok(vec![]));
}

fn any_command() -> impl Strategy<Value = OrderCommand> {
    let id = prop_oneof![Just("1".to_string()), Just("2".to_string())];
    let line = (
        0u32..4,
        0i64..100_000,
        prop_oneof![Just("a"), Just("b"), Just("c")],
    )
        .prop_map(|(q, cents, p)| CartItem {
            product_id: p.into(),
            product_name: p.into(),
            quantity: q,
            unit_price: Money::from_minor_units(cents, Currency::Usd),
        });
    prop_oneof![
        prop::collection::vec(line, 0..4).prop_map(place),
        id.clone()
            .prop_map(|authorization_id| OrderCommand::MarkPaymentAuthorized { authorization_id }),
        id.clone()
            .prop_map(|reservation_id| OrderCommand::MarkInventoryReserved { reservation_id }),
        id.clone()
            .prop_map(|shipment_id| OrderCommand::MarkShippingArranged {
                shipment_id,
                tracking_number: "T".into()
            }),
        id.prop_map(|capture_id| OrderCommand::MarkPaymentCaptured { capture_id }),
        Just(OrderCommand::Confirm),
        Just(OrderCommand::RequestCancellation {
            reason: "r".into(),
            requested_by: "c".into()
        }),
        Just(cancel("c")),
    ]
}

proptest! {
    #[test]
    fn random_command_sequences_never_break_the_invariants(commands in prop::collection::vec(any_command(), 0..40)) {
        let mut order = Order::default();
        let mut history: Vec<OrderEvent> = Vec::new();
        for command in commands {
            let before = order.clone();
            let Ok(events) = order.handle(command) else {
                continue;
            };
            for event in &events {
                order.apply(event);
            }
            history.extend(events.iter().cloned());
            // Versions are gapless: one per event, and the fold of the whole history agrees.
            prop_assert_eq!(order.version, history.len() as u64);
            prop_assert_eq!(&Order::from_events(&history), &order);
            // Terminal stays terminal: nothing is accepted after CONFIRMED or CANCELLED.
            if before.status.is_terminal() && before.placed.is_some() {
                prop_assert!(events.is_empty(), "{:?} changed a terminal order", events);
                prop_assert_eq!(order.status, before.status);
            }
            // Past the pivot, never cancelled.
            if before.is_captured() {
                prop_assert_ne!(order.status, OrderStatus::Cancelled);
            }
        }
        if let Some(placed) = &order.placed {
            // Totals equal the sum of the lines, each line its quantity x price.
            let mut sum = Money::zero(placed.currency);
            for line in &placed.items {
                prop_assert!(line.quantity >= 1);
                prop_assert_eq!(line.unit_price.checked_mul(line.quantity).unwrap(), line.line_total);
                sum = sum.checked_add(&line.line_total).unwrap();
            }
            prop_assert_eq!(sum, placed.total);
            prop_assert!(!placed.items.is_empty());
            prop_assert_eq!(matches!(history.first(), Some(OrderEvent::Created(_))), true);
        } else {
            prop_assert!(history.is_empty());
        }
    }
}
