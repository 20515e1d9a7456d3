//! A requested cancellation on the read side: GetOrder, ListOrders and
//! WatchOrder (gRPC, REST, Server-Sent Events) say `cancellation_requested`
//! with the first accepted reason while the saga compensates, and keep both
//! once the order is CANCELLED; `commerce rebuild-projections` reproduces them.

use commerce::store::read_models::ReadModels as _;
use std::time::Duration;

use commerce::{
    proto::commerce::v1::{Order, OrderStatus},
    startup::rebuild,
};
use serde_json::Value;
use uuid::Uuid;

use crate::support::{
    app::{Backend, TestApp, spawn_app_with},
    eventually,
    orders::{
        cancel, create_order, filled_cart, get_order, list_orders, next_watched, order_request, watch_order,
    },
    rest::{call, get_until},
    sse::Curl,
    wait_for_within,
};

const FIRST: &str = "found it cheaper";
const WAIT: Duration = Duration::from_secs(20);

/// (requested, reason) of a gRPC order.
fn requested(order: &Order) -> (bool, &str) {
    (
        order.cancellation_requested,
        order.cancellation_request_reason.as_str(),
    )
}

/// (requested, reason) of a REST order (proto3 JSON may leave defaults out).
fn requested_json(order: &Value) -> (bool, &str) {
    (
        order["cancellation_requested"].as_bool().unwrap_or(false),
        order["cancellation_request_reason"].as_str().unwrap_or(""),
    )
}

