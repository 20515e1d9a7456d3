//! The relay of the settled log through a bus outage, a crash between the
//! publish and the cursor move, and a race of two replicas: nothing lost,
//! nothing reordered, the cursor never moved back.

use std::{sync::Arc, time::Duration};

use commerce::{
    bus::{self, EventBus, EventEnvelope},
    projections::samples::SampleOrder,
    relay::EventRelay,
    store::relay_cursor::{RelayCursor, RelayCursorError},
};
use uuid::Uuid;

use crate::support::{app::Backend, read_side::ReadSideFixture};

/// A bus that refuses to publish while `down` is set (Redis unreachable).
struct FlakyBus {
    inner: Arc<dyn EventBus>,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl EventBus for FlakyBus {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), bus::BusError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(bus::BusError::Protocol("connection refused".into()));
        }
        self.inner.publish(events).await
    }
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }
    async fn create_group(&self, group: bus::PartitionGroup<'_>) -> Result<(), bus::BusError> {
        self.inner.create_group(group).await
    }
    async fn read_pending(
        &self,
        g: bus::PartitionGroup<'_>,
        c: &str,
        n: usize,
    ) -> Result<Vec<bus::Delivery>, bus::BusError> {
        self.inner.read_pending(g, c, n).await
    }
    async fn read_new(
        &self,
        g: bus::PartitionGroup<'_>,
        c: &str,
        n: usize,
        b: Duration,
    ) -> Result<Vec<bus::Delivery>, bus::BusError> {
        self.inner.read_new(g, c, n, b).await
    }
    async fn claim_idle(
        &self,
        g: bus::PartitionGroup<'_>,
        c: &str,
        i: Duration,
        n: usize,
    ) -> Result<Vec<bus::Delivery>, bus::BusError> {
        self.inner.claim_idle(g, c, i, n).await
    }
    async fn ack(&self, g: bus::PartitionGroup<'_>, ids: &[String]) -> Result<(), bus::BusError> {
        self.inner.ack(g, ids).await
    }
    async fn backlog(&self, g: bus::PartitionGroup<'_>) -> Result<bus::Backlog, bus::BusError> {
        self.inner.backlog(g).await
    }
    async fn balance(&self, member: &str, ttl: Duration) -> Result<Vec<bus::Partition>, bus::BusError> {
        self.inner.balance(member, ttl).await
    }
    async fn owners(&self) -> Result<Vec<Option<String>>, bus::BusError> {
        self.inner.owners().await
    }
    async fn leave(&self, member: &str) -> Result<(), bus::BusError> {
        self.inner.leave(member).await
    }
    async fn dead_letter(&self, g: &str, d: &bus::Delivery, e: &str) -> Result<(), bus::BusError> {
        self.inner.dead_letter(g, d, e).await
    }
    async fn purge_dead_letters(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        purge: commerce::store::Purge,
    ) -> Result<u64, bus::BusError> {
        self.inner.purge_dead_letters(before, purge).await
    }
    async fn dead_letters(&self, n: usize) -> Result<Vec<bus::DeadLetter>, bus::BusError> {
        self.inner.dead_letters(n).await
    }
    async fn replay_dead_letters(&self, ids: &[String]) -> Result<u64, bus::BusError> {
        self.inner.replay_dead_letters(ids).await
    }
    async fn announce_forgotten(&self, customer_id: &str) -> Result<(), bus::BusError> {
        self.inner.announce_forgotten(customer_id).await
    }
    async fn forgotten_after(
        &self,
        cursor: Option<&str>,
        block: std::time::Duration,
    ) -> Result<(String, Vec<String>), bus::BusError> {
        self.inner.forgotten_after(cursor, block).await
    }
}

#[tokio::test]
async fn the_relay_keeps_events_through_a_bus_outage_and_publishes_them_in_order() {
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        let flaky = Arc::new(FlakyBus {
            inner: fixture.bus.clone(),
            down: true.into(),
        });
        let audit = bus::PartitionGroup::new("audit", bus::Partition(0));
        fixture.bus.create_group(audit).await.unwrap();
        let relay = fixture.relay_to(flaky.clone());
        let orders: Vec<SampleOrder> = (0..5).map(|_| SampleOrder::new("olga", 1)).collect();
        for order in &orders {
            let life = order.confirmed();
            fixture.append(order, &life[..3]).await;
        }
        // Down: every round fails, the cursor stays.
        assert!(fixture.settled(15).await, "{backend:?}");
        for _ in 0..3 {
            assert!(relay.relay_once().await.is_err(), "{backend:?}");
        }
        for order in &orders {
            fixture.append(order, &order.confirmed()).await;
        }
        flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
        let published = fixture.relay_all_with(&relay).await;
        assert_eq!(published, 30, "{backend:?}: every event once");
        // Each stream arrives in version order.
        let delivered = fixture
            .bus
            .read_new(audit, "a", 100, Duration::from_millis(100))
            .await
            .unwrap();
        let mut last: std::collections::HashMap<Uuid, u64> = Default::default();
        for delivery in &delivered {
            let event = delivery.event().unwrap();
            let previous = last.insert(event.stream_id, event.version).unwrap_or(0);
            assert_eq!(
                event.version,
                previous + 1,
                "{backend:?}: in order, no gap, no duplicate"
            );
        }
        assert_eq!(delivered.len(), 30);
    }
}

/// A cursor whose moves fail while `crash` is set: the relay's process dying
/// after the bus accepted a batch and before the cursor moved.
#[derive(Debug)]
struct CrashingCursor {
    inner: Arc<dyn RelayCursor>,
    crash: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl RelayCursor for CrashingCursor {
    async fn position(&self) -> Result<i64, RelayCursorError> {
        self.inner.position().await
    }
    async fn advance(&self, from: i64, to: i64) -> Result<bool, RelayCursorError> {
        if self.crash.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RelayCursorError::Unavailable(
                "killed before the cursor moved".into(),
            ));
        }
        self.inner.advance(from, to).await
    }
}

