//! The settled head of the event log, watched once per process for every
//! open subscription: a stream that has read everything waits on this value
//! instead of polling the database itself, so N idle streams cost one query
//! per [`TAIL_POLL`], and none at all while nothing subscribes.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::{app::watch::FailureLog, shutdown::Shutdown, store::event_store::EventStore};

/// How often the head is read while at least one stream is open.
pub const TAIL_POLL: Duration = Duration::from_millis(50);

/// The process's view of the settled head; cheap to clone.
#[derive(Clone)]
pub struct LogTail {
    head: Arc<watch::Sender<i64>>,
}

impl LogTail {
    /// Starts the watcher over `events`; it stops on `shutdown`.
    pub fn start(events: Arc<dyn EventStore>, shutdown: Shutdown) -> Self {
        let head = Arc::new(watch::channel(0).0);
        tokio::spawn(watch_head(head.clone(), events, shutdown));
        Self { head }
    }

    /// A receiver that wakes whenever the settled head moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }
}

async fn watch_head(head: Arc<watch::Sender<i64>>, events: Arc<dyn EventStore>, shutdown: Shutdown) {
    let mut failures = FailureLog::new(crate::app::watch::FAILURE_LOG_EVERY);
    while !shutdown.is_triggered() {
        if head.receiver_count() > 0 {
            match events.head_position().await {
                Ok(position) => {
                    failures.recovered("event feed: reading the head");
                    head.send_if_modified(|current| std::mem::replace(current, position) != position);
                }
                Err(error) => {
                    failures.failed("event feed: reading the head", &error.to_string());
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TAIL_POLL) => {}
            _ = shutdown.wait() => return,
        }
    }
}
