//! `store_append`: the peer's workload without the network, on our event
//! store: per operation, read a new order's stream (empty) and append its two
//! events at version 0, from many concurrent tasks in one process, as
//! `tools/peer-bench` does with cqrs-es + postgres-es. Run twice, with group
//! commit on and off, so the report shows what group commit buys.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use super::runner::Worker;
use crate::{
    db::Db,
    startup::Stores,
    store::event_store::{EventMetadata, NewEvent, ORDER_STREAM, Upcasters},
};

/// The stores of a fresh, migrated database at `url`; appends go through the
/// unit of work, as every append of the service does.
pub async fn store(url: &str, pool_size: u32, group_commit: bool) -> anyhow::Result<Stores> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?;
    let db = Db::Postgres(pool);
    db.migrate().await?;
    Ok(Stores::on(&db, Upcasters::none(), group_commit))
}

/// One create-order command per operation.
pub struct AppendWorker {
    /// The stores under test: the event store reads, the unit of work appends.
    pub store: Stores,
    /// Names the customer in the payload.
    pub worker: usize,
}

#[tonic::async_trait]
impl Worker for AppendWorker {
    async fn op(&mut self) -> anyhow::Result<()> {
        let order_id = Uuid::now_v7();
        // Load (nothing there yet), decide, append: the peer's command cycle.
        let loaded = self.store.events.read_stream(order_id, 1).await?;
        anyhow::ensure!(loaded.is_empty(), "a new order has no events");
        let event = |event_type: &str, payload: serde_json::Value| NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: EventMetadata::default(),
        };
        let items = json!([["sku-bench-1", 2, 2999]]);
        let events = vec![
            event(
                "OrderCreated",
                json!({"customer_id": format!("bench-{}", self.worker), "items": items, "total_cents": 5998}),
            ),
            event("SagaStarted", json!({"step": "authorize_payment"})),
        ];
        self.store.units.append(order_id, 0, events, ORDER_STREAM).await?;
        Ok(())
    }
}
