//! Reads from a streaming replica of PostgreSQL (DATABASE_READ_URL), with the
//! primary answering whatever the replica cannot answer yet.
//!
//! A hot standby replays the primary's WAL a little later than the primary
//! commits it, so a read there may be older than a write the caller has
//! already seen acknowledged. Each reader decides, per read, whether the
//! replica's answer is good enough:
//! - Order queries ([`crate::app::queries`]) take the replica's row when its
//!   version reaches the query's `min_version`; a row that is behind, or
//!   missing, sends the query down the primary's path (the wait for the
//!   projection, then the event store), so read-your-writes holds as without
//!   a replica.
//! - The event log through [`ReplicaFirst`]: a stream read that finds nothing
//!   on the replica (a gap the projection must fill now, an order the
//!   replica has not seen yet) is asked again of the primary; a sweep of the
//!   global log reads the replica unless it has not reached the cursor yet.
//!   The head position (lag, status) always comes from the primary.
//!
//! A replica that fails (down, restarting, a query cancelled by a recovery
//! conflict) is left alone for [`AVOID_AFTER_ERROR`] and every read goes to
//! the primary meanwhile: a replica outage costs capacity, never answers.
//! `db_replica_reads_total{reader, outcome}` counts reads by who answered
//! (`replica`, or the primary because the replica was `behind` or
//! `unavailable`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use uuid::Uuid;

use crate::store::{
    event_store::{EventStore, EventStoreError, StoredEvent},
    read_models::ReadModelStore,
};

/// How long a replica that failed a read is skipped.
pub const AVOID_AFTER_ERROR: Duration = Duration::from_secs(5);

/// The replica's read models and event log, and whether it is usable now.
#[derive(Clone, Debug)]
pub struct ReplicaReads {
    store: ReadModelStore,
    events: Arc<dyn EventStore>,
    avoid_until: Arc<Mutex<Option<Instant>>>,
}

/// Who answered a read that could go to the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The replica, caught up far enough for the read.
    Replica,
    /// The primary, because the replica had not replayed what was needed.
    Behind,
    /// The primary, because the replica failed or is being avoided.
    Unavailable,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Replica => "replica",
            Self::Behind => "behind",
            Self::Unavailable => "unavailable",
        }
    }
}

impl ReplicaReads {
    /// The stores of the replica's database (read only: nothing here writes).
    pub fn new(store: ReadModelStore, events: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            events,
            avoid_until: Arc::default(),
        }
    }

    /// The replica's read models, unless it failed moments ago.
    pub fn store(&self) -> Option<&ReadModelStore> {
        self.usable().then_some(&self.store)
    }

    /// Counts one read of `reader` answered as `outcome`.
    pub fn record(&self, reader: &'static str, outcome: Outcome) {
        crate::metrics::replica_read(reader, outcome.as_str());
    }

    /// Notes a failed read: the replica is avoided for a while.
    pub fn failed(&self, reader: &'static str, error: &dyn std::fmt::Display) {
        let mut until = self.avoid_until.lock().unwrap_or_else(|e| e.into_inner());
        if until.is_none_or(|t| t <= Instant::now()) {
            tracing::warn!(reader, %error, avoid_for = ?AVOID_AFTER_ERROR, "read replica failed; reading the primary");
        }
        *until = Some(Instant::now() + AVOID_AFTER_ERROR);
        drop(until);
        self.record(reader, Outcome::Unavailable);
    }

    fn usable(&self) -> bool {
        let until = self.avoid_until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_none_or(|t| t <= Instant::now())
    }

    /// The event log of `primary` read from this replica first, counted as
    /// `reader`'s reads.
    pub fn event_log(&self, primary: Arc<dyn EventStore>, reader: &'static str) -> Arc<dyn EventStore> {
        Arc::new(ReplicaFirst {
            replica: self.clone(),
            primary,
            reader,
        })
    }
}

/// The event log read from the replica, the primary answering what the
/// replica has not replayed yet (see the module documentation).
#[derive(Debug)]
pub struct ReplicaFirst {
    replica: ReplicaReads,
    primary: Arc<dyn EventStore>,
    reader: &'static str,
}

impl ReplicaFirst {
    /// `read` on the replica when it is usable; None (go to the primary) when
    /// it is not, or when it failed.
    async fn on_replica<T, F>(&self, read: impl FnOnce(Arc<dyn EventStore>) -> F) -> Option<T>
    where
        F: Future<Output = Result<T, EventStoreError>>,
    {
        if !self.replica.usable() {
            self.replica.record(self.reader, Outcome::Unavailable);
            return None;
        }
        match read(self.replica.events.clone()).await {
            Ok(found) => Some(found),
            Err(error) => {
                self.replica.failed(self.reader, &error);
                None
            }
        }
    }
}

#[async_trait]
impl EventStore for ReplicaFirst {
    async fn read_stream(
        &self,
        stream_id: Uuid,
        from_version: u64,
    ) -> Result<Vec<StoredEvent>, EventStoreError> {
        match self
            .on_replica(|events| async move { events.read_stream(stream_id, from_version).await })
            .await
        {
            Some(found) if !found.is_empty() => {
                self.replica.record(self.reader, Outcome::Replica);
                return Ok(found);
            }
            Some(_) => self.replica.record(self.reader, Outcome::Behind),
            None => {}
        }
        self.primary.read_stream(stream_id, from_version).await
    }

    async fn read_all(&self, after_position: i64, limit: usize) -> Result<Vec<StoredEvent>, EventStoreError> {
        // The cursor is a position read before (perhaps from the primary): a
        // replica that does not have its event yet would read the settled
        // order from its start, not after the cursor.
        let read = |events: Arc<dyn EventStore>| async move {
            if after_position > 0 && events.event_at(after_position).await?.is_none() {
                return Ok(None);
            }
            events.read_all(after_position, limit).await.map(Some)
        };
        match self.on_replica(read).await {
            Some(Some(found)) => {
                self.replica.record(self.reader, Outcome::Replica);
                return Ok(found);
            }
            Some(None) => self.replica.record(self.reader, Outcome::Behind),
            None => {}
        }
        self.primary.read_all(after_position, limit).await
    }

    async fn head_position(&self) -> Result<i64, EventStoreError> {
        self.primary.head_position().await
    }

    async fn stream_version(&self, stream_id: Uuid) -> Result<u64, EventStoreError> {
        self.primary.stream_version(stream_id).await
    }

    async fn event_at(&self, position: i64) -> Result<Option<StoredEvent>, EventStoreError> {
        self.primary.event_at(position).await
    }
}
