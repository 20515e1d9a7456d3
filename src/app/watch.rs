//! WatchOrder's shared change feed and its bounds.
//!
//! # One source per order, not one poll per stream
//! Every stream of an order listens to one [`tokio::sync::watch`] channel of
//! that order. One feed task per process fills those channels:
//! - at once from this process's commits ([`AppendedStreams`]): the committed
//!   events are folded onto the order the streams hold when they follow on
//!   from it (a saga's steps: no read at all), else the order is read from its
//!   stream while the read model still lags; either way a watcher does not
//!   wait for the relay, the bus and the projection;
//! - at once from the projection's change broadcast ([`OrderChanges`]), for
//!   changes this replica's projection commits;
//! - every [`WatchSettings::poll`] from the tail of the event store's global
//!   log (`read_all` after a cursor), for changes another replica projected.
//!   That read is one query per process per interval, whatever the number of
//!   streams, and only runs while something is watched.
//!
//! A change of a watched order is read once (the detail row, or the fold of
//! the stream when the read model lags or ENABLE_CQRS=false) and handed to
//! all of its streams.
//!
//! # Bounds
//! At most [`WatchSettings::per_principal`] streams per principal and
//! [`WatchSettings::total`] per process; beyond, RESOURCE_EXHAUSTED. A stream
//! lives at most [`WatchSettings::lifetime`], then ends cleanly (status OK)
//! without a terminal status: the client watches again, and the first message
//! of the new stream is the order as it is then, so nothing is lost.
//! The feed's read failures are logged once, then at most once per
//! [`FAILURE_LOG_EVERY`] with the count of those not logged.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{broadcast::error::RecvError, watch};
use uuid::Uuid;

use super::appended::{Appended, AppendedStreams};
use crate::{
    config::{OrderQuerySource, WatchSettings},
    domain::order::OrderStatus,
    error::AppError,
    projections::{changes::OrderChanges, fold, fold_stream, order_detail::OrderDetail},
    shutdown::Shutdown,
    store::{
        event_store::{EventStore, StoredEvent},
        read_models::{ReadModelStore, ReadModels},
    },
};

/// How often a repeated failure of the feed is logged at most.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(30);
/// Events read from the global log per query of the feed.
const LOG_BATCH: usize = 500;

/// The latest state of a watched order, as its streams see it.
pub type Snapshot = Option<Arc<OrderDetail>>;

/// The streams open in this process and the feed behind them; cheap to clone.
#[derive(Clone)]
pub struct OrderWatches {
    inner: Arc<Inner>,
}

struct Inner {
    settings: WatchSettings,
    state: Mutex<State>,
    feed_started: AtomicBool,
    changes: OrderChanges,
    appended: AppendedStreams,
    store: ReadModelStore,
    events: Arc<dyn EventStore>,
    source: OrderQuerySource,
    shutdown: Shutdown,
}

#[derive(Default)]
struct State {
    per_principal: HashMap<String, usize>,
    total: usize,
    orders: HashMap<Uuid, watch::Sender<Snapshot>>,
    /// Watched since the feed's last poll while the feed held no cursor: read
    /// once then, in case another replica changed it between the stream's
    /// first read and the cursor the feed then took.
    fresh: HashSet<Uuid>,
    /// The feed holds a cursor into the log. A stream opened meanwhile needs
    /// no read at the next poll: what commits after its first look is not
    /// settled at that cursor yet, so the feed's reads after it bring it.
    cursor_held: bool,
}

/// One open stream's place: releases its share of the caps when dropped.
pub struct WatchTicket {
    inner: Arc<Inner>,
    principal: String,
    order_id: Uuid,
    receiver: Option<watch::Receiver<Snapshot>>,
}

impl WatchTicket {
    /// Where the order's changes arrive, for as long as the ticket lives.
    pub fn receiver(&mut self) -> &mut watch::Receiver<Snapshot> {
        self.receiver
            .as_mut()
            .unwrap_or_else(|| unreachable!("the receiver lives as long as the ticket"))
    }

    /// When this stream must end.
    pub fn lifetime(&self) -> Duration {
        self.inner.settings.lifetime
    }

