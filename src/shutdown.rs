//! A shutdown signal threaded through every background task (mini-redis style).

use tokio::sync::watch;

/// Cloneable handle: `wait()` resolves once shutdown is triggered.
#[derive(Clone, Debug)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

/// Triggers the shutdown of every [`Shutdown`] handle made from it.
#[derive(Debug)]
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

/// A new trigger and its first handle.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, Shutdown { receiver })
}

impl ShutdownTrigger {
    /// Signals every handle.
    pub fn trigger(&self) {
        let _ = self.sender.send(true);
    }

    /// A handle for a task started after the channel was made.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            receiver: self.sender.subscribe(),
        }
    }
}

impl Shutdown {
    /// Resolves when shutdown has been triggered (or the trigger dropped).
    pub async fn wait(&self) {
        let mut receiver = self.receiver.clone();
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }

    /// True once triggered, or once the trigger is dropped: the same moment
    /// [`Shutdown::wait`] resolves. (A loop that checks this flag and also
    /// waits on `wait()` otherwise spins after its trigger's owner went away,
    /// and a dropped test fixture's tasks kept running on its deleted keys.)
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow() || self.receiver.has_changed().is_err()
    }
}

/// The background tasks an [`crate::startup::Application`] spawns, so that
/// its embedder can end them synchronously. An aborted task is never polled
/// again: nothing it would have done after [`Tasks::abort_all`] happens. The
/// tests abort them before they delete the test's database and keys, which
/// a still-running projection would otherwise re-create.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    handles: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Tasks {
    /// Spawns `future` on the current runtime as one of these tasks.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = tokio::spawn(future);
        self.track(&handle);
        handle
    }

    /// Adds a task spawned elsewhere.
    pub fn track<T>(&self, handle: &tokio::task::JoinHandle<T>) {
        let mut handles = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Finished tasks need no abort: keep the list as long as the live ones.
        handles.retain(|h| !h.is_finished());
        handles.push(handle.abort_handle());
    }

    /// Aborts every task (those finished already are left alone).
    pub fn abort_all(&self) {
        let handles = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for handle in handles.iter() {
            handle.abort();
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn os_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_trigger_reads_as_triggered_as_wait_says() {
        let (trigger, shutdown) = channel();
        assert!(!shutdown.is_triggered());
        drop(trigger);
        shutdown.wait().await;
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn an_aborted_task_is_never_polled_again() {
        let tasks = Tasks::default();
        let polls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = polls.clone();
        let task = tasks.spawn(async move {
            loop {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        tasks.abort_all();
        let at_abort = polls.load(std::sync::atomic::Ordering::SeqCst);
        assert!(task.await.unwrap_err().is_cancelled());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(polls.load(std::sync::atomic::Ordering::SeqCst), at_abort);
    }
}
