//! OrderService queries over gRPC: GetOrder (ownership, min_version,
//! ENABLE_CQRS=false), ListOrders paging, GetOrderHistory, WatchOrder.

use commerce::store::read_models::ReadModels as _;
use std::time::Duration;

use commerce::startup::Stores;
use commerce::store::event_store::Upcasters;
use commerce::{
    projections::samples::SampleOrder,
    proto::commerce::v1::{
        GetOrderHistoryRequest, GetOrderRequest, OrderStatus, WatchOrderRequest, order_history_entry::Entry,
    },
    saga::plan::Step,
    store::{
        event_store::ORDER_STREAM,
        saga::{AttemptEnd, AttemptOutcome, AttemptWrite, FencedWrite, Lease, SagaColumns},
    },
};
use tonic::Code;

use crate::support::store::EventLog;
use crate::support::{
    app::{Backend, authed, spawn_app_with},
    orders::{create_order, filled_cart, get_order, list_orders, next_watched, order_request},
    read_side::place,
    wait_for_within,
};

#[tokio::test]
async fn get_order_reads_your_writes_and_hides_other_customers_orders() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let order = place(&app, "alice").await;
        let id = order.order_id.to_string();
        // Right after the append: min_version makes the answer at least that fresh.
        let mine = get_order(&app, &app.customer("alice"), &id, 6).await.unwrap();
        assert_eq!(
            (mine.version, mine.status),
            (6, OrderStatus::Confirmed as i32),
            "{backend:?}"
        );
        assert_eq!(mine.total, order.total().to_string());
        assert_eq!(mine.items.len(), 2);
        assert_eq!(mine.shipping_address.unwrap().city, "Springfield");
        assert_eq!(mine.saga_id, order.saga_id.to_string());
        let theirs = get_order(&app, &app.customer("mallory"), &id, 0)
            .await
            .unwrap_err();
        assert_eq!(theirs.code(), Code::NotFound, "{backend:?}");
        assert_eq!(
            get_order(&app, &app.admin(), &id, 0).await.unwrap().customer_id,
            "alice"
        );
        let bad = get_order(&app, &app.customer("alice"), "not-a-uuid", 0)
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        let negative = get_order(&app, &app.customer("alice"), &id, -1)
            .await
            .unwrap_err();
        assert_eq!(negative.code(), Code::InvalidArgument);
        let unknown = get_order(&app, &app.customer("alice"), &uuid::Uuid::now_v7().to_string(), 0)
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);
        let anonymous = app
            .orders()
            .get_order(GetOrderRequest {
                order_id: id,
                min_version: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(anonymous.code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn without_cqrs_get_order_folds_the_event_stream() {
    let app = spawn_app_with(Backend::from_env(), &[("ENABLE_CQRS", "false")]).await;
    let order = place(&app, "erin").await;
    let id = order.order_id.to_string();
    wait_for_within("the projection", Duration::from_secs(20), || async {
        app.app
            .queries
            .store()
            .order_detail(order.order_id)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    // Emptied read model: the answer still comes, from the events.
    let sql = "DELETE FROM order_details";
    match &app.app.backends.db {
        commerce::db::Db::Postgres(pool) => drop(sqlx::query(sql).execute(pool).await.unwrap()),
        commerce::db::Db::Sqlite(pool) => drop(sqlx::query(sql).execute(pool).await.unwrap()),
    }
    let folded = get_order(&app, &app.customer("erin"), &id, 0).await.unwrap();
    assert_eq!(
        (folded.version, folded.status),
        (6, OrderStatus::Confirmed as i32)
    );
    assert_eq!(
        get_order(&app, &app.customer("frank"), &id, 0)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn list_orders_pages_newest_first_through_opaque_tokens() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let mut carols = Vec::new();
        for _ in 0..5 {
            carols.push(place(&app, "carol").await.order_id.to_string());
        }
        place(&app, "dave").await;
        let carol = app.customer("carol");
        wait_for_within("the order list", Duration::from_secs(20), || async {
            list_orders(&app, &carol, 100, "").await.unwrap().0.len() == 5
        })
        .await;
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let (orders, next) = list_orders(&app, &carol, 2, &token).await.unwrap();
            assert!(orders.len() <= 2 && !orders.is_empty(), "{backend:?}");
            assert!(
                orders
                    .iter()
                    .all(|o| o.customer_id == "carol" && o.shipping_address.is_none())
            );
            seen.extend(orders.into_iter().map(|o| o.order_id));
            if next.is_empty() {
                break;
            }
            token = next;
        }
        carols.reverse();
        assert_eq!(seen, carols, "{backend:?}: every order once, newest first");
        // Dave's order was placed last: the wait above did not wait for it.
        wait_for_within("admins list everyone's", Duration::from_secs(20), || async {
            list_orders(&app, &app.admin(), 0, "").await.unwrap().0.len() == 6
        })
        .await;
        for (size, token) in [(-1, ""), (10, "garbage"), (10, "eyJ0IjoxfQ")] {
            let err = list_orders(&app, &carol, size, token).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{size} {token}");
        }
        assert_eq!(
            list_orders(&app, &carol, 1000, "").await.unwrap().0.len(),
            5,
            "capped, not refused"
        );
    }
}

#[tokio::test]
async fn history_merges_events_with_saga_attempts_for_the_owner_only() {
    // No workers here: the test records the saga's attempt itself.
    let app = spawn_app_with(Backend::from_env(), &[("SAGA_WORKERS", "0")]).await;
    let token = app.customer("gina");
    let cart = filled_cart(&app, &token).await;
    let order = create_order(&app, &token, order_request(&cart, "history-1"))
        .await
        .unwrap();
    // One saga call recorded the way the saga worker records it.
    let sagas = Stores::on(&app.app.backends.db, Upcasters::none(), true).sagas;
    let lease = Lease {
        owner: "history-test".into(),
        duration: Duration::from_secs(30),
    };
    let saga = sagas
        .find_by_order(order.order_id.parse().unwrap())
        .await
        .unwrap()
        .expect("the order's saga");
    let claimed = sagas.claim_due(&lease, 100).await.unwrap();
    let record = claimed
        .into_iter()
        .find(|s| s.saga_id == saga.saga_id)
        .expect("claimable");
    let started_at = chrono::Utc::now();
    for attempt in [
        AttemptWrite::Started {
            step: Step::AuthorizePayment,
            attempt: 1,
            worker: "history-test".into(),
            idempotency_key: "k-1".into(),
            started_at,
        },
        AttemptWrite::Finished {
            step: Step::AuthorizePayment,
            attempt: 1,
            finished_at: started_at + chrono::Duration::milliseconds(12),
            end: AttemptEnd {
                outcome: AttemptOutcome::Transient,
                grpc_code: Some("UNAVAILABLE".into()),
                error: Some("payment down".into()),
                latency_ms: 12,
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            },
        },
    ] {
        let write = FencedWrite {
            attempts: vec![attempt],
            ..FencedWrite::columns(record.saga_id, &lease, SagaColumns::of(&record))
        };
        sagas.write(&write).await.unwrap();
    }

    let request = || GetOrderHistoryRequest {
        order_id: order.order_id.clone(),
    };
    let entries = app
        .orders()
        .get_order_history(authed(request(), &token))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let first = entries.first().and_then(|e| e.entry.clone());
    let Some(Entry::Event(created)) = first else {
        panic!("the timeline starts with the creation: {entries:?}");
    };
    assert_eq!(
        (created.event_type.as_str(), created.version),
        ("OrderCreated", 1)
    );
    assert!(created.payload.unwrap().fields.contains_key("customer_id"));
    let attempt = entries
        .iter()
        .find_map(|e| match &e.entry {
            Some(Entry::StepAttempt(attempt)) => Some(attempt.clone()),
            _ => None,
        })
        .expect("the saga attempt is merged in");
    assert_eq!(
        (
            attempt.step.as_str(),
            attempt.attempt,
            attempt.outcome.as_str(),
            attempt.grpc_code.as_str()
        ),
        ("authorize_payment", 1, "transient_error", "UNAVAILABLE")
    );
    assert_eq!((attempt.latency_ms, attempt.error.as_str()), (12, "payment down"));
    assert_eq!(attempt.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    let times: Vec<_> = entries
        .iter()
        .map(|e| e.occurred_at.unwrap())
        .map(|t| (t.seconds, t.nanos))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order");
    let theirs = app
        .orders()
        .get_order_history(authed(request(), &app.customer("hank")))
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    let admins = app
        .orders()
        .get_order_history(authed(request(), &app.admin()))
        .await
        .unwrap();
    assert_eq!(admins.into_inner().entries.len(), entries.len());
}

#[tokio::test]
async fn watch_order_streams_each_status_change_until_a_terminal_one() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let order = SampleOrder::new("ivan", 1);
        let life = SampleOrder::encode(&order.confirmed());
        let events = EventLog::of(&app.app);
        events
            .append(order.order_id, 0, life[..1].to_vec(), ORDER_STREAM)
            .await
            .unwrap();
        let id = order.order_id.to_string();
        let denied = app
            .orders()
            .watch_order(authed(
                WatchOrderRequest {
                    order_id: id.clone(),
                    after_version: 0,
                },
                &app.customer("judy"),
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::NotFound, "{backend:?}");
        let mut stream = app
            .orders()
            .watch_order(authed(
                WatchOrderRequest {
                    order_id: id,
                    after_version: 0,
                },
                &app.customer("ivan"),
            ))
            .await
            .unwrap()
            .into_inner();
        let first = next_watched(&mut stream).await.unwrap().unwrap();
        assert_eq!(
            first.order.unwrap().status,
            OrderStatus::Pending as i32,
            "{backend:?}"
        );
        events
            .append(order.order_id, 1, life[1..2].to_vec(), ORDER_STREAM)
            .await
            .unwrap();
        let second = next_watched(&mut stream).await.unwrap().unwrap().order.unwrap();
        assert_eq!(
            (second.status, second.version),
            (OrderStatus::PaymentAuthorized as i32, 2)
        );
        events
            .append(order.order_id, 2, life[2..].to_vec(), ORDER_STREAM)
            .await
            .unwrap();
        let mut statuses = Vec::new();
        while let Some(message) = next_watched(&mut stream).await.unwrap() {
            statuses.push(message.order.unwrap().status);
        }
        // Changes may be seen one by one or folded together; the last is CONFIRMED, then the end.
        assert_eq!(
            statuses.last(),
            Some(&(OrderStatus::Confirmed as i32)),
            "{backend:?}: {statuses:?}"
        );
        assert!(statuses.windows(2).all(|w| w[0] < w[1]), "{statuses:?}");
    }
}
