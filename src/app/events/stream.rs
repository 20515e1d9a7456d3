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
//! # Reading ahead
//! A catch-up is bound by the time a page takes to read plus the time it takes
//! to publish and hand over, when the two run one after the other. So while a
//! page is published and sent, the next one is read (in a task of its own, so
//! that its rows are decoded on another core): at most one page ahead, never
//! more, whatever the client does.
//!
//! # Flow control
//! The channel holds [`CHANNEL`] messages; besides them a stream holds the page
//! it is delivering and the one read ahead, [`BATCH`] events each. `send`
//! waits while the client does not read (HTTP/2 flow control stops the
//! transport from pulling), so a slow client slows its own stream, and the
//! memory per stream stays bounded.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use super::{
    page,
    public::{PublicEventType, PublishedEvent},
};
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
/// Messages handed to the channel at once, when it has room for them.
const SEND_RUN: usize = CHANNEL / 2;
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
    // The page after `cursor`, when it was read while the one before was sent.
    let mut ahead: Option<ReadAhead> = None;
    loop {
        let read = match ahead.take() {
            Some(next) => next.page().await,
            None => read_after(&events, &mut head, cursor).page().await,
        };
        let page = match read {
            Ok(page) => {
                failures.recovered("event feed: reading the log");
                page
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
        let Some(last) = page.last().map(|event| event.global_position) else {
            // Caught up: wait for the head to move (it was marked seen before
            // the read that came back empty).
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
        };
        let next = read_after(&events, &mut head, last);
        if !deliver(&privacy, page, &spec.types, &tx).await {
            next.cancel();
            return;
        }
        cursor = last;
        ahead = Some(next);
    }
    let _ = tx
        .send(Err(AppError::Unavailable {
            reason: crate::error::ErrorReason::ShuttingDown,
            message: "server shutting down: subscribe again".into(),
        }))
        .await;
}

/// A page being read in a task of its own.
struct ReadAhead(tokio::task::JoinHandle<Result<Vec<StoredEvent>, EventStoreError>>);

impl ReadAhead {
    async fn page(self) -> Result<Vec<StoredEvent>, EventStoreError> {
        match self.0.await {
            Ok(read) => read,
            // A panic stays a panic, as if the stream's task had read itself.
            Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
            Err(cancelled) => Err(EventStoreError::Unavailable(format!(
                "reading the log: {cancelled}"
            ))),
        }
    }

    fn cancel(self) {
        self.0.abort();
    }
}

/// Starts reading the page after `cursor`. The head is marked seen first: a
/// head that moves during the read wakes the wait for it.
fn read_after(events: &Arc<dyn EventStore>, head: &mut watch::Receiver<i64>, cursor: i64) -> ReadAhead {
    head.borrow_and_update();
    let events = events.clone();
    ReadAhead(tokio::spawn(async move { events.read_all(cursor, BATCH).await }))
}

/// Publishes and sends `page`; false when the stream is over (the client went
/// away, or an event that does not map to the contract was reported).
async fn deliver(
    privacy: &Vault,
    page: Vec<StoredEvent>,
    types: &HashSet<PublicEventType>,
    tx: &mpsc::Sender<Result<FeedItem, AppError>>,
) -> bool {
    let Some(last) = page.last().map(|event| event.global_position) else {
        return true;
    };
    let published = page::publish(privacy, page, types).await;
    let last_was_sent = published.events.last().is_none_or(Option::is_some);
    let mut events = published
        .events
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .into_iter();
    while !events.as_slice().is_empty() {
        // Room for a run of messages at once: with the channel full, the task
        // wakes once per run the transport took, not once per message.
        let Ok(permits) = tx.reserve_many(events.len().min(SEND_RUN)).await else {
            return false;
        };
        for (permit, event) in permits.zip(&mut events) {
            permit.send(Ok(FeedItem::Event(Box::new(event))));
        }
    }
    if let Some(error) = published.failure {
        let _ = tx.send(Err(error)).await;
        return false;
    }
    // Events the filter left out at the end: say the stream got past them.
    last_was_sent || tx.send(Ok(FeedItem::Checkpoint(last))).await.is_ok()
}
