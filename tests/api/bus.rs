//! The event-bus conformance suite: Redis Streams (on a single Redis when
//! TEST_REDIS_URL is set, on a Redis Cluster when TEST_REDIS_CLUSTER_URL is)
//! and the in-process bus honour one contract, on every partition.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use commerce::bus::{
    Delivery, EventBus, EventEnvelope, Partition, PartitionGroup, in_process::InProcessBus, partition_of,
    redis_streams::RedisStreamsBus,
};
use uuid::Uuid;

use crate::support::app::{Backend, Isolation};

/// Partitions of the buses under test: partition 0 shares its Redis Cluster
/// slot with the dead letters and the leases, the others do not.
const PARTITIONS: u32 = 3;

/// Every bus available here, each with its isolation guard (keeps the Redis
/// prefix alive until the test ends).
async fn buses() -> Vec<(Arc<dyn EventBus>, Option<Isolation>)> {
    let mut all: Vec<(Arc<dyn EventBus>, Option<Isolation>)> =
        vec![(Arc::new(InProcessBus::new(1000, PARTITIONS)), None)];
    let mut redis = Vec::new();
    if std::env::var("TEST_REDIS_URL").is_ok() && Backend::from_env() == Backend::Real {
        redis.push(Backend::Real);
    }
    redis.extend(Backend::cluster());
    for backend in redis {
        let isolation = Isolation::new(backend).await;
        let backends = isolation.backends().await;
        let prefix = isolation.vars["REDIS_KEY_PREFIX"].clone();
        let pool = backends.redis.expect("redis pool");
        all.push((
            Arc::new(RedisStreamsBus::new(pool, &prefix, 1000, PARTITIONS)),
            Some(isolation),
        ));
    }
    all
}

/// A stream whose events go to `partition` (of [`PARTITIONS`]).
fn stream_in(partition: u32) -> Uuid {
    let id = Uuid::from_u128(u128::from(partition) + 1000 * u128::from(PARTITIONS));
    assert_eq!(partition_of(id, PARTITIONS), Partition(partition));
    id
}

fn event_of(stream_id: Uuid, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id,
        stream_type: "order".into(),
        version,
        global_position: version as i64,
        event_type: "OrderCreated".into(),
        schema_version: 1,
        payload: serde_json::json!({ "n": version }),
        metadata: Default::default(),
        recorded_at: Utc::now(),
    }
}

fn versions(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.event().unwrap().version).collect()
}

fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.id.clone()).collect()
}

