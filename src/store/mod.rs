//! Storage behind small traits, one module per kind of data, each with a real
//! (PostgreSQL or Redis) and an embedded implementation checked by one
//! conformance suite.

pub mod cart;
pub mod event_store;
pub mod idempotency;
pub mod read_models;
