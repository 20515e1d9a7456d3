//! Projection status: checkpoint, lag and rebuild progress of every
//! projection, for AdminService.GetProjectionStatus, `/health` and the
//! `projection_lag_events` gauge.

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use super::{cart_conversion::CartConversion, customer_orders::CustomerOrder, order_detail::OrderDetail};
use crate::{
    health::Health,
    projections::ReadModel,
    shutdown::Shutdown,
    store::{
        event_store::EventStore,
        read_models::{ReadModelStore, ReadModels},
    },
};

/// Names of every projection, as they appear in metrics and status.
pub const PROJECTIONS: [&str; 3] = [OrderDetail::NAME, CustomerOrder::NAME, CartConversion::NAME];

/// A rebuild that has not reported for this long is taken as dead.
const REBUILD_STALE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// The state of one projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionState {
    /// Projection name, as in its checkpoint row (e.g. `order_detail`).
    pub name: String,
    /// Last global position swept.
    pub checkpoint: i64,
    /// The event store's settled head.
    pub head: i64,
    /// head - checkpoint (positions, so approximately events).
    pub lag_events: i64,
    /// A rebuild is running (and reported recently).
    pub rebuilding: bool,
    /// Events the running rebuild replayed.
    pub rebuild_replayed: i64,
    /// Events it has to replay.
    pub rebuild_total: i64,
}

/// Every projection's checkpoint, lag behind the settled head and rebuild progress (the
/// AdminService and /metrics figures).
pub async fn states(store: &ReadModelStore, events: &dyn EventStore) -> anyhow::Result<Vec<ProjectionState>> {
    let head = events.head_position().await?;
    let now = Utc::now();
    Ok(store
        .checkpoints()
        .await?
        .into_iter()
        .map(|row| {
            let rebuilding = row.rebuilding
                && row
                    .rebuild_heartbeat_at
                    .is_some_and(|beat| now - beat < REBUILD_STALE_AFTER);
            ProjectionState {
                lag_events: (head - row.checkpoint.position).max(0),
                checkpoint: row.checkpoint.position,
                head,
                rebuilding,
                rebuild_replayed: if rebuilding { row.rebuild_replayed } else { 0 },
                rebuild_total: if rebuilding { row.rebuild_total } else { 0 },
                name: row.name,
            }
        })
        .collect())
}

/// Publishes the states every `every` to `/health` ("projections") and to
/// the lag gauge, until `shutdown` fires.
pub async fn report(
    store: ReadModelStore,
    events: std::sync::Arc<dyn EventStore>,
    health: Health,
    every: Duration,
    shutdown: Shutdown,
) {
    loop {
        match states(&store, events.as_ref()).await {
            Ok(states) => {
                for state in &states {
                    if let Some(name) = PROJECTIONS.iter().find(|name| **name == state.name) {
                        crate::metrics::projection_lag(name, state.lag_events as u64);
                        let progress = match state.rebuild_total {
                            total if state.rebuilding && total > 0 => {
                                state.rebuild_replayed as f64 / total as f64
                            }
                            _ => 0.0,
                        };
                        crate::metrics::projection_rebuild_progress(name, progress);
                    }
                }
                let json = serde_json::to_value(&states).unwrap_or_default();
                health.set_extra("projections", json).await;
            }
            Err(error) => {
                let json = serde_json::json!({ "error": format!("{error:#}") });
                health.set_extra("projections", json).await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return,
        }
    }
}
