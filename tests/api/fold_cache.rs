//! The fold cache on both backends: folds start from the rows this process
//! last committed instead of reading them back, and still write what a fold
//! from the database would (another writer ahead, a refused write, a rebuild
//! swapping the table in between).

use std::time::Duration;

use chrono::SubsecRound;

use commerce::{
    projections::{
        ApplyError, Decoded, cart_conversion::CartConversion, customer_orders::CustomerOrder,
        fold_cache::FoldCache, fold_stream, order_detail::OrderDetail, samples::SampleOrder,
    },
    startup::Stores,
    store::{
        event_store::{StoredEvent, Upcasters},
        read_models::{
            Advance, Checkpoint, ReadModelError, ReadModelStore, ReadModels, StoredRow, shadow_table,
        },
    },
};
use uuid::Uuid;

use crate::support::{
    app::{Backend, Isolation},
    read_side::{ReadSideFixture, apply_uncached},
};

async fn stores() -> Vec<(Backend, ReadModelStore, Isolation)> {
    let mut all = Vec::new();
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let backends = isolation.backends().await;
        all.push((
            backend,
            Stores::on(&backends.db, Upcasters::none(), true).read_models,
            isolation,
        ));
    }
    all
}

/// `order`'s confirmed life as the event store would give it back: times at
/// whole milliseconds (SQLite's precision), so that a fold of these events in
/// memory equals the rows the database stores from them.
fn life(order: &SampleOrder, first_position: i64) -> Vec<StoredEvent> {
    let mut events = order.confirmed_events(first_position);
    for event in &mut events {
        event.recorded_at = event.recorded_at.trunc_subsecs(3);
    }
    events
}

/// Each order's events `range` (of its six), the orders one after the other.
fn slice(lives: &[Vec<StoredEvent>], range: std::ops::Range<usize>) -> Vec<StoredEvent> {
    lives
        .iter()
        .flat_map(|life| life[range.clone()].to_vec())
        .collect()
}

async fn detail(store: &ReadModelStore, id: Uuid) -> OrderDetail {
    store.order_detail(id).await.unwrap().expect("a detail row")
}

#[tokio::test]
async fn folds_read_no_row_back_while_the_cache_holds_the_orders() {
    for (backend, store, _guard) in stores().await {
        // The bus's three batches of 20 new orders, then the sweep over the
        // whole log (every event a duplicate by then), with the cache off (as
        // before it) and on.
        let mut reads = Vec::new();
        for capacity in [0, FoldCache::DEFAULT_ROWS] {
            let orders: Vec<SampleOrder> = (0..20).map(|i| SampleOrder::new(&format!("c{i}"), 2)).collect();
            let lives: Vec<Vec<StoredEvent>> = orders
                .iter()
                .enumerate()
                .map(|(i, order)| life(order, 1 + 6 * i as i64))
                .collect();
            let batches = [slice(&lives, 0..2), slice(&lives, 2..4), slice(&lives, 4..6)];
            let cache = FoldCache::new(capacity);
            for batch in &batches {
                let folded = cache
                    .apply::<CustomerOrder>(&store, &Decoded::all(batch), None)
                    .await
                    .unwrap();
                assert_eq!(folded.changed.len(), 20, "{backend:?}");
            }
            let from = store.checkpoint("customer_orders").await.unwrap();
            let advance = Advance {
                from,
                to: from.position + 120,
            };
            let swept = cache
                .apply::<CustomerOrder>(&store, &Decoded::all(&batches.concat()), Some(advance))
                .await
                .unwrap();
            assert_eq!(swept.duplicates, 120, "{backend:?}: the bus applied all of it");
            assert!(swept.changed.is_empty(), "{backend:?}");
            reads.push(cache.rows_read());
            let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
            let stored = store
                .load::<CustomerOrder>("customer_orders", &ids)
                .await
                .unwrap();
            assert_eq!(stored.len(), 20, "{backend:?}");
            for row in stored {
                let life = lives.iter().find(|l| l[0].stream_id == row.stream_id()).unwrap();
                assert_eq!(
                    Some(row),
                    fold_stream::<CustomerOrder>(life).unwrap(),
                    "{backend:?}"
                );
            }
        }
        // Off: every batch reads every one of its orders' rows (4 x 20).
        // On: the first batch holds every stream from version 1 (new
        // orders), and later ones find the rows they committed.
        assert_eq!(reads, [80, 0], "{backend:?}: rows read, cache off and on");
    }
}

