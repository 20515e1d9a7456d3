//! `store_append`: the peer's workload without the network, on our event
//! store: per operation, read a new order's stream (empty) and append its two
//! events at version 0, from many concurrent tasks in one process, as
//! `tools/peer-bench` does with cqrs-es + postgres-es. Run twice, with group
//! commit on and off, so the report shows what group commit buys.

use std::{sync::Arc, time::Duration};

use serde_json::json;
use uuid::Uuid;

use super::runner::Worker;
use crate::{
    db::Db,
    store::event_store::{EventMetadata, EventStore, NewEvent, ORDER_STREAM, Upcasters, event_store_with},
};

/// The event store on a fresh, migrated database at `url`.
pub async fn store(url: &str, pool_size: u32, group_commit: bool) -> anyhow::Result<Arc<dyn EventStore>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?;
    let db = Db::Postgres(pool);
    db.migrate().await?;
    Ok(event_store_with(&db, Upcasters::none(), group_commit))
}

/// One create-order command per operation.
pub struct AppendWorker {
    /// The store under test.
    pub store: Arc<dyn EventStore>,
    /// Names the customer in the payload.
    pub worker: usize,
}

#[tonic::async_trait]
impl Worker for AppendWorker {
    async fn op(&mut self) -> anyhow::Result<()> {
        let order_id = Uuid::now_v7();
        // Load (nothing there yet), decide, append: the peer's command cycle.
        let loaded = self.store.read_stream(order_id, 1).await?;
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
        self.store.append(order_id, 0, events, ORDER_STREAM).await?;
        Ok(())
    }
}
