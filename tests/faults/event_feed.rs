//! The public event feed under load: 32 concurrent writers while a transaction
//! holds an early position open (a subscriber waits and never skips), and a
//! consumer far behind catching up at a measured rate with flat server memory.

use std::time::{Duration, Instant};

use commerce::{
    auth::{Role, mint_token},
    db::Db,
    projections::samples::SampleOrder,
    proto::commerce::events::v1::{AckRequest, SubscribeRequest, subscribe_response::Message},
    store::event_store::OrderCodec,
};
use tokio::task::JoinSet;

use crate::support::{
    self,
    app::{Backend, Isolation, authed, spawn_app_with},
    child::{free_port, spawn},
    events::{
        all_positions, append_life, append_orders, assert_no_repeats, by_consumer, client, create_consumer,
        events, next, subscribe,
    },
    store::EventLog,
};

/// Opens a PostgreSQL transaction that appends an OrderCreated (taking a
/// position before anything else) and stays open until the sender fires.
async fn hold_open(db: &Db) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let Db::Postgres(pool) = db else {
        unreachable!("only PostgreSQL runs transactions concurrently")
    };
    let order = SampleOrder::new("held", 1);
    let created = SampleOrder::encode(&[order.created()]).remove(0);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload, \
         metadata) VALUES ($1, $2, 'order', 1, $3, $4, $5, '{}')",
    )
    .bind(created.event_id)
    .bind(order.order_id)
    .bind(&created.event_type)
    .bind(created.schema_version)
    .bind(&created.payload)
    .execute(&mut *tx)
    .await
    .unwrap();
    let (release, released) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let _ = released.await;
        tx.commit().await.unwrap();
    });
    (release, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_writers_with_a_transaction_held_open_never_make_a_subscriber_skip() {
    let per_writer = support::scale(4, 25);
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("ENABLE_SAGA_ORCHESTRATION", "false")]).await;
        let service = app.token("analytics", &[Role::Service]);
        let mut stream = subscribe(&app.channel, &service, SubscribeRequest::default())
            .await
            .unwrap();
        assert_eq!(next(&mut stream).await, Message::Checkpoint(Default::default()));
        // SQLite has one writer at a time: a held write transaction would only block the others.
        let held = match backend {
            Backend::Real | Backend::RealCluster => Some(hold_open(&app.app.backends.db).await),
            Backend::Embedded => None,
        };
        let mut writers = JoinSet::new();
        for _ in 0..32 {
            let events = EventLog::of(&app.app);
            writers.spawn(async move { append_orders(&events, per_writer).await });
        }
        writers.join_all().await;
        let total = 32 * per_writer * 6 + usize::from(held.is_some());
        if let Some((release, committed)) = held {
            // Every writer's transaction is younger than the held one: none is settled
            // yet, so the subscriber has had nothing (it waits; it does not skip).
            let early = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
            assert!(early.is_err(), "delivered past an open transaction: {early:?}");
            release.send(()).unwrap();
            committed.await.unwrap();
        }
        let delivered = events(&mut stream, total).await;
        assert_no_repeats(&delivered);
        let positions: Vec<i64> = delivered.iter().map(|e| e.position).collect();
        assert_eq!(
            positions,
            all_positions(app.app.events.as_ref()).await,
            "{backend:?}: the settled log, in order"
        );
        if backend == Backend::Real {
            // The held event took the first position and committed last; a reader
            // going by position alone would have passed it. It comes first.
            let smallest = *positions.iter().min().unwrap();
            assert_eq!(positions[0], smallest, "the held event came first");
        }
    }
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A named consumer 100,000 events behind (LONG_TESTS=1; 12,000 in CI) catches
/// up through a `commerce serve` child process: prints events/s and the
/// server's memory, which must stay flat (a stream reads ahead one batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_far_behind_catches_up_at_a_measured_rate_with_flat_memory() {
    let orders = support::scale(2_000, 100_000usize.div_ceil(6));
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let db = isolation.backends().await.db;
        let store = EventLog::on(&db, OrderCodec::upcasters());
        let seeded = Instant::now();
        let mut writers = JoinSet::new();
        for w in 0..8 {
            let store = store.clone();
            writers.spawn(async move {
                for i in (w..orders).step_by(8) {
                    let order = SampleOrder::new(&format!("c-{}", i % 500), 1 + i % 3);
                    append_life(&store, &order).await;
                }
            });
        }
        writers.join_all().await;
        let total = orders * 6;
        eprintln!(
            "{backend:?}: seeded {total} events in {:.1} s",
            seeded.elapsed().as_secs_f64()
        );

        let port = free_port();
        let mut vars = isolation.vars.clone();
        vars.insert("PORT".into(), port.to_string());
        vars.insert("ENABLE_SAGA_ORCHESTRATION".into(), "false".into());
        let dir = tempfile::tempdir().unwrap();
        let mut server = spawn(&["serve"], &vars, dir.path().join("serve.log"), port);
        let channel = server.ready().await;
        // The server's projections first catch up with the seeded log (their
        // sweep, and the rows their fold cache keeps): memory that has
        // nothing to do with the subscription measured below.
        support::rebuild_check::caught_up(&db).await;
        let config = isolation.config(&[]);
        let token = |sub: &str, role: Role| {
            mint_token(&config.auth, sub, &[role], Duration::from_secs(3600)).unwrap()
        };
        let service = token("analytics", Role::Service);
        create_consumer(&channel, &token("ops", Role::Admin), "analytics", &[]).await;
        let mut stream = subscribe(&channel, &service, by_consumer("analytics"))
            .await
            .unwrap();

        // Not reading for a while: flow control keeps the server from reading on.
        let idle = rss_kib(server.pid());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let paused = rss_kib(server.pid());
        let started = Instant::now();
        let (mut received, mut peak) = (0usize, paused);
        let mut seen = std::collections::HashSet::with_capacity(total);
        while received < total {
            let chunk = events(&mut stream, (total - received).min(5_000)).await;
            received += chunk.len();
            seen.extend(chunk.iter().map(|e| e.position));
            let ack = AckRequest {
                consumer: "analytics".into(),
                position: chunk.last().unwrap().position,
            };
            client(&channel).ack(authed(ack, &service)).await.unwrap();
            peak = peak.max(rss_kib(server.pid()));
        }
        let elapsed = started.elapsed().as_secs_f64();
        let rate = total as f64 / elapsed;
        eprintln!(
            "{backend:?}: caught up {total} events in {elapsed:.2} s: {rate:.0} events/s; server RSS {} MiB idle, {} MiB after 2 s unread, {} MiB peak",
            idle / 1024,
            paused / 1024,
            peak / 1024
        );
        assert_eq!(seen.len(), total, "{backend:?}: every event once");
        assert!(
            paused < idle + 32 * 1024,
            "{backend:?}: an unread stream grew the server by {} KiB",
            paused - idle
        );
        assert!(
            peak < idle + 96 * 1024,
            "{backend:?}: catching up grew the server by {} KiB",
            peak - idle
        );
        assert_eq!(all_positions(&*store).await.len(), total);
    }
}
