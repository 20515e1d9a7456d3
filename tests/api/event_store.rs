//! Conformance suite of the event store: every test runs on the embedded
//! SQLite store and, when TEST_DATABASE_URL is set, on PostgreSQL, each in its
//! own database.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use commerce::{
    db::Db,
    store::event_store::{EventStoreError, NewEvent, ORDER_STREAM, Upcast, Upcasters},
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{
    app::Backend,
    store::{count, event, exec, store_on},
};

#[tokio::test]
async fn streams_are_gapless_conflicts_are_typed_and_repeats_are_stored_once() {
    for backend in Backend::all() {
        let (_iso, db, store) = store_on(backend, Upcasters::none()).await;
        let stream = Uuid::now_v7();
        let batch = vec![event("A", json!({"n": 1})), event("B", json!({"n": 2}))];

        let first = store
            .append(stream, 0, batch.clone(), ORDER_STREAM)
            .await
            .unwrap();
        assert_eq!(first.new_version, 2, "{backend:?}");
        assert!(!first.already_stored);
        assert!(first.global_positions[0] < first.global_positions[1]);

        let read = store.read_stream(stream, 0).await.unwrap();
        assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(read[0].event_id, batch[0].event_id);
        assert_eq!(read[1].payload, json!({"n": 2}));
        assert_eq!(read[0].stream_type, "order");
        assert_eq!(read[0].metadata.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(
            read[1].recorded_at, first.recorded_at,
            "{backend:?}: the append reports the stored time"
        );
        assert_eq!(store.read_stream(stream, 2).await.unwrap().len(), 1);
        assert!(store.read_stream(Uuid::now_v7(), 0).await.unwrap().is_empty());
        assert_eq!(store.stream_version(stream).await.unwrap(), 2);

        // The same events again: recognised, nothing written.
        let repeat = store
            .append(stream, 0, batch.clone(), ORDER_STREAM)
            .await
            .unwrap();
        assert!(repeat.already_stored, "{backend:?}");
        assert_eq!(repeat.global_positions, first.global_positions);

        // New events at a stale or a future version: typed conflicts.
        for expected in [0, 1, 5] {
            let err = store
                .append(stream, expected, vec![event("C", json!({}))], ORDER_STREAM)
                .await
                .unwrap_err();
            assert!(
                matches!(err, EventStoreError::Conflict { expected: e, actual: 2 } if e == expected),
                "{backend:?} {err:?}"
            );
        }
        // An event id already used in another stream is refused, not duplicated.
        let err = store
            .append(Uuid::now_v7(), 0, vec![batch[0].clone()], ORDER_STREAM)
            .await
            .unwrap_err();
        assert!(matches!(err, EventStoreError::Other(_)), "{backend:?} {err:?}");

        assert_eq!(count(&db, "SELECT COUNT(*) FROM events").await, 2, "{backend:?}");
        store.read_all_settled(2).await;
        assert_eq!(store.head_position().await.unwrap(), first.global_positions[1]);
    }
}

/// On PostgreSQL concurrent appends share a transaction (group commit): a
/// conflict, a repeat or a failing append in a batch must change nothing for
/// the other appends in it.
#[tokio::test]
async fn in_a_burst_of_appends_conflicts_and_failures_touch_only_their_own_append() {
    for backend in Backend::all() {
        let (_iso, db, store) = store_on(backend, Upcasters::none()).await;
        let contested: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
        let repeated = event("Repeated", json!({}));
        let repeated_stream = Uuid::now_v7();
        store
            .append(repeated_stream, 0, vec![repeated.clone()], ORDER_STREAM)
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(300));
        let mut tasks = Vec::new();
        for i in 0..300usize {
            let (store, barrier) = (store.clone(), barrier.clone());
            let contested = contested[i % 10];
            let repeated = repeated.clone();
            tasks.push(tokio::spawn(async move {
                let fresh = Uuid::now_v7();
                let (kind, stream, events, stream_type) = match i % 3 {
                    // A fresh stream with two events: must succeed.
                    0 => (
                        "fresh",
                        fresh,
                        vec![event("A", json!({"i": i})), event("B", json!({"i": i}))],
                        ORDER_STREAM,
                    ),
                    // Ten streams, ten writers each at version 0: one wins each.
                    1 => (
                        "contested",
                        contested,
                        vec![event("Contested", json!({"i": i}))],
                        ORDER_STREAM,
                    ),
                    // Every third of the rest fails (an event id already stored
                    // in another stream), the others repeat a stored append.
                    _ if i % 9 == 2 => (
                        "doomed",
                        fresh,
                        vec![NewEvent {
                            event_type: "Doomed".into(),
                            ..repeated.clone()
                        }],
                        ORDER_STREAM,
                    ),
                    _ => ("repeat", repeated_stream, vec![repeated], ORDER_STREAM),
                };
                barrier.wait().await;
                loop {
                    match store.append(stream, 0, events.clone(), stream_type).await {
                        // A busy database (SQLite under 300 writers): nothing was written; again.
                        Err(EventStoreError::Unavailable(_)) => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        outcome => return outcome.map(|done| (kind, done.new_version, done.already_stored)),
                    }
                }
            }));
        }
        let mut outcomes: HashMap<String, usize> = HashMap::new();
        for task in tasks {
            let label = match task.await.unwrap() {
                Ok((kind, version, repeat)) => format!("{kind} v{version} repeat={repeat}"),
                Err(EventStoreError::Conflict { .. }) => "conflict".to_string(),
                Err(EventStoreError::Other(_)) => "failed".to_string(),
                Err(EventStoreError::Unavailable(_)) => unreachable!("retried"),
            };
            *outcomes.entry(label).or_default() += 1;
        }
        let expected: HashMap<String, usize> = [
            ("fresh v2 repeat=false", 100),
            ("contested v1 repeat=false", 10),
            ("conflict", 90),
            ("failed", 34),
            ("repeat v1 repeat=true", 66),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(outcomes, expected, "{backend:?}");
        // 100 fresh streams x 2 + 10 contested + the repeated one; nothing of the doomed.
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM events").await,
            211,
            "{backend:?}"
        );
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM events WHERE event_type = 'Doomed'").await,
            0,
            "{backend:?}"
        );
        let settled = store.read_all_settled(211).await;
        assert_eq!(
            settled.len(),
            211,
            "{backend:?}: every committed event is readable"
        );
    }
}