#[tokio::test]
async fn a_kept_row_behind_another_writer_still_folds_into_the_right_row() {
    for (backend, store, _guard) in stores().await {
        let order = SampleOrder::new("alice", 2);
        let life = life(&order, 1);
        let cache = FoldCache::default();
        cache
            .apply::<OrderDetail>(&store, &Decoded::all(&life[..2]), None)
            .await
            .unwrap();
        // Another replica (it held the partition meanwhile) applies 3 and 4.
        apply_uncached::<OrderDetail>(&store, &life[2..4], None)
            .await
            .unwrap();
        // Event 5 after a kept row at 2 would be a gap that the database does
        // not have: the row is read instead, and no gap is reported.
        let folded = cache
            .apply::<OrderDetail>(&store, &Decoded::all(&life[4..5]), None)
            .await
            .unwrap();
        assert!(folded.gaps.is_empty(), "{backend:?}: {:?}", folded.gaps);
        assert_eq!(cache.rows_read(), 1, "{backend:?}");
        let five = fold_stream::<OrderDetail>(&life[..5]).unwrap().unwrap();
        assert_eq!(detail(&store, order.order_id).await, five, "{backend:?}");

        // Behind again (the other writer applies 6), but this batch goes on
        // from the kept row: folded from memory, and the upsert keeps the
        // database's equal row.
        apply_uncached::<OrderDetail>(&store, &life[5..], None)
            .await
            .unwrap();
        let folded = cache
            .apply::<OrderDetail>(&store, &Decoded::all(&life[5..]), None)
            .await
            .unwrap();
        assert_eq!(folded.applied, 1, "{backend:?}");
        assert_eq!(cache.rows_read(), 1, "{backend:?}: no second read");
        let six = fold_stream::<OrderDetail>(&life).unwrap().unwrap();
        assert_eq!(detail(&store, order.order_id).await, six, "{backend:?}");
    }
}

#[tokio::test]
async fn a_refused_write_keeps_nothing_of_its_rows() {
    for (backend, store, _guard) in stores().await {
        let order = SampleOrder::new("bob", 1);
        let life = life(&order, 1);
        let cache = FoldCache::default();
        cache
            .apply::<CartConversion>(&store, &Decoded::all(&life[..1]), None)
            .await
            .unwrap();
        // A sweep whose checkpoint moved under it: nothing written.
        let moved = Advance {
            from: Checkpoint {
                position: 99,
                generation: 0,
            },
            to: 100,
        };
        let refused = cache
            .apply::<CartConversion>(&store, &Decoded::all(&life[1..3]), Some(moved))
            .await;
        assert!(
            matches!(
                refused,
                Err(ApplyError::Store(ReadModelError::CheckpointMoved(_)))
            ),
            "{backend:?}: {refused:?}"
        );
        // Had the refused rows been kept (at 3), event 2 would be skipped as
        // a duplicate and the table would stay at 1.
        let folded = cache
            .apply::<CartConversion>(&store, &Decoded::all(&life[1..2]), None)
            .await
            .unwrap();
        assert_eq!((folded.applied, folded.duplicates), (1, 0), "{backend:?}");
        let versions = store.versions::<CartConversion>(&[order.order_id]).await.unwrap();
        assert_eq!(versions[&order.order_id], 2, "{backend:?}");
        assert_eq!(cache.rows_read(), 0, "{backend:?}");
    }
}

#[tokio::test]
async fn rows_kept_from_a_table_a_rebuild_swapped_out_are_not_folded_from() {
    for (backend, store, _guard) in stores().await {
        let order = SampleOrder::new("carol", 2);
        let life = life(&order, 1);
        let cache = FoldCache::default();
        cache
            .apply::<OrderDetail>(&store, &Decoded::all(&life), None)
            .await
            .unwrap();
        // A rebuild that replayed the log up to event 3 swaps its table in.
        store.create_shadows(&["order_details"]).await.unwrap();
        let three = fold_stream::<OrderDetail>(&life[..3]).unwrap().unwrap();
        store
            .upsert(&shadow_table("order_details"), &[three])
            .await
            .unwrap();
        store
            .swap_shadows(&[("order_detail", "order_details")], 3)
            .await
            .unwrap();
        // The bus redelivers 4 to 6. The kept row (at 6) would skip them as
        // duplicates; the write's generation guard refuses it, and the batch
        // is folded again from the new table's row.
        let folded = cache
            .apply::<OrderDetail>(&store, &Decoded::all(&life[3..]), None)
            .await
            .unwrap();
        assert_eq!(folded.applied, 3, "{backend:?}");
        assert_eq!(cache.rows_read(), 1, "{backend:?}");
        let six = fold_stream::<OrderDetail>(&life).unwrap().unwrap();
        assert_eq!(detail(&store, order.order_id).await, six, "{backend:?}");
    }
}

#[tokio::test]
async fn running_projections_fold_a_stream_of_orders_without_reading_rows_back() {
    for backend in Backend::all() {
        let fixture = ReadSideFixture::new(backend).await;
        // The bus and a sweep every 200 ms both apply every event.
        let (projector, tasks) = fixture.start_read_side("c1", Duration::from_millis(200));
        let orders: Vec<SampleOrder> = (0..12)
            .map(|i| SampleOrder::new(&format!("c{}", i % 4), 2))
            .collect();
        for step in [2, 4, 6] {
            for order in &orders {
                fixture.append(order, &order.confirmed()[..step]).await;
            }
        }
        let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
        assert!(fixture.converged::<OrderDetail>(&ids, 6).await, "{backend:?}");
        assert!(fixture.converged::<CustomerOrder>(&ids, 6).await, "{backend:?}");
        assert!(fixture.converged::<CartConversion>(&ids, 6).await, "{backend:?}");
        assert!(fixture.settled(72).await, "{backend:?}");
        // Let the sweep pass over the whole log (duplicates by now).
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            projector.fold_cache().rows_read(),
            0,
            "{backend:?}: every fold started from a kept row or a new order"
        );
        let details = crate::support::read_side::details(&fixture.store, &ids).await;
        assert_eq!(details, fixture.truth::<OrderDetail>(&ids).await, "{backend:?}");
        fixture.trigger.trigger();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}
