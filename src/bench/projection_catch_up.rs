//! `projection_catch_up`: the running projections catch up a backlog that the
//! bus never carried (issue 17: "catch-up after a backlog at least the rebuild
//! target, 50,000 events/s per projection").
//!
//! On a fresh database it seeds `--projection-events` events (confirmed orders
//! of six events, written by the event feed bench's eight writers through the
//! unit of work, OrderCreated sealed as CreateOrder seals it). No relay runs,
//! so the events reach no bus: like events copied into the events table, they
//! are found only by the runners' sweep over the settled log. Then the read
//! side starts as `commerce serve` starts it (a [`Projector`] with one runner
//! per projection, on an in-process bus, default settings) and the clock runs
//! until each projection's checkpoint is at the head.
//!
//! The line gives events/s per projection (events over the time its
//! checkpoint took to reach the head), this process's resident set before and
//! at its peak (sampled every 10 ms), and the reads of the settled log (count
//! and events) the sweep made. A backlog seeded before the runners start takes
//! the same path as one copied in under running runners: the sweep finds it
//! at its next pass, a second later.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::json;
use uuid::Uuid;

use super::{
    event_catch_up::{self, Database},
    runner::round,
    target::{OwnRss, mb},
};
use crate::{
    bus::{DEFAULT_MAX_LEN, in_process::InProcessBus},
    config::Config,
    db::Db,
    privacy::{Vault, cipher::DEVELOPMENT_MASTER_KEY, cipher::MasterKey},
    projections::{
        cart_conversion::CartConversion, customer_orders::CustomerOrder, order_detail::OrderDetail,
        runner::Projector, status::PROJECTIONS,
    },
    startup::Stores,
    store::{
        event_store::{EventStore, EventStoreError, OrderCodec, StoredEvent},
        read_models::ReadModels,
    },
};

/// Longest a catch-up may take before the run fails.
const PATIENCE: Duration = Duration::from_secs(1800);

