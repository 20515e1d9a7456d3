//! CreateOrder under one idempotency key, 1,000 times, half of them at once:
//! one order, one saga, one payment authorization, identical answers; another body under the key is
//! refused and a key still in flight is ABORTED, and neither stores anything.

use std::time::Duration;

use commerce::startup::Stores;
use commerce::store::event_store::Upcasters;
use commerce::{
    app::orders::validate::{AddressInput, CreateOrderInput, create_order},
    store::idempotency::Claim,
};
use futures::future::join_all;
use tonic::Code;
use uuid::Uuid;

use crate::support::{
    self,
    app::{Backend, TestApp, authed, spawn_app_with},
    orders::{cart_with, order_request, violated_fields},
    store::count,
};

/// Stored effects of CreateOrder: orders placed, sagas started (the saga's
/// own later events are not counted: it runs on while the test goes on).
async fn stored(app: &TestApp) -> [i64; 2] {
    let db = &app.app.backends.db;
    [
        count(
            db,
            "SELECT COUNT(*) FROM events WHERE event_type = 'OrderCreated'",
        )
        .await,
        count(db, "SELECT COUNT(*) FROM sagas").await,
    ]
}

#[tokio::test]
async fn one_key_sent_a_thousand_times_half_at_once_makes_one_order_with_identical_answers() {
    let total = support::scale(1_000, 5_000);
    let app = spawn_app_with(Backend::from_env(), &[("RATE_LIMIT_PER_SECOND", "0")]).await;
    let alice = app.customer("alice");
    let cart = cart_with(&app, &alice, &[("lamp", 2, "19.99"), ("bulb", 4, "2.50")]).await;
    let request = order_request(&cart.cart_id, "checkout-7f3a");

    // Half at once: the first claims the key, the others are answered
    // ABORTED while it is in flight, or with its answer once it is done.
    let concurrent = join_all((0..total / 2).map(|_| {
        let (mut orders, request, alice) = (app.orders(), request.clone(), alice.clone());
        async move { orders.create_order(authed(request, &alice)).await }
    }))
    .await;
    let mut answers = Vec::new();
    let (mut in_flight, mut overloaded) = (0, 0);
    for outcome in concurrent {
        match outcome {
            Ok(response) => answers.push(response.into_inner().order.expect("an order")),
            Err(status) => {
                // In flight (ABORTED), or the pool saturated by 500 calls at
                // once (UNAVAILABLE, after POOL_TIMEOUT_MS): both say "retry".
                match status.code() {
                    Code::Aborted => in_flight += 1,
                    Code::Unavailable => overloaded += 1,
                    _ => panic!("only 'in flight' or 'overloaded' may refuse: {status:?}"),
                }
                // A client retries an ABORTED request; it then gets the answer.
                // Retries for up to 30 s: 500 calls at once on a loaded 2-core CI
                // machine keep the pool saturated for seconds.
                let mut retried = None;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while tokio::time::Instant::now() < deadline {
                    match app.orders().create_order(authed(request.clone(), &alice)).await {
                        Ok(r) => {
                            retried = r.into_inner().order;
                            break;
                        }
                        Err(s) if matches!(s.code(), Code::Aborted | Code::Unavailable) => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        Err(s) => panic!("retry refused: {s:?}"),
                    }
                }
                answers.push(retried.expect("the retry is answered"));
            }
        }
    }
    // The other half one after the other.
    for _ in 0..total - total / 2 {
        let response = app.orders().create_order(authed(request.clone(), &alice)).await;
        answers.push(
            response
                .expect("a repeat is answered")
                .into_inner()
                .order
                .expect("an order"),
        );
    }
    assert_eq!(answers.len(), total);
    let first = answers[0].clone();
    assert!(
        answers.iter().all(|a| *a == first),
        "every answer is the first order"
    );
    assert_eq!((first.version, first.total.as_str()), (1, "49.98"));
    assert_eq!(stored(&app).await, [1, 1], "one order, stored once");
    // The saga ran once: one authorization in the payment ledger.
    let mut payments = commerce::proto::payment::v1::payment_service_client::PaymentServiceClient::connect(
        app.app.sagas.sibling_urls().payment.clone(),
    )
    .await
    .expect("the embedded stubs");
    let order_id: Uuid = first.order_id.parse().unwrap();
    crate::support::wait_for_within("the order's saga to end", Duration::from_secs(30), || async {
        let events = app.app.events.read_stream(order_id, 1).await.unwrap();
        events
            .iter()
            .any(|e| e.event_type == "OrderConfirmed" || e.event_type == "OrderCancelled")
    })
    .await;
    let ledger = payments
        .list_authorizations(commerce::proto::payment::v1::ListAuthorizationsRequest {
            order_id: first.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .authorizations;
    assert_eq!(ledger.len(), 1, "one authorization: {ledger:?}");
    assert_eq!(ledger[0].capture_count, 1);
    println!(
        "idempotency: {total} CreateOrder calls ({in_flight} ABORTED in flight, {overloaded} UNAVAILABLE under \
         load, all retried): 1 order, 1 authorization"
    );

    // Another body under the same key: refused, naming the key; nothing stored.
    let other_cart = cart_with(&app, &alice, &[("desk", 1, "120.00")]).await;
    let mut other = order_request(&other_cart.cart_id, "checkout-7f3a");
    other.payment_method = "pm_card_mastercard".into();
    let refused = app
        .orders()
        .create_order(authed(other, &alice))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(violated_fields(&refused), ["idempotency_key"]);
    assert_eq!(stored(&app).await, [1, 1]);

    // A key held by an attempt still in flight (as a request on another
    // replica would hold it): ABORTED, and the cart is left as it was.
    let held = order_request(&other_cart.cart_id, "checkout-held");
    let input = CreateOrderInput {
        cart_id: held.cart_id.clone(),
        payment_method: held.payment_method.clone(),
        shipping_address: held.shipping_address.clone().map(|a| AddressInput {
            recipient_name: a.recipient_name,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            region: a.region,
            postal_code: a.postal_code,
            country: a.country,
        }),
        idempotency_key: held.idempotency_key.clone(),
    };
    let hash = create_order(input).expect("valid").request_hash("alice");
    let claim = Claim {
        customer_id: "alice".into(),
        key: "checkout-held".into(),
        request_hash: hash,
        order_id: Uuid::now_v7(),
        lease: Duration::from_secs(60),
        snapshot: None,
    };
    Stores::on(&app.app.backends.db, Upcasters::none(), true)
        .idempotency_keys
        .claim(&claim)
        .await
        .expect("claimed");
    let aborted = app.orders().create_order(authed(held, &alice)).await.unwrap_err();
    assert_eq!(aborted.code(), Code::Aborted, "{aborted:?}");
    assert_eq!(stored(&app).await, [1, 1]);
    let untouched = app
        .carts()
        .get_cart(authed(
            commerce::proto::commerce::v1::GetCartRequest {
                cart_id: other_cart.cart_id.clone(),
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!(untouched, other_cart, "the cart is untouched");
}
