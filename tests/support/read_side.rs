//! The read side below the transports: a fixture of backends, bus, event store and
//! read models, and sample orders appended to an app's event store.

use std::{sync::Arc, time::Duration};

use commerce::{
    app::{
        appended::AppendedStreams,
        watch::{OrderWatches, WatchTicket},
    },
    bus::EventBus,
    config::{OrderQuerySource, WatchSettings},
    db::Db,
    projections::{
        ApplyError, Decoded, Folded, ReadModel,
        changes::OrderChanges,
        fold_cache::FoldCache,
        fold_stream,
        order_detail::OrderDetail,
        runner::{Projection, Projector},
        samples::SampleOrder,
    },
    relay::EventRelay,
    shutdown::{self, Shutdown, ShutdownTrigger},
    startup::Stores,
    store::{
        event_store::{EventStore, ORDER_STREAM, OrderCodec, StoredEvent, Upcasters},
        read_models::{Advance, ListQuery, ReadModelStore, ReadModels},
    },
};
use uuid::Uuid;

use crate::support::{
    app::{Backend, Isolation, TestApp},
    store::{EventLog, count},
};

/// Backends, bus, event store and read models of one test.
pub struct ReadSideFixture {
    pub bus: Arc<dyn EventBus>,
    pub events: EventLog,
    pub store: ReadModelStore,
    /// The relay's reading of the log (as stored) and its cursor.
    pub stored_events: Arc<dyn EventStore>,
    pub relay_cursor: Arc<dyn commerce::store::relay_cursor::RelayCursor>,
    pub trigger: ShutdownTrigger,
    pub shutdown: Shutdown,
    backends: commerce::db::Backends,
    overrides: Vec<(String, String)>,
    _isolation: Isolation,
}

impl ReadSideFixture {
    pub async fn new(backend: Backend) -> Self {
        Self::with(backend, &[]).await
    }

    /// A fixture configured with `overrides` (e.g. EVENT_BUS_PARTITIONS).
    pub async fn with(backend: Backend, overrides: &[(&str, &str)]) -> Self {
        let isolation = Isolation::new(backend).await;
        let backends = isolation.backends().await;
        let config = isolation.config(overrides);
        let (trigger, shutdown) = shutdown::channel();
        let stores = Stores::on(&backends.db, OrderCodec::upcasters(), true);
        Self {
            bus: commerce::startup::event_bus(&config.redis, &config.bus, &backends),
            backends,
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            events: EventLog {
                events: stores.events,
                units: stores.units,
            },
            store: stores.read_models,
            stored_events: stores.stored_events,
            relay_cursor: stores.relay_cursor,
            trigger,
            shutdown,
            _isolation: isolation,
        }
    }

    /// The configuration of the fixture's isolated resources.
    pub fn config(&self) -> commerce::config::Config {
        let overrides: Vec<(&str, &str)> = self
            .overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self._isolation.config(&overrides)
    }

    /// The bus a restarted service with `partitions` partitions would use:
    /// the same Redis keys, or a new in-process bus (it does not outlive
    /// its process).
    pub fn bus_with(&self, partitions: u32) -> Arc<dyn EventBus> {
        let mut config = self.config();
        config.bus.partitions = partitions;
        commerce::startup::event_bus(&config.redis, &config.bus, &self.backends)
    }

    /// A projector whose sweep waits `sweep_every` (long: only the bus works).
    pub fn projector(&self, consumer: &str, sweep_every: Duration) -> Projector {
        let mut projector = Projector::new(
            self.bus.clone(),
            self.store.clone(),
            self.events.events.clone(),
            Default::default(),
        );
        projector.consumer = consumer.to_string();
        projector.settings.sweep_every = sweep_every;
        projector.settings.batch = 25;
        projector
    }

    /// A relay of the fixture's log to `bus`, with the fixture's cursor.
    pub fn relay_to(&self, bus: Arc<dyn EventBus>) -> EventRelay {
        EventRelay::new(self.stored_events.clone(), self.relay_cursor.clone(), bus)
    }

    /// Relays with `relay` until every event appended so far is published,
    /// then gives its turn up (as a relay that stops does), so that the next
    /// relay of the test may publish; returns how many it published. Waits
    /// first for them all to settle: an open transaction of another test
    /// holds the cluster's horizon back, and a round before then would find
    /// only part of them.
    pub async fn relay_all_with(&self, relay: &EventRelay) -> usize {
        let total = count(&self.backends.db, "SELECT COUNT(*) FROM events").await;
        assert!(self.settled(total as usize).await, "{total} events never settled");
        let mut published = 0;
        loop {
            match relay.relay_once().await.unwrap() {
                0 => break,
                n => published += n,
            }
        }
        relay.leave().await;
        published
    }

