//! DATABASE_READ_URL against a real streaming replica (scripts/pg-replica.sh):
//! order queries read the replica, a `min_version` the replica has not
//! replayed is answered by the primary, the projections keep projecting while
//! the replica lags, and the queries converge once it catches up. And a
//! replica that is down costs nothing but capacity.

use std::time::Duration;

use commerce::store::read_models::ReadModels as _;
use commerce::{
    domain::order::OrderStatus as Status, projections::order_detail::OrderDetail,
    proto::commerce::v1::OrderStatus,
};
use uuid::Uuid;

use crate::support::{
    app::{Backend, Isolation, TestApp, spawn_app_with, spawn_on},
    eventually,
    observability::sample,
    orders::{BOOK_AND_PEN, get_order, list_orders, order_request, place_order},
    replica::Replica,
};

/// Places an order of `token`'s customer and waits until the primary's read
/// model has it in a terminal state; returns its id and final version.
async fn terminal_order(app: &TestApp, token: &str, key: &str) -> (String, i64) {
    let order = place_order(
        &app.channel,
        token,
        BOOK_AND_PEN,
        |cart| order_request(cart, key),
        &[],
    )
    .await;
    let id = Uuid::parse_str(&order.order_id).unwrap();
    // The primary's read model, as the projections wrote it.
    let primary = app.app.queries.store().clone();
    let done: Option<OrderDetail> = eventually(Duration::from_secs(20), || {
        let primary = primary.clone();
        async move {
            primary
                .order_detail(id)
                .await
                .ok()
                .flatten()
                .filter(|detail| detail.summary.status.is_terminal())
        }
    })
    .await;
    let done = done.unwrap_or_else(|| panic!("order {id} not projected to a terminal state on the primary"));
    assert_eq!(done.summary.status, Status::Confirmed);
    (order.order_id, done.summary.version as i64)
}

async fn listed(app: &TestApp, token: &str) -> Vec<String> {
    let (orders, _) = list_orders(app, token, 100, "").await.expect("list orders");
    orders.into_iter().map(|order| order.order_id).collect()
}

/// Runs `check` until it holds and the queries' replica reads counted as
/// `outcome` grew by at least `reads` during it; false after 15 s.
async fn answered_as<F, Fut>(outcome: &str, reads: f64, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(Duration::from_secs(15), || async {
        let before = replica_reads("queries", outcome);
        let holds = check().await;
        (holds && replica_reads("queries", outcome) >= before + reads).then_some(())
    })
    .await
    .is_some()
}

fn replica_reads(reader: &str, outcome: &str) -> f64 {
    sample(
        &commerce::metrics::render(),
        "db_replica_reads_total",
        &[("reader", reader), ("outcome", outcome)],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_read_the_replica_and_the_primary_answers_what_it_has_not_replayed() {
    let Some(replica) = Replica::from_env().await else {
        return;
    };
    let isolation = Isolation::new(Backend::Real).await;
    let read_url = replica.url_of(&isolation);
    // The test database exists on the replica before the service reads it.
    replica.catch_up().await;
    let app = spawn_on(isolation, &[("DATABASE_READ_URL", read_url.as_str())]).await;
    let alice = app.customer("alice");

    // Replayed: the replica answers. (Each check below is retried for a
    // while: under a full test run's load a replica read may time out, and
    // the replica is then skipped for a few seconds.)
    let (first, first_version) = terminal_order(&app, &alice, "first").await;
    replica.catch_up().await;
    let read_there = answered_as("replica", 2.0, || async {
        let got = get_order(&app, &alice, &first, first_version)
            .await
            .expect("get order");
        got.version == first_version && listed(&app, &alice).await == vec![first.clone()]
    })
    .await;
    assert!(read_there, "GetOrder and ListOrders read the replica");

    // The replica stops replaying: everything from now on is only on the primary.
    let paused = replica.pause().await;
    // The projections project while the replica lags (their sweeps read a
    // replica that has not reached their checkpoints; gaps come from the primary).
    let (second, second_version) = terminal_order(&app, &alice, "second").await;
    // ListOrders reads the replica: the second order is not there.
    let stale = answered_as("replica", 1.0, || async {
        listed(&app, &alice).await == vec![first.clone()]
    })
    .await;
    assert!(
        stale,
        "ListOrders reads the replica, which has not replayed the second order"
    );
    // GetOrder at a version the replica has not replayed, and without
    // min_version (the replica has no row for it): the primary answers, at
    // the asked version.
    let from_primary = answered_as("behind", 2.0, || async {
        let at_version = get_order(&app, &alice, &second, second_version)
            .await
            .expect("get order");
        let latest = get_order(&app, &alice, &second, 0).await.expect("get order");
        at_version.version == second_version
            && at_version.status == OrderStatus::Confirmed as i32
            && latest.version == second_version
    })
    .await;
    assert!(
        from_primary,
        "the primary answers what the replica has not replayed"
    );
    // What the replica has is still read there, personal fields included.
    let personal = answered_as("replica", 1.0, || async {
        let got = get_order(&app, &alice, &first, 1).await.expect("get order");
        got.version == first_version && got.shipping_address.is_some_and(|a| a.city == "London")
    })
    .await;
    assert!(personal, "GetOrder reads the replica's row and personal fields");
    // Another customer's order stays NOT_FOUND, from the replica or not.
    let bob = app.customer("bob");
    for order in [&first, &second] {
        let refused = get_order(&app, &bob, order, 0).await.expect_err("not bob's");
        assert_eq!(refused.code(), tonic::Code::NotFound);
    }

    // Replay resumes: the queries converge.
    drop(paused);
    let converged = eventually(Duration::from_secs(20), || async {
        let mut orders = listed(&app, &alice).await;
        orders.sort();
        let mut both = vec![first.clone(), second.clone()];
        both.sort();
        (orders == both).then_some(())
    })
    .await;
    assert!(
        converged.is_some(),
        "ListOrders did not converge after replay resumed"
    );
    assert!(
        replica_reads("projections", "replica") >= 1.0,
        "the projections' sweeps read the replica's event log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_is_down_sends_every_read_to_the_primary() {
    if Backend::from_env() != Backend::Real {
        // The embedded SQLite file has no replicas (the configuration refuses one).
        return;
    }
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let read_url = format!("postgres://postgres@{}/nowhere", dead.local_addr().unwrap());
    drop(dead);
    let app = spawn_app_with(Backend::Real, &[("DATABASE_READ_URL", read_url.as_str())]).await;
    let alice = app.customer("alice");
    let (order, version) = terminal_order(&app, &alice, "down").await;
    let unavailable = replica_reads("queries", "unavailable");
    for _ in 0..5 {
        let got = get_order(&app, &alice, &order, version).await.expect("get order");
        assert_eq!(got.version, version);
        assert_eq!(listed(&app, &alice).await, vec![order.clone()]);
    }
    assert!(replica_reads("queries", "unavailable") >= unavailable + 10.0);
    let health = app.app.health.report().await;
    assert_eq!(
        health.status, "ok",
        "a replica is not a dependency the service needs"
    );
}
