//! One integration-test binary for the running service (zero-to-production style).

mod helpers;

mod bus;
mod cart;
mod cart_outage;
mod cart_store;
mod deploy;
mod event_store;
mod health;
mod idempotency_store;
mod observability;
mod order_commands;
mod order_queries;
mod orders;
mod privacy;
mod privacy_leaks;
mod projections;
mod proxy;
mod read_models;
mod read_side;
mod rest;
mod rest_cart;
mod rest_client;
mod rest_docs;
mod rest_input;
mod rest_orders;
mod rest_sagas;
mod saga;
mod saga_admin;
mod saga_kill;
mod saga_simulation;
mod saga_store;
mod security;
mod security_access;
mod stubs;