    /// Starts the relay.
    pub fn relay(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.relay_to(self.bus.clone()).run(self.shutdown.clone()))
    }

    /// Starts the read side as `commerce serve` runs it: the three
    /// projections on a [`Self::projector`] and the relay feeding their bus.
    /// Returns the projector (its fold cache counts the rows it read) and the tasks.
    pub fn start_read_side(
        &self,
        consumer: &str,
        sweep_every: Duration,
    ) -> (Projector, Vec<tokio::task::JoinHandle<()>>) {
        let projector = self.projector(consumer, sweep_every);
        let mut tasks = spawn_all(&projector, &self.shutdown);
        tasks.push(self.relay());
        (projector, tasks)
    }

    /// Appends the confirmed life of `order`, in `chunks` appends.
    pub async fn append(&self, order: &SampleOrder, events: &[commerce::domain::order::OrderEvent]) {
        let current = self.events.stream_version(order.order_id).await.unwrap();
        let new = SampleOrder::encode(&events[current as usize..]);
        self.events
            .append(order.order_id, current, new, ORDER_STREAM)
            .await
            .unwrap();
    }

    /// The fold of each stream straight from the event store.
    pub async fn truth<R: ReadModel>(&self, ids: &[Uuid]) -> Vec<R> {
        let mut rows = Vec::new();
        for id in ids {
            let events = self.events.read_stream(*id, 1).await.unwrap();
            rows.push(fold_stream::<R>(&events).unwrap().expect("a stream"));
        }
        rows
    }

    /// Waits until at least `count` events are settled (readable by `read_all`).
    pub async fn settled(&self, count: usize) -> bool {
        for _ in 0..300 {
            if self.events.read_all(0, count).await.unwrap().len() >= count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Waits until every order's detail row is at `version`.
    pub async fn converged<R: Projection>(&self, ids: &[Uuid], version: u64) -> bool {
        for _ in 0..300 {
            let versions = self.store.versions::<R>(ids).await.unwrap();
            if ids.iter().all(|id| versions.get(id) == Some(&version)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// Every row of the detail table, for comparisons.
pub async fn details(store: &ReadModelStore, ids: &[Uuid]) -> Vec<OrderDetail> {
    let mut rows = Vec::new();
    for id in ids {
        rows.push(store.order_detail(*id).await.unwrap().expect("row"));
    }
    rows
}

pub async fn all_summaries(
    store: &ReadModelStore,
) -> Vec<commerce::projections::customer_orders::OrderSummary> {
    store
        .list_orders(&ListQuery {
            customer_id: None,
            status: None,
            after: None,
            limit: 10_000,
        })
        .await
        .unwrap()
}

/// Applies `events` to `R`'s live table as a fold with no rows kept in
/// memory does (a replica that just started, or another replica): every row
/// is read from the database first.
pub async fn apply_uncached<R: ReadModel>(
    store: &ReadModelStore,
    events: &[StoredEvent],
    advance: Option<Advance>,
) -> Result<Folded<R>, ApplyError> {
    FoldCache::new(0)
        .apply::<R>(store, &Decoded::all(events), advance)
        .await
}

pub fn spawn<P: Projection>(projector: &Projector, shutdown: &Shutdown) -> tokio::task::JoinHandle<()> {
    tokio::spawn(projector.clone().run::<P>(shutdown.clone()))
}

/// The three projections running on `projector` until `shutdown`.
pub fn spawn_all(projector: &Projector, shutdown: &Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        spawn::<OrderDetail>(projector, shutdown),
        spawn::<commerce::projections::customer_orders::CustomerOrder>(projector, shutdown),
        spawn::<commerce::projections::cart_conversion::CartConversion>(projector, shutdown),
    ]
}
/// Appends the whole confirmed life of a new order of `customer`.
pub async fn place(app: &TestApp, customer: &str) -> SampleOrder {
    let order = SampleOrder::new(customer, 2);
    EventLog::of(&app.app)
        .append(
            order.order_id,
            0,
            SampleOrder::encode(&order.confirmed()),
            ORDER_STREAM,
        )
        .await
        .unwrap();
    order
}

/// WatchOrder's feed alone over `db`'s read models and `events`: no
/// projection announces anything, `appended` is the only announcement of
/// commits, and the log is polled every `poll`. Keep the trigger alive.
pub fn watches_on(
    db: &Db,
    events: Arc<dyn EventStore>,
    appended: AppendedStreams,
    poll: Duration,
) -> (OrderWatches, ShutdownTrigger) {
    let (trigger, shutdown) = shutdown::channel();
    let settings = WatchSettings {
        poll,
        ..WatchSettings::default()
    };
    let watches = OrderWatches::new(
        settings,
        OrderChanges::new(),
        appended,
        Stores::on(db, Upcasters::none(), true).read_models,
        events,
        OrderQuerySource::ReadModel,
        shutdown,
    );
    (watches, trigger)
}

/// The order `ticket`'s streams hold once it is at `version` (None after 5 s;
/// an error message then says what they held).
pub async fn held_at(ticket: &mut WatchTicket, version: u64) -> Result<Arc<OrderDetail>, String> {
    let reached = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let held = ticket.receiver().borrow_and_update().clone();
            if let Some(detail) = held.filter(|d| d.summary.version == version) {
                return detail;
            }
            ticket.receiver().changed().await.unwrap();
        }
    })
    .await;
    reached.map_err(|_| {
        let held = ticket.receiver().borrow().clone();
        format!(
            "version {version} never reached the watchers; they hold {:?}",
            held.map(|d| (d.summary.version, d.summary.status))
        )
    })
}
