//! The relay of the settled log through a bus outage, a crash between the
//! publish and the cursor move, and a race of two replicas: nothing lost,
//! nothing reordered, the cursor never moved back.

use std::{sync::Arc, time::Duration};

use commerce::{
    bus::{self, EventBus, EventEnvelope},
    db::Db,
    projections::samples::SampleOrder,
    relay::{EventRelay, TURN_LEASE},
    startup::Stores,
    store::event_store::Upcasters,
    store::relay_cursor::{RelayCursor, RelayCursorError},
};
use uuid::Uuid;

use crate::support::{
    app::{Backend, Isolation},
    read_side::ReadSideFixture,
};

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
        let audit = audit_group(&fixture).await;
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
    async fn turn(&self, owner: &str, lease: Duration) -> Result<Option<i64>, RelayCursorError> {
        self.inner.turn(owner, lease).await
    }
    async fn advance(
        &self,
        owner: &str,
        from: i64,
        to: i64,
        lease: Duration,
    ) -> Result<bool, RelayCursorError> {
        if self.crash.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RelayCursorError::Unavailable(
                "killed before the cursor moved".into(),
            ));
        }
        self.inner.advance(owner, from, to, lease).await
    }
    async fn leave(&self, owner: &str) -> Result<(), RelayCursorError> {
        self.inner.leave(owner).await
    }
}

/// A consumer group of partition 0 that only the test reads, created before
/// anything is published: it sees every entry the relay publishes.
async fn audit_group(fixture: &ReadSideFixture) -> bus::PartitionGroup<'static> {
    let audit = bus::PartitionGroup::new("audit", bus::Partition(0));
    fixture.bus.create_group(audit).await.unwrap();
    audit
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
        let audit = audit_group(&fixture).await;
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
async fn relays_of_two_replicas_take_turns_so_each_event_is_published_once_and_the_cursor_never_moves_back() {
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        let audit = audit_group(&fixture).await;
        // Two replicas: two relays, one cursor row and its turn.
        let (a, b) = (
            fixture.relay_to(fixture.bus.clone()),
            fixture.relay_to(fixture.bus.clone()),
        );
        let orders: Vec<SampleOrder> = (0..12).map(|_| SampleOrder::new("race", 1)).collect();
        let mut published = Vec::new();
        // Whether `a` stopped (gave its turn up and relays no more).
        let mut stopped: Option<bool> = None;
        for chunk in [2usize, 4, 6] {
            for order in &orders {
                fixture.append(order, &order.confirmed()[..chunk]).await;
            }
            assert!(fixture.settled(12 * chunk).await, "{backend:?}");
            let (ra, rb) = match stopped {
                None => tokio::join!(drain(&a), drain(&b)),
                Some(true) => (0, drain(&b).await),
                Some(false) => (drain(&a).await, 0),
            };
            assert_eq!(ra + rb, 24, "{backend:?}: each event once ({ra} + {rb})");
            published.push((ra, rb));
            if chunk == 4 {
                // The holder stops: it gives the turn up, and the other takes
                // it at once (not after the lease).
                let a_held = ra > 0;
                if a_held { &a } else { &b }.leave().await;
                stopped = Some(a_held);
            }
        }
        let holders: Vec<bool> = published.iter().map(|(ra, _)| *ra > 0).collect();
        assert_eq!(
            holders[0], holders[1],
            "{backend:?}: the turn stays while held: {published:?}"
        );
        assert_ne!(
            holders[1], holders[2],
            "{backend:?}: and passes when given up: {published:?}"
        );
        let head = fixture.events.events.head_position().await.unwrap();
        let cursor = fixture.relay_cursor.clone();
        assert_eq!(cursor.position().await.unwrap(), head, "{backend:?}");
        // A relay without the turn, or with a stale position, moves nothing.
        assert!(
            !cursor
                .advance("nobody", head, head + 1, TURN_LEASE)
                .await
                .unwrap(),
            "{backend:?}"
        );
        assert_eq!(cursor.position().await.unwrap(), head, "{backend:?}");
        let deliveries = delivered(&fixture, audit).await;
        assert_eq!(deliveries.len(), 72, "{backend:?}: every event once");
        assert_first_deliveries_in_order(&deliveries, 12, 6, &format!("{backend:?}"));
    }
}

/// Rounds of `relay` until one publishes nothing; the events it published.
async fn drain(relay: &EventRelay) -> usize {
    let mut n = 0;
    while let Ok(k @ 1..) = relay.relay_once().await {
        n += k;
    }
    n
}

