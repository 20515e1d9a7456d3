//! The read-model store conformance suite: PostgreSQL (when TEST_DATABASE_URL
//! is set) and SQLite store, fold and query alike.

use chrono::{Duration, Utc};
use commerce::startup::Stores;
use commerce::store::event_store::Upcasters;
use commerce::{
    domain::order::OrderStatus,
    projections::{
        ApplyError, cart_conversion::CartConversion, customer_orders::CustomerOrder,
        order_detail::OrderDetail, samples::SampleOrder,
    },
    store::read_models::{
        Advance, Checkpoint, ListCursor, ListQuery, ReadModelError, ReadModelStore, ReadModels,
    },
};

use crate::support::app::{Backend, Isolation};
use crate::support::read_side::apply_uncached;

async fn stores() -> Vec<(ReadModelStore, Isolation)> {
    let mut all = Vec::new();
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let backends = isolation.backends().await;
        all.push((
            Stores::on(&backends.db, Upcasters::none(), true).read_models,
            isolation,
        ));
    }
    all
}

#[tokio::test]
async fn events_fold_into_every_read_model_once_whatever_the_redelivery() {
    for (store, _guard) in stores().await {
        let order = SampleOrder::new("alice", 2);
        let events = order.confirmed_events(1);
        // First half, then everything again (redelivery), then the rest again.
        let first = apply_uncached::<OrderDetail>(&store, &events[..3], None)
            .await
            .unwrap();
        assert_eq!(first.applied, 3);
        let again = apply_uncached::<OrderDetail>(&store, &events, None)
            .await
            .unwrap();
        assert_eq!((again.applied, again.duplicates), (3, 3));
        let noop = apply_uncached::<OrderDetail>(&store, &events, None)
            .await
            .unwrap();
        assert_eq!((noop.applied, noop.duplicates), (0, 6));
        assert!(noop.changed.is_empty());

        let detail = store.order_detail(order.order_id).await.unwrap().expect("stored");
        assert_eq!(detail.summary.status, OrderStatus::Confirmed);
        assert_eq!(detail.summary.version, 6);
        assert_eq!(detail.summary.total, order.total());
        assert_eq!(detail.summary.items.len(), 2);
        assert_eq!(detail.personal.shipping_address.postal_code, "62701");
        // Timestamps survive the trip at the backends' precision (ms at least).
        let created = detail.summary.created_at.timestamp_millis();
        assert_eq!(created, events[0].recorded_at.timestamp_millis());

        // A gap: nothing applied beyond it, the caller learns what is missing.
        let other = SampleOrder::new("alice", 1);
        let later = other.confirmed_events(100);
        apply_uncached::<CustomerOrder>(&store, &later[..1], None)
            .await
            .unwrap();
        let gapped = apply_uncached::<CustomerOrder>(&store, &later[3..], None)
            .await
            .unwrap();
        assert_eq!(gapped.applied, 0);
        assert_eq!((gapped.gaps[0].have, gapped.gaps[0].wanted), (1, 4));
        let versions = store.versions::<CustomerOrder>(&[other.order_id]).await.unwrap();
        assert_eq!(versions[&other.order_id], 1);
    }
}

#[tokio::test]
async fn a_stale_upsert_never_lowers_a_row_and_a_moved_checkpoint_writes_nothing() {
    for (store, _guard) in stores().await {
        let order = SampleOrder::new("bob", 1);
        let events = order.confirmed_events(1);
        apply_uncached::<CartConversion>(&store, &events, None)
            .await
            .unwrap();
        // A slower consumer folded only the first two events from scratch and
        // upserts its (older) row: the stored row keeps version 6.
        let stale = commerce::projections::fold_stream::<CartConversion>(&events[..2])
            .unwrap()
            .unwrap();
        store.upsert("cart_conversions", &[stale]).await.unwrap();
        assert_eq!(
            store.versions::<CartConversion>(&[order.order_id]).await.unwrap()[&order.order_id],
            6
        );

        // The checkpoint moves with the change, compare-and-set.
        let start = store.checkpoint("order_detail").await.unwrap();
        assert_eq!(start, Checkpoint::default());
        let advance = Advance { from: start, to: 6 };
        apply_uncached::<OrderDetail>(&store, &events[..3], Some(advance))
            .await
            .unwrap();
        assert_eq!(store.checkpoint("order_detail").await.unwrap().position, 6);
        let stale_advance = Advance { from: start, to: 9 };
        let moved = apply_uncached::<OrderDetail>(&store, &events[3..], Some(stale_advance)).await;
        assert!(
            matches!(moved, Err(ApplyError::Store(ReadModelError::CheckpointMoved(_)))),
            "{moved:?}"
        );
        let detail = store.order_detail(order.order_id).await.unwrap().unwrap();
        assert_eq!(detail.summary.version, 3, "the refused batch wrote nothing");
    }
}

