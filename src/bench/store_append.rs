//! `store_append`: the peer's workload without the network, on our event
//! store: per operation, a new order's two events appended at version 0, from
//! many concurrent tasks in one process, as `tools/peer-bench` does with
//! cqrs-es + postgres-es. Run twice, with group commit on and off, so the
//! report shows what group commit buys.
//!
//! Unlike the peer, which must load its aggregate before every command, the
//! stream is not read first: a new order's id is a fresh UUID v7, so its
//! stream cannot exist yet, and the append's version-0 guard refuses it if it
//! does. That is how CreateOrder appends (its expected version is 0).

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
    /// The stores under test: the unit of work appends.
    pub store: Stores,
    /// Names the customer in the payload.
    pub worker: usize,
}

#[tonic::async_trait]
impl Worker for AppendWorker {
    async fn op(&mut self) -> anyhow::Result<()> {
        // No read: a new stream is decided without loading (see the module doc).
        let order_id = Uuid::now_v7();
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