    /// The order as the stream starts from (not yet checked against the
    /// caller: the caller does that), handed to the order's other streams
    /// too, so that this process's next commits of the order fold onto it
    /// without a read; with its OrderCreated as stored when the order was
    /// folded from its stream (its sealed personal data, which the caller
    /// opens, then needs no read of its own). None when there is no such order.
    pub async fn first_look(&mut self) -> Result<Option<(OrderDetail, Option<StoredEvent>)>, AppError> {
        let (detail, created) = self.inner.load(self.order_id, 0).await?;
        let Some(detail) = detail else {
            return Ok(None);
        };
        {
            let state = self.inner.lock();
            if let Some(sender) = state.orders.get(&self.order_id) {
                hand_over(sender, detail.clone());
            }
        }
        Ok(Some((detail, created)))
    }
}

impl Drop for WatchTicket {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut state = self.inner.lock();
        state.total = state.total.saturating_sub(1);
        if let Some(count) = state.per_principal.get_mut(&self.principal) {
            *count -= 1;
            if *count == 0 {
                state.per_principal.remove(&self.principal);
            }
        }
        if state
            .orders
            .get(&self.order_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            state.orders.remove(&self.order_id);
            state.fresh.remove(&self.order_id);
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts that are still valid.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The detail row when it has `at_least`, else the fold of the stream.
    /// With no version to wait for (an order just watched, or a broadcast
    /// missed), the stream's own version is the floor: the read model may lag
    /// it (the projections stalled by a Redis failover), and a lagging row
    /// taken as the latest would stay the streams' last word whenever the rest
    /// of the order was committed before the feed's cursor. The row is read
    /// first: with none (an order just placed, the usual first look) the
    /// stream is read at once, and its version is not asked for; a floor read
    /// after the row can only be higher, so the check stays as strict. With
    /// the order, the stream's first event when the stream was read.
    async fn load(
        &self,
        order_id: Uuid,
        at_least: u64,
    ) -> Result<(Option<OrderDetail>, Option<StoredEvent>), AppError> {
        if self.source == OrderQuerySource::ReadModel
            && let Some(row) = self.store.order_detail(order_id).await?
        {
            let floor = match at_least {
                0 => self.events.stream_version(order_id).await?,
                known => known,
            };
            if row.summary.version >= floor.max(1) {
                return Ok((Some(row), None));
            }
        }
        let events = self.events.read_stream(order_id, 1).await?;
        let detail = fold_stream::<OrderDetail>(&events).map_err(|e| AppError::Internal(e.into()))?;
        Ok((detail, events.into_iter().next()))
    }
}

impl OrderWatches {
    /// The watches over these stores, fed by `changes` (the projection's) and
    /// `appended` (this process's commits); `source` says where an order is
    /// read (ENABLE_CQRS).
    pub fn new(
        settings: WatchSettings,
        changes: OrderChanges,
        appended: AppendedStreams,
        store: ReadModelStore,
        events: Arc<dyn EventStore>,
        source: OrderQuerySource,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                state: Mutex::new(State::default()),
                feed_started: AtomicBool::new(false),
                changes,
                appended,
                store,
                events,
                source,
                shutdown,
            }),
        }
    }

    /// Takes a place for a stream of `principal` on `order_id`, or
    /// RESOURCE_EXHAUSTED when a cap is reached.
    pub fn open(&self, principal: &str, order_id: Uuid) -> Result<WatchTicket, AppError> {
        let settings = self.inner.settings;
        let receiver = {
            let mut state = self.inner.lock();
            let mine = state.per_principal.get(principal).copied().unwrap_or(0);
            if mine >= settings.per_principal {
                return Err(exhausted(format!(
                    "at most {} open WatchOrder streams per caller; close one first",
                    settings.per_principal
                )));
            }
            if state.total >= settings.total {
                return Err(exhausted("too many open WatchOrder streams; retry later".into()));
            }
            state.total += 1;
            *state.per_principal.entry(principal.to_string()).or_default() += 1;
            if !state.orders.contains_key(&order_id) && !state.cursor_held {
                state.fresh.insert(order_id);
            }
            state
                .orders
                .entry(order_id)
                .or_insert_with(|| watch::channel(None).0)
                .subscribe()
        };
        if !self.inner.feed_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(Feed::new(self.inner.clone()).run());
        }
        Ok(WatchTicket {
            inner: self.inner.clone(),
            principal: principal.to_string(),
            order_id,
            receiver: Some(receiver),
        })
    }

    /// Open streams of this process.
    pub fn open_streams(&self) -> usize {
        self.inner.lock().total
    }

    /// Orders with at least one open stream (each has one shared source).
    pub fn watched_orders(&self) -> usize {
        self.inner.lock().orders.len()
    }
}

