//! The rows this process last folded and committed, per projection, so that a
//! batch's fold starts from memory instead of reading its orders' rows back
//! from the database (issue 17: those reads were about 3.8 statements per
//! order, and PostgreSQL's CPU per order bounds the throughput).
//!
//! One implementation for both databases: it sits above the store
//! ([`ReadModels::update`]) and hands it only the ids it cannot answer, so a
//! batch whose rows are all known reads nothing.
//!
//! # Why a row from memory is never a wrong start
//! - **The fold is deterministic.** A row at version `v` is the fold of its
//!   stream's events `1..=v`, whoever computed it (a row carries nothing but
//!   what its events give: no clock, no replica). So a kept row is exactly the
//!   database's row at that version, or an older one. (Exactly up to the
//!   columns' precision: a kept row may hold an event's time finer than
//!   the column stores it, milliseconds on SQLite, and the fold only copies
//!   times, so a row written from it stores the same value.)
//! - **Older is only a cost.** Another replica may have applied later events
//!   while it held the order's partition (partitions move between replicas
//!   with their leases, and the sweep of partition 0's owner applies every
//!   partition's events). A row kept at `v` while the database holds `w > v`
//!   then meets the batch's events at one of two places. If the batch goes on
//!   from `v + 1` (it holds `v + 1 ..`), the fold computes rows the database
//!   holds or will hold, and the upsert, which never lowers a version, keeps
//!   the longer prefix. If the batch jumps past `v + 1` (it starts at
//!   `w + 1`), the kept row would show a gap the database does not have: that
//!   row is not used, and the order's row is read from the database instead
//!   ([`behind_gaps`], the fold's own rule over versions), so a gap is
//!   reported (and filled from the event store) only when the database's row
//!   has it too, as before this cache.
//! - **Newer must never happen**, or the fold would skip events as
//!   duplicates that the database never got. Three rules keep it so:
//!   1. Rows enter only after their write committed, and only rows of that
//!      write ([`Folded::changed`]). A failed or rolled-back write (a store
//!      error, a moved checkpoint, a gap or poison refusing the batch) enters
//!      nothing, and the rows kept before stay, still true. The upsert may
//!      have skipped a row whose stored version was already equal or higher:
//!      the kept row is then an equal or older one, which is allowed.
//!   2. Rows are kept per table generation. A rebuild swaps a new table in,
//!      filled up to the rebuild's end, and bumps the checkpoint's
//!      generation: rows kept from the old table may be newer than the new
//!      table's. Every write that starts from kept rows is guarded by the
//!      generation they were kept under ([`Guard::Generation`], or the
//!      sweep's checkpoint compare-and-set, which includes it), checked in
//!      the write itself, so such a write commits only while the table is
//!      still that generation; when it fails, the rows of that generation are
//!      dropped and the batch is folded again from the database. A rebuild's
//!      shadow tables never come here (the rebuild keeps its own rows,
//!      [`crate::projections::rebuild`]).
//!   3. Nothing but the fold writes read-model rows: retention purges sagas,
//!      idempotency keys and dead letters, never read models
//!      (`app::retention`), and ForgetCustomer destroys the customer's key
//!      (`privacy`): read models hold personal fields sealed as the events
//!      carry them, so rows here hold the same sealed form as the database,
//!      and erasure takes effect where they are opened, in the query. Were a
//!      writer outside the fold ever added, it would have to clear the rows
//!      it touches here, or bump the generation.
//!
//! A new order needs no read either: when a batch holds an order's stream
//! from version 1 on, the fold from nothing is that order's row, whatever the
//! database has (rules above: equal or older, and the upsert keeps the
//! longer prefix).
//!
//! # Bounded
//! At most about [`FoldCache::DEFAULT_ROWS`] rows per projection by default
//! (`PROJECTION_CACHE_ROWS`), in two halves: new and used rows go to the
//! young half; when it is full it becomes the old half and the previous old
//! half is dropped, so a row read again is kept and one unused for a whole
//! half's worth of writes goes (a cheap approximation of least recently
//! used). An order needs its row only while events still arrive for it: at
//! 700 orders/s (twice the fulfillment bench's 32-worker rate), an order's
//! saga lasts well under a second and the sweep is about a second behind the
//! bus, so 4,000 orders cover more than five seconds of orders; an older
//! order's next event costs one row read, as without the cache. Full, the
//! three projections' 30,000 rows of a 10,000-row setting took about 18 MB
//! (peak RSS of the projection catch-up bench, BENCHMARKS.md): the default
//! keeps that to about 7 MB.