#[tokio::test]
async fn groups_deliver_in_order_and_keep_unacked_entries_pending() {
    for (bus, _guard) in buses().await {
        let kind = bus.kind();
        assert_eq!(bus.partitions(), PARTITIONS, "{kind}");
        for k in [0, 2] {
            let (a, b) = (
                PartitionGroup::new("a", Partition(k)),
                PartitionGroup::new("b", Partition(k)),
            );
            let stream = stream_in(k);
            bus.create_group(a).await.unwrap();
            let published: Vec<EventEnvelope> = (1..=3).map(|v| event_of(stream, v)).collect();
            bus.publish(&published).await.unwrap();
            // A group created after the publish still sees the entries.
            bus.create_group(b).await.unwrap();
            bus.create_group(a).await.unwrap(); // idempotent
            assert_eq!(
                bus.backlog(a).await.unwrap(),
                commerce::bus::Backlog {
                    unread: 3,
                    pending: 0
                },
                "{kind} {k}"
            );

            let first = bus
                .read_new(a, "c1", 10, Duration::from_millis(50))
                .await
                .unwrap();
            assert_eq!(versions(&first), vec![1, 2, 3], "{kind} {k}");
            assert!(
                first
                    .iter()
                    .all(|d| d.deliveries == 1 && d.partition == Partition(k)),
                "{kind} {k}"
            );
            assert_eq!(
                first[0].event().unwrap(),
                published[0],
                "{kind}: the event survives the trip"
            );
            let other = bus
                .read_new(b, "c9", 10, Duration::from_millis(50))
                .await
                .unwrap();
            assert_eq!(versions(&other), vec![1, 2, 3], "{kind}: groups are independent");
            assert!(
                bus.read_new(a, "c2", 10, Duration::from_millis(20))
                    .await
                    .unwrap()
                    .is_empty()
            );
            // The other partitions hold none of it.
            let elsewhere = PartitionGroup::new("a", Partition((k + 1) % PARTITIONS));
            bus.create_group(elsewhere).await.unwrap();
            assert!(
                bus.read_new(elsewhere, "c1", 10, Duration::from_millis(20))
                    .await
                    .unwrap()
                    .is_empty(),
                "{kind} {k}"
            );

            // Nothing acked: the consumer's pending list re-delivers, counting.
            bus.ack(a, std::slice::from_ref(&first[0].id)).await.unwrap();
            let pending = bus.read_pending(a, "c1", 10).await.unwrap();
            assert_eq!(versions(&pending), vec![2, 3], "{kind}");
            assert!(pending.iter().all(|d| d.deliveries == 2), "{kind}: {pending:?}");
            assert!(bus.read_pending(a, "c2", 10).await.unwrap().is_empty(), "{kind}");
            assert_eq!(
                bus.backlog(a).await.unwrap(),
                commerce::bus::Backlog {
                    unread: 0,
                    pending: 2
                },
                "{kind} {k}"
            );

            // Another consumer claims what c1 left idle.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let claimed = bus
                .claim_idle(a, "c2", Duration::from_millis(20), 10)
                .await
                .unwrap();
            assert_eq!(versions(&claimed), vec![2, 3], "{kind}");
            assert!(claimed.iter().all(|d| d.deliveries == 3), "{kind}: {claimed:?}");
            assert!(bus.read_pending(a, "c1", 10).await.unwrap().is_empty(), "{kind}");
            bus.ack(a, &ids(&claimed)).await.unwrap();
            assert!(bus.read_pending(a, "c2", 10).await.unwrap().is_empty(), "{kind}");
            assert!(bus.backlog(a).await.unwrap().drained(), "{kind} {k}");
        }
    }
}