/// What one catch-up measured.
#[derive(Debug, Clone)]
pub struct CatchUp {
    /// Events in the backlog.
    pub events: usize,
    /// Orders they belong to.
    pub orders: usize,
    /// The time each projection's checkpoint took to reach the head, in
    /// [`PROJECTIONS`] order.
    pub elapsed: Vec<(&'static str, Duration)>,
    /// Reads of the settled log the sweep made.
    pub log_reads: u64,
    /// Events the reads returned (each event once per read that returned it).
    pub log_events: u64,
    /// VmRSS of this process before the runners start, in KiB.
    pub rss_before_kib: u64,
    /// Its peak during the catch-up, in KiB.
    pub rss_peak_kib: u64,
    /// Seconds the seeding took.
    pub seed_seconds: f64,
}

/// Seeds `events` events (rounded up to whole orders) on `db` (migrated,
/// empty), then starts the three projections and waits until each checkpoint
/// is at the head.
pub async fn seed_and_catch_up(db: &Db, events: usize) -> anyhow::Result<CatchUp> {
    let stores = Stores::on(db, OrderCodec::upcasters(), true);
    let seeding = Instant::now();
    let orders = events.div_ceil(6);
    let vault = Vault::new(
        stores.customer_keys.clone(),
        MasterKey::from_hex(DEVELOPMENT_MASTER_KEY)?,
    );
    event_catch_up::seed(&stores, vault, orders).await?;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    let head = settled_head(&*stores.events, orders * 6).await?;
    // Also the mark a callgrind run zeroes its counters at.
    eprintln!(
        "projection_catch_up: seeded {} events in {seed_seconds:.1} s; catching up",
        orders * 6
    );

    let log = Arc::new(CountingLog::new(stores.events.clone()));
    let projector = Projector::new(
        Arc::new(InProcessBus::new(DEFAULT_MAX_LEN, 1)),
        stores.read_models.clone(),
        log.clone(),
        Default::default(),
    );
    let rss = OwnRss::sample();
    let (trigger, shutdown) = crate::shutdown::channel();
    let started = Instant::now();
    // As `startup::start_read_side` starts them: all three made (joined to
    // the shared sweep) before any is spawned.
    let runners = [
        Box::pin(projector.clone().run::<OrderDetail>(shutdown.clone()))
            as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        Box::pin(projector.clone().run::<CustomerOrder>(shutdown.clone())),
        Box::pin(projector.clone().run::<CartConversion>(shutdown.clone())),
    ]
    .map(tokio::spawn);
    let elapsed = wait_for_head(&stores.read_models, head, started).await;
    trigger.trigger();
    for runner in runners {
        let _ = runner.await;
    }
    let (rss_before_kib, rss_peak_kib) = rss.finish();
    Ok(CatchUp {
        events: orders * 6,
        orders,
        elapsed: elapsed?,
        log_reads: log.reads.load(Ordering::Relaxed),
        log_events: log.events.load(Ordering::Relaxed),
        rss_before_kib,
        rss_peak_kib,
        seed_seconds,
    })
}

/// The head once all `total` events are settled (on PostgreSQL an event
/// settles when every transaction that could commit before it has ended,
/// other databases' included): counted in pages, so that memory stays flat.
async fn settled_head(events: &dyn EventStore, total: usize) -> anyhow::Result<i64> {
    let started = Instant::now();
    loop {
        let (mut cursor, mut settled) = (0, 0);
        loop {
            let page = events.read_all(cursor, 10_000).await?;
            let Some(last) = page.last() else { break };
            (cursor, settled) = (last.global_position, settled + page.len());
        }
        if settled >= total {
            return Ok(cursor);
        }
        if started.elapsed() > PATIENCE {
            bail!("only {settled} of {total} seeded events settled");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the checkpoints every 10 ms; the time each reached `head`.
async fn wait_for_head(
    store: &crate::store::read_models::ReadModelStore,
    head: i64,
    started: Instant,
) -> anyhow::Result<Vec<(&'static str, Duration)>> {
    let mut reached: Vec<Option<Duration>> = vec![None; PROJECTIONS.len()];
    while reached.iter().any(Option::is_none) {
        if started.elapsed() > PATIENCE {
            bail!("the projections did not reach the head within {PATIENCE:?}");
        }
        let checkpoints = store.checkpoints().await?;
        for (name, at) in PROJECTIONS.iter().zip(reached.iter_mut()) {
            let position = checkpoints
                .iter()
                .find(|c| c.name == *name)
                .map(|c| c.checkpoint.position);
            if at.is_none() && position == Some(head) {
                *at = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(PROJECTIONS
        .into_iter()
        .zip(reached.into_iter().map(Option::unwrap_or_default))
        .collect())
}

/// Seeds a fresh database and measures the catch-up; the scenario's JSON line.
pub async fn run(database: Database, events: usize) -> anyhow::Result<serde_json::Value> {
    let config = Config::from_vars(&database.vars()).context("bench configuration")?;
    let db = Db::connect(&config.database).await?;
    db.migrate().await.context("migrating the bench database")?;
    let measured = seed_and_catch_up(&db, events).await?;
    let tls = uses_tls(&db).await?;
    let per_projection: serde_json::Map<String, serde_json::Value> = measured
        .elapsed
        .iter()
        .map(|(name, elapsed)| {
            let seconds = elapsed.as_secs_f64().max(1e-9);
            let line = json!({
                "elapsed_s": (seconds * 1000.0).round() / 1000.0,
                "events_per_sec": round(measured.events as f64 / seconds),
            });
            (name.to_string(), line)
        })
        .collect();
    let slowest = measured
        .elapsed
        .iter()
        .map(|(_, elapsed)| elapsed.as_secs_f64())
        .fold(1e-9, f64::max);
    let per_thousand = |n: u64| round(n as f64 * 1000.0 / measured.events.max(1) as f64);
    Ok(json!({
        "scenario": "projection_catch_up",
        "backend": db.kind(),
        "tls": tls,
        "events": measured.events,
        "orders": measured.orders,
        "seed_seconds": round(measured.seed_seconds),
        "projections": per_projection,
        "slowest_events_per_sec": round(measured.events as f64 / slowest),
        "throughput_ops_per_sec": round(measured.events as f64 / slowest),
        "log_reads": measured.log_reads,
        "log_reads_per_1000_events": per_thousand(measured.log_reads),
        "log_events_read_per_event": round(measured.log_events as f64 / measured.events.max(1) as f64),
        "rss_before_mb": mb(measured.rss_before_kib),
        "rss_peak_mb": mb(measured.rss_peak_kib),
        "errors": 0,
    }))
}

/// Whether the bench's connections to PostgreSQL are encrypted (the URL's
/// `sslmode`; sqlx's default `prefer` takes TLS whenever the server offers
/// it, loopback included): the line says what the figures include. None on
/// SQLite.
async fn uses_tls(db: &Db) -> anyhow::Result<Option<bool>> {
    let Db::Postgres(pool) = db else {
        return Ok(None);
    };
    let ssl: Option<bool> = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_optional(pool)
        .await?;
    Ok(Some(ssl.unwrap_or(false)))
}

/// An event store that counts the reads made through it: the sweep's reads of
/// the settled log here, and (in the tests) whether a path read a stream at all.
#[derive(Debug)]
pub struct CountingLog {
    inner: Arc<dyn EventStore>,
    reads: AtomicU64,
    events: AtomicU64,
    stream_reads: AtomicU64,
}

impl CountingLog {
    /// Counts the reads made through it on the way to `inner`.
    pub fn new(inner: Arc<dyn EventStore>) -> Self {
        Self {
            inner,
            reads: AtomicU64::new(0),
            events: AtomicU64::new(0),
            stream_reads: AtomicU64::new(0),
        }
    }

    /// `read_stream` calls so far.
    pub fn stream_reads(&self) -> u64 {
        self.stream_reads.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl EventStore for CountingLog {
    async fn read_stream(
        &self,
        stream_id: Uuid,
        from_version: u64,
    ) -> Result<Vec<StoredEvent>, EventStoreError> {
        self.stream_reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_stream(stream_id, from_version).await
    }

    async fn read_all(&self, after_position: i64, limit: usize) -> Result<Vec<StoredEvent>, EventStoreError> {
        let events = self.inner.read_all(after_position, limit).await?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(events)
    }

    async fn head_position(&self) -> Result<i64, EventStoreError> {
        self.inner.head_position().await
    }

    async fn stream_version(&self, stream_id: Uuid) -> Result<u64, EventStoreError> {
        self.inner.stream_version(stream_id).await
    }

    async fn event_at(&self, position: i64) -> Result<Option<StoredEvent>, EventStoreError> {
        self.inner.event_at(position).await
    }
}
