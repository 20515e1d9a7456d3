//! The PostgreSQL event store.
//!
//! # Appending
//! An append is one statement: a guard reads the stream's current version,
//! and the events are inserted only if it equals the expected version (a
//! data-modifying CTE). Nothing else is written per event: the relay
//! publishes from this log itself ([`crate::relay`]).
//! Appends come from units of work ([`PostgresEventStore::write_appends`] is
//! called inside their transaction); concurrent units share a transaction and
//! one such statement, with a guard per stream ([`crate::store::group_commit`]).
//! Two writers that both pass the guard collide on the unique
//! `(stream_id, version)` index: the second waits for the first to commit and
//! then fails, so exactly one wins each version and no version is skipped.
//!
//! # Reading the global log without skipping
//! Positions come from an identity sequence when the row is inserted, but
//! transactions commit in any order: transaction A may take position 6 and
//! commit while B, holding position 5, is still running. A reader that took 6
//! and then asked for "after 6" would never see 5. So each row records its
//! writing transaction (`transaction_id`, xid8), and readers take only rows
//! whose transaction is older than `pg_snapshot_xmin(pg_current_snapshot())`,
//! the oldest transaction still running anywhere in the cluster. All older
//! transactions are finished, and any transaction still to commit has an xid
//! at or above that horizon, so ordering by `(transaction_id, global_position)`
//! gives an order in which nothing can ever appear behind a reader's cursor.
//! The price: a long-running transaction anywhere in the cluster holds the
//! horizon back (readers wait, they never skip).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use super::{AppendResult, EventStoreError, StreamAppend, Upcasters, check_batch, i64_version, u64_version};

/// The event store on PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresEventStore {
    pool: PgPool,
    upcasters: Upcasters,
}

/// Appends, each to a different stream, in one statement (one append, or a
/// group commit batch): per stream the guard, then the events of the appends
/// whose stream is at their expected version. One row
/// per inserted event: its stream, version, position and commit time.
const APPEND_MANY: &str = "
WITH input AS (
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::uuid[], $6::text[],
                         $7::int4[], $8::jsonb[], $9::jsonb[]) WITH ORDINALITY
        AS i(stream_id, stream_type, expected, version, event_id, event_type, schema_version, payload,
             metadata, ord)
), guard AS (
    SELECT s.stream_id,
           (SELECT COALESCE(MAX(e.version), 0) FROM events e WHERE e.stream_id = s.stream_id) AS current
    FROM (SELECT DISTINCT stream_id FROM input) s
), inserted AS (
    INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload, metadata)
    SELECT i.event_id, i.stream_id, i.stream_type, i.version, i.event_type, i.schema_version, i.payload,
           i.metadata
    FROM input i JOIN guard g ON g.stream_id = i.stream_id AND g.current = i.expected
    ORDER BY i.ord
    RETURNING stream_id, version, global_position, recorded_at
)
SELECT stream_id, version, global_position, recorded_at FROM inserted";

/// Settled events after a cursor. The cursor is the (transaction, position)
/// of the event at `$1`, or of the nearest earlier one if `$1` is not an
/// event's position (0: no cursor, read from the start).
const READ_ALL: &str = "
WITH cursor AS (
    SELECT transaction_id, global_position FROM events
    WHERE global_position <= $1 ORDER BY global_position DESC LIMIT 1
)
SELECT event_id, stream_id, stream_type, version, global_position, event_type, schema_version,
       payload, metadata, recorded_at
FROM events
WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
  -- One row comparison (no OR), so that it bounds the index scan instead of
  -- filtering every settled row before the cursor; xid8 '0' sorts first.
  AND (transaction_id, global_position) > (COALESCE((SELECT transaction_id FROM cursor), '0'::xid8),
                                           COALESCE((SELECT global_position FROM cursor), 0))
ORDER BY transaction_id, global_position
LIMIT $2";

const HEAD: &str = "
SELECT global_position FROM events
WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id DESC, global_position DESC
LIMIT 1";

impl PostgresEventStore {
    /// A store on `pool` (migrated), upcasting with `upcasters`.
    pub fn new(pool: PgPool, upcasters: Upcasters) -> Self {
        Self { pool, upcasters }
    }

    /// Writes `appends` inside a caller's transaction (a group commit batch,
    /// or a unit of work), each stream's appends in the given order: one
    /// statement per round in which no stream appears twice (a later round
    /// sees the earlier ones' events). One outcome per append: `None` when
    /// its stream's guard refused (nothing of it was written).
    pub(crate) async fn write_appends(
        conn: &mut PgConnection,
        appends: &[&StreamAppend],
    ) -> Result<Vec<Option<AppendWritten>>, EventStoreError> {
        let mut resolved = Vec::with_capacity(appends.len());
        for append in appends {
            check_batch(&append.events)?;
            let expected = match append.expected_version {
                Some(expected) => expected,
                None => u64_version(
                    sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1")
                        .bind(append.stream_id)
                        .fetch_one(&mut *conn)
                        .await?,
                )?,
            };
            i64_version(expected + append.events.len() as u64)?;
            resolved.push((*append, expected));
        }
        let mut outcomes = vec![None; appends.len()];
        for round in rounds(appends) {
            let members: Vec<(&StreamAppend, u64)> = round.iter().map(|&i| resolved[i]).collect();
            for (i, outcome) in round.into_iter().zip(Self::write_round(conn, &members).await?) {
                outcomes[i] = outcome;
            }
        }
        Ok(outcomes)
    }

