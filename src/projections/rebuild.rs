//! `commerce rebuild-projections`: rebuilds every read model from the event
//! store while the service keeps serving.
//!
//! 1. Claim: mark the projections rebuilding (refused while another rebuild
//!    reports; a rebuild that stopped reporting for 30 s is taken as dead).
//! 2. Replay: read the settled log from the start in large batches and fold it
//!    into empty shadow tables (`<table>_rebuild`, same columns and indexes),
//!    with bulk upserts. The three shadows are written concurrently while the
//!    next batch is read.
//! 3. Catch up: keep reading until a read comes back short (the head).
//! 4. Swap: in one transaction, rename each shadow over its live table and set
//!    the checkpoints to the last replayed position, bumping their generation.
//!
//! Meanwhile the live projections keep applying to the live tables. Whatever
//! they applied after the replay's last position is not lost by the swap:
//! the checkpoint is that position, so the live sweep applies it again to the
//! new tables (and a sweep still running on the old tables fails its
//! compare-and-set and writes nothing).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use uuid::Uuid;

use super::{
    cart_conversion::CartConversion, customer_orders::CustomerOrder, order_detail::OrderDetail,
    status::PROJECTIONS,
};
use crate::{
    error::AppError,
    projections::{Decoded, ReadModel, distinct_streams, fold_decoded},
    store::{
        event_store::{EventStore, StoredEvent},
        read_models::{ReadModelStore, ReadModels, StoredRow, shadow_table},
    },
};

/// Events per read of the replay.
pub const DEFAULT_BATCH: usize = 20_000;

/// Live tables, in [`PROJECTIONS`] order.
const TABLES: [&str; 3] = [OrderDetail::TABLE, CustomerOrder::TABLE, CartConversion::TABLE];

/// Progress of a running rebuild.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Events replayed so far.
    pub replayed: i64,
    /// Events to replay (the head when the rebuild started, raised as the
    /// replay passes it).
    pub total: i64,
    /// Time since the replay started.
    pub elapsed: Duration,
}

impl Progress {
    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.replayed as f64 / seconds
        } else {
            0.0
        }
    }
}

/// What a finished rebuild did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Events folded into the shadow tables.
    pub events: i64,
    /// Wall time of replay and swap.
    pub elapsed: Duration,
    /// The checkpoint the rebuilt projections start from.
    pub position: i64,
}

impl Report {
    /// Replayed events per second of wall time (the figure README quotes).
    pub fn rate(&self) -> f64 {
        Progress {
            replayed: self.events,
            total: self.events,
            elapsed: self.elapsed,
        }
        .rate()
    }
}

/// A rebuild of every projection.
pub struct Rebuild {
    store: ReadModelStore,
    events: Arc<dyn EventStore>,
    batch: usize,
}

impl Rebuild {
    /// A rebuild of the read models in `store` from `events`.
    pub fn new(store: ReadModelStore, events: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            events,
            batch: DEFAULT_BATCH,
        }
    }

    /// Sets the events per read.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Runs the rebuild; `on_progress` hears about every batch.
    pub async fn run(&self, mut on_progress: impl FnMut(&Progress) + Send) -> Result<Report, AppError> {
        let total = self.events.head_position().await?;
        self.store.begin_rebuild(&PROJECTIONS, total).await?;
        let result = self.replay_and_swap(total, &mut on_progress).await;
        if result.is_err() {
            // Leave the live tables as they were and release the claim.
            let _ = self.store.drop_shadows(&TABLES).await;
            let _ = self.store.end_rebuild(&PROJECTIONS).await;
        }
        result
    }

    async fn replay_and_swap(
        &self,
        total: i64,
        on_progress: &mut (impl FnMut(&Progress) + Send),
    ) -> Result<Report, AppError> {
        self.store.create_shadows(&TABLES).await?;
        let started = Instant::now();
        let mut progress = Progress {
            replayed: 0,
            total,
            elapsed: Duration::ZERO,
        };
        let mut last_beat = Instant::now();
        let mut cursor = 0;
        // Read ahead: the next batch is fetched while this one is applied.
        let mut next = Some(tokio::spawn(read(self.events.clone(), cursor, self.batch)));
        let mut details = Shadow::<OrderDetail>::new();
        let mut lists = Shadow::<CustomerOrder>::new();
        let mut conversions = Shadow::<CartConversion>::new();
        while let Some(reading) = next.take() {
            let batch = reading.await.map_err(|e| AppError::Internal(e.into()))??;
            let Some(last) = batch.last() else { break };
            cursor = last.global_position;
            if batch.len() == self.batch {
                next = Some(tokio::spawn(read(self.events.clone(), cursor, self.batch)));
            }
            // Decoded once, folded three times.
            let decoded = Decoded::all(&batch);
            tokio::try_join!(
                details.apply(&self.store, &decoded),
                lists.apply(&self.store, &decoded),
                conversions.apply(&self.store, &decoded),
            )?;
            progress.replayed += batch.len() as i64;
            progress.total = progress.total.max(progress.replayed);
            progress.elapsed = started.elapsed();
            on_progress(&progress);
            if last_beat.elapsed() >= Duration::from_millis(500) {
                last_beat = Instant::now();
                self.store
                    .rebuild_progress(&PROJECTIONS, progress.replayed, progress.total)
                    .await?;
            }
        }
        let swaps: Vec<(&str, &str)> = PROJECTIONS.into_iter().zip(TABLES).collect();
        self.store.swap_shadows(&swaps, cursor).await?;
        progress.total = progress.replayed;
        on_progress(&progress);
        Ok(Report {
            events: progress.replayed,
            elapsed: started.elapsed(),
            position: cursor,
        })
    }
}

/// What the rebuild knows of one shadow table, so that it rarely reads it
/// back: the rows the last batch wrote (an order's events are close together
/// in the log) and the ids of every row written (any other id is new).
struct Shadow<R> {
    recent: HashMap<Uuid, R>,
    written: HashSet<Uuid>,
}

impl<R: ReadModel> Shadow<R> {
    fn new() -> Self {
        Self {
            recent: HashMap::new(),
            written: HashSet::new(),
        }
    }

    async fn apply(&mut self, store: &ReadModelStore, batch: &[Decoded<'_>]) -> Result<(), AppError> {
        let table = shadow_table(R::TABLE);
        let ids = distinct_streams(batch);
        let mut current: HashMap<Uuid, R> = HashMap::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for id in ids {
            match self.recent.remove(&id) {
                Some(row) => drop(current.insert(id, row)),
                None if self.written.contains(&id) => unknown.push(id),
                None => {}
            }
        }
        for row in store.load::<R>(&table, &unknown).await? {
            current.insert(row.stream_id(), row);
        }
        let folded = fold_decoded::<R>(current, batch).map_err(|e| AppError::Internal(e.into()))?;
        if let Some(gap) = folded.gaps.first() {
            // A replay from the start cannot meet a gap unless the log is broken.
            return Err(AppError::Internal(anyhow::anyhow!(
                "{}: stream {} jumps from version {} to {} in the settled log",
                R::NAME,
                gap.stream_id,
                gap.have,
                gap.wanted
            )));
        }
        store.upsert::<R>(&table, &folded.changed).await?;
        self.written.extend(folded.changed.iter().map(R::stream_id));
        self.recent = folded
            .changed
            .into_iter()
            .map(|row| (row.stream_id(), row))
            .collect();
        Ok(())
    }
}

async fn read(events: Arc<dyn EventStore>, after: i64, limit: usize) -> Result<Vec<StoredEvent>, AppError> {
    Ok(events.read_all(after, limit).await?)
}
