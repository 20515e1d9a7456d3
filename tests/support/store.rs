//! Stores on isolated resources, events to append, raw SQL on either backend.

use std::{sync::Arc, time::Duration};

use commerce::{
    db::Db,
    store::event_store::{EventMetadata, EventStore, NewEvent, StoredEvent, Upcasters, event_store},
};
use serde_json::Value;
use uuid::Uuid;

use crate::support::app::{Backend, Isolation};

/// A store on fresh resources; keep the Isolation alive as long as the store.
pub async fn store_on(backend: Backend, upcasters: Upcasters) -> (Isolation, Db, Arc<dyn EventStore>) {
    let isolation = Isolation::new(backend).await;
    let db = isolation.backends().await.db;
    let store = event_store(&db, upcasters);
    (isolation, db, store)
}

pub fn event(event_type: &str, payload: Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_string(),
        schema_version: 1,
        payload,
        metadata: EventMetadata {
            correlation_id: Some("corr-1".into()),
            ..Default::default()
        },
    }
}

/// Runs one statement of raw SQL, the text chosen per backend.
pub async fn exec(db: &Db, postgres: &'static str, sqlite: &'static str, binds: &[&str]) {
    match db {
        Db::Postgres(pool) => {
            let mut query = sqlx::query(postgres);
            for b in binds {
                query = query.bind(*b);
            }
            query.execute(pool).await.unwrap();
        }
        Db::Sqlite(pool) => {
            let mut query = sqlx::query(sqlite);
            for b in binds {
                query = query.bind(*b);
            }
            query.execute(pool).await.unwrap();
        }
    }
}

/// Reads the whole log until it holds `expected` events. On PostgreSQL the
/// settled horizon is cluster-wide, so another test's open transaction can
/// hold it back for a moment: readers wait, they never skip.
pub async fn read_all_settled(store: &Arc<dyn EventStore>, expected: usize) -> Vec<StoredEvent> {
    for _ in 0..500 {
        let all = store.read_all(0, 1000).await.unwrap();
        if all.len() >= expected {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the log never showed {expected} settled events");
}

/// A count from raw SQL (same text on both backends, `?`/`$1`-free).
pub async fn count(db: &Db, sql: &'static str) -> i64 {
    match db {
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}
