//! One integration-test binary for the running service (zero-to-production style).

mod helpers;

mod bus;
mod deploy;
mod event_store;
mod health;
mod observability;
mod read_models;
mod saga_store;
mod security;
mod stubs;
