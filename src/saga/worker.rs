//! The worker pool of one replica: a claim loop that hands due sagas to at
//! most SAGA_WORKERS concurrent drives.
//!
//! The loop wakes when it is told a saga is due (an in-process [`Notify`],
//! and on PostgreSQL a `LISTEN commerce_sagas` fed by a trigger at every
//! cancel request and every saga created without an owner, from any replica:
//! migrations 0004 and 0011), and otherwise
//! polls: a wake-up can be lost, a poll cannot. Backoffs are never slept
//! while holding a lease: a saga waiting to retry is released with its
//! `next_run_at` and claimed again when due, by whichever replica is free.
//!
//! A new saga skips the loop when a slot is free: CreateOrder reserves the
//! slot ([`LocalWorkers`]), commits the saga leased to it, and hands it
//! over in memory. Every claim and every hand-off has a lease of its own
//! ([`Engine::next_lease`]), which fences the writes of its drive.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{
    engine::{Engine, HandedOver},
    plan::SagaStatus,
};
use crate::{
    db::Db,
    domain::order::Order,
    metrics,
    shutdown::Shutdown,
    store::saga::{Lease, SagaRecord, SagaStart, SagaStore, SagaWrite},
};

/// The claim loop's settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Sagas driven at once (SAGA_WORKERS); each holds one at a time.
    pub workers: usize,
    /// Poll interval when nothing woke the loop.
    pub poll: Duration,
}

/// How often the `sagas` gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// This replica's worker slots, as CreateOrder sees them: it reserves a free
/// one before committing a new saga and hands the saga over to it after the
/// commit ([`super::engine::HandedOver`]). Empty (nothing to reserve) until
/// the workers start, and again once they stop; cheap to clone.
#[derive(Clone, Default)]
pub struct LocalWorkers {
    pool: Arc<OnceLock<Arc<Slots>>>,
    /// The claim loop's wake-up: [`run_pool`] waits on it.
    wake: Arc<Notify>,
}

/// The pool's slots and the engine that drives in them.
struct Slots {
    engine: Arc<Engine>,
    free: Arc<Semaphore>,
    /// A drive ended: a full pool may claim again.
    freed: Notify,
    shutdown: Shutdown,
}

/// A free worker slot, held from before CreateOrder's commit to the end of
/// the drive it hands the saga to (dropped unused, the slot is free again).
pub struct Reserved {
    slots: Arc<Slots>,
    permit: OwnedSemaphorePermit,
    lease: Lease,
}

impl std::fmt::Debug for LocalWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWorkers")
            .field("running", &self.pool.get().is_some())
            .finish()
    }
}

impl LocalWorkers {
    /// Tells the claim loop a saga is due that no slot holds: one CreateOrder
    /// started without a hand-off (no slot was free), or one whose
    /// cancellation was just asked for. Other replicas hear the database's
    /// notification instead; a saga handed over needs no claim at all.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The claim loop's wake-up, for whatever else wakes it (on PostgreSQL,
    /// [`listen_for_wakeups`]).
    pub fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The pool's slots for `engine`, made once: [`run_pool`] takes them, and
    /// its starter may make them first so that CreateOrder finds free slots
    /// as soon as the workers are started, not once their task first runs.
    pub fn install(&self, engine: &Arc<Engine>, workers: usize, shutdown: &Shutdown) {
        self.slots(engine, workers, shutdown);
    }

    fn slots(&self, engine: &Arc<Engine>, workers: usize, shutdown: &Shutdown) -> Arc<Slots> {
        self.pool
            .get_or_init(|| {
                Arc::new(Slots {
                    engine: engine.clone(),
                    free: Arc::new(Semaphore::new(workers)),
                    freed: Notify::new(),
                    shutdown: shutdown.clone(),
                })
            })
            .clone()
    }

    /// A free slot with a lease of its own, if the workers run and one is free.
    pub fn reserve(&self) -> Option<Reserved> {
        let slots = self.pool.get()?;
        if slots.shutdown.is_triggered() {
            return None;
        }
        let permit = slots.free.clone().try_acquire_owned().ok()?;
        Some(Reserved {
            lease: slots.engine.next_lease(),
            slots: slots.clone(),
            permit,
        })
    }
}

impl Reserved {
    /// The saga part of CreateOrder's unit of work: `start`, leased to this
    /// slot, with its first step's start; and what the drive needs.
    pub fn start(&self, start: SagaStart) -> Option<(SagaWrite, HandedOver)> {
        self.slots.engine.start_leased(start, self.lease.clone())
    }

    /// Drives the saga whose leased start committed with `order` (see
    /// [`Engine::drive_handed`]), in this slot.
    pub fn hand_over(self, handed: HandedOver, order: Order, traceparent: Option<String>) {
        let Reserved { slots, permit, .. } = self;
        tokio::spawn(async move {
            let _ = slots.engine.drive_handed(handed, order, traceparent).await;
            drop(permit);
            slots.freed.notify_one();
        });
    }
}

