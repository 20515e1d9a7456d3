//! The service behind PgBouncer (scripts/pgbouncer.sh, Debian's 1.18): in
//! session pooling mode the whole order flow runs through it, including what
//! needs a session (the migrations' advisory lock, the saga workers' LISTEN,
//! the retention job's lock); in transaction pooling mode sqlx's named
//! prepared statements collide on shared server connections, and the service
//! says so in /health instead of serving half-broken (README, "PgBouncer").

use std::time::Duration;

use commerce::proto::commerce::v1::OrderStatus;

use crate::support::{
    app::{Backend, Isolation, spawn_on},
    eventually,
    orders::{BOOK_AND_PEN, get_order, list_orders, next_watched, order_request, place_order, watch_order},
    pooler::PgBouncer,
    wait_for_within,
};

#[tokio::test(flavor = "multi_thread")]
async fn the_order_flow_runs_through_pgbouncer_in_session_mode() {
    let Some((_, session)) = PgBouncer::from_env() else {
        return;
    };
    let isolation = Isolation::new(Backend::Real).await;
    let name = isolation
        .database_name()
        .expect("a PostgreSQL database")
        .to_string();
    let through = isolation.database_on(session.url()).unwrap();
    // Migrations too run through it (sqlx takes a session advisory lock for them).
    let app = spawn_on(isolation, &[("DATABASE_URL", through.as_str())]).await;
    assert_eq!(app.app.health.report().await.status, "ok");
    let alice = app.customer("alice");

    let mut orders = Vec::new();
    for key in ["first", "second"] {
        let order = place_order(
            &app.channel,
            &alice,
            BOOK_AND_PEN,
            |cart| order_request(cart, key),
            &[],
        )
        .await;
        let mut watch = watch_order(&app, &alice, &order.order_id).await.expect("watch");
        let mut last = None;
        while let Some(message) = next_watched(&mut watch).await.expect("watch message") {
            last = message.order;
        }
        let last = last.expect("a watched state");
        assert_eq!(last.status, OrderStatus::Confirmed as i32, "{last:?}");
        let got = get_order(&app, &alice, &order.order_id, last.version)
            .await
            .expect("get order");
        assert_eq!(got.status, OrderStatus::Confirmed as i32);
        orders.push(order.order_id);
    }
    let listed = eventually(Duration::from_secs(10), || async {
        let (page, _) = list_orders(&app, &alice, 10, "").await.ok()?;
        let mut ids: Vec<String> = page.into_iter().map(|o| o.order_id).collect();
        ids.sort();
        let mut want = orders.clone();
        want.sort();
        (ids == want).then_some(())
    })
    .await;
    assert!(listed.is_some(), "ListOrders did not show both orders");
    assert!(
        session.transactions(&name) > 10,
        "the service's database traffic went through PgBouncer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_transaction_pooling_health_names_the_pooler_instead_of_serving_half_broken() {
    let Some((transaction, _)) = PgBouncer::from_env() else {
        return;
    };
    let isolation = Isolation::new(Backend::Real).await;
    // Migrated directly (as the Helm chart's migration Job would, on a session).
    drop(isolation.backends().await);
    let through = isolation.database_on(transaction.url()).unwrap();
    let app = spawn_on(
        isolation,
        &[("DATABASE_URL", through.as_str()), ("RUN_MIGRATIONS", "false")],
    )
    .await;
    wait_for_within("health to report the pooler", Duration::from_secs(20), || async {
        let report = app.app.health.report().await;
        let error = report.database.error.unwrap_or_default();
        report.status == "degraded"
            && !report.database.up
            && error.contains("prepared statement")
            && error.contains("pool_mode=transaction")
            && error.contains("session pooling")
    })
    .await;
}
