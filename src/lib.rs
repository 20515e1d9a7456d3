//! # commerce
//!
//! A gRPC-first commerce service: carts, event-sourced orders, a CQRS read
//! side and a durable fulfillment saga.
//!
//! # Layout
//! - [`config`]: environment to [`config::Config`], validated once, one part
//!   per component.
//! - [`startup`]: builds the [`startup::Application`]: one port for gRPC and HTTP.
//! - [`app`]: the application layer, the only API the transports call.
//! - [`grpc`]: tonic services, thin over [`app`].
//! - [`rest`]: the REST/JSON shim, `/openapi.json` and `/docs`, over the same services.
//! - [`auth`]: JWT bearer authentication for both transports.
//! - [`domain`]: pure business rules (money, carts, orders).
//! - [`ratelimit`]: per-principal token buckets (per replica).
//! - [`privacy`]: crypto-shredding of personal data in events (ForgetCustomer).
//! - [`bounds`]: request deadlines (capped) and the oversized-message answer.
//! - [`db`], [`health`]: backends and their health.
//! - [`store`]: storage traits and their PostgreSQL / Redis / embedded implementations.
//! - [`error`], [`transport`]: one error type mapped to gRPC and HTTP.
//! - [`telemetry`], [`metrics`]: JSON logs, OpenTelemetry traces, Prometheus `/metrics`.
//! - [`proto`]: generated code.
//! - [`saga`]: the durable fulfillment saga orchestrator.
//! - [`stubs`]: the payment, inventory and shipping stubs (`commerce stubs`).

pub mod app;
pub mod auth;
pub mod bench;
pub mod bounds;
pub mod bus;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod outbox;
pub mod privacy;
pub mod projections;
pub mod proto;
pub mod ratelimit;
pub mod rest;
pub mod saga;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod stubs;
pub mod telemetry;
pub mod transport;
