//! "Read models equal a rebuild": the projected read models, once caught up,
//! must be exactly what replaying the event store from scratch produces.

use std::{sync::Arc, time::Duration};

use chrono::{TimeDelta, Utc};
use commerce::startup::Stores;
use commerce::{
    db::Db,
    projections::{customer_orders::OrderSummary, order_detail::OrderDetail, rebuild::Rebuild},
    store::{
        event_store::OrderCodec,
        read_models::{ListQuery, ReadModelStore, ReadModels as _},
    },
};

/// What the read models hold: every order summary (newest first), every
/// order detail, and the conversion figures.
#[derive(Debug, PartialEq)]
pub struct ReadModels {
    summaries: Vec<OrderSummary>,
    details: Vec<OrderDetail>,
    conversions: String,
}

async fn read_all(store: &ReadModelStore) -> ReadModels {
    let query = ListQuery {
        customer_id: None,
        status: None,
        after: None,
        limit: 1_000_000,
    };
    let summaries = store.list_orders(&query).await.expect("list orders");
    let mut details = Vec::new();
    for summary in &summaries {
        details.extend(store.order_detail(summary.order_id).await.expect("order detail"));
    }
    let now = Utc::now();
    let figures = store
        .conversion_figures(now - TimeDelta::days(3650), now + TimeDelta::days(1))
        .await
        .expect("conversion figures");
    ReadModels {
        summaries,
        details,
        conversions: format!("{figures:?}"),
    }
}

/// Waits until every projection's checkpoint is at the event store's head.
pub async fn caught_up(db: &Db) {
    let Stores {
        read_models: store,
        events,
        ..
    } = Stores::on(db, OrderCodec::upcasters(), true);
    crate::support::wait_for_within("projections at the head", Duration::from_secs(60), || async {
        let head = events.head_position().await.unwrap_or(-1);
        store
            .checkpoints()
            .await
            .is_ok_and(|all| !all.is_empty() && all.iter().all(|c| c.checkpoint.position == head))
    })
    .await;
}

/// Violations of "the read models equal a rebuild from the event store".
pub async fn compare_with_rebuild(db: &Db) -> Vec<String> {
    caught_up(db).await;
    let Stores {
        read_models: store,
        events,
        ..
    } = Stores::on(db, OrderCodec::upcasters(), true);
    let projected = read_all(&store).await;
    Rebuild::new(store.clone(), Arc::clone(&events))
        .run(|_| {})
        .await
        .expect("rebuild");
    let rebuilt = read_all(&store).await;
    if projected == rebuilt {
        Vec::new()
    } else {
        let differ: Vec<_> = projected
            .details
            .iter()
            .filter(|d| !rebuilt.details.contains(d))
            .map(|d| format!("projected {d:?}"))
            .take(5)
            .collect();
        vec![format!(
            "read models differ from a rebuild ({} vs {} orders): {differ:?}",
            projected.summaries.len(),
            rebuilt.summaries.len()
        )]
    }
}
