//! The partitioned bus end to end, below the transports: replicas share the
//! partitions through leases, a dead replica's partitions and pending entries
//! move to the others, and the partition count changes by the README's
//! procedure; the read models end as the fold of the event store every time
//! (Redis Streams + PostgreSQL, on a single Redis and on the cluster, and
//! in-process + SQLite).

use std::{sync::Arc, time::Duration};

use commerce::{
    bus::{EventBus, Partition, PartitionGroup},
    projections::{
        cart_conversion::CartConversion, customer_orders::CustomerOrder, order_detail::OrderDetail,
        samples::SampleOrder, status::PROJECTIONS,
    },
    shutdown::{self, ShutdownTrigger},
};
use uuid::Uuid;

use crate::support::{
    app::Backend,
    read_side::{ReadSideFixture, all_summaries, details, spawn_all},
    wait_for_within,
};

/// One replica's three projection runners.
struct Replica {
    trigger: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Replica {
    /// Starts the runners of replica `name` on `bus`; no sweep after the
    /// first, so only the bus delivers.
    fn start(fixture: &ReadSideFixture, bus: &Arc<dyn EventBus>, name: &str, lease: Duration) -> Self {
        let (trigger, shutdown) = shutdown::channel();
        let mut projector = fixture.projector(name, Duration::from_secs(3600));
        projector.bus = bus.clone();
        projector.settings.lease = lease;
        let tasks = spawn_all(&projector, &shutdown);
        Self { trigger, tasks }
    }

    /// Graceful stop: the runners finish their step and leave.
    async fn stop(self) {
        self.trigger.trigger();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("runner stops")
                .expect("runner ends cleanly");
        }
    }