/// Every entry of the audit group (created before anything was published), as
/// (stream, version) in delivery order.
async fn delivered(fixture: &ReadSideFixture, group: bus::PartitionGroup<'_>) -> Vec<(Uuid, u64)> {
    let mut all = Vec::new();
    loop {
        let read = fixture
            .bus
            .read_new(group, "a", 100, Duration::from_millis(50))
            .await
            .unwrap();
        if read.is_empty() {
            return all;
        }
        all.extend(read.iter().map(|d| {
            let event = d.event().unwrap();
            (event.stream_id, event.version)
        }));
    }
}

/// What idempotent-by-version consumers need of a delivery order: each
/// stream's versions first arrive in order from 1, none missing, and every
/// later delivery of a version is a repeat of one already delivered.
fn assert_first_deliveries_in_order(deliveries: &[(Uuid, u64)], streams: usize, per_stream: u64, what: &str) {
    let mut highest: std::collections::HashMap<Uuid, u64> = Default::default();
    for (stream, version) in deliveries {
        let seen = highest.entry(*stream).or_insert(0);
        assert!(
            *version <= *seen + 1,
            "{what}: {stream} v{version} before v{}",
            *seen + 1
        );
        *seen = (*seen).max(*version);
    }
    assert_eq!(highest.len(), streams, "{what}: every stream");
    assert!(
        highest.values().all(|v| *v == per_stream),
        "{what}: every version: {highest:?}"
    );
}

#[tokio::test]
async fn a_crash_between_the_publish_and_the_cursor_move_publishes_the_batch_again_and_loses_nothing() {
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        let audit = bus::PartitionGroup::new("audit", bus::Partition(0));
        fixture.bus.create_group(audit).await.unwrap();
        let cursor = Arc::new(CrashingCursor {
            inner: fixture.relay_cursor.clone(),
            crash: true.into(),
        });
        let relay = EventRelay::new(fixture.stored_events.clone(), cursor.clone(), fixture.bus.clone());
        let orders: Vec<SampleOrder> = (0..4).map(|_| SampleOrder::new("crash", 1)).collect();
        for order in &orders {
            fixture.append(order, &order.confirmed()[..3]).await;
        }
        let before = fixture.relay_cursor.position().await.unwrap();
        assert!(fixture.settled(12).await, "{backend:?}");
        assert!(relay.relay_once().await.is_err(), "{backend:?}");
        assert_eq!(
            fixture.relay_cursor.position().await.unwrap(),
            before,
            "{backend:?}: published, but the cursor did not move"
        );
        // Restarted: the same batch goes again, then the cursor moves past it.
        cursor.crash.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(relay.relay_once().await.unwrap(), 12, "{backend:?}");
        assert_eq!(relay.relay_once().await.unwrap(), 0, "{backend:?}: nothing left");
        let head = fixture.events.events.head_position().await.unwrap();
        assert_eq!(
            fixture.relay_cursor.position().await.unwrap(),
            head,
            "{backend:?}"
        );
        let deliveries = delivered(&fixture, audit).await;
        assert_eq!(deliveries.len(), 24, "{backend:?}: the batch twice, nothing lost");
        assert_first_deliveries_in_order(&deliveries, 4, 3, &format!("{backend:?}"));
        assert_eq!(
            deliveries[..12],
            deliveries[12..],
            "{backend:?}: the same batch again"
        );
    }
}

#[tokio::test]
async fn relays_of_two_replicas_publish_every_event_and_never_move_the_cursor_back() {
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        let audit = bus::PartitionGroup::new("audit", bus::Partition(0));
        fixture.bus.create_group(audit).await.unwrap();
        // Two replicas: two relays, one cursor row.
        let (a, b) = (
            fixture.relay_to(fixture.bus.clone()),
            fixture.relay_to(fixture.bus.clone()),
        );
        let orders: Vec<SampleOrder> = (0..12).map(|_| SampleOrder::new("race", 1)).collect();
        for chunk in [2usize, 4, 6] {
            for order in &orders {
                fixture.append(order, &order.confirmed()[..chunk]).await;
            }
            assert!(fixture.settled(12 * chunk).await, "{backend:?}");
            let (ra, rb) = tokio::join!(
                async {
                    let mut n = 0;
                    while let Ok(k @ 1..) = a.relay_once().await {
                        n += k;
                    }
                    n
                },
                async {
                    let mut n = 0;
                    while let Ok(k @ 1..) = b.relay_once().await {
                        n += k;
                    }
                    n
                }
            );
            assert!(ra + rb >= 12 * 2, "{backend:?}: {ra} + {rb} moved the cursor");
        }
        assert_eq!(a.relay_once().await.unwrap() + b.relay_once().await.unwrap(), 0);
        let head = fixture.events.events.head_position().await.unwrap();
        let cursor = fixture.relay_cursor.clone();
        assert_eq!(cursor.position().await.unwrap(), head, "{backend:?}");
        // A relay that read the cursor before the other moved it cannot move it back.
        assert!(!cursor.advance(0, 1).await.unwrap(), "{backend:?}");
        assert_eq!(cursor.position().await.unwrap(), head, "{backend:?}");
        let deliveries = delivered(&fixture, audit).await;
        assert!(deliveries.len() >= 72, "{backend:?}: {}", deliveries.len());
        assert_first_deliveries_in_order(&deliveries, 12, 6, &format!("{backend:?}"));
    }
}