use std::{
    any::Any,
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use uuid::Uuid;

use super::{ApplyError, Decoded, Folded, ReadModel, behind_gaps, distinct_streams, fold_decoded};
use crate::store::read_models::{Advance, Guard, ReadModelError, ReadModelStore, ReadModels};

/// The rows each projection of this process last committed (see the module
/// documentation for why they can stand in for the database's).
pub struct FoldCache {
    /// Rows kept per projection at most (about; 0 keeps none).
    capacity: usize,
    /// Per projection name, its `Arc<Mutex<Rows<R>>>`.
    models: Mutex<HashMap<&'static str, Arc<dyn Any + Send + Sync>>>,
    /// Rows asked of the database by the folds that went through this cache.
    rows_read: AtomicU64,
}

impl Default for FoldCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_ROWS)
    }
}

impl std::fmt::Debug for FoldCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldCache")
            .field("capacity", &self.capacity)
            .field("rows_read", &self.rows_read())
            .finish_non_exhaustive()
    }
}

impl FoldCache {
    /// Rows kept per projection by default (why this many: module documentation).
    pub const DEFAULT_ROWS: usize = crate::config::PROJECTION_CACHE_ROWS;

    /// A cache keeping about `capacity` rows per projection (0: off, every
    /// fold reads all its rows, as before the cache).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            models: Mutex::default(),
            rows_read: AtomicU64::new(0),
        }
    }

    /// Rows the folds through this cache asked of the database so far (the
    /// reads it did not save; tests and the bench count them).
    pub fn rows_read(&self) -> u64 {
        self.rows_read.load(Ordering::Relaxed)
    }

    /// Applies `events` to `R`'s live table in one write, each at its
    /// stream's next version, starting from the rows kept here where they
    /// serve (all rows are read with a capacity of 0), and keeps the rows the
    /// write committed. With `advance` (the sweep) the checkpoint moves
    /// in the write, and a batch meeting a gap writes nothing
    /// ([`ApplyError::Gaps`]); without, the write is guarded by the table's
    /// generation, and gaps come back in [`Folded::gaps`] to be filled.
    pub async fn apply<R: ReadModel>(
        &self,
        store: &ReadModelStore,
        events: &[Decoded<'_>],
        advance: Option<Advance>,
    ) -> Result<Folded<R>, ApplyError> {
        let rows = self.rows::<R>();
        let ids = distinct_streams(events);
        let mut refolded = false;
        loop {
            let kept = lock(&rows).generation;
            let generation = match advance {
                Some(advance) => advance.from.generation,
                None => match kept {
                    Some(generation) => generation,
                    None => {
                        let generation = store.checkpoint(R::NAME).await?.generation;
                        lock(&rows).learn(generation);
                        generation
                    }
                },
            };
            let (known, unknown) = lock(&rows).known(generation, &ids, events);
            self.rows_read.fetch_add(unknown.len() as u64, Ordering::Relaxed);
            let guard = advance.map_or(Guard::Generation(generation), Guard::Advance);
            let outcome = store
                .update(R::TABLE, &unknown, Some((R::NAME, guard)), |loaded| {
                    let mut current = known;
                    current.extend(loaded);
                    let folded = fold_decoded::<R>(current, events)?;
                    if advance.is_some() && !folded.gaps.is_empty() {
                        return Err(ApplyError::Gaps(folded.gaps));
                    }
                    Ok(folded)
                })
                .await;
            match outcome {
                Ok(folded) => {
                    // Committed: these rows (or newer ones) are in the table of
                    // `generation` now.
                    lock(&rows).committed(generation, &folded.changed);
                    return Ok(folded);
                }
                // A rebuild swapped the table since this process learned its
                // generation: the kept rows may be newer than the new table's.
                // Nothing was written; fold again from the database, once.
                Err(ApplyError::Store(ReadModelError::CheckpointMoved(_)))
                    if advance.is_none() && !refolded =>
                {
                    lock(&rows).forget(generation);
                    refolded = true;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// `R`'s rows (created empty on first use).
    fn rows<R: ReadModel>(&self) -> Arc<Mutex<Rows<R>>> {
        let mut models = lock(&self.models);
        let model = models
            .entry(R::NAME)
            .or_insert_with(|| {
                Arc::new(Mutex::new(Rows::<R>::new(self.capacity))) as Arc<dyn Any + Send + Sync>
            })
            .clone();
        drop(models);
        // One type per name: `ReadModel::NAME` is unique per row type.
        model
            .downcast::<Mutex<Rows<R>>>()
            .unwrap_or_else(|_| Arc::new(Mutex::new(Rows::new(self.capacity))))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One projection's kept rows, all of one table generation.
struct Rows<R> {
    /// Rows kept at most (about: each half holds half of it, rounded up).
    capacity: usize,
    /// The generation of the live table the rows were committed to (None:
    /// not learned yet, or forgotten after a swap).
    generation: Option<i64>,
    /// Rows written or used since the halves last turned.
    young: HashMap<Uuid, R>,
    /// The half before; dropped at the next turn.
    old: HashMap<Uuid, R>,
}

impl<R> Rows<R> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            generation: None,
            young: HashMap::new(),
            old: HashMap::new(),
        }
    }
}

impl<R: ReadModel> Rows<R> {
    /// Splits `ids` into the rows known for a fold of `events` on the table
    /// of `generation` (kept rows that go on without a gap; new orders, whose
    /// stream the batch holds from version 1, are known to start from
    /// nothing and are simply absent) and the ids whose rows must be read.
    fn known(
        &mut self,
        generation: i64,
        ids: &[Uuid],
        events: &[Decoded<'_>],
    ) -> (HashMap<Uuid, R>, Vec<Uuid>) {
        if self.capacity == 0 {
            // Off: every row is read, as before the cache.
            return (HashMap::new(), ids.to_vec());
        }
        let mut known: HashMap<Uuid, R> = HashMap::with_capacity(ids.len());
        if self.generation == Some(generation) {
            for id in ids {
                if let Some(row) = self.get(id) {
                    known.insert(*id, row.clone());
                }
            }
        }
        let haves = ids
            .iter()
            .map(|id| (*id, known.get(id).map_or(0, R::version)))
            .collect();
        let gapped = behind_gaps(haves, events);
        known.retain(|id, _| !gapped.contains(id));
        let unknown = ids.iter().filter(|id| gapped.contains(id)).copied().collect();
        (known, unknown)
    }

    /// Keeps `rows`, just committed to the table of `generation`.
    fn committed(&mut self, generation: i64, rows: &[R]) {
        if self.capacity == 0 {
            return;
        }
        match self.generation {
            // Written to an older table than the rows kept: not kept.
            Some(kept) if kept > generation => return,
            Some(kept) if kept == generation => {}
            _ => self.learn(generation),
        }
        for row in rows {
            let id = row.stream_id();
            // Another write of this process may have kept a longer prefix
            // meanwhile (the sweep and the bus consumer race on an order).
            if self.get(&id).is_some_and(|kept| kept.version() >= row.version()) {
                continue;
            }
            self.insert(id, row.clone());
        }
    }

    /// Starts over at `generation` (newer than the rows kept).
    fn learn(&mut self, generation: i64) {
        if self.generation.is_none_or(|kept| kept < generation) {
            self.young.clear();
            self.old.clear();
            self.generation = Some(generation);
        }
    }

    /// Drops every row if they are still of `generation` (its table was
    /// swapped out); the generation is learned again.
    fn forget(&mut self, generation: i64) {
        if self.generation == Some(generation) {
            self.young.clear();
            self.old.clear();
            self.generation = None;
        }
    }

    /// The row of `id`, moved to the young half if it was in the old.
    fn get(&mut self, id: &Uuid) -> Option<&R> {
        if let Some(row) = self.old.remove(id) {
            self.insert(*id, row);
        }
        self.young.get(id)
    }

    /// Keeps `row` in the young half; a full young half becomes the old one
    /// (and the old one goes).
    fn insert(&mut self, id: Uuid, row: R) {
        let half = self.capacity.div_ceil(2);
        if self.young.len() >= half && !self.young.contains_key(&id) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&id);
        self.young.insert(id, row);
    }
}