    /// Inserts the events of `appends` (each to a different stream, at the
    /// given expected version) in one statement.
    async fn write_round(
        conn: &mut PgConnection,
        appends: &[(&StreamAppend, u64)],
    ) -> Result<Vec<Option<AppendWritten>>, EventStoreError> {
        let events = appends.iter().flat_map(|(a, expected)| {
            a.events
                .iter()
                .enumerate()
                .map(move |(i, e)| (*a, *expected, i, e))
        });
        let mut streams = Vec::new();
        let mut types = Vec::new();
        let mut expected = Vec::new();
        let mut versions = Vec::new();
        let mut ids = Vec::new();
        let mut event_types = Vec::new();
        let mut schemas = Vec::new();
        let mut payloads = Vec::new();
        let mut metadata = Vec::new();
        for (append, base, offset, event) in events {
            // In range: write_appends checked expected + events.len().
            let base = base as i64;
            streams.push(append.stream_id);
            types.push(append.stream_type.as_str());
            expected.push(base);
            versions.push(base + 1 + offset as i64);
            ids.push(event.event_id);
            event_types.push(event.event_type.as_str());
            schemas.push(event.schema_version);
            payloads.push(&event.payload);
            metadata.push(serde_json::to_value(&event.metadata).map_err(anyhow::Error::from)?);
        }
        let rows: Vec<(Uuid, i64, i64, DateTime<Utc>)> = sqlx::query_as(APPEND_MANY)
            .bind(streams)
            .bind(types)
            .bind(expected)
            .bind(versions)
            .bind(ids)
            .bind(event_types)
            .bind(schemas)
            .bind(payloads)
            .bind(metadata)
            .fetch_all(&mut *conn)
            .await?;
        // Per stream: (version, position) of each event written, and when.
        type Written = (Vec<(i64, i64)>, DateTime<Utc>);
        let mut written: HashMap<Uuid, Written> = HashMap::new();
        for (stream, version, position, at) in rows {
            let entry = written.entry(stream).or_insert_with(|| (Vec::new(), at));
            entry.0.push((version, position));
        }
        let mut outcomes = Vec::with_capacity(appends.len());
        for (append, expected) in appends {
            match written.remove(&append.stream_id) {
                Some((mut positions, recorded_at)) if positions.len() == append.events.len() => {
                    positions.sort_unstable();
                    outcomes.push(Some(AppendWritten {
                        new_version: expected + append.events.len() as u64,
                        global_positions: positions.into_iter().map(|(_, p)| p).collect(),
                        recorded_at,
                    }));
                }
                Some(_) => return Err(anyhow::anyhow!("an append was written in part").into()),
                None => outcomes.push(None),
            }
        }
        Ok(outcomes)
    }
}

sql_event_store!(PostgresEventStore);

type Db = Postgres;

const IN_IDS: &str = "= ANY($1)";

/// What a written append reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendWritten {
    /// The stream's version after the append.
    pub new_version: u64,
    /// Global positions of the appended events, in order.
    pub global_positions: Vec<i64>,
    /// The transaction's time.
    pub recorded_at: DateTime<Utc>,
}

impl AppendWritten {
    /// The answer of a fresh (not repeated) append.
    pub fn into_result(self) -> AppendResult {
        AppendResult {
            new_version: self.new_version,
            global_positions: self.global_positions,
            recorded_at: self.recorded_at,
            already_stored: false,
        }
    }
}

/// Whether another transaction took a version or an event id first.
pub(crate) fn is_unique_violation(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .is_some_and(|db| db.is_unique_violation())
    })
}

/// The appends split into rounds in which no stream appears twice (one
/// statement each), keeping each stream's appends in the given order.
/// Indexes into `appends`.
fn rounds(appends: &[&StreamAppend]) -> Vec<Vec<usize>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn append(stream: Uuid) -> StreamAppend {
        StreamAppend {
            stream_id: stream,
            stream_type: super::super::ORDER_STREAM.into(),
            expected_version: Some(0),
            events: Vec::new(),
        }
    }

    #[test]
    fn a_stream_appears_once_per_round_and_keeps_its_queue_order() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let batch = [append(a), append(b), append(a), append(c), append(a), append(b)];
        let batch: Vec<&StreamAppend> = batch.iter().collect();
        assert_eq!(rounds(&batch), vec![vec![0, 1, 3], vec![2, 5], vec![4]]);
    }
}
