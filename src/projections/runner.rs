//! The projection runner: one task per projection, which holds this
//! replica's share of the bus partitions and runs a consumer in the
//! projection's consumer group on each of them, plus the sweep over the event
//! store (see the module documentation of [`crate::projections`] for why
//! both).
//!
//! # Partitions and leases
//! Every `lease / 3` the runner renews this replica's leases
//! ([`EventBus::balance`], the rule in [`crate::bus::leases`]) and starts a
//! consumer task for each partition it gained and stops the one of each
//! partition it lost. A consumer that starts on a partition first claims
//! every entry left pending there by earlier owners (XAUTOCLAIM with no idle
//! time): whoever held the partition before has let its lease go or expire.
//! Two owners for a moment (an old one still finishing its batch) only apply
//! an event twice, which the version check makes harmless. When the bus cannot
//! be reached for the leases, the runner keeps what it held until the lease
//! would have expired, then stops its consumers.
//!
//! The sweep reads the global log, so one replica does it for all: the owner
//! of partition 0, or every replica while the leases cannot be renewed (the
//! sweep is the safety net for exactly that case; the checkpoint's
//! compare-and-set keeps concurrent sweeps harmless).
//! Within a replica the sweep is shared by the projections' runners
//! ([`sweep`]): whichever runner finds a pass due reads each batch of the log
//! once, decodes it once, and applies it to every projection.
//!
//! # One step of a partition's consumer
//! 1. The consumer's own pending list first (XREADGROUP 0): entries a crash
//!    or a failure left unacknowledged, oldest first.
//! 2. Every few seconds, entries idle too long at other consumers (a replica
//!    that died) are claimed (XAUTOCLAIM).
//! 3. New entries, blocking briefly.
//!
//! A batch is applied in one transaction and acknowledged after the commit;
//! a crash in between redelivers it, and the version check skips what was
//! applied. When a batch holds a poison entry, its entries are applied one by
//! one; the poison one stays pending and is dead-lettered once delivered
//! `max_deliveries` times. Transient failures (database or Redis down) never
//! dead-letter: the runner backs off and the entries wait.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

pub use self::sweep::SweepPass;
use self::{
    partitions::{Consumers, HeldLeases},
    sweep::SweepGroup,
};
use super::{
    ApplyError, Decoded, Gap, cart_conversion::CartConversion, changes::OrderChange, changes::OrderChanges,
    customer_orders::CustomerOrder, fold_cache::FoldCache, order_detail::OrderDetail,
};
use crate::{
    bus::{Delivery, EventBus, Partition, PartitionGroup},
    shutdown::Shutdown,
    store::{
        event_store::{EventStore, EventStoreError, OrderCodec, StoredEvent, Upcasters},
        read_models::{ReadModelError, ReadModelStore},
    },
};

mod partitions;

/// Tuning of a runner.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Bus entries (or swept events) taken per read; one transaction applies them.
    pub batch: usize,
    /// Longest wait for new entries per read.
    pub block: Duration,
    /// Idle time after which another consumer's entry is claimed.
    pub claim_idle: Duration,
    /// How often to look for such entries.
    pub claim_every: Duration,
    /// Deliveries after which a failing entry is dead-lettered.
    pub max_deliveries: u64,
    /// How often to sweep the event store.
    pub sweep_every: Duration,
    /// Events per sweep read (a caught-up sweep's read).
    pub sweep_batch: usize,
    /// Events per sweep read at most: the read doubles while it comes back
    /// full (a backlog), up to this. The default keeps it at `sweep_batch`:
    /// with 5,000 the catch-up ran faster in the bench, but a server catching
    /// up grew by 30-50 MB more (`faults::event_feed`'s flat-memory bound).
    pub sweep_batch_max: usize,
    /// How long a partition lease lasts without renewal (renewed every third
    /// of it): how soon a dead replica's partitions move.
    pub lease: Duration,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            batch: 200,
            block: Duration::from_millis(300),
            claim_idle: Duration::from_secs(30),
            claim_every: Duration::from_secs(5),
            max_deliveries: 5,
            sweep_every: Duration::from_secs(1),
            sweep_batch: 1000,
            sweep_batch_max: 1_000,
            lease: Duration::from_secs(10),
        }
    }
}

