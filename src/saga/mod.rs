//! The durable fulfillment saga orchestrator.
//!
//! - [`plan`]: the pure rules (next step, retries, compensation, operator actions).

pub mod plan;
