//! Group commit for the PostgreSQL event store: concurrent appends share one
//! transaction.
//!
//! A transaction per command pays a BEGIN, a COMMIT and a WAL flush per
//! command; under load those dominate and cap a single database at a few
//! thousand commands per second. Appends are therefore queued to a few
//! writers. A writer takes everything queued (up to [`MAX_BATCH`]), inserts
//! the events of all of them with one statement (a second statement for a
//! stream's second append in the batch, and so on), applies their options,
//! and commits once. While
//! one writer commits, the next batch gathers: the batch size follows the
//! load, and a lone request waits for no timer.
//!
//! One conflict never fails the others. An append whose stream moved is
//! refused by its stream's guard in the statement, which writes nothing of
//! it, and the batch goes on; the refusal is explained
//! after the commit (idempotent repeat or conflict) as for a lone append. An
//! append whose statements *fail* (a unique violation from another process's
//! transaction, an option that cannot apply) aborts the transaction: the
//! batch is rolled back and every append in it runs again alone, so only the
//! failing one fails. Failures are rare, so no savepoint is paid per append.
//!
//! Everything an append promises still holds: its events, outbox rows and
//! options commit together or not at all, and an append is only answered once
//! its batch's commit is durable. Appends to one stream in one batch see each
//! other in queue order, as they would one after the other.

use std::{collections::HashMap, sync::Arc};

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
    let outcome = commit_one(pool, &append).await;
    written(append, outcome)
}

fn written(append: Append, outcome: Outcome) -> Result<Written, EventStoreError> {
    outcome.map(|done| match done {
        Some((positions, at)) => Written::Committed(positions, at),
        None => Written::Refused(append.events),
    })
}

/// Runs the batch in one transaction (see the module docs); on a failure,
/// each append again in a transaction of its own. One outcome per append.
async fn commit_batch(pool: &PgPool, appends: &[Append]) -> Vec<Outcome> {
    if appends.len() == 1 {
        return vec![commit_one(pool, &appends[0]).await];
    }
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(err) => return fail_all(appends.len(), &err),
    };
    let mut outcomes: Vec<Option<(Vec<i64>, DateTime<Utc>)>> = vec![None; appends.len()];
    for round in rounds(appends) {
        let members: Vec<&Append> = round.iter().map(|&i| &appends[i]).collect();
        match PostgresEventStore::write_many(&mut tx, &members).await {
            Ok(written) => {
                for (i, outcome) in round.into_iter().zip(written) {
                    outcomes[i] = outcome;
                }
            }
            Err(_) => {
                let _ = tx.rollback().await;
                return one_by_one(pool, appends).await;
            }
        }
    }
    match tx.commit().await {
        Ok(()) => outcomes.into_iter().map(Ok).collect(),
        // Nothing of the batch is written; refusals stand (they wrote nothing).
        Err(err) => outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Some(_) => Err(copy_error(&err)),
                None => Ok(None),
            })
            .collect(),
    }
}

/// The batch split into rounds in which no stream appears twice (one
/// statement each; a later round sees the earlier ones' events), keeping each
/// stream's appends in queue order. Indexes into `appends`.
fn rounds(appends: &[Append]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut seen = HashMap::<Uuid, usize>::new();
    for (i, append) in appends.iter().enumerate() {
        let round = seen.entry(append.stream_id).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(i);
        *round += 1;
    }
    rounds
}

async fn one_by_one(pool: &PgPool, appends: &[Append]) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(appends.len());
    for append in appends {
        outcomes.push(commit_one(pool, append).await);
    }
    outcomes
}

/// One append in its own transaction.
async fn commit_one(pool: &PgPool, append: &Append) -> Outcome {
    let mut tx = pool.begin().await?;
    let outcome = match PostgresEventStore::write_many(&mut tx, &[append]).await {
        // Another transaction took the version, or an event id is taken.
        Err(EventStoreError::Other(err)) if is_unique_violation(&err) => return Ok(None),
        other => other?.pop().flatten(),
    };
    match outcome {
        Some(written) => {
            tx.commit().await?;
            Ok(Some(written))
        }
        None => Ok(None),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn append(stream: Uuid) -> Append {
        Append {
            stream_id: stream,
            expected_version: 0,
            events: Vec::new(),
            options: AppendOptions::default(),
        }
    }

    #[test]
    fn a_stream_appears_once_per_round_and_keeps_its_queue_order() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let batch = [append(a), append(b), append(a), append(c), append(a), append(b)];
        assert_eq!(rounds(&batch), vec![vec![0, 1, 3], vec![2, 5], vec![4]]);
    }
}
