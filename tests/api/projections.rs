//! Relay and projections end to end, below the transports: events appended to
//! the event store reach the read models through the relay and the bus
//! (Redis Streams + PostgreSQL when configured, in-process + SQLite always),
//! whatever crashes, duplicates and rebuilds happen on the way.

use commerce::store::read_models::ReadModels as _;
use std::time::Duration;

use commerce::{
    bus::{EventEnvelope, Partition, PartitionGroup},
    projections::{
        cart_conversion::CartConversion, customer_orders::CustomerOrder, order_detail::OrderDetail,
        rebuild::Rebuild, samples::SampleOrder,
    },
    store::event_store::{ORDER_STREAM, OrderCodec},
};
use uuid::Uuid;

use crate::support::{
    app::Backend,
    read_side::{ReadSideFixture, all_summaries, apply_uncached, details, spawn},
};

/// The detail projection's group on the only partition of the fixtures' bus.
const DETAIL_0: PartitionGroup<'static> = PartitionGroup {
    group: "order_detail",
    partition: Partition(0),
};

#[tokio::test]
async fn appended_events_reach_every_read_model_through_the_relay_and_the_bus() {
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        // No sweep after the first (empty) one: only the bus can deliver.
        let (_projector, tasks) = fixture.start_read_side("c1", Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let orders: Vec<SampleOrder> = (0..8)
            .map(|i| SampleOrder::new(&format!("c{}", i % 3), 2))
            .collect();
        for order in &orders {
            let life = order.confirmed();
            fixture.append(order, &life[..2]).await;
        }
        for order in &orders {
            fixture.append(order, &order.confirmed()).await;
        }
        let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
        assert!(
            fixture.converged::<OrderDetail>(&ids, 6).await,
            "{backend:?}: details"
        );
        assert!(
            fixture.converged::<CustomerOrder>(&ids, 6).await,
            "{backend:?}: list"
        );
        assert!(
            fixture.converged::<CartConversion>(&ids, 6).await,
            "{backend:?}: conversions"
        );
        assert_eq!(
            details(&fixture.store, &ids).await,
            fixture.truth::<OrderDetail>(&ids).await
        );
        fixture.trigger.trigger();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_killed_projector_restarts_and_converges_to_what_a_full_rebuild_builds() {
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        let projector = fixture.projector("node-a", Duration::from_secs(3600));
        let first = spawn::<OrderDetail>(&projector, &fixture.shutdown);
        let list = spawn::<CustomerOrder>(&projector, &fixture.shutdown);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let orders: Vec<SampleOrder> = (0..60)
            .map(|i| SampleOrder::new(&format!("k{}", i % 5), 1))
            .collect();
        let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
        // Half the orders, published; the projector is killed as soon as it
        // has applied something.
        for order in &orders[..30] {
            fixture.append(order, &order.confirmed()).await;
        }
        let relay = fixture.relay_to(fixture.bus.clone());
        fixture.relay_all_with(&relay).await;
        for _ in 0..400 {
            if !fixture
                .store
                .versions::<OrderDetail>(&ids)
                .await
                .unwrap()
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first.abort();
        let _ = first.await;
        for order in &orders[30..] {
            fixture.append(order, &order.confirmed()).await;
        }
        fixture.relay_all_with(&relay).await;
        // Crash windows made certain: node-a holds delivered entries it never
        // acknowledged (some applied before the crash), and node-b, a replica
        // that died for good, holds others.
        let held = fixture
            .bus
            .read_new(DETAIL_0, "node-a", 40, Duration::from_millis(100))
            .await
            .unwrap();
        let applied: Vec<_> = held[..20]
            .iter()
            .map(|d| d.event().unwrap().into_stored(&OrderCodec::upcasters()).unwrap())
            .collect();
        apply_uncached::<OrderDetail>(&fixture.store, &applied, None)
            .await
            .unwrap();
        let orphaned = fixture
            .bus
            .read_new(DETAIL_0, "node-b", 40, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!((held.len(), orphaned.len()), (40, 40), "{backend:?}");
        let before = fixture.store.versions::<OrderDetail>(&ids).await.unwrap();
        assert!(
            before.values().filter(|v| **v == 6).count() < ids.len(),
            "{backend:?}: mid-stream"
        );

        // Restarted node-a drains its own pending list first, then claims what
        // node-b left idle (claim_idle 0 here; 30 s in production).
        let mut restarted = fixture.projector("node-a", Duration::from_secs(3600));
        restarted.settings.claim_idle = Duration::ZERO;
        let second = spawn::<OrderDetail>(&restarted, &fixture.shutdown);
        assert!(
            fixture.converged::<OrderDetail>(&ids, 6).await,
            "{backend:?}: converged after restart"
        );
        assert!(
            fixture.converged::<CustomerOrder>(&ids, 6).await,
            "{backend:?}: list converged"
        );
        for _ in 0..50 {
            if fixture
                .bus
                .read_pending(DETAIL_0, "node-b", 100)
                .await
                .unwrap()
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            fixture
                .bus
                .read_pending(DETAIL_0, "node-b", 100)
                .await
                .unwrap()
                .is_empty(),
            "{backend:?}: claimed"
        );
        let live = details(&fixture.store, &ids).await;
        let live_list = all_summaries(&fixture.store).await;

        assert!(fixture.settled(360).await, "{backend:?}: events never settled");
        let report = Rebuild::new(fixture.store.clone(), fixture.events.events.clone())
            .with_batch(100)
            .run(|_| {})
            .await
            .unwrap();
        assert_eq!(report.events, 360, "{backend:?}");
        assert_eq!(
            details(&fixture.store, &ids).await,
            live,
            "{backend:?}: same detail rows as a rebuild"
        );
        assert_eq!(
            all_summaries(&fixture.store).await,
            live_list,
            "{backend:?}: same list as a rebuild"
        );
        fixture.trigger.trigger();
        for task in [second, list] {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

#[tokio::test]
async fn duplicate_and_out_of_order_deliveries_change_nothing() {
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        let projector = fixture.projector("dup", Duration::from_secs(3600));
        let task = spawn::<OrderDetail>(&projector, &fixture.shutdown);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let order = SampleOrder::new("dora", 2);
        fixture.append(&order, &order.confirmed()).await;
        let stored = fixture.events.read_stream(order.order_id, 1).await.unwrap();
        let envelopes: Vec<EventEnvelope> = stored.iter().map(EventEnvelope::from).collect();
        // v4 first (a gap: filled from the event store), then everything twice.
        fixture.bus.publish(&envelopes[3..4]).await.unwrap();
        fixture.bus.publish(&envelopes).await.unwrap();
        fixture.bus.publish(&envelopes).await.unwrap();
        assert!(
            fixture.converged::<OrderDetail>(&[order.order_id], 6).await,
            "{backend:?}"
        );
        // Drain: nothing pending, the row equals the stream's fold.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let row = fixture.store.order_detail(order.order_id).await.unwrap().unwrap();
        assert_eq!(
            row,
            fixture.truth::<OrderDetail>(&[order.order_id]).await[0],
            "{backend:?}"
        );
        assert!(
            fixture
                .bus
                .read_pending(DETAIL_0, "dup", 10)
                .await
                .unwrap()
                .is_empty()
        );
        fixture.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn a_poison_entry_is_dead_lettered_without_blocking_the_others() {
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        let projector = fixture.projector("poison", Duration::from_secs(3600));
        let task = spawn::<OrderDetail>(&projector, &fixture.shutdown);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let good = SampleOrder::new("erin", 1);
        fixture.append(&good, &good.confirmed()).await;
        let mut stored = fixture.events.read_stream(good.order_id, 1).await.unwrap();
        // A first event that is not an order creation, on a stream of its own.
        let mut poison = EventEnvelope::from(&stored.remove(1));
        poison.stream_id = Uuid::now_v7();
        poison.version = 1;
        poison.event_id = Uuid::now_v7();
        fixture.bus.publish(std::slice::from_ref(&poison)).await.unwrap();
        let envelopes: Vec<EventEnvelope> = fixture
            .events
            .read_stream(good.order_id, 1)
            .await
            .unwrap()
            .iter()
            .map(EventEnvelope::from)
            .collect();
        fixture.bus.publish(&envelopes).await.unwrap();
        assert!(
            fixture.converged::<OrderDetail>(&[good.order_id], 6).await,
            "{backend:?}"
        );
        let mut letters = Vec::new();
        for _ in 0..100 {
            letters = fixture.bus.dead_letters(10).await.unwrap();
            if !letters.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(letters.len(), 1, "{backend:?}");
        assert_eq!(letters[0].group, "order_detail");
        assert!(letters[0].deliveries >= 5, "{backend:?}: {letters:?}");
        assert!(
            letters[0].error.contains("does not start with OrderCreated"),
            "{}",
            letters[0].error
        );
        assert!(
            fixture
                .store
                .order_detail(poison.stream_id)
                .await
                .unwrap()
                .is_none()
        );
        fixture.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn a_rebuild_while_events_keep_coming_swaps_in_complete_read_models() {
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        // The sweep on: it carries what the swap left behind.
        let (_projector, tasks) = fixture.start_read_side("live", Duration::from_millis(200));
        let mut orders: Vec<SampleOrder> = (0..40)
            .map(|i| SampleOrder::new(&format!("r{}", i % 4), 1))
            .collect();
        for order in &orders {
            fixture.append(order, &order.confirmed()).await;
        }
        // PostgreSQL readers see an event once every older transaction in the
        // cluster has ended (the settled horizon); wait for that, so the
        // replay has something to replay.
        assert!(fixture.settled(240).await, "{backend:?}: events never settled");
        let writer = {
            let events = fixture.events.clone();
            let more: Vec<SampleOrder> = (0..40)
                .map(|i| SampleOrder::new(&format!("w{}", i % 4), 1))
                .collect();
            orders.extend(more.iter().cloned());
            tokio::spawn(async move {
                for order in more {
                    let new = SampleOrder::encode(&order.confirmed());
                    events.append(order.order_id, 0, new, ORDER_STREAM).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let report = Rebuild::new(fixture.store.clone(), fixture.events.events.clone())
            .with_batch(50)
            .run(|_| {})
            .await
            .unwrap();
        assert!(report.events >= 240, "{backend:?}: {report:?}");
        writer.await.unwrap();
        let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
        assert!(fixture.converged::<OrderDetail>(&ids, 6).await, "{backend:?}");
        assert!(fixture.converged::<CustomerOrder>(&ids, 6).await, "{backend:?}");
        assert!(fixture.converged::<CartConversion>(&ids, 6).await, "{backend:?}");
        assert_eq!(
            details(&fixture.store, &ids).await,
            fixture.truth::<OrderDetail>(&ids).await
        );
        let status = fixture.store.checkpoints().await.unwrap();
        assert!(
            status
                .iter()
                .all(|s| !s.rebuilding && s.checkpoint.generation == 1),
            "{status:?}"
        );
        fixture.trigger.trigger();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

#[tokio::test]
async fn two_replicas_share_a_projection_without_undoing_each_other() {
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        let (a, b) = (
            fixture.projector("replica-a", Duration::from_millis(50)),
            fixture.projector("replica-b", Duration::from_millis(50)),
        );
        let tasks = [
            spawn::<OrderDetail>(&a, &fixture.shutdown),
            spawn::<OrderDetail>(&b, &fixture.shutdown),
            fixture.relay(),
        ];
        let orders: Vec<SampleOrder> = (0..40)
            .map(|i| SampleOrder::new(&format!("s{}", i % 4), 1))
            .collect();
        // Each order in two appends: its events reach both replicas.
        for order in &orders {
            fixture.append(order, &order.confirmed()[..3]).await;
        }
        for order in &orders {
            fixture.append(order, &order.confirmed()).await;
        }
        let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
        assert!(fixture.converged::<OrderDetail>(&ids, 6).await, "{backend:?}");
        assert_eq!(
            details(&fixture.store, &ids).await,
            fixture.truth::<OrderDetail>(&ids).await,
            "{backend:?}"
        );
        fixture.trigger.trigger();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

/// The catch-up the `projection-catch-up` bench times, short: a backlog the
/// bus never carried (no relay runs), found by the runners' sweep. Every
/// projection reaches the head, the read models equal a rebuild, and the
/// shared sweep reads the log once for the three projections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_the_bus_never_carried_is_swept_once_for_all_projections_to_what_a_rebuild_gives() {
    for backend in Backend::all() {
        let isolation = crate::support::app::Isolation::new(backend).await;
        let db = isolation.backends().await.db;
        let caught = commerce::bench::projection_catch_up::seed_and_catch_up(&db, 3_000)
            .await
            .unwrap();
        assert_eq!(caught.events, 3_000, "{backend:?}");
        assert_eq!(
            caught.elapsed.len(),
            3,
            "{backend:?}: every projection reached the head"
        );
        // Once for the three (each projection on its own read it three
        // times); a batch a projection must retry alone (its transaction
        // failed under load) is read again for it.
        assert!(
            (3_000..6_000).contains(&caught.log_events),
            "{backend:?}: the log was read {} times for 3,000 events",
            caught.log_events
        );
        let violations = crate::support::rebuild_check::compare_with_rebuild(&db).await;
        assert!(violations.is_empty(), "{backend:?}: {violations:#?}");
    }
}
