//! The sweep, shared by the projections of one [`Projector`]: each batch of
//! the settled log is read once and decoded once, then applied to every
//! projection whose checkpoint is where the batch starts, concurrently, each
//! in its own transaction that moves its own checkpoint (compare-and-set).
//!
//! # Why shared
//! A backlog the bus never carried (events copied into the store, a Redis
//! restart without persistence, a long outage) is caught up by the sweep
//! alone. Swept per projection, every projection read and decoded the same
//! events on its own, in batches of [`RunnerSettings::sweep_batch`] with a
//! checkpoint read per batch, and the three competed for the same two cores:
//! the slowest fell to about a third of the rebuild's rate. Shared, the work
//! per event is the rebuild's ([`crate::projections::rebuild`]): one read,
//! one decode, three folds.
//!
//! # What does not change
//! Each projection keeps its own checkpoint, moved only with its own
//! read-model change and only from where it was read (a concurrent sweep of
//! another replica, or a rebuild's swap, makes it fail and write nothing); a
//! batch that meets a gap is refilled from the stream and retried, as before;
//! a projection whose batch fails drops out of this pass (the others go on)
//! and is retried at the next. Projections at different checkpoints (one was
//! stuck) are swept one group after the other: positions cannot be compared
//! across checkpoints (see [`EventStore::read_all`]), so only equal ones share
//! reads.
//!
//! # Behind and caught up
//! While reads come back full, the batch doubles up to
//! [`RunnerSettings::sweep_batch_max`] and the next batch is read (and
//! decoded) on another task while this one is applied. A read that comes back
//! short is the head: a caught-up sweep reads one short batch a period and
//! decodes only what the folds need (the bus has applied most of it). A pass
//! ends after `lease / 3` so that the runner renews its leases; the next pass
//! starts at once.

use std::{
    collections::BTreeMap,
    marker::PhantomData,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{Failure, Projection, Projector, RunnerSettings};
use crate::{
    domain::order::OrderEvent,
    projections::{ApplyError, ApplyEvents, Decoded, Gap, order_event},
    store::{
        event_store::{EventStore, ORDER_STREAM, StoredEvent},
        read_models::{Advance, Checkpoint, ReadModelError, ReadModels},
    },
};

/// Gap refills a projection gets per batch before the batch counts as failed.
const GAP_RETRIES: usize = 3;

/// A member of the group: its runners on this projector, and the projection.
struct Member {
    runners: usize,
    model: Arc<dyn Swept>,
}

/// The projections running on one projector (and its clones), swept together.
#[derive(Default)]
pub(super) struct SweepGroup {
    members: Mutex<BTreeMap<&'static str, Member>>,
    /// When the last pass started (None: sweep now).
    started: Mutex<Option<Instant>>,
    /// Held by the pass in progress: the runner that finds it taken leaves
    /// the sweep to that pass, which covers its projection too.
    running: tokio::sync::Mutex<()>,
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepPass {
    /// Events read from the log (each counted once, whatever the projections).
    pub read: usize,
    /// The pass ran out of time with more to read: sweep again now.
    pub more: bool,
}

/// Leaves the group when the runner ends.
pub(super) struct Membership {
    group: Arc<SweepGroup>,
    name: &'static str,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut members = self.group.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(member) = members.get_mut(self.name) {
            member.runners -= 1;
            if member.runners == 0 {
                members.remove(self.name);
            }
        }
    }
}

impl SweepGroup {
    /// Adds projection `P` (a runner of it started).
    pub(super) fn join<P: Projection>(self: &Arc<Self>) -> Membership {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members
            .entry(P::NAME)
            .or_insert_with(|| Member {
                runners: 0,
                model: Arc::new(Model::<P>(PhantomData)),
            })
            .runners += 1;
        Membership {
            group: self.clone(),
            name: P::NAME,
        }
    }

    /// How long until the next pass is due.
    pub(super) fn until_due(&self, every: Duration) -> Duration {
        let started = *self.started.lock().unwrap_or_else(|e| e.into_inner());
        started.map_or(Duration::ZERO, |t| every.saturating_sub(t.elapsed()))
    }

    /// Makes the next pass due at once.
    fn due_now(&self) {
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn members(&self) -> Vec<Arc<dyn Swept>> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.values().map(|member| member.model.clone()).collect()
    }
}

/// A projection as the shared sweep drives it (`P` erased).
#[async_trait::async_trait]
trait Swept: Send + Sync {
    fn name(&self) -> &'static str;
    /// Applies `events` to the live table, moving the checkpoint by `advance`.
    async fn apply(
        &self,
        projector: &Projector,
        events: &[Decoded<'_>],
        advance: Advance,
    ) -> Result<(), ApplyError>;
    async fn fill_gaps(&self, projector: &Projector, gaps: &[Gap]) -> Result<(), Failure>;
}

struct Model<P>(PhantomData<fn() -> P>);

#[async_trait::async_trait]
impl<P: Projection> Swept for Model<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    async fn apply(
        &self,
        projector: &Projector,
        events: &[Decoded<'_>],
        advance: Advance,
    ) -> Result<(), ApplyError> {
        let folded = projector
            .store
            .apply_decoded::<P>(P::TABLE, events, Some(advance))
            .await?;
        P::announce(&folded.changed, &projector.changes);
        Ok(())
    }

    async fn fill_gaps(&self, projector: &Projector, gaps: &[Gap]) -> Result<(), Failure> {
        projector.fill_gaps::<P>(gaps).await
    }
}

/// A projection in a pass, at its checkpoint.
struct Cursor {
    model: Arc<dyn Swept>,
    checkpoint: Checkpoint,
}

/// A batch of the log; `decoded` when it was read ahead (decoded on the
/// reading task), else decoded lazily by the folds.
struct Batch {
    events: Vec<StoredEvent>,
    decoded: Option<Vec<Option<Result<OrderEvent, String>>>>,
}

impl Batch {
    /// The events as the folds share them (decoded ones handed over).
    fn shared(&mut self) -> Vec<Decoded<'_>> {
        match self.decoded.take() {
            Some(decoded) => self
                .events
                .iter()
                .zip(decoded)
                .map(|(stored, event)| match event {
                    Some(event) => Decoded::with_event(stored, event),
                    None => Decoded::new(stored),
                })
                .collect(),
            None => Decoded::all(&self.events),
        }
    }
}

