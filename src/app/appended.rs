//! The streams this process has just appended to, announced right after each
//! commit.
//!
//! WatchOrder's feed listens here so that a customer watching an order sees a
//! step at once: the announced events are folded onto the order it holds (or
//! the order is read from its stream when they do not follow on), instead of after the relay, the bus and the
//! projection have each taken their turn (a few milliseconds on every update,
//! and most of the wait between a saga's last commit and CONFIRMED on the
//! watcher's screen). Changes committed by other replicas still arrive through
//! the projection and the feed's poll of the log.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::store::{
    event_store::{AppendResult, StoredEvent, StreamAppend},
    unit_of_work::{Committed, UnitOfWork, UnitOfWorkCommitter, UnitOfWorkError},
};

/// One committed append: the stream, its version after it, and the events.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The stream appended to (an order's id for order streams).
    pub stream_id: Uuid,
    /// The stream's version after the append.
    pub version: u64,
    /// The appended events as a read would return them (versions, positions
    /// and time from the commit): a listener that holds the stream folded up
    /// to the version before them folds them on without reading anything.
    pub events: Arc<[StoredEvent]>,
}

impl Appended {
    /// The announcement of `append`, committed as `result`.
    fn of(append: StreamAppend, result: &AppendResult) -> Self {
        let first = result.new_version + 1 - append.events.len() as u64;
        let events = append
            .events
            .into_iter()
            .zip(&result.global_positions)
            .enumerate()
            .map(|(i, (event, position))| StoredEvent {
                event_id: event.event_id,
                stream_id: append.stream_id,
                stream_type: append.stream_type.clone(),
                version: first + i as u64,
                global_position: *position,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: event.payload,
                metadata: event.metadata,
                recorded_at: result.recorded_at,
            })
            .collect();
        Self {
            stream_id: append.stream_id,
            version: result.new_version,
            events,
        }
    }
}

/// A broadcast of [`Appended`]s, cheap to clone; a slow listener skips ahead
/// (it also polls) rather than slowing the writers.
#[derive(Clone, Debug)]
pub struct AppendedStreams {
    sender: broadcast::Sender<Appended>,
}

impl Default for AppendedStreams {
    fn default() -> Self {
        Self::new()
    }
}

impl AppendedStreams {
    /// A broadcast nobody listens to yet.
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(1024).0,
        }
    }

    /// Listens from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Appended> {
        self.sender.subscribe()
    }

    /// Wraps `units` so that every commit is announced here.
    pub fn announcing(&self, units: Arc<dyn UnitOfWorkCommitter>) -> Arc<dyn UnitOfWorkCommitter> {
        Arc::new(AnnouncingUnits {
            inner: units,
            streams: self.clone(),
        })
    }
}

/// A committer that announces each commit's appends once it has committed, so
/// a listener never sees an uncommitted version.
struct AnnouncingUnits {
    inner: Arc<dyn UnitOfWorkCommitter>,
    streams: AppendedStreams,
}

impl fmt::Debug for AnnouncingUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnnouncingUnits")
            .field("inner", &self.inner)
            .finish()
    }
}

#[async_trait]
impl UnitOfWorkCommitter for AnnouncingUnits {
    async fn commit(&self, unit: UnitOfWork) -> Result<Committed, UnitOfWorkError> {
        // Kept only while someone listens: the commit consumes the unit.
        let appends = (self.streams.sender.receiver_count() > 0).then(|| unit.appends.clone());
        let committed = self.inner.commit(unit).await?;
        for (append, result) in appends.into_iter().flatten().zip(&committed.appended) {
            if !result.already_stored {
                // No listener is fine.
                let _ = self.streams.sender.send(Appended::of(append, result));
            }
        }
        Ok(committed)
    }
}