/// What a WatchOrder stream reports a change of: the status, and whether a
/// cancellation was requested (which leaves the status where fulfillment stood).
/// Other changes (PaymentCaptured) move the version but send nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    /// The status the watcher is sent (a change of it is what sends).
    pub status: OrderStatus,
    /// A cancellation was requested.
    pub cancellation_requested: bool,
}

impl Watched {
    /// What `detail` shows a watcher.
    pub fn of(detail: &OrderDetail) -> Self {
        Self {
            status: detail.summary.status,
            cancellation_requested: detail.summary.cancellation_requested.is_some(),
        }
    }
}

fn exhausted(message: String) -> AppError {
    AppError::ResourceExhausted {
        reason: crate::error::ErrorReason::TooManyStreams,
        message,
        retry_after: Some(Duration::from_secs(1)),
    }
}

/// The one task that reads changes for every stream of the process.
struct Feed {
    inner: Arc<Inner>,
    /// Last global position read; None while nothing is watched.
    cursor: Option<i64>,
    failures: FailureLog,
}

impl Feed {
    fn new(inner: Arc<Inner>) -> Self {
        Self {
            inner,
            cursor: None,
            failures: FailureLog::new(FAILURE_LOG_EVERY),
        }
    }

    async fn run(mut self) {
        let mut changes = self.inner.changes.subscribe();
        let mut appended = self.inner.appended.subscribe();
        let mut ticker = tokio::time::interval(self.inner.settings.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) => {
                        if self.watched(change.order_id) {
                            self.refresh(change.order_id, change.version).await;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let all: Vec<Uuid> = self.inner.lock().orders.keys().copied().collect();
                        for id in all {
                            self.refresh(id, 0).await;
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
                append = appended.recv() => match append {
                    Ok(append) => {
                        if self.watched(append.stream_id) && !self.fold_on(&append) {
                            self.refresh(append.stream_id, append.version).await;
                        }
                    }
                    // The projection's changes and the poll cover what was skipped.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = ticker.tick() => self.poll().await,
                _ = shutdown.wait() => return,
            }
        }
    }

    fn watched(&self, order_id: Uuid) -> bool {
        self.inner.lock().orders.contains_key(&order_id)
    }

    /// Reads the global log after the cursor; refreshes the watched orders in it.
    async fn poll(&mut self) {
        let fresh: Vec<Uuid> = {
            let mut state = self.inner.lock();
            if state.orders.is_empty() {
                self.cursor = None;
                state.cursor_held = false;
                return;
            }
            state.fresh.drain().collect()
        };
        let result = self.changed_since_cursor().await;
        match result {
            Ok(changed) => {
                self.failures.recovered("WatchOrder feed");
                let mut todo: HashMap<Uuid, u64> = fresh.into_iter().map(|id| (id, 0)).collect();
                for (id, version) in changed {
                    let entry = todo.entry(id).or_default();
                    *entry = (*entry).max(version);
                }
                for (id, version) in todo {
                    self.refresh(id, version).await;
                }
            }
            Err(error) => {
                self.inner.lock().fresh.extend(fresh);
                self.failures
                    .failed("WatchOrder feed: reading the event log", &error);
            }
        }
    }

    /// Watched orders that changed after the cursor, with their newest version.
    async fn changed_since_cursor(&mut self) -> Result<Vec<(Uuid, u64)>, String> {
        let events = &self.inner.events;
        let mut cursor = match self.cursor {
            Some(cursor) => cursor,
            None => {
                let head = events.head_position().await.map_err(|e| e.to_string())?;
                self.cursor = Some(head);
                self.inner.lock().cursor_held = true;
                return Ok(Vec::new());
            }
        };
        let mut changed = HashMap::new();
        loop {
            let batch = events
                .read_all(cursor, LOG_BATCH)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = batch.last() else { break };
            cursor = last.global_position;
            self.cursor = Some(cursor);
            {
                let state = self.inner.lock();
                for event in &batch {
                    if state.orders.contains_key(&event.stream_id) {
                        let version: &mut u64 = changed.entry(event.stream_id).or_default();
                        *version = (*version).max(event.version);
                    }
                }
            }
            if batch.len() < LOG_BATCH {
                break;
            }
        }
        Ok(changed.into_iter().collect())
    }

    /// Folds a commit of this process onto the order its streams hold, when
    /// they hold it at the version just before the commit: the common case of
    /// a watched order's saga steps, which then cost no read. False when the
    /// events do not follow on (nothing held yet, or a change of another
    /// replica in between): [`Feed::refresh`] reads the order instead.
    fn fold_on(&self, append: &Appended) -> bool {
        let state = self.inner.lock();
        let Some(sender) = state.orders.get(&append.stream_id) else {
            return true;
        };
        let Some(held) = sender.borrow().clone() else {
            return false;
        };
        let have = held.summary.version;
        if append.version <= have {
            return true;
        }
        if append.events.first().map(|e| e.version) != Some(have + 1) {
            return false;
        }
        let current = HashMap::from([(append.stream_id, OrderDetail::clone(&held))]);
        let Ok(folded) = fold::<OrderDetail>(current, &append.events) else {
            return false;
        };
        let Some(detail) = folded
            .changed
            .into_iter()
            .next()
            .filter(|_| folded.gaps.is_empty())
        else {
            return false;
        };
        hand_over(sender, detail);
        true
    }

    /// Reads the order once and hands it to its streams when it moved on.
    async fn refresh(&mut self, order_id: Uuid, at_least: u64) {
        let known = {
            let state = self.inner.lock();
            let Some(sender) = state.orders.get(&order_id) else {
                return;
            };
            sender.borrow().as_ref().map_or(0, |d| d.summary.version)
        };
        if at_least != 0 && at_least <= known {
            return;
        }
        let detail = match self.inner.load(order_id, at_least).await {
            Ok((Some(detail), _)) => detail,
            Ok((None, _)) => return,
            Err(error) => {
                self.failures
                    .failed("WatchOrder feed: reading an order", &error.to_string());
                return;
            }
        };
        let state = self.inner.lock();
        if let Some(sender) = state.orders.get(&order_id) {
            hand_over(sender, detail);
        }
    }
}

/// Hands `detail` to an order's streams unless they hold it already (or a newer one).
fn hand_over(sender: &watch::Sender<Snapshot>, detail: OrderDetail) {
    sender.send_if_modified(|current| {
        let newer = current
            .as_ref()
            .is_none_or(|c| c.summary.version < detail.summary.version);
        if newer {
            *current = Some(Arc::new(detail));
        }
        newer
    });
}

/// Logs a repeated failure once, then at most once per period with the number
/// left out, and the recovery once.
#[derive(Debug)]
pub struct FailureLog {
    every: Duration,
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl FailureLog {
    /// A log that repeats a failure at most once per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last_logged: None,
            suppressed: 0,
        }
    }

    /// Records a failure; true when it was logged.
    pub fn failed(&mut self, what: &str, error: &str) -> bool {
        let due = self.last_logged.is_none_or(|t| t.elapsed() >= self.every);
        if !due {
            self.suppressed += 1;
            return false;
        }
        tracing::warn!(error, suppressed = self.suppressed, "{what} failed; retrying");
        self.last_logged = Some(Instant::now());
        self.suppressed = 0;
        true
    }

    /// Records a success: logs the recovery once after failures.
    pub fn recovered(&mut self, what: &str) {
        if self.last_logged.take().is_some() {
            tracing::info!(suppressed = self.suppressed, "{what} recovered");
            self.suppressed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_failure_is_logged_once_per_period() {
        let mut log = FailureLog::new(Duration::from_secs(3600));
        assert!(log.failed("feed", "down"));
        let logged = (0..10_000).filter(|_| log.failed("feed", "down")).count();
        assert_eq!(logged, 0);
        assert_eq!(log.suppressed, 10_000);
        log.recovered("feed");
        assert!(log.failed("feed", "down again"), "a new outage is logged at once");
    }
}
