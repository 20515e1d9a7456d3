//! The outbox relay: publishes the events that commands committed (with their
//! outbox rows, in one transaction) to the event bus, in outbox id order, and
//! marks them published.
//!
//! # Guarantees
//! - **Nothing lost.** A row is marked published only after the bus accepted
//!   it; if Redis is down, the relay retries with backoff and the rows wait.
//!   A crash between the publish and the mark publishes the rows again on
//!   restart: delivery is at least once and consumers are idempotent.
//! - **Per-stream order.** A stream's event can only be appended after its
//!   previous one committed (optimistic concurrency), so it has a larger
//!   outbox id and is never visible before it; the relay publishes each batch
//!   in id order, and all the events of a stream go to one bus partition
//!   (its stream id decides, [`crate::bus::partition_of`]), appended there in
//!   that order. Events of different streams may be published in another
//!   order than their global positions, and different partitions are appended
//!   concurrently; nothing relies on an order across streams.
//! - **Draining.** With EVENT_BUS_RELAY=false no relay runs in the replica
//!   (startup does not start it): the step of the procedure that changes the
//!   partition count (README, "Event bus partitions").
//! - **One relay at a time.** On PostgreSQL each round holds a transaction
//!   advisory lock, so replicas take turns instead of racing (racing would
//!   only duplicate, but turns keep the bus tidy).
//!
//! The relay writes no SQL: reading and marking the rows is the outbox
//! owner's ([`crate::store::event_store::outbox`]), chosen per backend in
//! startup.

use std::{sync::Arc, time::Duration};

use crate::{
    bus::EventBus,
    shutdown::Shutdown,
    store::event_store::{APPENDED, outbox::Outbox},
};

/// Rows per round.
const BATCH: usize = 500;
/// Pause after a round that found less than a full batch, unless an append
/// in this process wakes the relay first.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// Longest pause after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The relay from the outbox table to the bus.
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    bus: Arc<dyn EventBus>,
}

impl OutboxRelay {
    /// A relay from `outbox` (the configured database's, chosen in startup) to `bus`.
    pub fn new(outbox: Arc<dyn Outbox>, bus: Arc<dyn EventBus>) -> Self {
        Self { outbox, bus }
    }

    /// Relays until `shutdown` fires (finishing the round in progress).
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(50);
        let mut failing = false;
        while !shutdown.is_triggered() {
            let pause = match self.relay_once().await {
                Ok(published) => {
                    if failing {
                        tracing::info!("outbox relay recovered");
                        failing = false;
                    }
                    backoff = Duration::from_millis(50);
                    if published == BATCH {
                        continue;
                    }
                    IDLE_POLL
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(error = format!("{error:#}"), "outbox relay failing; retrying");
                        failing = true;
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
    }

    /// One round: publishes up to a batch of unpublished rows and marks them
    /// (through the outbox's owner, [`crate::store::event_store::outbox`]);
    /// returns how many.
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let published = self.outbox.publish_pending(self.bus.as_ref(), BATCH).await?;
        // A round short of a full batch took every row there was: counting
        // them again would be one more statement per round for a gauge.
        let backlog = match published {
            BATCH => self.outbox.backlog().await.unwrap_or(0),
            _ => 0,
        };
        crate::metrics::outbox_backlog(backlog);
        Ok(published)
    }
}
