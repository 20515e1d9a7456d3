//! Storage behind small traits, one module per kind of data, each with a real
//! (PostgreSQL or Redis) and an embedded implementation checked by one
//! conformance suite. Each table is written by one module; writes of several
//! tables that must commit together go through a [`unit_of_work`], which
//! also lists the owner of every table.

pub mod cart;
pub mod columns;
pub mod consumers;
pub mod event_store;
pub mod group_commit;
pub mod idempotency;
pub mod read_models;
pub mod saga;
pub mod unit_of_work;
