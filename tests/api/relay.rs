//! The outbox relay through a bus outage: nothing lost, nothing reordered.

use std::{sync::Arc, time::Duration};

use commerce::{
    bus::{self, EventBus, EventEnvelope},
    outbox::OutboxRelay,
    projections::samples::SampleOrder,
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
        let relay = OutboxRelay::new(fixture.outbox.clone(), flaky.clone());
        let orders: Vec<SampleOrder> = (0..5).map(|_| SampleOrder::new("olga", 1)).collect();
        for order in &orders {
            let life = order.confirmed();
            fixture.append(order, &life[..3]).await;
        }
        // Down: every round fails, nothing is marked published.
        for _ in 0..3 {
            assert!(relay.relay_once().await.is_err(), "{backend:?}");
        }
        for order in &orders {
            fixture.append(order, &order.confirmed()).await;
        }
        flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut published = 0;
        loop {
            let n = relay.relay_once().await.unwrap();
            if n == 0 {
                break;
            }
            published += n;
        }
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
