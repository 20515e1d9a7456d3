//! WatchOrder's bounds and feed: caps per caller and in total, the stream
//! lifetime, one shared source per order, changes another replica projected;
//! and GetOrder's `min_version` wait, which only an owner may cause.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use commerce::{
    app::appended::AppendedStreams,
    bench::projection_catch_up::CountingLog,
    projections::{fold_stream, order_detail::OrderDetail, samples::SampleOrder},
    proto::commerce::v1::{GetOrderRequest, OrderStatus, WatchOrderRequest, WatchOrderResponse},
    startup::Stores,
    store::event_store::{ORDER_STREAM, OrderCodec, Upcasters},
};
use tonic::{Code, Streaming};

use crate::support::{
    app::{Backend, Isolation, TestApp, authed, spawn_app_with},
    orders::pending_order,
    read_side::{apply_uncached, held_at, watches_on},
    store::EventLog,
    wait_for_within,
};

async fn watch(
    app: &TestApp,
    token: &str,
    order_id: &str,
) -> Result<Streaming<WatchOrderResponse>, tonic::Status> {
    let request = WatchOrderRequest {
        order_id: order_id.into(),
        after_version: 0,
    };
    Ok(app
        .orders()
        .watch_order(authed(request, token))
        .await?
        .into_inner())
}

async fn next(stream: &mut Streaming<WatchOrderResponse>) -> Option<WatchOrderResponse> {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a message in time")
        .expect("no error")
}

#[tokio::test]
async fn watch_streams_are_capped_per_caller_and_in_total_with_resource_exhausted() {
    for backend in Backend::all() {
        let app = spawn_app_with(
            backend,
            &[("WATCH_MAX_STREAMS_PER_CALLER", "2"), ("WATCH_MAX_STREAMS", "3")],
        )
        .await;
        let (alices, _) = pending_order(&app, "alice").await;
        let (bobs, _) = pending_order(&app, "bob").await;
        let (alice, bob) = (app.customer("alice"), app.customer("bob"));
        let alice_id = alices.order_id.to_string();
        let mut first = watch(&app, &alice, &alice_id).await.unwrap();
        let _second = watch(&app, &alice, &alice_id).await.unwrap();
        let third = watch(&app, &alice, &alice_id).await.unwrap_err();
        assert_eq!(third.code(), Code::ResourceExhausted, "{backend:?}: {third:?}");
        let _bobs = watch(&app, &bob, &bobs.order_id.to_string()).await.unwrap();
        let over_total = watch(&app, &app.customer("carol"), &alice_id).await.unwrap_err();
        assert_eq!(over_total.code(), Code::ResourceExhausted, "{backend:?}");
        // A stream the client closes gives its place back.
        assert!(next(&mut first).await.is_some());
        drop(first);
        wait_for_within("a freed place", Duration::from_secs(10), || async {
            watch(&app, &alice, &alice_id).await.is_ok()
        })
        .await;
    }
}

#[tokio::test]
async fn a_watch_ends_cleanly_at_its_lifetime_and_watching_again_resumes() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("WATCH_MAX_LIFETIME_SECONDS", "1")]).await;
        let (order, life) = pending_order(&app, "dave").await;
        let (token, id) = (app.customer("dave"), order.order_id.to_string());
        let mut stream = watch(&app, &token, &id).await.unwrap();
        let first = next(&mut stream).await.unwrap().order.unwrap();
        assert_eq!(first.status, OrderStatus::Pending as i32);
        // Ends with status OK and no terminal status, well before any deadline.
        let started = Instant::now();
        assert!(next(&mut stream).await.is_none(), "{backend:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        EventLog::of(&app.app)
            .append(order.order_id, 1, life[1..2].to_vec(), ORDER_STREAM)
            .await
            .unwrap();
        // Watching again starts from the order as it is now.
        let mut again = watch(&app, &token, &id).await.unwrap();
        let resumed = next(&mut again).await.unwrap().order.unwrap();
        assert!(resumed.version >= 1, "{backend:?}");
        wait_for_within(
            "the watch to show the change",
            Duration::from_secs(10),
            || async {
                let mut stream = watch(&app, &token, &id).await.unwrap();
                next(&mut stream).await.unwrap().order.unwrap().version == 2
            },
        )
        .await;
    }
}