#[tokio::test]
async fn fifty_concurrent_writers_on_one_stream_win_exactly_one_version_each() {
    for backend in Backend::all() {
        let (_iso, _db, store) = store_on(backend, Upcasters::none()).await;
        let stream = Uuid::now_v7();
        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let writers: Vec<_> = (0..50)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mine = event("Tick", json!({"writer": i}));
                    barrier.wait().await;
                    // Everyone decides on version 0 first; then load, decide, append again.
                    let mut expected = 0;
                    let mut conflicts = 0u32;
                    loop {
                        match store
                            .append(stream, expected, vec![mine.clone()], ORDER_STREAM)
                            .await
                        {
                            Ok(done) => return (mine.event_id, done.new_version, conflicts),
                            Err(EventStoreError::Conflict { actual, .. }) => {
                                conflicts += 1;
                                expected = actual;
                            }
                            Err(EventStoreError::Unavailable(_)) => {
                                tokio::time::sleep(Duration::from_millis(5)).await
                            }
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                })
            })
            .collect();
        let mut won = Vec::new();
        for writer in writers {
            won.push(writer.await.unwrap());
        }
        let first_round_winners = won
            .iter()
            .filter(|(_, version, conflicts)| *version == 1 && *conflicts == 0);
        assert_eq!(
            first_round_winners.count(),
            1,
            "{backend:?}: exactly one wins version 1"
        );
        let mut versions: Vec<u64> = won.iter().map(|(_, v, _)| *v).collect();
        versions.sort_unstable();
        assert_eq!(
            versions,
            (1..=50).collect::<Vec<_>>(),
            "{backend:?}: one writer per version"
        );

        let stored = store.read_stream(stream, 0).await.unwrap();
        assert_eq!(
            stored.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=50).collect::<Vec<_>>()
        );
        let by_id: HashMap<Uuid, u64> = stored.iter().map(|e| (e.event_id, e.version)).collect();
        for (id, version, _) in &won {
            assert_eq!(by_id.get(id), Some(version), "{backend:?}: no lost update");
        }
    }
}

#[tokio::test]
async fn a_reader_tailing_the_log_during_concurrent_writes_skips_nothing() {
    for backend in Backend::all() {
        let (_iso, _db, store) = store_on(backend, Upcasters::none()).await;
        let (writers, appends) = (12, 25);
        let total = writers * appends;
        let reader = {
            let store = store.clone();
            tokio::spawn(async move {
                // Tails until it has as many events as were written; an event
                // skipped behind the cursor would never arrive (and time out).
                let (mut cursor, mut seen) = (0i64, Vec::new());
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while seen.len() < total && tokio::time::Instant::now() < deadline {
                    let batch = store.read_all(cursor, 40).await.unwrap();
                    if let Some(last) = batch.last() {
                        cursor = last.global_position;
                    }
                    if batch.is_empty() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    seen.extend(batch.into_iter().map(|e| (e.event_id, e.stream_id, e.version)));
                }
                assert_eq!(cursor, store.head_position().await.unwrap());
                seen
            })
        };
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    // Three streams per writer, appended round-robin.
                    let streams = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
                    let mut versions = [0u64; 3];
                    let mut ids = Vec::new();
                    for n in 0..appends {
                        let s = n % 3;
                        let e = event("Tick", json!({"writer": w, "n": n}));
                        ids.push(e.event_id);
                        loop {
                            match store
                                .append(streams[s], versions[s], vec![e.clone()], ORDER_STREAM)
                                .await
                            {
                                Ok(r) => {
                                    versions[s] = r.new_version;
                                    break;
                                }
                                Err(EventStoreError::Unavailable(_)) => {
                                    tokio::time::sleep(Duration::from_millis(5)).await
                                }
                                Err(other) => panic!("{other:?}"),
                            }
                        }
                    }
                    ids
                })
            })
            .collect();
        let mut written = HashSet::new();
        for task in tasks {
            written.extend(task.await.unwrap());
        }
        let seen = reader.await.unwrap();
        let seen_ids: HashSet<Uuid> = seen.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(
            seen.len(),
            seen_ids.len(),
            "{backend:?}: an event was delivered twice"
        );
        assert_eq!(written.len(), total);
        let missing = written.difference(&seen_ids).count();
        let invented = seen_ids.difference(&written).count();
        assert_eq!(
            (missing, invented),
            (0, 0),
            "{backend:?}: events skipped / invented"
        );
        // Within a stream, the settled order is the version order.
        let mut last: HashMap<Uuid, u64> = HashMap::new();
        for (_, stream, version) in &seen {
            let previous = last.insert(*stream, *version).unwrap_or(0);
            assert_eq!(*version, previous + 1, "{backend:?}: stream read out of order");
        }
    }
}