#[tokio::test]
async fn orders_list_newest_first_by_keyset_pages_with_filters() {
    for (store, _guard) in stores().await {
        let base = Utc::now() - Duration::hours(1);
        let mut all = Vec::new();
        for i in 0..7 {
            let mut order = SampleOrder::new(if i % 2 == 0 { "carol" } else { "dave" }, 1);
            // Two orders share a creation time: the id breaks the tie.
            order.created_at = base + Duration::seconds(if i == 3 { 2 } else { i });
            let events = if i == 4 {
                order.cancelled_events(i * 10, "changed my mind")
            } else {
                order.confirmed_events(i * 10)[..2].to_vec()
            };
            apply_uncached::<CustomerOrder>(&store, &events, None)
                .await
                .unwrap();
            all.push(order);
        }
        let carol: Vec<_> = all.iter().filter(|o| o.customer_id == "carol").collect();
        let mut expected: Vec<_> = carol.iter().map(|o| (o.created_at, o.order_id)).collect();
        expected.sort_by(|a, b| b.cmp(a));

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_orders(&ListQuery {
                    customer_id: Some("carol".into()),
                    status: None,
                    after,
                    limit: 2,
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            let last = page.last().unwrap();
            after = Some(ListCursor {
                created_at: last.created_at,
                order_id: last.order_id,
            });
            seen.extend(page.iter().map(|s| (s.created_at.timestamp_millis(), s.order_id)));
        }
        let expected: Vec<_> = expected
            .iter()
            .map(|(t, id)| (t.timestamp_millis(), *id))
            .collect();
        assert_eq!(seen, expected, "every order once, newest first");

        let cancelled = store
            .list_orders(&ListQuery {
                customer_id: None,
                status: Some(OrderStatus::Cancelled),
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(cancelled.len(), 1);
        assert_eq!(cancelled[0].cancellation_reason, "changed my mind");
        let everyone = store
            .list_orders(&ListQuery {
                customer_id: None,
                status: None,
                after: None,
                limit: 100,
            })
            .await
            .unwrap();
        assert_eq!(everyone.len(), 7);
    }
}

#[tokio::test]
async fn conversion_figures_sum_exactly_per_day_and_currency() {
    for (store, _guard) in stores().await {
        let (a, b, c) = (
            SampleOrder::new("x", 1),
            SampleOrder::new("y", 2),
            SampleOrder::new("z", 3),
        );
        apply_uncached::<CartConversion>(&store, &a.confirmed_events(1), None)
            .await
            .unwrap();
        apply_uncached::<CartConversion>(&store, &b.cancelled_events(10, "no"), None)
            .await
            .unwrap();
        apply_uncached::<CartConversion>(&store, &c.confirmed_events(20)[..2], None)
            .await
            .unwrap();
        let figures = store
            .conversion_figures(Utc::now() - Duration::days(1), Utc::now() + Duration::days(1))
            .await
            .unwrap();
        let converted: i64 = figures.iter().map(|f| f.converted).sum();
        assert_eq!(converted, 3);
        assert_eq!(figures.iter().map(|f| f.confirmed).sum::<i64>(), 1);
        assert_eq!(figures.iter().map(|f| f.cancelled).sum::<i64>(), 1);
        let value: rust_decimal::Decimal = figures.iter().map(|f| f.converted_value).sum();
        assert_eq!(
            value,
            a.total().amount() + b.total().amount() + c.total().amount()
        );
        let confirmed: rust_decimal::Decimal = figures.iter().map(|f| f.confirmed_value).sum();
        assert_eq!(confirmed, a.total().amount());
    }
}