    /// A crash: the runners vanish mid-step and renew nothing any more.
    async fn kill(self) {
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

fn owners(names: &[&str]) -> Vec<Option<String>> {
    names.iter().map(|n| Some(n.to_string())).collect()
}

async fn wait_owners(bus: &Arc<dyn EventBus>, expected: Vec<Option<String>>) {
    wait_for_within(
        &format!("partition owners {expected:?}"),
        Duration::from_secs(30),
        || {
            let (bus, expected) = (bus.clone(), expected.clone());
            async move { bus.owners().await.unwrap() == expected }
        },
    )
    .await;
}

/// Relays every settled event after the relay cursor to `bus`.
async fn relay_all(fixture: &ReadSideFixture, bus: &Arc<dyn EventBus>) {
    fixture.relay_all_with(&fixture.relay_to(bus.clone())).await;
}

/// Every group of every projection read and acknowledged every entry.
async fn drained(bus: &Arc<dyn EventBus>) -> bool {
    for k in 0..bus.partitions() {
        for projection in PROJECTIONS {
            let group = PartitionGroup::new(projection, Partition(k));
            if !bus.backlog(group).await.unwrap().drained() {
                return false;
            }
        }
    }
    true
}

/// Every read model holds exactly the fold of the event store for `ids`.
async fn assert_read_models_match(fixture: &ReadSideFixture, ids: &[Uuid], version: u64, what: &str) {
    assert!(
        fixture.converged::<OrderDetail>(ids, version).await,
        "{what}: details"
    );
    assert!(
        fixture.converged::<CustomerOrder>(ids, version).await,
        "{what}: list"
    );
    assert!(
        fixture.converged::<CartConversion>(ids, version).await,
        "{what}: conversions"
    );
    assert_eq!(
        details(&fixture.store, ids).await,
        fixture.truth::<OrderDetail>(ids).await,
        "{what}"
    );
    assert_eq!(
        all_summaries(&fixture.store).await.len(),
        ids.len(),
        "{what}: one row per order"
    );
}

fn orders(n: usize, tag: &str) -> Vec<SampleOrder> {
    (0..n)
        .map(|i| SampleOrder::new(&format!("{tag}{}", i % 4), 1))
        .collect()
}

#[tokio::test]
async fn replicas_share_the_partitions_and_a_dead_ones_partitions_and_pending_entries_move() {
    let lease = Duration::from_secs(6);
    for backend in Backend::all_with_cluster() {
        let fixture = ReadSideFixture::with(backend, &[("EVENT_BUS_PARTITIONS", "4")]).await;
        let bus = fixture.bus.clone();
        assert_eq!(bus.partitions(), 4);
        let b = Replica::start(&fixture, &bus, "replica-b", lease);
        wait_owners(&bus, owners(&["replica-b"; 4])).await;
        let a = Replica::start(&fixture, &bus, "replica-a", lease);
        let shared = owners(&["replica-b", "replica-b", "replica-a", "replica-a"]);
        wait_owners(&bus, shared.clone()).await;

        // Both consume: each order in two appends, no sweep.
        let mut all = orders(16, "p");
        for order in &all {
            fixture.append(order, &order.confirmed()[..3]).await;
        }
        relay_all(&fixture, &bus).await;
        for order in &all {
            fixture.append(order, &order.confirmed()).await;
        }
        relay_all(&fixture, &bus).await;
        let mut ids: Vec<Uuid> = all.iter().map(|o| o.order_id).collect();
        assert_read_models_match(&fixture, &ids, 6, &format!("{backend:?}: shared")).await;

        // replica-a dies holding delivered, unacknowledged entries of its
        // partitions (read here in its name before its lease runs out).
        a.kill().await;
        let more = orders(16, "q");
        for order in &more {
            fixture.append(order, &order.confirmed()).await;
        }
        relay_all(&fixture, &bus).await;
        let mut orphaned = 0;
        for k in [2, 3] {
            for projection in PROJECTIONS {
                let group = PartitionGroup::new(projection, Partition(k));
                orphaned += bus
                    .read_new(group, "replica-a", 1000, Duration::from_millis(50))
                    .await
                    .unwrap()
                    .len();
            }
        }
        assert!(orphaned > 0, "{backend:?}: replica-a held nothing");
        all.extend(more);
        ids = all.iter().map(|o| o.order_id).collect();
        // replica-b takes the partitions once the lease expires and claims
        // what replica-a left pending: nothing lost, nothing applied twice.
        wait_owners(&bus, owners(&["replica-b"; 4])).await;
        assert_read_models_match(&fixture, &ids, 6, &format!("{backend:?}: after the takeover")).await;
        for k in 0..4 {
            for projection in PROJECTIONS {
                let group = PartitionGroup::new(projection, Partition(k));
                let left = bus.read_pending(group, "replica-a", 10).await.unwrap();
                assert!(
                    left.is_empty(),
                    "{backend:?}: {projection}/{k} still pending at replica-a"
                );
            }
        }
        assert!(drained(&bus).await, "{backend:?}");

        // replica-a comes back; then replica-b stops gracefully and leaves.
        let a = Replica::start(&fixture, &bus, "replica-a", lease);
        wait_owners(&bus, shared).await;
        b.stop().await;
        wait_owners(&bus, owners(&["replica-a"; 4])).await;
        let last = orders(8, "r");
        for order in &last {
            fixture.append(order, &order.confirmed()).await;
        }
        relay_all(&fixture, &bus).await;
        all.extend(last);
        ids = all.iter().map(|o| o.order_id).collect();
        assert_read_models_match(&fixture, &ids, 6, &format!("{backend:?}: after the hand-over")).await;
        a.stop().await;
    }
}

#[tokio::test]
async fn the_partition_count_changes_by_the_documented_procedure_without_losing_an_event() {
    let lease = Duration::from_secs(3);
    for backend in Backend::all_with_cluster() {
        let fixture = ReadSideFixture::with(backend, &[("EVENT_BUS_PARTITIONS", "2")]).await;
        let old = fixture.bus.clone();
        let replica = Replica::start(&fixture, &old, "replica", lease);
        wait_owners(&old, owners(&["replica"; 2])).await;
        let all = orders(20, "n");
        let ids: Vec<Uuid> = all.iter().map(|o| o.order_id).collect();
        for order in &all {
            fixture.append(order, &order.confirmed()[..3]).await;
        }
        relay_all(&fixture, &old).await;

        // 1. The relay stops (EVENT_BUS_RELAY=false): commands keep appending,
        //    their events wait behind the relay cursor.
        for order in &all {
            fixture.append(order, &order.confirmed()[..5]).await;
        }
        // 2. Every group reaches the end of every partition.
        wait_for_within("the groups to drain", Duration::from_secs(30), || {
            let old = old.clone();
            async move { drained(&old).await }
        })
        .await;
        assert!(
            fixture.converged::<OrderDetail>(&ids, 3).await,
            "{backend:?}: drained = applied"
        );
        // 3. The replicas restart with EVENT_BUS_PARTITIONS=4 and the relay on.
        replica.stop().await;
        let new = fixture.bus_with(4);
        assert_eq!(new.partitions(), 4);
        let replica = Replica::start(&fixture, &new, "replica", lease);
        wait_owners(&new, owners(&["replica"; 4])).await;
        relay_all(&fixture, &new).await;
        for order in &all {
            fixture.append(order, &order.confirmed()).await;
        }
        relay_all(&fixture, &new).await;
        // Orders that moved to another partition continue where they were.
        let moved = ids
            .iter()
            .filter(|id| commerce::bus::partition_of(**id, 2) != commerce::bus::partition_of(**id, 4))
            .count();
        assert!(moved > 0, "{backend:?}: no order changed partition");
        assert_read_models_match(&fixture, &ids, 6, &format!("{backend:?}: after the change")).await;
        assert!(drained(&new).await, "{backend:?}");
        replica.stop().await;
    }
}
