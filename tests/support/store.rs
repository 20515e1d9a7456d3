//! Stores on isolated resources, events to append, raw SQL on either backend.

use std::{ops::Deref, sync::Arc, time::Duration};

use commerce::{
    db::Db,
    startup::Stores,
    store::{
        event_store::{
            AppendResult, EventMetadata, EventStore, EventStoreError, NewEvent, ORDER_STREAM, StoredEvent,
            StreamAppend, Upcasters,
        },
        saga::SagaWrite,
        unit_of_work::{UnitOfWork, UnitOfWorkCommitter},
    },
};
use serde_json::Value;
use uuid::Uuid;

use crate::support::app::{Backend, Isolation};

/// The event log as a test drives it: reads through the event store (it
/// derefs to it), appends through the unit of work, the one write path.
#[derive(Clone, Debug)]
pub struct EventLog {
    /// The event store's reads.
    pub events: Arc<dyn EventStore>,
    /// The unit of work a lone append commits through.
    pub units: Arc<dyn UnitOfWorkCommitter>,
}

impl EventLog {
    /// The log of `db` (group commit on), reading with `upcasters`.
    pub fn on(db: &Db, upcasters: Upcasters) -> Self {
        let stores = Stores::on(db, upcasters, true);
        Self {
            events: stores.events,
            units: stores.units,
        }
    }

    /// The log of a running service: its own event store and unit of work.
    pub fn of(app: &commerce::app::App) -> Self {
        Self {
            events: app.events.clone(),
            units: app.units.clone(),
        }
    }

    /// Appends `events` alone at `expected_version` (a unit of one append).
    pub async fn append(
        &self,
        stream_id: Uuid,
        expected_version: u64,
        events: Vec<NewEvent>,
        stream_type: &str,
    ) -> Result<AppendResult, EventStoreError> {
        self.units
            .append(stream_id, expected_version, events, stream_type)
            .await
    }

    /// Reads the whole log until it holds `expected` events. On PostgreSQL the
    /// settled horizon is cluster-wide, so another test's open transaction can
    /// hold it back for a moment: readers wait, they never skip.
    pub async fn read_all_settled(&self, expected: usize) -> Vec<StoredEvent> {
        for _ in 0..500 {
            let all = self.read_all(0, 1000).await.unwrap();
            if all.len() >= expected {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the log never showed {expected} settled events");
    }
}

impl Deref for EventLog {
    type Target = dyn EventStore;

    fn deref(&self) -> &Self::Target {
        self.events.as_ref()
    }
}

/// A log on fresh resources; keep the Isolation alive as long as the log.
pub async fn store_on(backend: Backend, upcasters: Upcasters) -> (Isolation, Db, EventLog) {
    let isolation = Isolation::new(backend).await;
    let db = isolation.backends().await.db;
    let store = EventLog::on(&db, upcasters);
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

/// An order event (empty payload) at `version` and a saga part, in one unit of work.
pub fn order_unit(order_id: Uuid, version: u64, event_type: &str, saga: SagaWrite) -> UnitOfWork {
    UnitOfWork {
        appends: vec![StreamAppend {
            stream_id: order_id,
            stream_type: ORDER_STREAM.into(),
            expected_version: Some(version),
            events: vec![event(event_type, Value::Object(Default::default()))],
        }],
        saga: Some(saga),
        idempotency: None,
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

/// A count from raw SQL (same text on both backends, `?`/`$1`-free).
pub async fn count(db: &Db, sql: &'static str) -> i64 {
    match db {
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

/// A count from raw SQL with one text bound (`$1` on PostgreSQL, `?1` on
/// SQLite, the text chosen per backend).
pub async fn count_with(db: &Db, postgres: &'static str, sqlite: &'static str, bind: &str) -> i64 {
    match db {
        Db::Postgres(pool) => sqlx::query_scalar(postgres)
            .bind(bind)
            .fetch_one(pool)
            .await
            .unwrap(),
        Db::Sqlite(pool) => sqlx::query_scalar(sqlite)
            .bind(bind)
            .fetch_one(pool)
            .await
            .unwrap(),
    }
}
