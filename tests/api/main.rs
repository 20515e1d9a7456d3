//! One integration-test binary for the running service (zero-to-production style).

mod helpers;

mod bus;
mod health;
mod observability;
mod stubs;
