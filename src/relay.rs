//! The relay: publishes the event store's settled log to the event bus and
//! keeps a durable cursor of how far it got.
//!
//! Each round reads the cursor ([`RelayCursor`]), takes up to a batch of
//! events after it from [`EventStore::read_all`], hands them to the bus, and
//! then moves the cursor to the last of them by compare-and-set. No table is
//! written per event: the log the units of work commit is the only copy.
//!
//! # Rounds under load
//! Every commit of this process wakes an idle relay, so a lone order's
//! events reach the bus at once. A round that published something is
//! followed by a pause of [`GATHER`] that commits do not cut short: under
//! load the events of many commits go out in one round, instead of a round
//! (three statements and a publish) per commit, and the projections then
//! fold them in batches too. While the relay holds the turn, a round starts
//! from the cursor as it last moved it, without reading the row.
//!
//! # Guarantees
//! - **Nothing lost.** The cursor moves only after the bus accepted the
//!   batch; if Redis is down, the round fails, the cursor stays and the relay
//!   retries with backoff. A crash between the publish and the cursor move
//!   publishes the batch again on restart: delivery is at least once and
//!   consumers are idempotent (by stream version).
//! - **Nothing skipped.** `read_all` returns only settled events, in an order
//!   in which no event can later appear behind the cursor (on PostgreSQL
//!   (transaction, position); the cursor is the position of the last event
//!   published, which `read_all` resolves to that pair). The price: a
//!   transaction left open anywhere in the cluster holds the relay back
//!   until it ends (the events wait, none is skipped).
//! - **Per-stream order.** A stream's next event is appended only after its
//!   previous one committed (optimistic concurrency) by a transaction whose
//!   first write is that append (the unit of work writes events first), so it
//!   comes later in the settled order too; the relay publishes a batch in
//!   that order, and all the events of a stream go to one bus partition (its
//!   stream id decides, [`crate::bus::partition_of`]), appended there in that
//!   order. Nothing relies on an order across streams.
//! - **Entries as stored.** The relay reads an event store without upcasters,
//!   so each entry carries its payload at the schema version it was stored
//!   with, as the outbox rows did; consumers upcast
//!   ([`crate::bus::EventEnvelope::into_stored`]).
//! - **Several replicas, one relay at a time.** Every replica runs a relay,
//!   but only the holder of the cursor's turn ([`RelayCursor::turn`], a lease
//!   of [`TURN_LEASE`]) publishes; the others poll the turn and take it once
//!   its holder stops (at once: it gives the turn up) or dies (after the
//!   lease). The cursor moves by compare-and-set of the holder, so it stays
//!   monotone even when a late holder overlaps the next: then a batch is
//!   published twice, never lost.
//! - **Draining.** With EVENT_BUS_RELAY=false no relay runs in the replica
//!   (startup does not start it): the step of the procedure that changes the
//!   partition count (README, "Event bus partitions").
//!
//! The relay writes no SQL: the cursor is [`crate::store::relay_cursor`]'s,
//! the log [`crate::store::event_store`]'s, each chosen per backend in startup.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::{
    bus::{EventBus, EventEnvelope},
    shutdown::Shutdown,
    store::{
        event_store::{APPENDED, EventStore},
        relay_cursor::{RelayCursor, keeps_turn},
    },
};

/// Events per round.
const BATCH: usize = 500;
/// Pause after a round that published some events but less than a batch,
/// which appends do not cut short: the events of the commits meanwhile (and
/// of transactions that held some back) go out together in the next round.
pub const GATHER: Duration = Duration::from_millis(10);
/// Pause after a round that found nothing, unless an append in this process
/// wakes the relay first (appends of other replicas are found by this poll).
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Longest pause after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a relay's turn lasts without a renewal: how soon another replica
/// publishes after the relay's process died.
pub const TURN_LEASE: Duration = Duration::from_secs(10);

/// The relay from the settled log to the bus.
pub struct EventRelay {
    events: Arc<dyn EventStore>,
    cursor: Arc<dyn RelayCursor>,
    bus: Arc<dyn EventBus>,
    /// This relay's name in the turn: unique per relay, also within a process.
    owner: String,
    /// Where this relay last moved the cursor, and when (which renewed its
    /// turn): see [`EventRelay::held_cursor`].
    moved: Mutex<Option<(i64, Instant)>>,
}

