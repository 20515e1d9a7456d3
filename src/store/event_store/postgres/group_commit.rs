//! Group commit for the PostgreSQL event store: concurrent appends share one
//! transaction.
//!
//! A transaction per command pays a BEGIN, a COMMIT and a WAL flush per
//! command; under load those dominate and cap a single database at a few
//! thousand commands per second. Appends are therefore queued to a few
//! writers. A writer takes everything queued (up to [`MAX_BATCH`]), runs each
//! append under its own savepoint, and commits once. An append whose guard
//! refuses (the stream moved) or whose statements fail is rolled back to its
//! savepoint, so one conflict never fails the others in its batch; it is then
//! explained (idempotent repeat or conflict) after the commit, exactly as a
//! lone append would be. While one writer commits, the next batch gathers:
//! the batch size follows the load, and a lone request waits for no timer.
//!
//! Everything an append promises still holds: its events, outbox rows and
//! options commit together or not at all, and an append is only answered once
//! its batch's commit is durable. Appends to one stream in one batch see each
//! other in queue order, as they would one after the other.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::{AppendOptions, EventStoreError, NewEvent, PostgresEventStore};

/// Most appends in one transaction: bounds a batch's latency and lock span.
pub const MAX_BATCH: usize = 64;

/// Writers committing in parallel: enough to overlap one batch's commit with
/// the next batch's statements, few enough to leave the pool to everyone else.
pub const WRITERS: usize = 4;

/// Appends waiting for a writer; beyond this, callers wait to enqueue.
const QUEUE: usize = 4096;

/// One append, as queued.
pub struct Append {
    /// The stream.
    pub stream_id: Uuid,
    /// The version the caller decided on.
    pub expected_version: u64,
    /// What to append (checked non-empty by the caller).
    pub events: Vec<NewEvent>,
    /// What commits with them.
    pub options: AppendOptions,
}

/// What became of an append in its batch.
#[derive(Debug)]
pub enum Written {
    /// Committed: the events' global positions and the commit's time.
    Committed(Vec<i64>, DateTime<Utc>),
    /// Nothing written: the stream was not at the expected version, or an
    /// event id is taken. The events come back for the caller to explain which.
    Refused(Vec<NewEvent>),
}

/// An append's outcome inside the batch: positions and time, or None when refused.
type Outcome = Result<Option<(Vec<i64>, DateTime<Utc>)>, EventStoreError>;

type Reply = oneshot::Sender<Result<Written, EventStoreError>>;

/// The queue in front of the writers.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    queue: mpsc::Sender<(Append, Reply)>,
}

impl GroupCommit {
    /// Starts [`WRITERS`] writers on `pool` (inside a Tokio runtime). They stop
    /// when the last clone of the returned handle is dropped.
    pub fn start(pool: PgPool) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(writer(pool.clone(), receiver.clone()));
        }
        Self { queue }
    }

    /// Queues `append` and waits for its batch to commit.
    pub async fn submit(&self, append: Append) -> Result<Written, EventStoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || EventStoreError::Unavailable("event store writers stopped".into());
        self.queue.send((append, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn writer(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<(Append, Reply)>>>) {
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
        let (appends, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let outcomes = commit_batch(&pool, &appends).await;
        for ((append, reply), outcome) in appends.into_iter().zip(replies).zip(outcomes) {
            // A caller that gave up (deadline) no longer listens; the append stands.
            let _ = reply.send(written(append, outcome));
        }
    }
}

/// One append in a transaction of its own, without the queue.
pub async fn commit_alone(pool: &PgPool, append: Append) -> Result<Written, EventStoreError> {
    let outcome = commit_batch(pool, std::slice::from_ref(&append)).await.pop();
    written(
        append,
        outcome.unwrap_or_else(|| Err(anyhow::anyhow!("no outcome").into())),
    )
}

fn written(append: Append, outcome: Outcome) -> Result<Written, EventStoreError> {
    outcome.map(|done| match done {
        Some((positions, at)) => Written::Committed(positions, at),
        None => Written::Refused(append.events),
    })
}

/// Runs the batch in one transaction, each append under a savepoint (a lone
/// append needs none: it owns the transaction). One outcome per append.
async fn commit_batch(pool: &PgPool, appends: &[Append]) -> Vec<Outcome> {
    let shared = appends.len() > 1;
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(err) => return appends.iter().map(|_| Err(copy_error(&err))).collect(),
    };
    let mut outcomes = Vec::with_capacity(appends.len());
    for append in appends {
        if shared && let Err(err) = sqlx::raw_sql("SAVEPOINT append").execute(&mut *tx).await {
            return fail_all(appends.len(), &err);
        }
        let outcome = match PostgresEventStore::write_one(&mut tx, append).await {
            // Another transaction took the version, or an event id is taken.
            Err(EventStoreError::Other(err)) if is_unique_violation(&err) => Ok(None),
            other => other,
        };
        let undo = !matches!(outcome, Ok(Some(_)));
        if undo {
            if !shared {
                let _ = tx.rollback().await;
                return vec![outcome];
            }
            if let Err(err) = sqlx::raw_sql("ROLLBACK TO SAVEPOINT append")
                .execute(&mut *tx)
                .await
            {
                return fail_all(appends.len(), &err);
            }
        }
        outcomes.push(outcome);
    }
    if let Err(err) = tx.commit().await {
        // Refusals and failures stand; what was to be written is not.
        return outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(Some(_)) => Err(copy_error(&err)),
                other => other,
            })
            .collect();
    }
    outcomes
}

fn fail_all(n: usize, err: &sqlx::Error) -> Vec<Outcome> {
    (0..n).map(|_| Err(copy_error(err))).collect()
}

/// One database error, given to every append of a batch.
fn copy_error(err: &sqlx::Error) -> EventStoreError {
    if crate::db::is_transient(err) {
        EventStoreError::Unavailable(err.to_string())
    } else {
        EventStoreError::Other(anyhow::anyhow!("event store batch: {err}"))
    }
}

fn is_unique_violation(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .is_some_and(|db| db.is_unique_violation())
    })
}
