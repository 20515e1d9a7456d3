//! The one place that picks each storage port's backend. Every store is a
//! trait with a PostgreSQL and a SQLite implementation side by side; this
//! module matches on the configured database once and hands the rest of the
//! service trait objects, so no other module knows which database it runs on.

use std::sync::Arc;

use crate::{
    app::replica::ReplicaReads,
    config::{CartSettings, RedisSettings},
    db::{Backends, Db},
    privacy::{KeyStore, PostgresKeyStore, SqliteKeyStore},
    store::{
        cart::{CartStore, MemoryCartStore, RedisCartStore},
        consumers::{ConsumerStore, PostgresConsumerStore, SqliteConsumerStore},
        event_store::{EventStore, PostgresEventStore, SqliteEventStore, Upcasters},
        idempotency::{IdempotencyStore, PostgresIdempotencyStore, SqliteIdempotencyStore},
        read_models::{PostgresReadModels, ReadModelStore, SqliteReadModels},
        relay_cursor::{PostgresRelayCursor, RelayCursor, SqliteRelayCursor},
        saga::{PostgresSagaStore, SagaStore, SqliteSagaStore},
        unit_of_work::{PostgresUnitOfWork, SqliteUnitOfWork, UnitOfWorkCommitter},
    },
};

/// The stores of one database, each behind its port.
#[derive(Clone, Debug)]
pub struct Stores {
    /// Reads of the event log (appends go through `units`).
    pub events: Arc<dyn EventStore>,
    /// Commits several owners' writes in one transaction (group-committed
    /// on PostgreSQL when EVENT_STORE_GROUP_COMMIT is on).
    pub units: Arc<dyn UnitOfWorkCommitter>,
    /// The event log as stored, without upcasting: what the relay publishes,
    /// so that bus entries carry each payload at its stored schema version.
    pub stored_events: Arc<dyn EventStore>,
    /// How far the relay has published the log.
    pub relay_cursor: Arc<dyn RelayCursor>,
    /// Sagas, their steps, attempts and operator actions.
    pub sagas: Arc<dyn SagaStore>,
    /// CreateOrder's idempotency keys (claimed before, completed in the unit of work).
    pub idempotency_keys: Arc<dyn IdempotencyStore>,
    /// The read models' rows and checkpoints.
    pub read_models: ReadModelStore,
    /// Wrapped data keys and erasure records (crypto-shredding).
    pub customer_keys: Arc<dyn KeyStore>,
    /// Named consumers of the public event feed and their checkpoints.
    pub consumers: Arc<dyn ConsumerStore>,
}

impl Stores {
    /// The stores on `db` (migrated), reading events upcast by `upcasters`;
    /// `group_commit` off commits every unit of work alone (PostgreSQL only:
    /// SQLite has one writer at a time either way).
    pub fn on(db: &Db, upcasters: Upcasters, group_commit: bool) -> Self {
        match db {
            Db::Postgres(pool) => Self {
                events: Arc::new(PostgresEventStore::new(pool.clone(), upcasters.clone())),
                units: Arc::new(PostgresUnitOfWork::new(pool.clone(), upcasters, group_commit)),
                stored_events: Arc::new(PostgresEventStore::new(pool.clone(), Upcasters::none())),
                relay_cursor: Arc::new(PostgresRelayCursor::new(pool.clone())),
                sagas: Arc::new(PostgresSagaStore::new(pool.clone())),
                idempotency_keys: Arc::new(PostgresIdempotencyStore::new(pool.clone())),
                read_models: ReadModelStore::Postgres(PostgresReadModels::new(pool.clone())),
                customer_keys: Arc::new(PostgresKeyStore::new(pool.clone())),
                consumers: Arc::new(PostgresConsumerStore::new(pool.clone())),
            },
            Db::Sqlite(pool) => Self {
                events: Arc::new(SqliteEventStore::new(pool.clone(), upcasters.clone())),
                units: Arc::new(SqliteUnitOfWork::new(pool.clone(), upcasters)),
                stored_events: Arc::new(SqliteEventStore::new(pool.clone(), Upcasters::none())),
                relay_cursor: Arc::new(SqliteRelayCursor::new(pool.clone())),
                sagas: Arc::new(SqliteSagaStore::new(pool.clone())),
                idempotency_keys: Arc::new(SqliteIdempotencyStore::new(pool.clone())),
                read_models: ReadModelStore::Sqlite(SqliteReadModels::new(pool.clone())),
                customer_keys: Arc::new(SqliteKeyStore::new(pool.clone())),
                consumers: Arc::new(SqliteConsumerStore::new(pool.clone())),
            },
        }
    }
}

/// The reads a streaming replica of PostgreSQL serves: its read models and
/// event log (see [`crate::app::replica`]).
pub fn replica_reads(replica: &sqlx::PgPool, upcasters: Upcasters) -> ReplicaReads {
    ReplicaReads::new(
        ReadModelStore::Postgres(PostgresReadModels::new(replica.clone())),
        Arc::new(PostgresEventStore::new(replica.clone(), upcasters)),
    )
}

/// The cart store: Redis when configured, the in-process store otherwise
/// (keys under REDIS_KEY_PREFIX).
pub fn cart_store(redis: &RedisSettings, backends: &Backends) -> Arc<dyn CartStore> {
    match &backends.redis {
        Some(pool) => Arc::new(RedisCartStore::new(
            pool.clone(),
            &redis.key_prefix,
            redis.pool_timeout,
        )),
        None => Arc::new(MemoryCartStore::new()),
    }
}

/// The cart application over [`cart_store`], carts living CART_TTL_HOURS.
pub fn cart_app(
    settings: &CartSettings,
    redis: &RedisSettings,
    backends: &Backends,
) -> crate::app::cart::CartApp {
    crate::app::cart::CartApp::new(cart_store(redis, backends), settings.ttl)
}
