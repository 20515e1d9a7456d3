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
use uuid::Uuid;

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

/// Waits until every committed event is settled and every projection's
/// checkpoint is at the event store's head.
pub async fn caught_up(db: &Db) {
    let Stores {
        read_models: store,
        events,
        ..
    } = Stores::on(db, OrderCodec::upcasters(), true);
    crate::support::wait_for_within("projections at the head", Duration::from_secs(60), || async {
        if unsettled(db).await != 0 {
            return false;
        }
        let head = events.head_position().await.unwrap_or(-1);
        store
            .checkpoints()
            .await
            .is_ok_and(|all| !all.is_empty() && all.iter().all(|c| c.checkpoint.position == head))
    })
    .await;
}

/// Committed events the settled log does not show yet. On PostgreSQL an
/// open transaction of any database of the cluster (another test's) holds
/// back the snapshot's xmin, so the head can stop short of events the bus
/// already projected; a rebuild taken then would miss them. SQLite settles
/// at commit.
async fn unsettled(db: &Db) -> i64 {
    match db {
        Db::Postgres(pool) => sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(pool)
        .await
        .unwrap_or(-1),
        Db::Sqlite(_) => 0,
    }
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
    differences(&projected, &rebuilt)
}

/// Most orders shown per difference report: enough to see a pattern.
const SHOWN: usize = 5;

/// Each order whose summary or detail differs, with both sides (projected,
/// then rebuilt; `None` when one side lacks the order), and the conversion
/// figures when they differ: a failure says what differs, not only that.
fn differences(projected: &ReadModels, rebuilt: &ReadModels) -> Vec<String> {
    if projected == rebuilt {
        return Vec::new();
    }
    let mut ids: Vec<_> = projected
        .summaries
        .iter()
        .chain(&rebuilt.summaries)
        .map(|s| s.order_id)
        .collect();
    ids.sort();
    ids.dedup();
    fn summary(side: &ReadModels, id: Uuid) -> Option<&OrderSummary> {
        side.summaries.iter().find(|s| s.order_id == id)
    }
    fn detail(side: &ReadModels, id: Uuid) -> Option<&OrderDetail> {
        side.details.iter().find(|d| d.summary.order_id == id)
    }
    let differing: Vec<_> = ids
        .into_iter()
        .filter(|&id| {
            summary(projected, id) != summary(rebuilt, id) || detail(projected, id) != detail(rebuilt, id)
        })
        .collect();
    let mut report = vec![format!(
        "read models differ from a rebuild ({} vs {} orders, {} differing; the first {SHOWN} follow)",
        projected.summaries.len(),
        rebuilt.summaries.len(),
        differing.len()
    )];
    for id in differing.into_iter().take(SHOWN) {
        report.push(format!(
            "order {id}: summary projected {:?}\n  rebuilt {:?}\n  detail projected {:?}\n  rebuilt {:?}\n  \
             personal data (not printed) equal: {}",
            summary(projected, id),
            summary(rebuilt, id),
            detail(projected, id).map(|d| &d.summary),
            detail(rebuilt, id).map(|d| &d.summary),
            detail(projected, id).map(|d| &d.personal) == detail(rebuilt, id).map(|d| &d.personal),
        ));
    }
    if projected.conversions != rebuilt.conversions {
        report.push(format!(
            "conversion figures: projected {}\n  rebuilt {}",
            projected.conversions, rebuilt.conversions
        ));
    }
    report
}
