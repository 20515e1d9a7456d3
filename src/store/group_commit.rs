//! Group commit on PostgreSQL: concurrent writes share one transaction.
//!
//! A transaction per command pays a BEGIN, a COMMIT and a WAL flush per
//! command; under load those dominate and cap a single database at a few
//! thousand commands per second. Writes are therefore queued to a few
//! writers. A writer takes everything queued (up to [`MAX_BATCH`]), hands the
//! whole batch to a [`BatchWriter`] inside one transaction, and commits once.
//! While one writer commits, the next batch gathers: the batch size follows
//! the load, and a lone request waits for no timer.
//!
//! The queued items are values, not closures, so that a batch can be written
//! with one statement per table and, on a failure, written again item by
//! item. Two writers use it: the event store's appends
//! ([`crate::store::event_store`]) and units of work
//! ([`crate::store::unit_of_work`]).
//!
//! One refusal never fails the others. An item the writer *refuses* (a
//! stream that moved, caught by a guard in the statement) writes nothing and
//! the batch goes on; the caller explains the refusal after the commit. An
//! item whose statements *fail* (a unique violation from another process's
//! transaction, a lease that was lost, a key never claimed) aborts the
//! transaction: the batch is rolled back and every item in it runs again
//! alone, so only the failing one fails. Failures are rare, so no savepoint
//! is paid per item.
//!
//! An item is only answered once its batch's commit is durable.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use sqlx::{Connection, PgConnection, PgPool, Postgres, pool::PoolConnection};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::db::PING_IDLE_AFTER;

/// Most items in one transaction: bounds a batch's latency and lock span.
pub const MAX_BATCH: usize = 64;

/// Most writers committing in parallel: enough to overlap one batch's commit
/// with the next batch's statements, few enough to leave the pool to
/// everyone else.
pub const WRITERS: usize = 4;

/// Connections of the pool per writer: a writer keeps its connection
/// ([`HeldConnection`]), so the writers hold at most a quarter of the pool
/// and the rest serves the statements outside units of work (the key's
/// claim, reads, projections). With all of a small pool held by writers,
/// CreateOrder could not claim its key and no unit would reach them.
const POOL_SHARE: usize = 4;

/// How many writers a pool of `max_connections` gets (one per
/// [`POOL_SHARE`] connections, at least one, at most [`WRITERS`]), and
/// whether they keep their connections (not in a pool of fewer than
/// [`POOL_SHARE`]: its one writer gives its connection back after each batch).
fn writers_for(max_connections: u32) -> (usize, bool) {
    let max = max_connections as usize;
    ((max / POOL_SHARE).clamp(1, WRITERS), max >= POOL_SHARE)
}

/// Items waiting for a writer; beyond this, callers wait to enqueue.
const QUEUE: usize = 4096;

/// What an item came to: `Some` when written (with what the writer reports),
/// `None` when refused with nothing written.
pub type Outcome<W> = Result<Option<<W as BatchWriter>::Written>, <W as BatchWriter>::Error>;

/// Writes a batch of items inside one transaction.
#[async_trait]
pub trait BatchWriter: Send + Sync + 'static {
    /// One queued write.
    type Item: Send + Sync + 'static;
    /// What a written item reports back.
    type Written: Send + 'static;
    /// A failure of one item or of the whole batch ([`BatchWriter::batch_error`]).
    type Error: Send + 'static;

    /// Writes `items` in `conn`'s open transaction, in order; one outcome per
    /// item (`None`: refused, nothing of it written). An `Err` means the
    /// transaction must be rolled back. With a single item the writer may
    /// also answer its refusal as an `Err` (the transaction is then not
    /// committed either).
    async fn write(
        &self,
        conn: &mut PgConnection,
        items: &[&Self::Item],
    ) -> Result<Vec<Option<Self::Written>>, Self::Error>;

    /// Whether a lone item's failure means "refused": another transaction
    /// took what it wanted (a unique violation), nothing of it is written.
    fn is_refusal(err: &Self::Error) -> bool;

    /// A database failure of the whole batch (BEGIN or COMMIT), given to
    /// every item that was written in it.
    fn batch_error(err: &sqlx::Error) -> Self::Error;
}

type Reply<W> = oneshot::Sender<Outcome<W>>;
type Queued<W> = (<W as BatchWriter>::Item, Reply<W>);

/// The queue in front of the writers.
pub struct GroupCommit<W: BatchWriter> {
    queue: mpsc::Sender<Queued<W>>,
}

impl<W: BatchWriter> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<W: BatchWriter> std::fmt::Debug for GroupCommit<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<W: BatchWriter> GroupCommit<W> {
    /// Starts the writers on `pool` (inside a Tokio runtime), as many as the
    /// pool's size allows ([`writers_for`]). They stop when the last clone of
    /// the returned handle is dropped.
    pub fn start(pool: PgPool, writer: W) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let writer = Arc::new(writer);
        let (writers, keep) = writers_for(pool.options().get_max_connections());
        for _ in 0..writers {
            tokio::spawn(run_writer(pool.clone(), writer.clone(), receiver.clone(), keep));
        }
        Self { queue }
    }

    /// Queues `item` and waits for its batch to commit. `None` when the
    /// writers stopped (the runtime is shutting down).
    pub async fn submit(&self, item: W::Item) -> Option<Outcome<W>> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((item, reply)).await.ok()?;
        answer.await.ok()
    }
}

