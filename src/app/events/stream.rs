//! One Subscribe stream: a task that reads the settled log after its cursor
//! and hands each event to a bounded channel.
//!
//! # Order, no gaps, no skips
//! The task reads with [`EventStore::read_all`], the read side's settled-log
//! read (the projections' sweep uses the same call): it returns only events no
//! open transaction can still commit before, in settled order, and the cursor
//! is the position of the last event read. So the stream is the log in one
//! order, whatever order concurrent writers commit in.
//!
//! # Flow control
//! The channel holds [`CHANNEL`] messages and the task reads at most
//! [`BATCH`] events ahead; `send` waits while the client does not read (HTTP/2
//! flow control stops the transport from pulling), so a slow client slows its
//! own stream and the memory per stream stays bounded.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use super::public::{self, PublicEventType, PublishedEvent};
use crate::{
    app::watch::FailureLog,
    error::AppError,
    privacy::Vault,
    shutdown::Shutdown,
    store::event_store::{EventStore, EventStoreError, StoredEvent},
};

/// Events read per query.
pub const BATCH: usize = 500;
/// Messages buffered per stream between the reader and the transport.
pub const CHANNEL: usize = 64;
/// A Checkpoint is sent after this long without a message.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// One message of a stream.
#[derive(Debug)]
pub enum FeedItem {
    /// The next event.
    Event(Box<PublishedEvent>),
    /// Everything up to this position (in stream order) was delivered or left
    /// out by the filter.
    Checkpoint(i64),
}

/// What a stream reads from and answers to.
pub(super) struct Sources {
    /// The settled log.
    pub events: Arc<dyn EventStore>,
    /// Opens personal data (erased after ForgetCustomer).
    pub privacy: Vault,
    /// Moves when the settled head does.
    pub head: watch::Receiver<i64>,
    /// Ends the stream with UNAVAILABLE.
    pub shutdown: Shutdown,
    /// The stream's place under the feed's cap, held for its life.
    pub permit: OwnedSemaphorePermit,
}

/// What a stream delivers.
pub(super) struct StreamSpec {
    /// Read after this position.
    pub cursor: i64,
    /// Only these kinds (empty: all).
    pub types: HashSet<PublicEventType>,
}

/// Runs one stream until the client goes away, shutdown, or a hard failure.
pub(super) async fn run(sources: Sources, spec: StreamSpec, tx: mpsc::Sender<Result<FeedItem, AppError>>) {
    let Sources {
        events,
        privacy,
        mut head,
        shutdown,
        permit: _permit,
    } = sources;
    let mut cursor = spec.cursor;
    let mut failures = FailureLog::new(crate::app::watch::FAILURE_LOG_EVERY);
    if tx.send(Ok(FeedItem::Checkpoint(cursor))).await.is_err() {
        return;
    }
    loop {
        // Seen before the read: a head that moves during it wakes the wait below.
        head.borrow_and_update();
        let batch = match events.read_all(cursor, BATCH).await {
            Ok(batch) => {
                failures.recovered("event feed: reading the log");
                batch
            }
            Err(EventStoreError::Unavailable(why)) => {
                failures.failed("event feed: reading the log", &why);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = shutdown.wait() => break,
                    _ = tx.closed() => return,
                }
            }
            Err(other) => {
                let _ = tx.send(Err(other.into())).await;
                return;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = head.changed() => {}
                _ = tokio::time::sleep(HEARTBEAT) => {
                    if tx.send(Ok(FeedItem::Checkpoint(cursor))).await.is_err() {
                        return;
                    }
                }
                _ = shutdown.wait() => break,
                _ = tx.closed() => return,
            }
            continue;
        }
        let mut last_was_sent = true;
        for stored in batch {
            let position = stored.global_position;
            match publish(&privacy, stored, &spec.types).await {
                Ok(Some(event)) => {
                    if tx.send(Ok(FeedItem::Event(Box::new(event)))).await.is_err() {
                        return;
                    }
                    last_was_sent = true;
                }
                Ok(None) => last_was_sent = false,
                Err(error) => {
                    let _ = tx.send(Err(error)).await;
                    return;
                }
            }
            cursor = position;
        }
        if !last_was_sent && tx.send(Ok(FeedItem::Checkpoint(cursor))).await.is_err() {
            return;
        }
    }
    let _ = tx
        .send(Err(AppError::Unavailable {
            reason: crate::error::ErrorReason::ShuttingDown,
            message: "server shutting down: subscribe again".into(),
        }))
        .await;
}

/// The published form of `stored`, or None when the stream leaves it out
/// (another stream type, or a kind outside the filter).
async fn publish(
    privacy: &Vault,
    mut stored: StoredEvent,
    types: &HashSet<PublicEventType>,
) -> Result<Option<PublishedEvent>, AppError> {
    let Some(decoded) = public::decode(&stored) else {
        return Ok(None);
    };
    let poison = |why: anyhow::Error, stored: &StoredEvent| {
        AppError::Internal(why.context(format!(
            "event at position {} does not map to the public contract",
            stored.global_position
        )))
    };
    let event = decoded.map_err(|e| poison(e, &stored))?;
    let kind = PublicEventType::of(&event);
    if !types.is_empty() && !types.contains(&kind) {
        return Ok(None);
    }
    // Personal data: opened while the customer's key exists, "[erased]" after
    // ForgetCustomer (the stored payload only holds ciphertext).
    let event = if kind == PublicEventType::OrderCreated {
        if privacy.open_personal(&mut stored.payload).await? {
            public::decode(&stored)
                .unwrap_or_else(|| Ok(event))
                .map_err(|e| poison(e, &stored))?
        } else {
            event
        }
    } else {
        event
    };
    Ok(Some(PublishedEvent { stored, event }))
}