/// Transactions committed so far in the test's PostgreSQL database.
async fn committed(app: &TestApp) -> i64 {
    let commerce::db::Db::Postgres(pool) = &app.app.backends.db else {
        unreachable!("PostgreSQL only")
    };
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Database transactions over `window`, read after PostgreSQL flushed its statistics.
async fn transactions_during(app: &TestApp, window: Duration) -> i64 {
    let before = committed(app).await;
    tokio::time::sleep(window).await;
    // Backends report their counts at most once a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    committed(app).await - before
}

#[tokio::test]
async fn many_streams_of_one_order_cost_the_database_no_more_than_one() {
    // The counts come from PostgreSQL's statistics; SQLite keeps none.
    if Backend::from_env() != Backend::Real {
        return;
    }
    // A fast poll, so that a poll per stream would stand far above the
    // background: 15 streams x 20/s x 4.2 s = 1,260 more transactions. The
    // background is kept small (no relay rounds, no saga claim polls): under
    // the whole suite's load their rounds came in bursts of hundreds of
    // transactions per window, unrelated to the streams.
    let app = spawn_app_with(
        Backend::Real,
        &[
            ("WATCH_POLL_MS", "50"),
            ("EVENT_BUS_RELAY", "false"),
            ("ENABLE_SAGA_ORCHESTRATION", "false"),
        ],
    )
    .await;
    let (order, _) = pending_order(&app, "erin").await;
    let (token, id) = (app.customer("erin"), order.order_id.to_string());
    let mut one = watch(&app, &token, &id).await.unwrap();
    next(&mut one).await.unwrap();
    let window = Duration::from_secs(3);
    let baseline = transactions_during(&app, window).await;
    let mut many = Vec::new();
    for _ in 0..15 {
        let mut stream = watch(&app, &token, &id).await.unwrap();
        next(&mut stream).await.unwrap();
        many.push(stream);
    }
    let with_many = transactions_during(&app, window).await;
    assert!(
        with_many < baseline + 250,
        "{baseline} transactions with one stream, {with_many} with sixteen"
    );
}

#[tokio::test]
async fn a_change_another_replica_projected_reaches_the_watchers_through_the_log() {
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let backends = isolation.backends().await;
        let log = EventLog::on(&backends.db, OrderCodec::upcasters());
        // Nothing is ever announced here: as if another replica projected it.
        let (watches, _trigger) = watches_on(
            &backends.db,
            log.events.clone(),
            AppendedStreams::new(),
            Duration::from_millis(100),
        );
        let order = SampleOrder::new("frank", 1);
        let life = SampleOrder::encode(&order.confirmed());
        log.append(order.order_id, 0, life[..1].to_vec(), ORDER_STREAM)
            .await
            .unwrap();
        let mut ticket = watches.open("frank", order.order_id).unwrap();
        let _same_order = watches.open("frank", order.order_id).unwrap();
        assert_eq!(watches.watched_orders(), 1, "one source for both streams");
        // Let the feed take its cursor, then change the order.
        tokio::time::sleep(Duration::from_millis(500)).await;
        log.append(order.order_id, 1, life[1..2].to_vec(), ORDER_STREAM)
            .await
            .unwrap();
        if let Err(stall) = held_at(&mut ticket, 2).await {
            panic!("{backend:?}: {stall}");
        }
    }
}

#[tokio::test]
async fn a_commit_of_this_process_reaches_the_watchers_before_the_projection() {
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let backends = isolation.backends().await;
        let mut log = EventLog::on(&backends.db, OrderCodec::upcasters());
        let appended = AppendedStreams::new();
        log.units = appended.announcing(log.units);
        // No projection runs and the log is polled only once an hour: the
        // announcement of the commit is the only way the change can arrive.
        let (watches, _trigger) = watches_on(
            &backends.db,
            log.events.clone(),
            appended,
            Duration::from_secs(3600),
        );
        let order = SampleOrder::new("grace", 1);
        let life = SampleOrder::encode(&order.confirmed());
        log.append(order.order_id, 0, life[..1].to_vec(), ORDER_STREAM)
            .await
            .unwrap();
        let mut ticket = watches.open("grace", order.order_id).unwrap();
        // The feed subscribes when it starts, with the first stream.
        tokio::time::sleep(Duration::from_millis(200)).await;
        log.append(order.order_id, 1, life[1..].to_vec(), ORDER_STREAM)
            .await
            .unwrap();
        let held = held_at(&mut ticket, life.len() as u64)
            .await
            .unwrap_or_else(|stall| panic!("{backend:?}: {stall}"));
        assert_eq!(
            held.summary.status,
            commerce::domain::order::OrderStatus::Confirmed,
            "{backend:?}: the watcher sees the order folded from its stream"
        );
    }
}