/// Migrates `db` with the migrations of its backend up to `below` (exclusive)
/// or all of them.
async fn migrate_up_to(db: &Db, below: Option<i64>) {
    let dir = match db {
        Db::Postgres(_) => "migrations/postgres",
        Db::Sqlite(_) => "migrations/sqlite",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut migrator = sqlx::migrate::Migrator::new(path).await.unwrap();
    if let Some(below) = below {
        let kept: Vec<_> = migrator.iter().filter(|m| m.version < below).cloned().collect();
        migrator.migrations = kept.into();
    }
    match db {
        Db::Postgres(pool) => migrator.run(pool).await.unwrap(),
        Db::Sqlite(pool) => migrator.run(pool).await.unwrap(),
    }
}

/// An event and its outbox row as the release before migration 0012 wrote
/// them (each its own transaction); returns the event's position.
async fn old_release_append(db: &Db, published: bool) -> i64 {
    let id = Uuid::now_v7();
    match db {
        Db::Postgres(pool) => {
            let position: i64 = sqlx::query_scalar(
                "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, \
                 payload) VALUES ($1, $1, 'order', 1, 'OrderCreated', 1, '{}') RETURNING global_position",
            )
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO outbox (event_id, stream_id, stream_type, stream_version, global_position, \
                 event_type, schema_version, payload, published_at) \
                 VALUES ($1, $1, 'order', 1, $2, 'OrderCreated', 1, '{}', CASE WHEN $3 THEN now() END)",
            )
            .bind(id)
            .bind(position)
            .bind(published)
            .execute(pool)
            .await
            .unwrap();
            position
        }
        Db::Sqlite(pool) => {
            let position: i64 = sqlx::query_scalar(
                "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, \
                 payload, recorded_at) VALUES (?1, ?1, 'order', 1, 'OrderCreated', 1, '{}', 0) \
                 RETURNING global_position",
            )
            .bind(id.to_string())
            .fetch_one(pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO outbox (event_id, stream_id, stream_type, stream_version, global_position, \
                 event_type, schema_version, payload, published_at) \
                 VALUES (?1, ?1, 'order', 1, ?2, 'OrderCreated', 1, '{}', CASE WHEN ?3 THEN 1 END)",
            )
            .bind(id.to_string())
            .bind(position)
            .bind(published)
            .execute(pool)
            .await
            .unwrap();
            position
        }
    }
}

#[tokio::test]
async fn the_migration_starts_the_cursor_where_the_outbox_left_off_and_the_old_release_still_appends() {
    for backend in Backend::all() {
        // Published, published, unpublished, published, unpublished: the
        // cursor stops before the third; all published: at the head.
        for (published, resume_at) in [
            (vec![true, true, false, true, false], Some(2)),
            (vec![true, true, true], None),
        ] {
            let isolation = Isolation::new(backend).await;
            let db = Db::connect(&isolation.config(&[]).database).await.unwrap();
            migrate_up_to(&db, Some(12)).await;
            let mut positions = Vec::new();
            for done in &published {
                positions.push(old_release_append(&db, *done).await);
            }
            migrate_up_to(&db, None).await;

            let stores = Stores::on(&db, Upcasters::none(), false);
            let cursor = stores.relay_cursor.position().await.unwrap();
            let expected = match resume_at {
                Some(first_unpublished) => positions[first_unpublished - 1],
                None => *positions.last().unwrap(),
            };
            assert_eq!(cursor, expected, "{backend:?} {published:?}");
            // The relay goes on from there: the unpublished events and those
            // after them (published ones again: consumers are idempotent).
            let wanted = &positions[resume_at.unwrap_or(positions.len())..];
            let mut read = Vec::new();
            for _ in 0..300 {
                read = stores.stored_events.read_all(cursor, 10).await.unwrap();
                if read.len() >= wanted.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let read: Vec<i64> = read.iter().map(|e| e.global_position).collect();
            assert_eq!(read, wanted, "{backend:?} {published:?}");
            // A replica of the old release, still running in a rolling
            // upgrade (or back after a rollback), still appends with its
            // outbox row; the new relay publishes that event too.
            let late = old_release_append(&db, false).await;
            let mut after = Vec::new();
            for _ in 0..300 {
                let from = *read.last().unwrap_or(&cursor);
                after = stores.stored_events.read_all(from, 10).await.unwrap();
                if !after.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(
                after.iter().map(|e| e.global_position).collect::<Vec<_>>(),
                vec![late],
                "{backend:?} {published:?}"
            );
        }
    }
}
