//! The durable fulfillment saga orchestrator.
//!
//! - [`plan`]: the pure rules (next step, retries, compensation, operator actions).
//! - [`engine`]: drives one claimed saga, recording each attempt before and after its call.
//! - [`worker`]: the claim loop of one replica (leases, wake-ups, polling).
//! - [`ports`]: what the engine drives, behind traits (siblings, the order).
//! - [`grpc_siblings`]: the siblings over gRPC (deadline, key, trace context).

pub mod engine;
pub mod grpc_siblings;
pub mod plan;
pub mod ports;
pub mod worker;