async fn read(events: Arc<dyn EventStore>, after: i64, limit: usize, decode: bool) -> Result<Batch, Failure> {
    let events = events.read_all(after, limit).await?;
    let decoded = decode.then(|| {
        events
            .iter()
            .map(|stored| {
                (stored.stream_type == ORDER_STREAM)
                    .then(|| order_event::decode(stored).map_err(|e| e.to_string()))
            })
            .collect()
    });
    Ok(Batch { events, decoded })
}

impl Projector {
    /// One pass of the shared sweep over every projection running on this
    /// projector, unless another runner's pass is under way (it covers them
    /// all). Errors of single projections are logged; the pass goes on
    /// without them.
    pub async fn sweep_all(&self) -> Result<SweepPass, String> {
        let Ok(_running) = self.sweeps.running.try_lock() else {
            return Ok(SweepPass::default());
        };
        let started = Instant::now();
        *self.sweeps.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
        let members = self.sweeps.members();
        if members.is_empty() {
            return Ok(SweepPass::default());
        }
        let checkpoints = self.store.checkpoints().await.map_err(|e| e.to_string())?;
        // Projections at the same checkpoint share their reads.
        let mut groups: BTreeMap<i64, Vec<Cursor>> = BTreeMap::new();
        for model in members {
            let checkpoint = checkpoints
                .iter()
                .find(|status| status.name == model.name())
                .map(|status| status.checkpoint)
                .unwrap_or_default();
            groups
                .entry(checkpoint.position)
                .or_default()
                .push(Cursor { model, checkpoint });
        }
        let deadline = started + self.settings.lease / 3;
        let mut pass = SweepPass::default();
        for (position, cursors) in groups {
            let (read, more) = self.sweep_group(position, cursors, deadline).await?;
            pass.read += read;
            pass.more |= more;
        }
        if pass.more {
            self.sweeps.due_now();
        }
        Ok(pass)
    }

    /// Sweeps `cursors` (all at `position`) to the head or the deadline;
    /// returns the events read and whether there is more.
    async fn sweep_group(
        &self,
        mut position: i64,
        mut cursors: Vec<Cursor>,
        deadline: Instant,
    ) -> Result<(usize, bool), String> {
        let settings: &RunnerSettings = &self.settings;
        let mut limit = settings.sweep_batch.max(1);
        let mut read_total = 0;
        let mut ahead: Option<tokio::task::JoinHandle<Result<Batch, Failure>>> = None;
        loop {
            let mut batch = match ahead.take() {
                Some(reading) => reading.await.map_err(|e| e.to_string())?,
                None => read(self.events.clone(), position, limit, false).await,
            }
            .map_err(|e| format!("{e:?}"))?;
            let Some(last) = batch.events.last().map(|e| e.global_position) else {
                return Ok((read_total, false));
            };
            let full = batch.events.len() == limit;
            let more = full && Instant::now() < deadline;
            if more {
                // Behind: larger reads, and the next one beside this apply.
                limit = (limit * 2).min(settings.sweep_batch_max.max(settings.sweep_batch));
                ahead = Some(tokio::spawn(read(self.events.clone(), last, limit, true)));
            }
            read_total += batch.events.len();
            let shared = batch.shared();
            let applied = futures::future::join_all(
                cursors
                    .iter()
                    .map(|cursor| self.apply_swept(cursor, &shared, last)),
            )
            .await;
            let mut kept = Vec::with_capacity(cursors.len());
            for (mut cursor, outcome) in cursors.into_iter().zip(applied) {
                match outcome {
                    Ok(()) => {
                        cursor.checkpoint.position = last;
                        kept.push(cursor);
                    }
                    // Another replica's sweep (or a rebuild swap) moved it
                    // first: nothing was written; the next pass starts there.
                    Err(ApplyError::Store(ReadModelError::CheckpointMoved(_))) => {}
                    Err(error) => {
                        tracing::warn!(projection = cursor.model.name(), error = %format!("{error:#}"), "sweep failed; retrying");
                    }
                }
            }
            cursors = kept;
            position = last;
            if cursors.is_empty() || !more {
                if let Some(reading) = ahead {
                    reading.abort();
                }
                return Ok((read_total, full && !cursors.is_empty()));
            }
        }
    }

    /// Applies a batch ending at `last` to one projection, refilling gaps
    /// from the streams and retrying (the checkpoint must not pass an
    /// unapplied event).
    async fn apply_swept(
        &self,
        cursor: &Cursor,
        events: &[Decoded<'_>],
        last: i64,
    ) -> Result<(), ApplyError> {
        let advance = Advance {
            from: cursor.checkpoint,
            to: last,
        };
        let mut retries = 0;
        loop {
            match cursor.model.apply(self, events, advance).await {
                Err(ApplyError::Gaps(gaps)) if retries < GAP_RETRIES => {
                    retries += 1;
                    if let Err(failure) = cursor.model.fill_gaps(self, &gaps).await {
                        tracing::debug!(projection = cursor.model.name(), ?failure, "filling gaps failed");
                        return Err(ApplyError::Gaps(gaps));
                    }
                }
                outcome => return outcome,
            }
        }
    }
}