/// The version of a REST order (proto3 JSON writes int64 as a string).
fn version_of(order: &Value) -> i64 {
    order["version"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The order `id` in the caller's first ListOrders page once the list's
/// projection has folded `version` (it may lag behind GetOrder's).
async fn listed(app: &TestApp, token: &str, id: &str, version: i64) -> Order {
    eventually(WAIT, || async {
        let (orders, _) = list_orders(app, token, 50, "").await.unwrap();
        orders
            .into_iter()
            .find(|o| o.order_id == id && o.version >= version)
    })
    .await
    .unwrap_or_else(|| panic!("order {id} never listed at version {version}"))
}

#[tokio::test]
async fn while_the_saga_is_held_get_list_and_watch_show_the_request_with_its_first_reason() {
    for backend in Backend::all() {
        // No saga worker in this replica: the cancellation stays requested, the order PENDING.
        let app = spawn_app_with(backend, &[("SAGA_WORKERS", "0")]).await;
        let alice = app.customer("alice");
        let order = create_order(&app, &alice, order_request(&filled_cart(&app, &alice).await, "c"))
            .await
            .unwrap();
        let id = order.order_id.clone();

        let mut watch = watch_order(&app, &alice, &id).await.unwrap();
        let before = next_watched(&mut watch).await.unwrap().unwrap().order.unwrap();
        assert_eq!(
            (before.version, requested(&before)),
            (1, (false, "")),
            "{backend:?}"
        );
        let url = format!("{}/api/v1/orders/{id}/watch", app.base_url);
        let mut sse = Curl::get(&url, &[&format!("Authorization: Bearer {alice}")]).await;
        assert_eq!(sse.status, 200, "{backend:?}");
        let sse_before = sse.event(WAIT).await.expect("the current state").json();
        assert_eq!(requested_json(&sse_before["order"]), (false, ""), "{backend:?}");

        let reply = cancel(&app, &alice, &id, FIRST).await.unwrap();
        assert_eq!(
            (reply.status, requested(&reply)),
            (OrderStatus::Pending as i32, (true, FIRST))
        );

        // The request alone (no status change) is a change a watcher sees.
        let seen = next_watched(&mut watch).await.unwrap().unwrap().order.unwrap();
        assert_eq!(
            (seen.status, seen.version, requested(&seen)),
            (OrderStatus::Pending as i32, reply.version, (true, FIRST)),
            "{backend:?}"
        );
        let sse_seen = sse.event(WAIT).await.expect("the request").json();
        assert_eq!(sse_seen["order"]["status"], "ORDER_STATUS_PENDING", "{backend:?}");
        assert_eq!(requested_json(&sse_seen["order"]), (true, FIRST), "{backend:?}");

        // A second request changes nothing anywhere: the first reason stands.
        let again = cancel(&app, &alice, &id, "changed my mind").await.unwrap();
        assert_eq!((again.version, requested(&again)), (reply.version, (true, FIRST)));
        let got = get_order(&app, &alice, &id, reply.version).await.unwrap();
        assert_eq!(
            (got.status, requested(&got), got.cancellation_reason.as_str()),
            (OrderStatus::Pending as i32, (true, FIRST), ""),
            "{backend:?}"
        );
        let row = listed(&app, &alice, &id, reply.version).await;
        assert_eq!(
            (row.version, requested(&row)),
            (reply.version, (true, FIRST)),
            "{backend:?}"
        );

        let rest = get_until(&app, &alice, &format!("/api/v1/orders/{id}"), |b| {
            version_of(&b["order"]) == reply.version
        })
        .await;
        assert_eq!(requested_json(&rest["order"]), (true, FIRST), "{backend:?}");
        let page = get_until(&app, &alice, "/api/v1/orders/", |b| {
            version_of(&b["orders"][0]) == reply.version
        })
        .await;
        assert_eq!(page["orders"][0]["order_id"], id.as_str());
        assert_eq!(requested_json(&page["orders"][0]), (true, FIRST), "{backend:?}");
    }
}

#[tokio::test]
async fn a_cancellation_during_a_slow_saga_keeps_its_first_reason_once_cancelled_and_after_a_rebuild() {
    for backend in Backend::all() {
        // Slow siblings: the cancellation lands while the saga's first step is in flight.
        let app = spawn_app_with(backend, &[("STUB_LATENCY_MS", "300")]).await;
        let alice = app.customer("alice");
        let order = create_order(&app, &alice, order_request(&filled_cart(&app, &alice).await, "s"))
            .await
            .unwrap();
        let id = order.order_id.clone();
        let order_id: Uuid = id.parse().unwrap();
        let mut watch = watch_order(&app, &alice, &id).await.unwrap();

        let reply = cancel(&app, &alice, &id, FIRST).await.unwrap();
        assert_eq!(requested(&reply), (true, FIRST), "{backend:?}");
        let again = cancel(&app, &alice, &id, "changed my mind").await.unwrap();
        assert_eq!(requested(&again), (true, FIRST), "{backend:?}");

        // Every state from the request on says so, up to CANCELLED, which ends the stream.
        let mut watched = Vec::new();
        while let Some(message) = next_watched(&mut watch).await.unwrap() {
            watched.push(message.order.unwrap());
        }
        let last = watched.last().expect("at least the current state");
        assert_eq!(
            last.status,
            OrderStatus::Cancelled as i32,
            "{backend:?}: {watched:?}"
        );
        for seen in watched.iter().filter(|o| o.version >= reply.version) {
            assert_eq!(requested(seen), (true, FIRST), "{backend:?}: {seen:?}");
        }
        let ended = last.version;

        let got = get_order(&app, &alice, &id, ended).await.unwrap();
        assert_eq!(
            (got.status, requested(&got), got.cancellation_reason.as_str()),
            (
                OrderStatus::Cancelled as i32,
                (true, FIRST),
                "cancelled by the customer: found it cheaper"
            ),
            "{backend:?}"
        );
        let row = listed(&app, &alice, &id, ended).await;
        assert_eq!(
            (row.version, requested(&row)),
            (ended, (true, FIRST)),
            "{backend:?}"
        );
        let rest = call(&app, "GET", &format!("/api/v1/orders/{id}?min_version={ended}"))
            .bearer(&alice)
            .send()
            .await;
        assert_eq!(rest.status, 200, "{}", rest.text());
        assert_eq!(rest.json()["order"]["status"], "ORDER_STATUS_CANCELLED");
        assert_eq!(
            requested_json(&rest.json()["order"]),
            (true, FIRST),
            "{backend:?}"
        );

        // A third request on the cancelled order changes nothing either.
        let late = cancel(&app, &alice, &id, "third time").await.unwrap();
        assert_eq!((late.version, requested(&late)), (ended, (true, FIRST)));

        // `commerce rebuild-projections` replays the event store into fresh
        // tables: the rows it swaps in say the same.
        let stream = app.app.events.read_stream(order_id, 1).await.unwrap().len();
        // PostgreSQL readers of the log see events once every older transaction in the cluster ended.
        wait_for_within("settled events", WAIT, || async {
            app.app.events.read_all(0, 100).await.unwrap().len() == stream
        })
        .await;
        let report = rebuild::command(&app.config.database, 50, rebuild::EmptyStore::Refuse)
            .await
            .unwrap();
        assert_eq!(
            report.events as usize, stream,
            "{backend:?}: the order was replayed"
        );
        let row = app.app.queries.store().order_detail(order_id).await.unwrap();
        let row = row.expect("the rebuilt detail row").summary;
        assert_eq!(
            (row.version, row.cancellation_requested.as_deref()),
            (ended as u64, Some(FIRST)),
            "{backend:?}"
        );
        let row = listed(&app, &alice, &id, ended).await;
        assert_eq!(requested(&row), (true, FIRST), "{backend:?}: the rebuilt list");
    }
}