/// Runs the claim loop until `shutdown`, then waits for the drives in flight
/// (each stops before its next step and hands its saga back). `local` is
/// where CreateOrder finds the pool's free slots, and what wakes the loop
/// ([`LocalWorkers::wake`]).
pub async fn run_pool(engine: Arc<Engine>, settings: PoolSettings, local: LocalWorkers, shutdown: Shutdown) {
    let wake = local.wake_signal();
    let workers = settings.workers.clamp(1, Semaphore::MAX_PERMITS);
    let slots = local.slots(&engine, workers, &shutdown);
    let mut gauge_at = tokio::time::Instant::now();
    tracing::info!(owner = %engine.lease().owner, workers, "saga workers started");
    // Something may be due: at the start, after a wake-up (a saga inserted
    // unleased) or a poll, until a claim ran. A slot freed by a drive that
    // ended is no reason to claim by itself: with every saga handed over in
    // memory, that claim found nothing once per order.
    let mut wanted = true;
    while !shutdown.is_triggered() {
        // Hand-offs take slots too: claim at most what is free now, and let
        // a claimed saga whose slot a hand-off took meanwhile wait for the
        // next free one (its lease outlasts that wait, and is fenced anyway).
        let free = slots.free.available_permits();
        let mut claimed = 0;
        if free > 0 && wanted {
            wanted = false;
            let lease = engine.next_lease();
            match engine.store().claim_due(&lease, free).await {
                Ok(records) => {
                    claimed = records.len();
                    for record in records {
                        let permit = slots.free.clone().try_acquire_owned().ok();
                        start_drive(&slots, record, lease.clone(), permit);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming sagas failed");
                    wanted = true;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if tokio::time::Instant::now() >= gauge_at {
            gauge_at += GAUGE_EVERY;
            refresh_gauge(engine.store().as_ref()).await;
        }
        // A full batch means more may be due: claim again at once.
        if claimed > 0 && claimed == free {
            wanted = true;
            continue;
        }
        tokio::select! {
            () = wake.notified() => wanted = true,
            () = tokio::time::sleep(settings.poll) => wanted = true,
            () = shutdown.wait() => {}
            // Full when something became due: claim as soon as a slot frees.
            () = slots.freed.notified(), if free == 0 && wanted => {}
        }
    }
    // Every slot free again: every drive, claimed or handed over, has ended.
    let all = u32::try_from(workers).unwrap_or(u32::MAX);
    let _ = slots.free.acquire_many(all).await;
    tracing::info!("saga workers stopped");
}

/// Drives a claimed saga in its slot (`permit`, taken before the next claim
/// counts the free ones), or in the next free one when a hand-off took it.
fn start_drive(slots: &Arc<Slots>, record: SagaRecord, lease: Lease, permit: Option<OwnedSemaphorePermit>) {
    let slots = slots.clone();
    tokio::spawn(async move {
        let permit = match permit {
            Some(permit) => permit,
            None => match slots.free.clone().acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let _ = slots.engine.drive_leased(record, lease).await;
        drop(permit);
        slots.freed.notify_one();
    });
}

async fn refresh_gauge(store: &dyn SagaStore) {
    const ALL: [SagaStatus; 6] = [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Completed,
        SagaStatus::Compensated,
        SagaStatus::Failed,
        SagaStatus::CompensationFailed,
    ];
    if let Ok(counts) = store.count_by_status().await {
        let names: Vec<&'static str> = ALL.iter().map(|s| s.as_str()).collect();
        metrics::sagas_by_status(&names, counts.iter().map(|(s, n)| (s.as_str(), *n)));
    }
}

/// On PostgreSQL, turns `NOTIFY commerce_sagas` into wake-ups until
/// `shutdown`; reconnects after errors. Does nothing on SQLite (one process).
pub async fn listen_for_wakeups(db: Db, wake: Arc<Notify>, shutdown: Shutdown) {
    let Db::Postgres(shared) = db else { return };
    // Its own connection: a listener holds one for good, which must not come
    // out of the pool that serves requests.
    let options = shared.connect_options().as_ref().clone();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    while !shutdown.is_triggered() {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "saga wake-up listener cannot connect; polling only");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    () = shutdown.wait() => return,
                }
            }
        };
        if let Err(e) = listener.listen("commerce_sagas").await {
            tracing::warn!(error = %e, "LISTEN commerce_sagas failed");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        loop {
            tokio::select! {
                received = listener.recv() => match received {
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "saga wake-up listener lost its connection");
                        break;
                    }
                },
                () = shutdown.wait() => return,
            }
        }
    }
}
