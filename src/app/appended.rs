//! The streams this process has just appended to, announced right after each
//! commit.
//!
//! WatchOrder's feed listens here so that a customer watching an order sees a
//! step at once: the order is read from its stream when the read model has not
//! caught up yet, instead of after the outbox relay, the bus and the
//! projection have each taken their turn (a few milliseconds on every update,
//! and most of the wait between a saga's last commit and CONFIRMED on the
//! watcher's screen). Changes committed by other replicas still arrive through
//! the projection and the feed's poll of the log.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::store::unit_of_work::{Committed, UnitOfWork, UnitOfWorkCommitter, UnitOfWorkError};

/// One committed append: the stream and its version after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The stream appended to (an order's id for order streams).
    pub stream_id: Uuid,
    /// The stream's version after the append.
    pub version: u64,
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
        let streams: Vec<Uuid> = unit.appends.iter().map(|a| a.stream_id).collect();
        let committed = self.inner.commit(unit).await?;
        if self.streams.sender.receiver_count() > 0 {
            for (stream_id, result) in streams.into_iter().zip(&committed.appended) {
                if !result.already_stored {
                    // No listener is fine.
                    let _ = self.streams.sender.send(Appended {
                        stream_id,
                        version: result.new_version,
                    });
                }
            }
        }
        Ok(committed)
    }
}
