//! The rebuild rate, measured on a large event store (LONG_TESTS=1).

use commerce::{
    projections::rebuild::Rebuild, projections::samples::SampleOrder, store::event_store::ORDER_STREAM,
};

use crate::support::{
    self,
    app::Backend,
    read_side::{ReadSideFixture, all_summaries},
};

/// The rebuild rate, measured (LONG_TESTS=1; REBUILD_ORDERS orders of 6
/// events, default 20,000): seeds the event store through its append API,
/// then rebuilds and prints events/s. On a multi-threaded runtime, as
/// `commerce rebuild-projections` runs (the rebuild reads ahead on another task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_rate_is_measured_on_a_large_event_store() {
    if !support::long() {
        return;
    }
    let orders: usize = std::env::var("REBUILD_ORDERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        let seeded = std::time::Instant::now();
        let workers = 8;
        let mut tasks = Vec::new();
        for w in 0..workers {
            let events = fixture.events.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..orders).step_by(workers) {
                    let order = SampleOrder::new(&format!("bench-{}", i % 1000), 1 + i % 3);
                    let new = SampleOrder::encode(&order.confirmed());
                    events.append(order.order_id, 0, new, ORDER_STREAM).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let total = orders * 6;
        eprintln!(
            "{backend:?}: seeded {total} events in {:.1} s",
            seeded.elapsed().as_secs_f64()
        );
        assert!(fixture.settled(total).await);
        let batch = std::env::var("REBUILD_BATCH").ok().and_then(|n| n.parse().ok());
        let rebuild = Rebuild::new(fixture.store.clone(), fixture.events.events.clone());
        let rebuild = match batch {
            Some(batch) => rebuild.with_batch(batch),
            None => rebuild,
        };
        let report = rebuild.run(|_| {}).await.unwrap();
        eprintln!(
            "{backend:?}: rebuilt 3 projections from {} events in {:.2} s: {:.0} events/s",
            report.events,
            report.elapsed.as_secs_f64(),
            report.rate()
        );
        assert_eq!(report.events, total as i64);
        let all = all_summaries(&fixture.store).await;
        assert_eq!(all.len(), orders.min(10_000));
    }
}