#[tokio::test]
async fn a_commit_that_follows_on_from_what_the_watchers_hold_is_folded_on_without_a_read() {
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let backends = isolation.backends().await;
        let mut log = EventLog::on(&backends.db, OrderCodec::upcasters());
        let appended = AppendedStreams::new();
        log.units = appended.announcing(log.units);
        let reads = Arc::new(CountingLog::new(log.events.clone()));
        // No projection, no poll: the read model never has the order, so
        // each read the feed makes is a read of the stream, and counted.
        let (watches, _trigger) =
            watches_on(&backends.db, reads.clone(), appended, Duration::from_secs(3600));
        let order = SampleOrder::new("heidi", 1);
        let life = SampleOrder::encode(&order.confirmed());
        log.append(order.order_id, 0, life[..1].to_vec(), ORDER_STREAM)
            .await
            .unwrap();
        let mut ticket = watches.open("heidi", order.order_id).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The streams hold nothing yet: the first commit is read, then every
        // later one is folded on, one event at a time as saga steps commit.
        for version in 1..life.len() {
            log.append(
                order.order_id,
                version as u64,
                life[version..=version].to_vec(),
                ORDER_STREAM,
            )
            .await
            .unwrap();
            if let Err(stall) = held_at(&mut ticket, version as u64 + 1).await {
                panic!("{backend:?}: {stall}");
            }
        }
        let folded = ticket.receiver().borrow().clone().unwrap();
        let read = fold_stream::<OrderDetail>(&log.read_stream(order.order_id, 1).await.unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            *folded, read,
            "{backend:?}: the folded order is the stream's fold"
        );
        assert_eq!(
            reads.stream_reads(),
            1,
            "{backend:?}: only the first commit was read"
        );
    }
}

#[tokio::test]
async fn an_order_watched_while_the_read_model_lags_is_read_from_its_stream() {
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let backends = isolation.backends().await;
        let log = EventLog::on(&backends.db, OrderCodec::upcasters());
        let order = SampleOrder::new("ivan", 1);
        let life = SampleOrder::encode(&order.confirmed());
        // The stream ends CONFIRMED; the read model stopped after two events
        // (its projection stalled), and nothing will announce the rest.
        log.append(order.order_id, 0, life[..2].to_vec(), ORDER_STREAM)
            .await
            .unwrap();
        let projected = log.read_stream(order.order_id, 1).await.unwrap();
        apply_uncached::<OrderDetail>(
            &Stores::on(&backends.db, Upcasters::none(), true).read_models,
            &projected,
            None,
        )
        .await
        .unwrap();
        log.append(order.order_id, 2, life[2..].to_vec(), ORDER_STREAM)
            .await
            .unwrap();
        let (watches, _trigger) = watches_on(
            &backends.db,
            log.events.clone(),
            AppendedStreams::new(),
            Duration::from_millis(100),
        );
        // Watched after every event committed: the feed's cursor starts past them all.
        let mut ticket = watches.open("ivan", order.order_id).unwrap();
        if let Err(stall) = held_at(&mut ticket, life.len() as u64).await {
            panic!("{backend:?}: the watchers were left with the lagging row: {stall}");
        }
    }
}

#[tokio::test]
async fn min_version_on_someone_elses_order_answers_at_once_like_an_unknown_id() {
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[]).await;
        let (order, _) = pending_order(&app, "grace").await;
        let mallory = app.customer("mallory");
        for id in [order.order_id, uuid::Uuid::new_v4()] {
            let started = Instant::now();
            let request = GetOrderRequest {
                order_id: id.to_string(),
                min_version: 7,
            };
            let status = app
                .orders()
                .get_order(authed(request, &mallory))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::NotFound, "{backend:?}");
            assert_eq!(status.message(), "order not found");
            assert!(
                started.elapsed() < Duration::from_millis(1000),
                "{backend:?}: {:?}",
                started.elapsed()
            );
        }
    }
}