#[tokio::test]
async fn an_event_committed_behind_an_open_transaction_waits_until_that_transaction_settles() {
    for backend in Backend::all() {
        let (_iso, db, store) = store_on(backend, Upcasters::none()).await;
        let early = Uuid::now_v7();
        // A writer that took its position first and has not committed yet.
        let (postgres_tx, sqlite_tx) = match &db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(
                    "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload) \
                     VALUES ($1, $2, 'order', 1, 'Early', 1, '{}')",
                )
                .bind(early)
                .bind(Uuid::now_v7())
                .execute(&mut *tx)
                .await
                .unwrap();
                (Some(tx), None)
            }
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                sqlx::query(
                    "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload) \
                     VALUES (?, ?, 'order', 1, 'Early', 1, '{}')",
                )
                .bind(early.to_string())
                .bind(Uuid::now_v7().to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
                (None, Some(tx))
            }
        };
        // A later writer (on SQLite it waits for the write lock; on PostgreSQL it commits).
        let late = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(Uuid::now_v7(), 0, vec![event("Late", json!({}))], ORDER_STREAM)
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            store.read_all(0, 10).await.unwrap().is_empty(),
            "{backend:?}: read past an unsettled event"
        );
        assert_eq!(store.head_position().await.unwrap(), 0, "{backend:?}");

        if let Some(tx) = postgres_tx {
            tx.commit().await.unwrap();
        }
        if let Some(tx) = sqlite_tx {
            tx.commit().await.unwrap();
        }
        late.await.unwrap();
        let all = store.read_all_settled(2).await;
        let types: Vec<_> = all.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["Early", "Late"], "{backend:?}");
        assert_eq!(store.head_position().await.unwrap(), all[1].global_position);
        assert!(
            store
                .read_all(all[1].global_position, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.read_all(all[0].global_position, 10).await.unwrap()[0].event_type,
            "Late"
        );
    }
}

fn v1_to_v2(mut payload: Value) -> Result<Value, String> {
    let obj = payload.as_object_mut().ok_or("not an object")?;
    let amount = obj.remove("amount").ok_or("no amount")?;
    obj.insert("total".into(), json!({"amount": amount, "currency": "USD"}));
    Ok(payload)
}

#[tokio::test]
async fn an_old_schema_event_stored_by_raw_sql_reads_upcast_to_the_current_schema() {
    let upcasters = Upcasters::new([Upcast {
        event_type: "Paid",
        from_version: 1,
        apply: v1_to_v2,
    }]);
    for backend in Backend::all() {
        let (_iso, db, store) = store_on(backend, upcasters.clone()).await;
        let stream = Uuid::now_v7();
        exec(
            &db,
            "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload) \
             VALUES ($1::uuid, $2::uuid, 'order', 1, 'Paid', 1, '{\"amount\": \"9.99\"}')",
            "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload) \
             VALUES (?, ?, 'order', 1, 'Paid', 1, '{\"amount\": \"9.99\"}')",
            &[&Uuid::now_v7().to_string(), &stream.to_string()],
        )
        .await;
        let read = store.read_stream(stream, 1).await.unwrap();
        assert_eq!(
            read[0].schema_version, 1,
            "{backend:?}: the stored version is reported"
        );
        assert_eq!(
            read[0].payload,
            json!({"total": {"amount": "9.99", "currency": "USD"}})
        );
        assert_eq!(store.read_all_settled(1).await[0].payload, read[0].payload);
        // New events at the current schema are not touched.
        let mut current = event("Paid", json!({"total": {"amount": "1.00", "currency": "EUR"}}));
        current.schema_version = 2;
        store
            .append(stream, 1, vec![current], ORDER_STREAM)
            .await
            .unwrap();
        let read = store.read_stream(stream, 2).await.unwrap();
        assert_eq!(
            read[0].payload,
            json!({"total": {"amount": "1.00", "currency": "EUR"}})
        );
    }
}
