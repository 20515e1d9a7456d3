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

use crate::{
    helpers::{Backend, TestApp, authed, spawn_app_with},
    support::{self, shop::cart_with},
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