async fn run_writer<W: BatchWriter>(
    pool: PgPool,
    writer: Arc<W>,
    receiver: Arc<Mutex<mpsc::Receiver<Queued<W>>>>,
    keep: bool,
) {
    let mut held = HeldConnection::default();
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let outcomes = match held.take(&pool).await {
            Ok(mut conn) => {
                let outcomes = commit_batch(&mut conn, writer.as_ref(), &items).await;
                if keep && outcomes.iter().all(Result::is_ok) {
                    held.keep(conn);
                }
                // Otherwise the connection goes back to the pool (which tests it).
                outcomes
            }
            Err(err) => items.iter().map(|_| Err(W::batch_error(&err))).collect(),
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that gave up (deadline) no longer listens; the write stands.
            let _ = reply.send(outcome);
        }
    }
}

/// A writer's connection, kept from one batch to the next. Taken from the
/// pool and given back per batch, it would cost a round trip each time:
/// sqlx pings a connection when it returns to the pool. Kept, it is pinged
/// only after [`PING_IDLE_AFTER`] of rest, as the pool pings its own
/// ([`crate::db`]).
#[derive(Default)]
struct HeldConnection {
    conn: Option<(PoolConnection<Postgres>, Instant)>,
}

impl HeldConnection {
    /// The kept connection when it still answers, else one from the pool.
    async fn take(&mut self, pool: &PgPool) -> sqlx::Result<PoolConnection<Postgres>> {
        if let Some((mut conn, used)) = self.conn.take() {
            if used.elapsed() <= PING_IDLE_AFTER || conn.ping().await.is_ok() {
                return Ok(conn);
            }
            conn.close_on_drop();
        }
        pool.acquire().await
    }

    /// Keeps `conn` for the next batch.
    fn keep(&mut self, conn: PoolConnection<Postgres>) {
        self.conn = Some((conn, Instant::now()));
    }
}

/// Runs the batch in one transaction on `conn` (see the module docs); on a
/// failure, each item again in a transaction of its own. One outcome per item.
async fn commit_batch<W: BatchWriter>(
    conn: &mut PgConnection,
    writer: &W,
    items: &[W::Item],
) -> Vec<Outcome<W>> {
    if items.len() == 1 {
        return vec![commit_alone_on(conn, writer, &items[0]).await];
    }
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(err) => return items.iter().map(|_| Err(W::batch_error(&err))).collect(),
    };
    let members: Vec<&W::Item> = items.iter().collect();
    let outcomes = match writer.write(&mut tx, &members).await {
        Ok(outcomes) => outcomes,
        Err(_) => {
            let _ = tx.rollback().await;
            let mut outcomes = Vec::with_capacity(items.len());
            for item in items {
                outcomes.push(commit_alone_on(conn, writer, item).await);
            }
            return outcomes;
        }
    };
    match tx.commit().await {
        Ok(()) => outcomes.into_iter().map(Ok).collect(),
        // Nothing of the batch is written; refusals stand (they wrote nothing).
        Err(err) => outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Some(_) => Err(W::batch_error(&err)),
                None => Ok(None),
            })
            .collect(),
    }
}

/// One item in a transaction of its own, without the queue.
pub async fn commit_alone<W: BatchWriter>(pool: &PgPool, writer: &W, item: &W::Item) -> Outcome<W> {
    let mut conn = pool.acquire().await.map_err(|err| W::batch_error(&err))?;
    commit_alone_on(&mut conn, writer, item).await
}

/// One item in a transaction of its own on `conn`.
async fn commit_alone_on<W: BatchWriter>(conn: &mut PgConnection, writer: &W, item: &W::Item) -> Outcome<W> {
    let mut tx = conn.begin().await.map_err(|err| W::batch_error(&err))?;
    let outcome = match writer.write(&mut tx, &[item]).await {
        Err(err) if W::is_refusal(&err) => return Ok(None),
        other => other?.pop().flatten(),
    };
    match outcome {
        Some(written) => {
            tx.commit().await.map_err(|err| W::batch_error(&err))?;
            Ok(Some(written))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_hold_at_most_a_quarter_of_the_pool() {
        assert_eq!(
            writers_for(1),
            (1, false),
            "a writer that gives its connection back"
        );
        assert_eq!(writers_for(3), (1, false));
        assert_eq!(writers_for(4), (1, true));
        assert_eq!(writers_for(8), (2, true));
        assert_eq!(writers_for(16), (WRITERS, true));
        assert_eq!(writers_for(100), (WRITERS, true));
    }
}
