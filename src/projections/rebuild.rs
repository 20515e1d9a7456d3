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
        read_models::{ReadModelStore, StoredRow, shadow_table},
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
    /// Events replayed.
    pub events: i64,
    /// Wall time of replay and swap.
    pub elapsed: Duration,
    /// The checkpoint the rebuilt projections start from.
    pub position: i64,
}

impl Report {
    /// Events per second.
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

/// What `commerce rebuild-projections` does with an event store that holds no events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmptyStore {
    /// Stop with an error: an empty store usually means the command was pointed at the wrong
    /// database (without DATABASE_URL it would otherwise create `./commerce.db` and "succeed").
    Refuse,
    /// Rebuild anyway (`--allow-empty`): empty read models, creating the SQLite file if needed.
    Allow,
}

/// `commerce rebuild-projections`: says which database it works on, refuses a
/// missing or empty one unless `empty` allows it, rebuilds, drawing progress
/// on stderr (a bar on a terminal, a line every few seconds otherwise), and
/// prints the rate at the end.
pub async fn command(
    database: &crate::config::DatabaseSettings,
    batch: usize,
    empty: EmptyStore,
) -> anyhow::Result<Report> {
    use std::io::{IsTerminal, Write};

    let target = crate::db::describe(database);
    eprintln!("rebuilding the read models of {target}");
    let allow_empty = "pass --allow-empty to rebuild empty read models anyway";
    if empty == EmptyStore::Refuse
        && database.url.is_none()
        && !std::path::Path::new(&database.sqlite_path).exists()
    {
        anyhow::bail!(
            "{target} does not exist: no event store to rebuild from (DATABASE_URL is unset). \
             Set DATABASE_URL or SQLITE_PATH to the service's database, or {allow_empty}"
        );
    }
    let db = crate::db::Db::connect(database).await?;
    if database.run_migrations {
        db.migrate().await?;
    }
    let events =
        crate::store::event_store::event_store(&db, crate::store::event_store::OrderCodec::upcasters());
    if empty == EmptyStore::Refuse && events.head_position().await? == 0 {
        anyhow::bail!(
            "the event store of {target} holds no events: is this the service's database? {allow_empty}"
        );
    }
    let rebuild = Rebuild::new(ReadModelStore::new(&db), events).with_batch(batch);
    let terminal = std::io::stderr().is_terminal();
    let mut last_draw: Option<Instant> = None;
    let every = if terminal {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(2)
    };
    let report = rebuild
        .run(|progress| {
            if last_draw.is_some_and(|t| t.elapsed() < every) {
                return;
            }
            last_draw = Some(Instant::now());
            let line = progress_line(progress);
            let mut err = std::io::stderr();
            let _ = if terminal {
                write!(err, "\r{line}")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if terminal {
        eprintln!(
            "\r{}",
            progress_line(&Progress {
                replayed: report.events,
                total: report.events,
                elapsed: report.elapsed,
            })
        );
    }
    println!(
        "rebuilt {} projections of {target} from {} events in {:.2} s: {:.0} events/s (checkpoint {})",
        PROJECTIONS.len(),
        report.events,
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.position
    );
    Ok(report)
}

/// `[=========>          ]  45.2%  123456/270000 events  52311 events/s`.
fn progress_line(progress: &Progress) -> String {
    const WIDTH: usize = 30;
    let ratio = if progress.total > 0 {
        (progress.replayed as f64 / progress.total as f64).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let filled = (ratio * WIDTH as f64) as usize;
    let bar: String = (0..WIDTH)
        .map(|i| match i.cmp(&filled) {
            std::cmp::Ordering::Less => '=',
            std::cmp::Ordering::Equal => '>',
            std::cmp::Ordering::Greater => ' ',
        })
        .collect();
    format!(
        "[{bar}] {:5.1}%  {}/{} events  {:.0} events/s",
        ratio * 100.0,
        progress.replayed,
        progress.total,
        progress.rate()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_shows_bar_share_counts_and_rate() {
        let line = progress_line(&Progress {
            replayed: 50,
            total: 200,
            elapsed: Duration::from_secs(2),
        });
        assert!(line.starts_with("[=======>"), "{line}");
        assert!(line.contains(" 25.0%  50/200 events  25 events/s"), "{line}");
    }
}
