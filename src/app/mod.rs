//! The application layer: the only API the gRPC and REST transports call.
//! Each capability adds its handlers here as a sub-module.

pub mod appended;
pub mod cart;
pub mod events;
pub mod orders;
pub mod paging;
pub mod privacy;
pub mod queries;
pub mod replica;
pub mod retention;
pub mod sagas;
pub mod watch;

use std::sync::Arc;

use crate::{
    bus::EventBus,
    db::Backends,
    health::Health,
    privacy::Vault,
    shutdown::Shutdown,
    store::{event_store::EventStore, unit_of_work::UnitOfWorkCommitter},
};

/// Everything a request handler needs, cheap to clone.
#[derive(Clone)]
pub struct App {
    /// Database and Redis pools, for health checks and background tasks.
    pub backends: Backends,
    /// What `/health` and gRPC health report; the monitor updates it.
    pub health: Health,
    /// Fires on graceful shutdown (streams end, workers stop).
    pub shutdown: Shutdown,
    /// The event store of the write side (read side and saga read it too).
    pub events: Arc<dyn EventStore>,
    /// The one write path of the event log and the tables that commit with it.
    pub units: Arc<dyn UnitOfWorkCommitter>,
    /// Carts (Redis or in-process).
    pub carts: cart::CartApp,
    /// Orders, command side (CreateOrder, CancelOrder, the saga's commands).
    pub orders: orders::OrderApp,
    /// Personal data: per-customer encryption and ForgetCustomer (crypto-shredding).
    pub privacy: Vault,
    /// The event bus (Redis Streams or in-process) the relay feeds.
    pub bus: Arc<dyn EventBus>,
    /// Order queries and the read side's admin tools.
    pub queries: queries::QueryApp,
    /// Fulfillment sagas: the workers' start and the operator API.
    pub sagas: sagas::SagaApp,
    /// The public order-event feed for sibling services and its named consumers.
    pub feed: events::EventFeed,
    /// Deletes finished work past its age (the background job, `commerce purge`).
    pub retention: retention::Retention,
}
