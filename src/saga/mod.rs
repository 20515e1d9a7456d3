//! The durable fulfillment saga orchestrator.
//!
//! - [`plan`]: the pure rules (next step, retries, compensation, operator actions).
//! - [`store`]: sagas, steps, attempts and operator actions on PostgreSQL or SQLite, with leases.

pub mod plan;
pub mod store;
pub mod engine;
pub mod grpc_siblings;
pub mod ports;
