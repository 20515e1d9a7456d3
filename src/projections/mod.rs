//! The read side: projections turn committed order events into read models.
//!
//! # How an event reaches a read model
//! - **Bus (low latency).** Each projection is a consumer group on every
//!   partition of the event bus ([`crate::bus`]); each replica consumes the
//!   partitions it holds a lease on, and the [`runner`] applies what it is
//!   delivered and acknowledges it after the database commit. On a partition
//!   it starts it drains its own pending list, then claims the entries of
//!   earlier owners, then reads new ones. An entry that keeps failing is
//!   dead-lettered.
//! - **Sweep (completeness).** The runner (of the replica holding partition 0)
//!   also reads the event store's settled
//!   log after the projection's checkpoint and applies what the bus has not
//!   delivered (entries trimmed away, lost with a Redis restart, published
//!   while the projection was rebuilt). The checkpoint is the last position of
//!   that log applied, moved only by the sweep, in the transaction of the
//!   read-model change (compare-and-set, see [`checkpoint`]). One sweep
//!   serves the three projections: each batch of the log is read and decoded
//!   once (see [`runner`]), as a rebuild does.
//!
//! Both fold from the rows this process last committed where it holds them
//! ([`fold_cache`]), reading from the database only the rows of orders it
//! does not.
//!
//! # Exactly-once effect
//! Every read-model row carries its stream's version. An event is applied only
//! when it is the row's next version; an older one is a duplicate and skipped.
//! A newer one means an earlier event has not arrived yet (the bus delivers a
//! stream in order, but a republished or dead-lettered entry can arrive late):
//! the runner then reads the missing events from the event store, the source of
//! truth, and applies them in order; the late entry is a duplicate when it
//! comes. Upserts never lower a row's version, so two consumers racing on one
//! order cannot undo each other: every row is the fold of a prefix of its
//! stream, and the longest prefix wins.

pub mod cart_conversion;
pub mod changes;
pub mod customer_orders;
mod error;
pub mod fold_cache;
pub mod order_detail;
pub mod order_event;
pub mod rebuild;
pub mod runner;
pub mod samples;
pub mod status;

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

pub use self::error::ProjectionError;
use crate::{
    domain::order::OrderEvent,
    store::{
        event_store::{ORDER_STREAM, StoredEvent},
        read_models::{ChangedRows, ReadModelError, StoredModel},
    },
};

/// Why events could not be applied to a read model.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An event that can never be applied.
    #[error(transparent)]
    Poison(#[from] ProjectionError),
    /// A batch that moves the checkpoint met streams behind a gap: nothing was
    /// written (the checkpoint must not pass an unapplied event).
    #[error("{} stream(s) behind a gap", .0.len())]
    Gaps(Vec<Gap>),
    /// The store failed (or the checkpoint moved): nothing was written.
    #[error(transparent)]
    Store(#[from] ReadModelError),
}

/// A read model: one row per order (a [`StoredModel`] of the store), folded
/// from the order's events.
pub trait ReadModel: StoredModel {
    /// The projection's name (checkpoint key and consumer group).
    const NAME: &'static str;

    /// The row after `event`, the next event of its stream (`state` is None
    /// before the first).
    fn apply(state: Option<Self>, stored: &StoredEvent, event: &OrderEvent) -> Result<Self, ProjectionError>;
}

/// A stream whose next event has not been seen: events `have + 1 .. wanted`
/// are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The order stream that has a hole.
    pub stream_id: Uuid,
    /// The version the read model is at.
    pub have: u64,
    /// The version of the event that arrived.
    pub wanted: u64,
}

impl<R> ChangedRows<R> for Folded<R> {
    fn changed(&self) -> &[R] {
        &self.changed
    }
}

/// What [`fold`] did with a batch.
#[derive(Debug, Clone)]
pub struct Folded<R> {
    /// Rows that changed, to upsert.
    pub changed: Vec<R>,
    /// Events applied (not counting duplicates and those behind a gap).
    pub applied: usize,
    /// Events skipped as already applied.
    pub duplicates: usize,
    /// Streams left behind a gap (their later events in the batch skipped).
    pub gaps: Vec<Gap>,
}

/// An event with its domain form, decoded on first use and then shared (a
/// rebuild folds every event into three projections; a sweep skips most
/// events as duplicates without decoding them).
pub struct Decoded<'a> {
    /// The event as stored (position, version, raw payload).
    pub stored: &'a StoredEvent,
    event: std::sync::OnceLock<Result<OrderEvent, String>>,
}

impl<'a> Decoded<'a> {
    /// `stored`, not decoded yet.
    pub fn new(stored: &'a StoredEvent) -> Self {
        Self {
            stored,
            event: std::sync::OnceLock::new(),
        }
    }

