//! The event-bus conformance suite: Redis Streams (on a single Redis when
//! TEST_REDIS_URL is set, on a Redis Cluster when TEST_REDIS_CLUSTER_URL is)
//! and the in-process bus honour one contract.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use commerce::bus::{EventBus, EventEnvelope, in_process::InProcessBus, redis_streams::RedisStreamsBus};
use uuid::Uuid;

use crate::support::app::{Backend, Isolation};

/// Every bus available here, each with its isolation guard (keeps the Redis
/// prefix alive until the test ends).
async fn buses() -> Vec<(Arc<dyn EventBus>, Option<Isolation>)> {
    let mut all: Vec<(Arc<dyn EventBus>, Option<Isolation>)> =
        vec![(Arc::new(InProcessBus::new(1000)), None)];
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
            Arc::new(RedisStreamsBus::new(pool, &prefix, 1000)),
            Some(isolation),
        ));
    }
    all
}

fn event(version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: Uuid::nil(),
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

fn versions(deliveries: &[commerce::bus::Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.event().unwrap().version).collect()
}

#[tokio::test]
async fn groups_deliver_in_order_and_keep_unacked_entries_pending() {
    for (bus, _guard) in buses().await {
        let kind = bus.kind();
        bus.create_group("a").await.unwrap();
        let published: Vec<EventEnvelope> = (1..=3).map(event).collect();
        bus.publish(&published).await.unwrap();
        // A group created after the publish still sees the entries.
        bus.create_group("b").await.unwrap();
        bus.create_group("a").await.unwrap(); // idempotent

        let first = bus
            .read_new("a", "c1", 10, Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(versions(&first), vec![1, 2, 3], "{kind}");
        assert!(first.iter().all(|d| d.deliveries == 1), "{kind}");
        assert_eq!(
            first[0].event().unwrap(),
            published[0],
            "{kind}: the event survives the trip"
        );
        let other = bus
            .read_new("b", "c9", 10, Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(versions(&other), vec![1, 2, 3], "{kind}: groups are independent");
        assert!(
            bus.read_new("a", "c2", 10, Duration::from_millis(20))
                .await
                .unwrap()
                .is_empty()
        );

        // Nothing acked: the consumer's pending list re-delivers, counting.
        bus.ack("a", std::slice::from_ref(&first[0].id)).await.unwrap();
        let pending = bus.read_pending("a", "c1", 10).await.unwrap();
        assert_eq!(versions(&pending), vec![2, 3], "{kind}");
        assert!(pending.iter().all(|d| d.deliveries == 2), "{kind}: {pending:?}");
        assert!(
            bus.read_pending("a", "c2", 10).await.unwrap().is_empty(),
            "{kind}"
        );

        // Another consumer claims what c1 left idle.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let claimed = bus
            .claim_idle("a", "c2", Duration::from_millis(20), 10)
            .await
            .unwrap();
        assert_eq!(versions(&claimed), vec![2, 3], "{kind}");
        assert!(claimed.iter().all(|d| d.deliveries == 3), "{kind}: {claimed:?}");
        assert!(
            bus.read_pending("a", "c1", 10).await.unwrap().is_empty(),
            "{kind}"
        );
        let ids: Vec<String> = claimed.iter().map(|d| d.id.clone()).collect();
        bus.ack("a", &ids).await.unwrap();
        assert!(
            bus.read_pending("a", "c2", 10).await.unwrap().is_empty(),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_to_the_groups() {
    for (bus, _guard) in buses().await {
        let kind = bus.kind();
        bus.create_group("p").await.unwrap();
        bus.publish(&[event(1), event(2)]).await.unwrap();
        let delivered = bus
            .read_new("p", "c1", 10, Duration::from_millis(50))
            .await
            .unwrap();
        bus.ack("p", std::slice::from_ref(&delivered[0].id))
            .await
            .unwrap();
        bus.dead_letter("p", &delivered[1], "boom").await.unwrap();
        assert!(
            bus.read_pending("p", "c1", 10).await.unwrap().is_empty(),
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
            .read_new("p", "c1", 10, Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(versions(&again), vec![2], "{kind}: replayed to the group");
        assert_eq!(
            bus.replay_dead_letters(&["1-0".into()]).await.unwrap(),
            0,
            "{kind}"
        );
    }
}

#[tokio::test]
async fn a_blocked_read_returns_as_soon_as_an_entry_is_published() {
    for (bus, _guard) in buses().await {
        bus.create_group("w").await.unwrap();
        let publisher = bus.clone();
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            publisher.publish(&[event(7)]).await.unwrap();
        });
        let mut got = Vec::new();
        // Redis caps one BLOCK below the client's response timeout: poll a few.
        while got.is_empty() && started.elapsed() < Duration::from_secs(3) {
            got = bus
                .read_new("w", "c", 10, Duration::from_millis(300))
                .await
                .unwrap();
        }
        assert_eq!(versions(&got), vec![7], "{}", bus.kind());
    }
}
