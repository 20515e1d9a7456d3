//! Dependency outages: PostgreSQL and Redis each behind a TCP proxy the test
//! cuts (connections refused), stalls (a partition: connections hang) and
//! restores. While a dependency is away, calls that need it answer
//! UNAVAILABLE within the pool timeout, gRPC health says NOT_SERVING, nothing
//! half-done is stored; when it returns the service recovers by itself and
//! the interrupted work completes exactly once. The machine's shared servers
//! are never touched.

use std::time::{Duration, Instant};

use commerce::proto::commerce::v1::{CartStatus, GetCartRequest};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{
    app::{Backend, Isolation, TestApp, authed, spawn_on},
    orders::{cart_with, order_request},
    proxy::Proxy,
    store::count,
    wait_for, wait_for_within,
};

/// POOL_TIMEOUT_MS of these tests.
const POOL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a refused call may take: the pool timeout plus slack for a busy machine.
const PROMPT: Duration = Duration::from_millis(1_500);

async fn health(app: &TestApp, service: &str) -> i32 {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

async fn orders_placed(app: &TestApp) -> i64 {
    count(
        &app.app.backends.db,
        "SELECT COUNT(*) FROM events WHERE event_type = 'OrderCreated'",
    )
    .await
}

/// A server whose PostgreSQL and Redis are reached through proxies.
async fn proxied_app() -> Option<(TestApp, Proxy, Proxy)> {
    if Backend::from_env() != Backend::Real {
        // Needs real servers to put the proxies in front of (CI has them).
        return None;
    }
    let isolation = Isolation::new(Backend::Real).await;
    let (pg, pg_url) = Proxy::for_url(&isolation.vars["DATABASE_URL"]).await;
    let (redis, redis_url) = Proxy::for_url(&isolation.vars["REDIS_URL"]).await;
    let timeout = POOL_TIMEOUT.as_millis().to_string();
    let app = spawn_on(
        isolation,
        &[
            ("DATABASE_URL", &pg_url),
            ("REDIS_URL", &redis_url),
            ("POOL_TIMEOUT_MS", &timeout),
            ("RATE_LIMIT_PER_SECOND", "0"),
        ],
    )
    .await;
    Some((app, pg, redis))
}

#[tokio::test]
async fn postgres_away_is_unavailable_promptly_not_serving_and_recovers_with_nothing_lost() {
    let Some((app, pg, _redis)) = proxied_app().await else {
        return;
    };
    let alice = app.customer("alice");
    let first = cart_with(&app, &alice, &[("lamp", 1, "19.99")]).await;
    let placed = app
        .orders()
        .create_order(authed(order_request(&first.cart_id, "before"), &alice))
        .await
        .expect("an order before the outage")
        .into_inner()
        .order
        .unwrap();
    let second = cart_with(&app, &alice, &[("desk", 1, "99.00")]).await;

    for (mode, cut) in [("cut", true), ("stall", false)] {
        if cut {
            pg.cut();
        } else {
            pg.stall();
        }
        let started = Instant::now();
        let refused = app
            .orders()
            .create_order(authed(order_request(&second.cart_id, "during"), &alice))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{mode}: {refused:?}");
        assert!(started.elapsed() < PROMPT, "{mode}: took {:?}", started.elapsed());
        wait_for("gRPC health to say NOT_SERVING", || async {
            health(&app, "commerce.v1.OrderService").await == ServingStatus::NotServing as i32
                && health(&app, "").await == ServingStatus::NotServing as i32
        })
        .await;
        // Liveness stays SERVING: a database outage must not get pods restarted.
        assert_eq!(health(&app, "liveness").await, ServingStatus::Serving as i32);
        // The cart was not converted: nothing of the refused order happened.
        let cart = app
            .carts()
            .get_cart(authed(
                GetCartRequest {
                    cart_id: second.cart_id.clone(),
                },
                &alice,
            ))
            .await
            .unwrap()
            .into_inner()
            .cart
            .unwrap();
        assert_eq!(cart.status, CartStatus::Active as i32, "{mode}");
        pg.restore();
        wait_for_within(
            "the service to recover by itself",
            Duration::from_secs(15),
            || async { health(&app, "commerce.v1.OrderService").await == ServingStatus::Serving as i32 },
        )
        .await;
    }

    // The interrupted request, retried with its key, places the order once.
    let retried = app
        .orders()
        .create_order(authed(order_request(&second.cart_id, "during"), &alice))
        .await
        .expect("the retry after the outage")
        .into_inner()
        .order
        .unwrap();
    let again = app
        .orders()
        .create_order(authed(order_request(&second.cart_id, "during"), &alice))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(again, retried);
    assert_eq!(
        orders_placed(&app).await,
        2,
        "the first order kept, the second placed once"
    );
    let stream = app
        .app
        .events
        .read_stream(placed.order_id.parse().unwrap(), 1)
        .await
        .unwrap();
    assert_eq!(
        stream[0].event_type, "OrderCreated",
        "the order from before the outage is intact"
    );
}

#[tokio::test]
async fn redis_away_refuses_checkout_unavailable_and_the_cart_survives_to_be_ordered_once() {
    let Some((app, _pg, redis)) = proxied_app().await else {
        return;
    };
    let alice = app.customer("alice");
    let cart = cart_with(&app, &alice, &[("kettle", 2, "24.50")]).await;
    redis.cut();
    let started = Instant::now();
    let refused = app
        .orders()
        .create_order(authed(order_request(&cart.cart_id, "k"), &alice))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    wait_for("gRPC health to say NOT_SERVING", || async {
        health(&app, "commerce.v1.CartService").await == ServingStatus::NotServing as i32
    })
    .await;
    assert_eq!(orders_placed(&app).await, 0);
    redis.restore();
    wait_for_within(
        "the service to recover by itself",
        Duration::from_secs(15),
        || async { health(&app, "commerce.v1.CartService").await == ServingStatus::Serving as i32 },
    )
    .await;
    let order = app
        .orders()
        .create_order(authed(order_request(&cart.cart_id, "k"), &alice))
        .await
        .expect("ordered after the outage")
        .into_inner()
        .order
        .unwrap();
    assert_eq!((order.total.as_str(), order.item_count), ("49.00", 2));
    assert_eq!(orders_placed(&app).await, 1);
}