#[tokio::test]
async fn each_order_stays_in_one_partition_in_order_while_orders_spread_over_all() {
    for (bus, _guard) in buses().await {
        let kind = bus.kind();
        let orders: Vec<Uuid> = (0..30).map(|_| Uuid::new_v4()).collect();
        // Interleaved, in two publishes, as the relay's batches come.
        for versions in [1..=2, 3..=4] {
            let batch: Vec<EventEnvelope> = versions
                .flat_map(|v| orders.iter().map(move |id| event_of(*id, v)))
                .collect();
            bus.publish(&batch).await.unwrap();
        }
        let mut seen: HashMap<Uuid, (Partition, Vec<u64>)> = HashMap::new();
        for k in 0..PARTITIONS {
            let group = PartitionGroup::new("order", Partition(k));
            bus.create_group(group).await.unwrap();
            let delivered = bus
                .read_new(group, "c", 1000, Duration::from_millis(50))
                .await
                .unwrap();
            assert!(!delivered.is_empty(), "{kind}: partition {k} got no order of 30");
            for delivery in delivered {
                let event = delivery.event().unwrap();
                let (partition, versions) = seen.entry(event.stream_id).or_insert((Partition(k), Vec::new()));
                assert_eq!(*partition, Partition(k), "{kind}: an order in two partitions");
                versions.push(event.version);
            }
        }
        assert_eq!(seen.len(), orders.len(), "{kind}");
        for (id, (partition, versions)) in seen {
            assert_eq!(partition, partition_of(id, PARTITIONS), "{kind}");
            assert_eq!(versions, vec![1, 2, 3, 4], "{kind}: in order, once");
        }
    }
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_to_their_partition() {
    for (bus, _guard) in buses().await {
        let kind = bus.kind();
        for k in [0, 1] {
            let p = PartitionGroup::new("p", Partition(k));
            let stream = stream_in(k);
            bus.create_group(p).await.unwrap();
            bus.publish(&[event_of(stream, 1), event_of(stream, 2)])
                .await
                .unwrap();
            let delivered = bus
                .read_new(p, "c1", 10, Duration::from_millis(50))
                .await
                .unwrap();
            bus.ack(p, std::slice::from_ref(&delivered[0].id)).await.unwrap();
            bus.dead_letter("p", &delivered[1], "boom").await.unwrap();
            assert!(
                bus.read_pending(p, "c1", 10).await.unwrap().is_empty(),
                "{kind}: dead letter is acked"
            );

            let letters = bus.dead_letters(10).await.unwrap();
            assert_eq!(letters.len(), 1, "{kind}");
            assert_eq!(letters[0].group, "p");
            assert_eq!(letters[0].error, "boom");
            assert_eq!(letters[0].deliveries, 1);
            assert_eq!(letters[0].raw, delivered[1].raw);

            assert_eq!(bus.replay_dead_letters(&[]).await.unwrap(), 1, "{kind}");
            assert!(bus.dead_letters(10).await.unwrap().is_empty(), "{kind}");
            let again = bus
                .read_new(p, "c1", 10, Duration::from_millis(50))
                .await
                .unwrap();
            assert_eq!(
                versions(&again),
                vec![2],
                "{kind}: replayed to its partition's group"
            );
            bus.ack(p, &ids(&again)).await.unwrap();
            assert_eq!(
                bus.replay_dead_letters(&["1-0".into()]).await.unwrap(),
                0,
                "{kind}"
            );
        }
    }
}

#[tokio::test]
async fn a_blocked_read_returns_as_soon_as_an_entry_is_published() {
    for (bus, _guard) in buses().await {
        let w = PartitionGroup::new("w", Partition(1));
        bus.create_group(w).await.unwrap();
        let publisher = bus.clone();
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            publisher.publish(&[event_of(stream_in(1), 7)]).await.unwrap();
        });
        let mut got = Vec::new();
        // Redis caps one BLOCK below the client's response timeout: poll a few.
        while got.is_empty() && started.elapsed() < Duration::from_secs(3) {
            got = bus
                .read_new(w, "c", 10, Duration::from_millis(300))
                .await
                .unwrap();
        }
        assert_eq!(versions(&got), vec![7], "{}", bus.kind());
    }
}

#[tokio::test]
async fn leases_share_the_partitions_and_move_when_a_member_leaves_or_expires() {
    let long = Duration::from_secs(30);
    let held = |partitions: Vec<Partition>| partitions.iter().map(|p| p.0).collect::<Vec<_>>();
    for (bus, _guard) in buses().await {
        let kind = bus.kind();
        assert_eq!(
            held(bus.balance("a", long).await.unwrap()),
            vec![0, 1, 2],
            "{kind}"
        );
        // b joins: a releases its surplus first, then b takes it.
        assert!(bus.balance("b", long).await.unwrap().is_empty(), "{kind}");
        assert_eq!(held(bus.balance("a", long).await.unwrap()), vec![0, 1], "{kind}");
        assert_eq!(held(bus.balance("b", long).await.unwrap()), vec![2], "{kind}");
        assert_eq!(
            held(bus.balance("a", long).await.unwrap()),
            vec![0, 1],
            "{kind}: stable"
        );
        assert_eq!(
            bus.owners().await.unwrap(),
            vec![Some("a".to_string()), Some("a".into()), Some("b".into())],
            "{kind}"
        );
        // a leaves: b takes everything at its next renewal.
        bus.leave("a").await.unwrap();
        assert_eq!(
            held(bus.balance("b", long).await.unwrap()),
            vec![0, 1, 2],
            "{kind}"
        );
        // c joins with a short lease, takes a share, and stops renewing.
        let short = Duration::from_millis(300);
        assert!(bus.balance("c", short).await.unwrap().is_empty(), "{kind}");
        assert_eq!(held(bus.balance("b", long).await.unwrap()), vec![0, 1], "{kind}");
        assert_eq!(held(bus.balance("c", short).await.unwrap()), vec![2], "{kind}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(bus.owners().await.unwrap()[2], None, "{kind}: c's lease expired");
        assert_eq!(
            held(bus.balance("b", long).await.unwrap()),
            vec![0, 1, 2],
            "{kind}"
        );
    }
}
