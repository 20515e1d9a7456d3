//! Many clients on one cart, and on one order, at once: the final state
//! equals a serial order of the accepted operations, and every refused one
//! left no trace.
//!
//! For the cart, each accepted call answers with the cart after it and its
//! version; sorted by version, the answers must be gapless and each must equal
//! a model cart that applied the accepted operations one by one in that order.

use std::collections::BTreeSet;

use commerce::proto::commerce::v1::{
    AddItemRequest, Cart, GetCartRequest, RemoveItemRequest, UpdateItemQuantityRequest,
};
use futures::future::join_all;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::Code;

use crate::support::{
    self,
    app::{Backend, TestApp, authed, spawn_app_with},
    orders::cart_with,
};

const PRODUCTS: [&str; 4] = ["apple", "pear", "fig", "kiwi"];

#[derive(Debug, Clone)]
enum Op {
    Add(&'static str, i32),
    Update(&'static str, i32),
    Remove(&'static str),
}

/// A model cart: (product, quantity) in first-added order.
fn apply(model: &mut Vec<(String, i32)>, op: &Op) {
    let at = |m: &Vec<(String, i32)>, p: &str| m.iter().position(|(q, _)| q == p);
    match *op {
        Op::Add(p, n) => match at(model, p) {
            Some(i) => model[i].1 += n,
            None => model.push((p.to_string(), n)),
        },
        Op::Update(p, 0) | Op::Remove(p) => model.retain(|(q, _)| q != p),
        Op::Update(p, n) => match at(model, p) {
            Some(i) => model[i].1 = n,
            None => model.push((p.to_string(), n)),
        },
    }
}

fn lines(cart: &Cart) -> Vec<(String, i32)> {
    cart.items
        .iter()
        .map(|i| (i.product_id.clone(), i.quantity))
        .collect()
}

async fn send(
    app: &TestApp,
    token: &str,
    cart_id: &str,
    op: &Op,
    expected: Option<i64>,
) -> Result<Cart, tonic::Status> {
    let cart_id = cart_id.to_string();
    let cart = match *op {
        Op::Add(p, n) => {
            let request = AddItemRequest {
                cart_id,
                product_id: p.into(),
                product_name: p.into(),
                quantity: n,
                unit_price: "1.25".into(),
                expected_version: expected,
            };
            app.carts()
                .add_item(authed(request, token))
                .await?
                .into_inner()
                .cart
        }
        Op::Update(p, n) => {
            let request = UpdateItemQuantityRequest {
                cart_id,
                product_id: p.into(),
                quantity: n,
                expected_version: expected,
            };
            app.carts()
                .update_item_quantity(authed(request, token))
                .await?
                .into_inner()
                .cart
        }
        Op::Remove(p) => {
            let request = RemoveItemRequest {
                cart_id,
                product_id: p.into(),
                expected_version: expected,
            };
            app.carts()
                .remove_item(authed(request, token))
                .await?
                .into_inner()
                .cart
        }
    };
    Ok(cart.expect("a cart"))
}

#[tokio::test]
async fn concurrent_clients_on_one_cart_leave_it_equal_to_a_serial_order_of_the_accepted_calls() {
    let seed = support::seed("cart concurrency");
    let (clients, per_client) = (support::scale(8, 32), support::scale(24, 100));
    let app = spawn_app_with(Backend::from_env(), &[("RATE_LIMIT_PER_SECOND", "0")]).await;
    let alice = app.customer("alice");
    let start = cart_with(&app, &alice, &[("apple", 1, "1.25")]).await;
    let id = start.cart_id.clone();
    let mut rng = StdRng::seed_from_u64(seed);
    let plans: Vec<Vec<(Op, bool)>> = (0..clients)
        .map(|_| {
            (0..per_client)
                .map(|_| {
                    let p = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
                    let op = match rng.random_range(0..10) {
                        0..5 => Op::Add(p, rng.random_range(1..4)),
                        5..8 => Op::Update(p, rng.random_range(0..6)),
                        _ => Op::Remove(p),
                    };
                    // A third of the calls are conditional on the version last seen.
                    (op, rng.random_range(0..3) == 0)
                })
                .collect()
        })
        .collect();
    let outcomes = join_all(plans.into_iter().map(|plan| {
        let (app, alice, id) = (&app, alice.clone(), id.clone());
        async move {
            let mut seen = 1;
            let mut results = Vec::new();
            for (op, conditional) in plan {
                let expected = conditional.then_some(seen);
                let result = send(app, &alice, &id, &op, expected).await;
                if let Ok(cart) = &result {
                    seen = cart.version;
                }
                results.push((op, result));
            }
            results
        }
    }))
    .await;

    let mut accepted: Vec<(i64, Op, Cart)> = Vec::new();
    let mut refused = 0;
    for (op, result) in outcomes.into_iter().flatten() {
        match result {
            Ok(cart) => accepted.push((cart.version, op, cart)),
            Err(status) => {
                // A stale expected version, a line that is not there (any more),
                // or a line over 999: refusals, never a partial effect.
                assert!(
                    matches!(
                        status.code(),
                        Code::Aborted | Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition
                    ),
                    "{op:?}: {status:?}"
                );
                refused += 1;
            }
        }
    }
    accepted.sort_by_key(|(version, _, _)| *version);
    let versions: BTreeSet<i64> = accepted.iter().map(|(v, _, _)| *v).collect();
    assert_eq!(versions.len(), accepted.len(), "two calls got the same version");
    let mut model = lines(&start);
    let mut expected_version = start.version;
    for (version, op, cart) in &accepted {
        expected_version += 1;
        assert_eq!(*version, expected_version, "versions are gapless");
        apply(&mut model, op);
        assert_eq!(
            lines(cart),
            model,
            "seed {seed}: after {op:?} at version {version}"
        );
    }
    let last = app
        .carts()
        .get_cart(authed(GetCartRequest { cart_id: id }, &alice))
        .await
        .unwrap()
        .into_inner()
        .cart
        .unwrap();
    assert_eq!((last.version, lines(&last)), (expected_version, model));
    println!(
        "cart concurrency: seed {seed}, {} calls accepted, {refused} refused, serializable",
        accepted.len()
    );
}

/// Per order: events as stored (type per version, gapless from 1).
async fn stream_types(app: &TestApp, order_id: &str) -> Vec<String> {
    let id = order_id.parse().expect("a UUID");
    let events = app.app.events.read_stream(id, 1).await.expect("readable");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.version, i as u64 + 1, "{order_id}: versions are gapless");
    }
    events.into_iter().map(|e| e.event_type).collect()
}

#[tokio::test]
async fn concurrent_cancels_racing_the_saga_on_one_order_leave_one_consistent_history() {
    let seed = support::seed("order concurrency");
    let mut rng = StdRng::seed_from_u64(seed);
    let orders = support::scale(12, 60);
    let app = spawn_app_with(
        Backend::from_env(),
        &[("RATE_LIMIT_PER_SECOND", "0"), ("STUB_LATENCY_MS", "15")],
    )
    .await;
    let payments = commerce::proto::payment::v1::payment_service_client::PaymentServiceClient::connect(
        app.app.sagas.sibling_urls().payment.clone(),
    )
    .await
    .expect("the embedded stubs");
    let (mut cancelled, mut confirmed, mut accepted_cancels, mut refused_cancels) = (0, 0, 0, 0);
    for n in 0..orders {
        let customer = format!("racer-{n}");
        let token = app.customer(&customer);
        let cart = cart_with(&app, &token, &[("drum", 1, "40.00")]).await;
        let order = app
            .orders()
            .create_order(authed(
                crate::support::orders::order_request(&cart.cart_id, "k"),
                &token,
            ))
            .await
            .expect("placed")
            .into_inner()
            .order
            .unwrap();
        // Eight cancels at a random moment of the saga, all at once.
        tokio::time::sleep(std::time::Duration::from_millis(rng.random_range(0..120))).await;
        let results = join_all((0..8).map(|_| {
            let (app, token, id) = (&app, token.clone(), order.order_id.clone());
            async move {
                let request = commerce::proto::commerce::v1::CancelOrderRequest {
                    order_id: id,
                    reason: "changed my mind".into(),
                };
                app.orders().cancel_order(authed(request, &token)).await
            }
        }))
        .await;
        for result in &results {
            match result {
                Ok(_) => accepted_cancels += 1,
                // Past the capture a cancel is refused: that is the pivot.
                Err(s) if s.code() == Code::FailedPrecondition => refused_cancels += 1,
                Err(s) => panic!("seed {seed}: cancel answered {s:?}"),
            }
        }
        crate::support::wait_for_within("the order to end", std::time::Duration::from_secs(30), || async {
            let types = stream_types(&app, &order.order_id).await;
            types
                .iter()
                .any(|t| t == "OrderConfirmed" || t == "OrderCancelled")
        })
        .await;
        let types = stream_types(&app, &order.order_id).await;
        let count = |t: &str| types.iter().filter(|x| *x == t).count();
        assert_eq!(count("OrderCreated"), 1, "{types:?}");
        assert!(
            count("CancellationRequested") <= 1,
            "one request recorded, the rest no-ops: {types:?}"
        );
        assert_eq!(count("OrderConfirmed") + count("OrderCancelled"), 1, "{types:?}");
        let accepted_here = results.iter().filter(|r| r.is_ok()).count();
        if accepted_here > 0 {
            assert_eq!(
                count("CancellationRequested"),
                1,
                "an accepted cancel is recorded: {types:?}"
            );
        }
        let auths = payments
            .clone()
            .list_authorizations(commerce::proto::payment::v1::ListAuthorizationsRequest {
                order_id: order.order_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .authorizations;
        assert!(auths.len() <= 1, "{auths:?}");
        let captured: i32 = auths.iter().map(|a| a.capture_count).sum();
        if count("OrderCancelled") == 1 {
            cancelled += 1;
            assert_eq!(captured, 0, "a cancelled order keeps no payment");
            assert_eq!(count("PaymentCaptured"), 0);
        } else {
            confirmed += 1;
            assert_eq!((captured, count("PaymentCaptured")), (1, 1), "{types:?}");
            // Confirmed although cancels were accepted: only if capture came first
            // or was already under way (the pivot), never after a compensation.
            assert_eq!(count("OrderCancelled"), 0);
        }
    }
    println!(
        "order concurrency: seed {seed}, {orders} orders x 8 concurrent cancels racing the saga: \
         {cancelled} cancelled, {confirmed} confirmed; {accepted_cancels} cancels accepted, {refused_cancels} refused"
    );
}
