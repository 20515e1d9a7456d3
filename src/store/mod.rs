//! Storage behind small traits, each with a PostgreSQL and an embedded
//! implementation checked by one conformance suite.

pub mod event_store;
pub mod read_models;
