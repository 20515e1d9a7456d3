//! Order changes as the order detail projection commits them: feeds
//! WatchOrder and the `min_version` waits of queries in this process.

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::domain::order::OrderStatus;

/// One committed change of an order's detail row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderChange {
    /// The order whose detail row changed (the watch key).
    pub order_id: Uuid,
    /// The row's version after the change: a watcher that has seen it skips older ones.
    pub version: u64,
    /// The status after the change; a terminal one ends the watch.
    pub status: OrderStatus,
}

/// A broadcast of [`OrderChange`]s, cheap to clone.
///
/// Only the changes this process commits are seen; with several replicas a
/// change may be applied elsewhere, so listeners also poll the read model.
#[derive(Clone, Debug)]
pub struct OrderChanges {
    sender: broadcast::Sender<OrderChange>,
}

impl Default for OrderChanges {
    fn default() -> Self {
        Self::new()
    }
}

impl OrderChanges {
    /// A new broadcast (a slow listener skips ahead rather than blocking the projection).
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(1024);
        Self { sender }
    }

    /// Announces changes that committed; called only after the row's transaction, so a
    /// watcher never sees an uncommitted one.
    pub fn publish(&self, changes: impl IntoIterator<Item = OrderChange>) {
        for change in changes {
            // No listener is fine.
            let _ = self.sender.send(change);
        }
    }

    /// Listens from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<OrderChange> {
        self.sender.subscribe()
    }
}