impl EventRelay {
    /// A relay of `events` (a store without upcasters: see the module
    /// documentation) to `bus`, remembering its progress in `cursor`.
    pub fn new(events: Arc<dyn EventStore>, cursor: Arc<dyn RelayCursor>, bus: Arc<dyn EventBus>) -> Self {
        Self {
            events,
            cursor,
            bus,
            owner: crate::bus::lease_holder_name(),
            moved: Mutex::new(None),
        }
    }

    /// Relays until `shutdown` fires (finishing the round in progress).
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(50);
        let mut failing = false;
        while !shutdown.is_triggered() {
            let pause = match self.relay_once().await {
                Ok(published) => {
                    if failing {
                        tracing::info!("event relay recovered");
                        failing = false;
                    }
                    backoff = Duration::from_millis(50);
                    match published {
                        BATCH => continue,
                        0 => IDLE_POLL,
                        _ => {
                            tokio::select! {
                                _ = tokio::time::sleep(GATHER) => continue,
                                _ = shutdown.wait() => break,
                            }
                        }
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(error = format!("{error:#}"), "event relay failing; retrying");
                        failing = true;
                    }
                    // The lag grows while the bus refuses: show it (best
                    // effort, the database may be what fails).
                    if let Ok(lag) = self.lag().await {
                        crate::metrics::relay_lag(lag);
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                // While failing, the backoff decides, not new appends.
                () = APPENDED.notified(), if !failing => {}
                _ = shutdown.wait() => break,
            }
        }
        self.leave().await;
    }

    /// Gives the turn up, so that another replica's relay takes it at once
    /// (best effort: else it passes when the lease ends).
    pub async fn leave(&self) {
        self.remember(None);
        if let Err(error) = self.cursor.leave(&self.owner).await {
            tracing::debug!(%error, "giving the relay's turn up failed; it passes when the lease ends");
        }
    }

    /// One round: publishes up to a batch of settled events after the cursor,
    /// then moves the cursor past them; returns how many were published (0
    /// when none were settled, when another relay has the turn, or when the
    /// turn passed to another during the round: that one publishes them too).
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let from = match self.held_cursor() {
            Some(from) => from,
            None => match self.cursor.turn(&self.owner, TURN_LEASE).await? {
                Some(from) => from,
                None => return Ok(0),
            },
        };
        let events = self.events.read_all(from, BATCH).await?;
        let Some(last) = events.last().map(|e| e.global_position) else {
            crate::metrics::relay_lag(0);
            return Ok(0);
        };
        let envelopes: Vec<EventEnvelope> = events.iter().map(EventEnvelope::from).collect();
        self.bus.publish(&envelopes).await?;
        if !self.cursor.advance(&self.owner, from, last, TURN_LEASE).await? {
            self.remember(None);
            return Ok(0);
        }
        self.remember(Some(last));
        // A round short of a full batch took every settled event there was:
        // measuring the lag again would be one more statement per round.
        let lag = match events.len() {
            BATCH => self.events.head_position().await.map_or(0, |head| head - last),
            _ => 0,
        };
        crate::metrics::relay_lag(lag);
        Ok(events.len())
    }

    /// The cursor as this relay last moved it, while the lease that move
    /// renewed still [`keeps_turn`] (the rule of [`RelayCursor::turn`]): the
    /// turn is still its own then, and no other relay moves the cursor. (If
    /// one did, the next compare-and-set fails and this is forgotten.)
    fn held_cursor(&self) -> Option<i64> {
        let moved = *self.moved.lock().unwrap_or_else(PoisonError::into_inner);
        moved.and_then(|(position, at)| {
            let left = TURN_LEASE.saturating_sub(at.elapsed());
            keeps_turn(left, TURN_LEASE).then_some(position)
        })
    }

    /// Remembers the cursor this relay just moved to (None: forget it).
    fn remember(&self, position: Option<i64>) {
        *self.moved.lock().unwrap_or_else(PoisonError::into_inner) = position.map(|p| (p, Instant::now()));
    }

    /// The settled head's position minus the cursor's.
    async fn lag(&self) -> anyhow::Result<i64> {
        Ok(self.events.head_position().await? - self.cursor.position().await?)
    }
}