/// A read model the runner can drive.
pub trait Projection: super::ReadModel {
    /// Told about rows this process just committed.
    fn announce(_rows: &[Self], _changes: &OrderChanges) {}
}

impl Projection for OrderDetail {
    fn announce(rows: &[Self], changes: &OrderChanges) {
        changes.publish(rows.iter().map(|row| OrderChange {
            order_id: row.summary.order_id,
            version: row.summary.version,
            status: row.summary.status,
        }));
    }
}

impl Projection for CustomerOrder {}
impl Projection for CartConversion {}

/// Why a step did not finish.
#[derive(Debug)]
enum Failure {
    /// Retrying later may succeed (database or Redis down).
    Transient(String),
    /// Retrying will not help (bad event, bug): counts toward dead-lettering.
    Poison(String),
}

impl From<ApplyError> for Failure {
    fn from(err: ApplyError) -> Self {
        match err {
            ApplyError::Store(ReadModelError::Unavailable(_) | ReadModelError::CheckpointMoved(_))
            | ApplyError::Gaps(_) => Self::Transient(err.to_string()),
            ApplyError::Poison(_) | ApplyError::Store(ReadModelError::Other(_)) => {
                Self::Poison(format!("{err:#}"))
            }
        }
    }
}

impl From<EventStoreError> for Failure {
    fn from(err: EventStoreError) -> Self {
        match err {
            EventStoreError::Other(_) => Self::Poison(format!("{err:#}")),
            other => Self::Transient(other.to_string()),
        }
    }
}

impl From<crate::bus::BusError> for Failure {
    fn from(err: crate::bus::BusError) -> Self {
        Self::Transient(err.to_string())
    }
}

/// What a step did.
enum Progress {
    /// Read nothing: the runner may wait for the next poll.
    Idle,
    /// Applied everything it read.
    Worked,
    /// Left a failing entry pending.
    Stuck,
}

/// Everything the runners share.
#[derive(Clone)]
pub struct Projector {
    /// Where the relay publishes the events the runners consume.
    pub bus: Arc<dyn EventBus>,
    /// Where the folded rows and the checkpoints are written.
    pub store: ReadModelStore,
    /// The event store (gaps, sweep, lag).
    pub events: Arc<dyn EventStore>,
    /// Where committed order changes are announced.
    pub changes: OrderChanges,
    /// This replica's consumer name, also its member name in the partition
    /// leases: replicas must not share one.
    pub consumer: String,
    /// Batch sizes, waits and sweep period of every runner it starts.
    pub settings: RunnerSettings,
    /// Upcasters for entries published by older releases.
    pub upcasters: Upcasters,
    /// The projections running on this projector and its clones, swept
    /// together ([`sweep`]).
    sweeps: Arc<SweepGroup>,
    /// The rows this projector's folds last committed, shared by its
    /// clones: the bus consumers and the sweep fold from them instead of
    /// reading the rows back.
    cache: Arc<FoldCache>,
}

impl Projector {
    /// A projector with default settings and codec.
    pub fn new(
        bus: Arc<dyn EventBus>,
        store: ReadModelStore,
        events: Arc<dyn EventStore>,
        changes: OrderChanges,
    ) -> Self {
        Self {
            bus,
            store,
            events,
            changes,
            consumer: crate::bus::consumer_name(),
            settings: RunnerSettings::default(),
            upcasters: OrderCodec::upcasters(),
            sweeps: Arc::default(),
            cache: Arc::default(),
        }
    }

    /// This projector with a fold cache of about `rows` rows per projection
    /// (0: off); set before its runners start.
    pub fn with_fold_cache(mut self, rows: usize) -> Self {
        self.cache = Arc::new(FoldCache::new(rows));
        self
    }

    /// The rows its folds keep (and how many they still read).
    pub fn fold_cache(&self) -> &FoldCache {
        &self.cache
    }