    /// `stored` with its decoding done already (a sweep that is behind
    /// decodes the next batch on the task that read it, beside the apply of
    /// this one).
    pub fn with_event(stored: &'a StoredEvent, event: Result<OrderEvent, String>) -> Self {
        Self {
            stored,
            event: std::sync::OnceLock::from(event),
        }
    }

    /// Every event of `events`.
    pub fn all(events: &'a [StoredEvent]) -> Vec<Self> {
        events.iter().map(Self::new).collect()
    }

    /// The domain event; poison when it does not decode.
    pub fn event(&self) -> Result<&OrderEvent, ProjectionError> {
        self.event
            .get_or_init(|| order_event::decode(self.stored).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|why| ProjectionError::poison(self.stored, why.clone()))
    }
}

/// Where an event stands for a row at version `have`: the one rule of
/// [`fold_decoded`], also followed by the fold cache's look-ups
/// ([`behind_gaps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Already folded in: skipped.
    Duplicate,
    /// The row's next event: applied.
    Next,
    /// Events between are missing: the stream waits for them.
    Gap,
}

impl Step {
    fn of(have: u64, version: u64) -> Self {
        if version <= have {
            Self::Duplicate
        } else if version == have + 1 {
            Self::Next
        } else {
            Self::Gap
        }
    }
}

/// The streams of `haves` (each at its version) that [`fold_decoded`] would
/// leave behind a gap in `events`, judged by versions alone (nothing is
/// decoded or applied).
pub fn behind_gaps(mut haves: HashMap<Uuid, u64>, events: &[Decoded<'_>]) -> HashSet<Uuid> {
    let mut gapped = HashSet::new();
    for event in events.iter().map(|d| d.stored) {
        if event.stream_type != ORDER_STREAM || gapped.contains(&event.stream_id) {
            continue;
        }
        let Some(have) = haves.get_mut(&event.stream_id) else {
            continue;
        };
        match Step::of(*have, event.version) {
            Step::Duplicate => {}
            Step::Next => *have = event.version,
            Step::Gap => drop(gapped.insert(event.stream_id)),
        }
    }
    gapped
}

/// Folds `events` (in delivery order) into `current` (the rows of their
/// streams, as stored): each event is applied only at its stream's next
/// version. Events of other stream types are ignored.
pub fn fold<R: ReadModel>(
    current: HashMap<Uuid, R>,
    events: &[StoredEvent],
) -> Result<Folded<R>, ProjectionError> {
    fold_decoded(current, &Decoded::all(events))
}

/// [`fold`] over events decoded once for several projections.
pub fn fold_decoded<R: ReadModel>(
    mut current: HashMap<Uuid, R>,
    events: &[Decoded<'_>],
) -> Result<Folded<R>, ProjectionError> {
    // Changed streams in first-change order (deterministic upserts).
    let mut changed: Vec<Uuid> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut gaps: Vec<Gap> = Vec::new();
    let mut gapped: HashSet<Uuid> = HashSet::new();
    let (mut applied, mut duplicates) = (0, 0);
    for decoded in events.iter().filter(|d| d.stored.stream_type == ORDER_STREAM) {
        let event = decoded.stored;
        let have = current.get(&event.stream_id).map_or(0, R::version);
        match Step::of(have, event.version) {
            Step::Duplicate => {
                duplicates += 1;
                continue;
            }
            _ if gapped.contains(&event.stream_id) => continue,
            Step::Gap => {
                gapped.insert(event.stream_id);
                gaps.push(Gap {
                    stream_id: event.stream_id,
                    have,
                    wanted: event.version,
                });
                continue;
            }
            Step::Next => {}
        }
        let state = current.remove(&event.stream_id);
        let next = R::apply(state, event, decoded.event()?)?;
        current.insert(event.stream_id, next);
        if seen.insert(event.stream_id) {
            changed.push(event.stream_id);
        }
        applied += 1;
    }
    Ok(Folded {
        changed: changed.iter().filter_map(|id| current.remove(id)).collect(),
        applied,
        duplicates,
        gaps,
    })
}

/// Folds a whole stream from its first event (ENABLE_CQRS=false reads, and
/// reads that cannot wait for the projection).
pub fn fold_stream<R: ReadModel>(events: &[StoredEvent]) -> Result<Option<R>, ProjectionError> {
    let folded = fold::<R>(HashMap::new(), events)?;
    Ok(folded.changed.into_iter().next())
}

/// The streams of `events`, each once, in first-seen order.
pub fn distinct_streams(events: &[Decoded<'_>]) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    events
        .iter()
        .map(|e| e.stored.stream_id)
        .filter(|id| seen.insert(*id))
        .collect()
}
