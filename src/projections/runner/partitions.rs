//! The runner's partitions: the leases this replica holds, as last renewed,
//! and a consumer task on each of them.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{
    bus::Partition,
    shutdown::{self, Shutdown, ShutdownTrigger},
};

/// The partitions this replica holds, as last renewed.
#[derive(Default)]
pub(super) struct HeldLeases {
    held: Vec<Partition>,
    /// The last successful renewal.
    renewed_at: Option<Instant>,
    /// The last attempt (None: renew now).
    tried_at: Option<Instant>,
    /// The last attempt failed.
    failing: bool,
}

impl HeldLeases {
    pub(super) fn due(&self, every: Duration) -> bool {
        self.tried_at.is_none_or(|t| t.elapsed() >= every)
    }

    pub(super) fn until_due(&self, every: Duration) -> Duration {
        self.tried_at
            .map_or(Duration::ZERO, |t| every.saturating_sub(t.elapsed()))
    }

    /// Takes a renewal's outcome; returns the partitions to consume now.
    pub(super) fn renewed(
        &mut self,
        projection: &'static str,
        outcome: Result<Vec<Partition>, crate::bus::BusError>,
        lease: Duration,
    ) -> Vec<Partition> {
        let now = Instant::now();
        self.tried_at = Some(now);
        match outcome {
            Ok(held) => {
                if held != self.held {
                    tracing::info!(projection = projection, partitions = ?held, "partitions held");
                }
                if std::mem::take(&mut self.failing) {
                    tracing::info!(projection = projection, "partition leases renewed again");
                }
                self.held = held;
                self.renewed_at = Some(now);
            }
            Err(error) => {
                if !self.failing {
                    tracing::warn!(projection = projection, %error, "renewing the partition leases failed");
                    self.failing = true;
                }
                // Held partitions are ours until the lease would have expired.
                if self.renewed_at.is_none_or(|t| now.duration_since(t) >= lease) {
                    self.held.clear();
                }
            }
        }
        crate::metrics::projection_partitions_held(projection, self.held.len());
        self.held.clone()
    }

    /// Whether this replica sweeps: it holds partition 0, or the leases
    /// cannot be renewed (then every replica does, as the safety net).
    pub(super) fn sweeper(&self) -> bool {
        self.failing || self.held.contains(&Partition(0))
    }
}

/// The consumer task of each partition held, with its stop trigger.
#[derive(Default)]
pub(super) struct Consumers {
    running: BTreeMap<Partition, ShutdownTrigger>,
    /// Owns the tasks: dropping it (the runner aborted) aborts them.
    tasks: tokio::task::JoinSet<()>,
}

impl Consumers {
    /// Starts a consumer (`start`) on each partition of `held` without one; stops the
    /// others (after their current step).
    pub(super) fn follow<F, Fut>(&mut self, held: Vec<Partition>, mut start: F)
    where
        F: FnMut(Partition, Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.running.retain(|partition, trigger| {
            let keep = held.contains(partition);
            if !keep {
                trigger.trigger();
            }
            keep
        });
        for partition in held {
            if self.running.contains_key(&partition) {
                continue;
            }
            // Stopped by the runner: when the lease is lost or at shutdown
            // (after the step in progress).
            let (trigger, stop) = shutdown::channel();
            self.tasks.spawn(start(partition, stop));
            self.running.insert(partition, trigger);
        }
        // Reap the finished ones, so the set does not grow.
        while self.tasks.try_join_next().is_some() {}
    }

    /// Stops every consumer and waits for them.
    pub(super) async fn stop_all(mut self) {
        for trigger in self.running.values() {
            trigger.trigger();
        }
        while self.tasks.join_next().await.is_some() {}
    }
}