    /// Runs projection `P` on this replica's partitions until `shutdown`
    /// fires; then leaves, so that the others take its partitions at once.
    ///
    /// `P` joins this projector's shared sweep when the future is made, not
    /// when it first runs: runners started together are in the first pass
    /// together, so a backlog found at startup is read once for all.
    pub fn run<P: Projection>(self, shutdown: Shutdown) -> impl Future<Output = ()> + Send + 'static {
        let member = self.sweeps.join::<P>();
        async move {
            self.run_joined::<P>(shutdown).await;
            drop(member);
        }
    }

    async fn run_joined<P: Projection>(self, shutdown: Shutdown) {
        let renew_every = self.settings.lease / 3;
        let mut consumers = Consumers::default();
        let mut leases = HeldLeases::default();
        while !shutdown.is_triggered() {
            if leases.due(renew_every) {
                let held = self.bus.balance(&self.consumer, self.settings.lease).await;
                let held = leases.renewed(P::NAME, held, self.settings.lease);
                consumers.follow(held, |partition, stop| self.clone().consume::<P>(partition, stop));
            }
            let sweeper = leases.sweeper();
            // Whichever runner of this projector finds the pass due sweeps
            // for all of them (a pass under way covers this one too).
            if sweeper
                && self.sweeps.until_due(self.settings.sweep_every).is_zero()
                && let Err(error) = self.sweep_all().await
            {
                tracing::warn!(projection = P::NAME, error, "sweep failed; retrying");
            }
            let mut pause = leases.until_due(renew_every);
            if sweeper {
                pause = pause.min(self.sweeps.until_due(self.settings.sweep_every));
            }
            tokio::select! {
                _ = tokio::time::sleep(pause.max(Duration::from_millis(5))) => {}
                _ = shutdown.wait() => break,
            }
        }
        consumers.stop_all().await;
        if let Err(error) = self.bus.leave(&self.consumer).await {
            tracing::debug!(projection = P::NAME, %error, "leaving the partitions failed; they move when the leases expire");
        }
    }

    /// Consumes `partition` for projection `P` until `stop` fires.
    async fn consume<P: Projection>(self, partition: Partition, stop: Shutdown) {
        let group = PartitionGroup::new(P::NAME, partition);
        let mut backoff = Backoff::default();
        while let Err(error) = self.bus.create_group(group).await {
            backoff.failed(P::NAME, "creating the consumer group", &error.to_string());
            if !backoff.pause(&stop).await {
                return;
            }
        }
        // None: claim at the first step, everything pending (a takeover).
        let mut last_claim: Option<Instant> = None;
        let mut takeover_done = false;
        while !stop.is_triggered() {
            match self
                .step::<P>(group, &mut last_claim, &mut takeover_done, &stop)
                .await
            {
                Ok(Progress::Idle | Progress::Worked) => backoff.succeeded(P::NAME),
                Ok(Progress::Stuck) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    backoff.failed(P::NAME, "consuming", &error);
                    if !backoff.pause(&stop).await {
                        return;
                    }
                }
            }
        }
    }

    async fn step<P: Projection>(
        &self,
        group: PartitionGroup<'_>,
        last_claim: &mut Option<Instant>,
        takeover_done: &mut bool,
        stop: &Shutdown,
    ) -> Result<Progress, String> {
        let (consumer, batch) = (self.consumer.as_str(), self.settings.batch);
        let pending = self
            .bus
            .read_pending(group, consumer, batch)
            .await
            .map_err(|e| e.to_string())?;
        if !pending.is_empty() {
            return self.handle::<P>(pending).await;
        }
        if last_claim.is_none_or(|t| t.elapsed() >= self.settings.claim_every) {
            *last_claim = Some(Instant::now());
            // The first claim on a partition just taken takes everything.
            let min_idle = if *takeover_done {
                self.settings.claim_idle
            } else {
                Duration::ZERO
            };
            let claimed = self
                .bus
                .claim_idle(group, consumer, min_idle, batch)
                .await
                .map_err(|e| e.to_string())?;
            if claimed.len() == batch {
                // There may be more: claim again at the next step.
                *last_claim = None;
            } else {
                *takeover_done = true;
            }
            if !claimed.is_empty() {
                tracing::info!(
                    projection = P::NAME,
                    partition = %group.partition,
                    entries = claimed.len(),
                    "claimed idle entries"
                );
                return self.handle::<P>(claimed).await;
            }
        }
        let fresh = tokio::select! {
            read = self.bus.read_new(group, consumer, batch, self.settings.block) => read.map_err(|e| e.to_string())?,
            _ = stop.wait() => return Ok(Progress::Idle),
        };
        if fresh.is_empty() {
            return Ok(Progress::Idle);
        }
        self.handle::<P>(fresh).await
    }

    /// Applies deliveries; acknowledges what was applied.
    async fn handle<P: Projection>(&self, deliveries: Vec<Delivery>) -> Result<Progress, String> {
        let mut batch: Vec<(Delivery, StoredEvent)> = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let decoded = delivery
                .event()
                .and_then(|envelope| envelope.into_stored(&self.upcasters));
            match decoded {
                Ok(event) => batch.push((delivery, event)),
                // An entry that does not even decode will never apply.
                Err(why) => self.give_up::<P>(&delivery, &why).await?,
            }
        }
        let events: Vec<StoredEvent> = batch.iter().map(|(_, event)| event.clone()).collect();
        match self.apply::<P>(&events).await {
            Ok(()) => {
                self.ack::<P>(batch.iter().map(|(d, _)| d)).await?;
                Ok(Progress::Worked)
            }
            Err(Failure::Transient(why)) => Err(why),
            Err(Failure::Poison(_)) => self.one_by_one::<P>(batch).await,
        }
    }

    /// Applies entries singly, to isolate the failing one.
    async fn one_by_one<P: Projection>(
        &self,
        batch: Vec<(Delivery, StoredEvent)>,
    ) -> Result<Progress, String> {
        let mut progress = Progress::Worked;
        for (delivery, event) in batch {
            match self.apply::<P>(std::slice::from_ref(&event)).await {
                Ok(()) => self.ack::<P>(std::iter::once(&delivery)).await?,
                Err(Failure::Transient(why)) => return Err(why),
                Err(Failure::Poison(why)) if delivery.deliveries >= self.settings.max_deliveries => {
                    self.give_up::<P>(&delivery, &why).await?;
                }
                Err(Failure::Poison(why)) => {
                    tracing::warn!(projection = P::NAME, entry = %delivery.id, deliveries = delivery.deliveries, error = %why, "entry failed; will retry");
                    progress = Progress::Stuck;
                }
            }
        }
        Ok(progress)
    }

    /// Acknowledges `deliveries` (of one partition: a batch is read from one).
    async fn ack<P: Projection>(&self, deliveries: impl Iterator<Item = &Delivery>) -> Result<(), String> {
        let mut by_partition: BTreeMap<Partition, Vec<String>> = BTreeMap::new();
        for delivery in deliveries {
            by_partition
                .entry(delivery.partition)
                .or_default()
                .push(delivery.id.clone());
        }
        for (partition, ids) in by_partition {
            self.bus
                .ack(PartitionGroup::new(P::NAME, partition), &ids)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn give_up<P: Projection>(&self, delivery: &Delivery, why: &str) -> Result<(), String> {
        tracing::error!(projection = P::NAME, entry = %delivery.id, deliveries = delivery.deliveries, error = %why, "dead-lettering entry");
        self.bus
            .dead_letter(P::NAME, delivery, why)
            .await
            .map_err(|e| e.to_string())
    }

    /// Applies events to the live table, filling gaps from the event store.
    async fn apply<P: Projection>(&self, events: &[StoredEvent]) -> Result<(), Failure> {
        let folded = self
            .cache
            .apply::<P>(&self.store, &Decoded::all(events), None)
            .await?;
        P::announce(&folded.changed, &self.changes);
        self.fill_gaps::<P>(&folded.gaps).await
    }

    /// Reads what is missing behind each gap from the event store (the source
    /// of truth) and applies it in order.
    async fn fill_gaps<P: Projection>(&self, gaps: &[Gap]) -> Result<(), Failure> {
        for gap in gaps {
            let tail = self.events.read_stream(gap.stream_id, gap.have + 1).await?;
            let folded = self
                .cache
                .apply::<P>(&self.store, &Decoded::all(&tail), None)
                .await?;
            P::announce(&folded.changed, &self.changes);
            if !folded.gaps.is_empty() {
                return Err(Failure::Transient(format!(
                    "stream {} has no version {} in the event store yet",
                    gap.stream_id,
                    gap.have + 1
                )));
            }
        }
        Ok(())
    }
}

/// Exponential backoff that logs a failure once and the recovery once.
#[derive(Default)]
struct Backoff {
    delay: Option<Duration>,
}

impl Backoff {
    fn failed(&mut self, projection: &str, doing: &str, error: &str) {
        if self.delay.is_none() {
            tracing::warn!(projection, error, "{doing} failed; backing off");
        }
        self.delay = Some(self.delay.map_or(Duration::from_millis(100), |d| {
            (d * 2).min(Duration::from_secs(5))
        }));
    }

    fn succeeded(&mut self, projection: &str) {
        if self.delay.take().is_some() {
            tracing::info!(projection, "projection recovered");
        }
    }

    /// Sleeps the current delay; false when shutdown came first.
    async fn pause(&self, shutdown: &Shutdown) -> bool {
        let delay = self.delay.unwrap_or(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = shutdown.wait() => false,
        }
    }
}

// Written in this file, not in `runner/sweep.rs`: the sweep extends
// [`Projector`] and uses its settings and failures, and a child file using its
// parent is the upward edge the architecture test refuses.
mod sweep {
    //! The sweep, shared by the projections of one [`Projector`]: each batch of
    //! the settled log is read once and decoded once, then applied to every
    //! projection whose checkpoint is where the batch starts, concurrently, each
    //! in its own transaction that moves its own checkpoint (compare-and-set).
    //!
    //! # Why shared
    //! A backlog the bus never carried (events copied into the store, a Redis
    //! restart without persistence, a long outage) is caught up by the sweep
    //! alone. Swept per projection, every projection read and decoded the same
    //! events on its own, in batches of [`RunnerSettings::sweep_batch`] with a
    //! checkpoint read per batch, and the three competed for the same two cores:
    //! the slowest fell to about a third of the rebuild's rate. Shared, the work
    //! per event is the rebuild's ([`crate::projections::rebuild`]): one read,
    //! one decode, three folds.
    //!
    //! # What does not change
    //! Each projection keeps its own checkpoint, moved only with its own
    //! read-model change and only from where it was read (a concurrent sweep of
    //! another replica, or a rebuild's swap, makes it fail and write nothing); a
    //! batch that meets a gap is refilled from the stream and retried, as before;
    //! a projection whose batch fails drops out of this pass (the others go on)
    //! and is retried at the next. Projections at different checkpoints (one was
    //! stuck) are swept one group after the other: positions cannot be compared
    //! across checkpoints (see [`EventStore::read_all`]), so only equal ones share
    //! reads.
    //!
    //! # Behind and caught up
    //! While reads come back full, the batch doubles up to
    //! [`RunnerSettings::sweep_batch_max`] and the next batch is read (and
    //! decoded) on another task while this one is applied. A read that comes back
    //! short is the head: a caught-up sweep reads one short batch a period and
    //! decodes only what the folds need (the bus has applied most of it). A pass
    //! ends after `lease / 3` so that the runner renews its leases; the next pass
    //! starts at once.

    use std::{
        collections::BTreeMap,
        marker::PhantomData,
        sync::{Arc, Mutex},
        time::{Duration, Instant},
    };

    use super::{Failure, Projection, Projector, RunnerSettings};
    use crate::{
        domain::order::OrderEvent,
        projections::{ApplyError, Decoded, Gap, order_event},
        store::{
            event_store::{EventStore, ORDER_STREAM, StoredEvent},
            read_models::{Advance, Checkpoint, ReadModelError, ReadModels},
        },
    };

    /// Gap refills a projection gets per batch before the batch counts as failed.
    const GAP_RETRIES: usize = 3;

    /// A member of the group: its runners on this projector, and the projection.
    struct Member {
        runners: usize,
        model: Arc<dyn Swept>,
    }

    /// The projections running on one projector (and its clones), swept together.
    #[derive(Default)]
    pub(super) struct SweepGroup {
        members: Mutex<BTreeMap<&'static str, Member>>,
        /// When the last pass started (None: sweep now).
        started: Mutex<Option<Instant>>,
        /// Held by the pass in progress: the runner that finds it taken leaves
        /// the sweep to that pass, which covers its projection too.
        running: tokio::sync::Mutex<()>,
    }

    /// What a pass did.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct SweepPass {
        /// Events read from the log (each counted once, whatever the projections).
        pub read: usize,
        /// The pass ran out of time with more to read: sweep again now.
        pub more: bool,
    }

    /// Leaves the group when the runner ends.
    pub(super) struct Membership {
        group: Arc<SweepGroup>,
        name: &'static str,
    }

    impl Drop for Membership {
        fn drop(&mut self) {
            let mut members = self.group.members.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(member) = members.get_mut(self.name) {
                member.runners -= 1;
                if member.runners == 0 {
                    members.remove(self.name);
                }
            }
        }
    }

    impl SweepGroup {
        /// Adds projection `P` (a runner of it started).
        pub(super) fn join<P: Projection>(self: &Arc<Self>) -> Membership {
            let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            members
                .entry(P::NAME)
                .or_insert_with(|| Member {
                    runners: 0,
                    model: Arc::new(Model::<P>(PhantomData)),
                })
                .runners += 1;
            Membership {
                group: self.clone(),
                name: P::NAME,
            }
        }

        /// How long until the next pass is due.
        pub(super) fn until_due(&self, every: Duration) -> Duration {
            let started = *self.started.lock().unwrap_or_else(|e| e.into_inner());
            started.map_or(Duration::ZERO, |t| every.saturating_sub(t.elapsed()))
        }

        /// Makes the next pass due at once.
        fn due_now(&self) {
            *self.started.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }

        fn members(&self) -> Vec<Arc<dyn Swept>> {
            let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            members.values().map(|member| member.model.clone()).collect()
        }
    }

    /// A projection as the shared sweep drives it (`P` erased).
    #[async_trait::async_trait]
    trait Swept: Send + Sync {
        fn name(&self) -> &'static str;
        /// Applies `events` to the live table, moving the checkpoint by `advance`.
        async fn apply(
            &self,
            projector: &Projector,
            events: &[Decoded<'_>],
            advance: Advance,
        ) -> Result<(), ApplyError>;
        async fn fill_gaps(&self, projector: &Projector, gaps: &[Gap]) -> Result<(), Failure>;
    }

    struct Model<P>(PhantomData<fn() -> P>);

    #[async_trait::async_trait]
    impl<P: Projection> Swept for Model<P> {
        fn name(&self) -> &'static str {
            P::NAME
        }

        async fn apply(
            &self,
            projector: &Projector,
            events: &[Decoded<'_>],
            advance: Advance,
        ) -> Result<(), ApplyError> {
            let folded = projector
                .cache
                .apply::<P>(&projector.store, events, Some(advance))
                .await?;
            P::announce(&folded.changed, &projector.changes);
            Ok(())
        }

        async fn fill_gaps(&self, projector: &Projector, gaps: &[Gap]) -> Result<(), Failure> {
            projector.fill_gaps::<P>(gaps).await
        }
    }

    /// A projection in a pass, at its checkpoint.
    struct Cursor {
        model: Arc<dyn Swept>,
        checkpoint: Checkpoint,
    }

    /// A batch of the log; `decoded` when it was read ahead (decoded on the
    /// reading task), else decoded lazily by the folds.
    struct Batch {
        events: Vec<StoredEvent>,
        decoded: Option<Vec<Option<Result<OrderEvent, String>>>>,
    }

    impl Batch {
        /// The events as the folds share them (decoded ones handed over).
        fn shared(&mut self) -> Vec<Decoded<'_>> {
            match self.decoded.take() {
                Some(decoded) => self
                    .events
                    .iter()
                    .zip(decoded)
                    .map(|(stored, event)| match event {
                        Some(event) => Decoded::with_event(stored, event),
                        None => Decoded::new(stored),
                    })
                    .collect(),
                None => Decoded::all(&self.events),
            }
        }
    }

    async fn read(
        events: Arc<dyn EventStore>,
        after: i64,
        limit: usize,
        decode: bool,
    ) -> Result<Batch, Failure> {
        let events = events.read_all(after, limit).await?;
        let decoded = decode.then(|| {
            events
                .iter()
                .map(|stored| {
                    (stored.stream_type == ORDER_STREAM)
                        .then(|| order_event::decode(stored).map_err(|e| e.to_string()))
                })
                .collect()
        });
        Ok(Batch { events, decoded })
    }

    impl Projector {
        /// One pass of the shared sweep over every projection running on this
        /// projector, unless another runner's pass is under way (it covers them
        /// all). Errors of single projections are logged; the pass goes on
        /// without them.
        pub async fn sweep_all(&self) -> Result<SweepPass, String> {
            let Ok(_running) = self.sweeps.running.try_lock() else {
                return Ok(SweepPass::default());
            };
            let started = Instant::now();
            *self.sweeps.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
            let members = self.sweeps.members();
            if members.is_empty() {
                return Ok(SweepPass::default());
            }
            let checkpoints = self.store.checkpoints().await.map_err(|e| e.to_string())?;
            // Projections at the same checkpoint share their reads.
            let mut groups: BTreeMap<i64, Vec<Cursor>> = BTreeMap::new();
            for model in members {
                let checkpoint = checkpoints
                    .iter()
                    .find(|status| status.name == model.name())
                    .map(|status| status.checkpoint)
                    .unwrap_or_default();
                groups
                    .entry(checkpoint.position)
                    .or_default()
                    .push(Cursor { model, checkpoint });
            }
            let deadline = started + self.settings.lease / 3;
            let mut pass = SweepPass::default();
            for (position, cursors) in groups {
                let (read, more) = self.sweep_group(position, cursors, deadline).await?;
                pass.read += read;
                pass.more |= more;
            }
            if pass.more {
                self.sweeps.due_now();
            }
            Ok(pass)
        }

        /// Sweeps `cursors` (all at `position`) to the head or the deadline;
        /// returns the events read and whether there is more.
        async fn sweep_group(
            &self,
            mut position: i64,
            mut cursors: Vec<Cursor>,
            deadline: Instant,
        ) -> Result<(usize, bool), String> {
            let settings: &RunnerSettings = &self.settings;
            let mut limit = settings.sweep_batch.max(1);
            let mut read_total = 0;
            let mut ahead: Option<tokio::task::JoinHandle<Result<Batch, Failure>>> = None;
            loop {
                let mut batch = match ahead.take() {
                    Some(reading) => reading.await.map_err(|e| e.to_string())?,
                    None => read(self.events.clone(), position, limit, false).await,
                }
                .map_err(|e| format!("{e:?}"))?;
                let Some(last) = batch.events.last().map(|e| e.global_position) else {
                    return Ok((read_total, false));
                };
                let full = batch.events.len() == limit;
                let more = full && Instant::now() < deadline;
                if more {
                    // Behind: larger reads, and the next one beside this apply.
                    limit = (limit * 2).min(settings.sweep_batch_max.max(settings.sweep_batch));
                    ahead = Some(tokio::spawn(read(self.events.clone(), last, limit, true)));
                }
                read_total += batch.events.len();
                let shared = batch.shared();
                let applied = futures::future::join_all(
                    cursors
                        .iter()
                        .map(|cursor| self.apply_swept(cursor, &shared, last)),
                )
                .await;
                let mut kept = Vec::with_capacity(cursors.len());
                for (mut cursor, outcome) in cursors.into_iter().zip(applied) {
                    match outcome {
                        Ok(()) => {
                            cursor.checkpoint.position = last;
                            kept.push(cursor);
                        }
                        // Another replica's sweep (or a rebuild swap) moved it
                        // first: nothing was written; the next pass starts there.
                        Err(ApplyError::Store(ReadModelError::CheckpointMoved(_))) => {}
                        Err(error) => {
                            tracing::warn!(projection = cursor.model.name(), error = %format!("{error:#}"), "sweep failed; retrying");
                        }
                    }
                }
                cursors = kept;
                position = last;
                if cursors.is_empty() || !more {
                    if let Some(reading) = ahead {
                        reading.abort();
                    }
                    return Ok((read_total, full && !cursors.is_empty()));
                }
            }
        }

        /// Applies a batch ending at `last` to one projection, refilling gaps
        /// from the streams and retrying (the checkpoint must not pass an
        /// unapplied event).
        async fn apply_swept(
            &self,
            cursor: &Cursor,
            events: &[Decoded<'_>],
            last: i64,
        ) -> Result<(), ApplyError> {
            let advance = Advance {
                from: cursor.checkpoint,
                to: last,
            };
            let mut retries = 0;
            loop {
                match cursor.model.apply(self, events, advance).await {
                    Err(ApplyError::Gaps(gaps)) if retries < GAP_RETRIES => {
                        retries += 1;
                        if let Err(failure) = cursor.model.fill_gaps(self, &gaps).await {
                            tracing::debug!(
                                projection = cursor.model.name(),
                                ?failure,
                                "filling gaps failed"
                            );
                            return Err(ApplyError::Gaps(gaps));
                        }
                    }
                    outcome => return outcome,
                }
            }
        }
    }
}
