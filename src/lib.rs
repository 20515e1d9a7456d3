//! # commerce
//!
//! A gRPC-first commerce service: carts, event-sourced orders, a CQRS read
//! side and a durable fulfillment saga.
//!
//! # Layout
//! Layers, each using only itself and the layers below (checked by
//! `tests/api/architecture.rs`; the README's "Architecture" section has the picture):
//! - **domain** (pure): [`domain`] (money, carts, the order aggregate) and
//!   [`saga::plan`] (the saga's state machine).
//! - **kernel**: [`config`] (environment to [`config::Config`], validated once, one
//!   part per component), [`error`] and
//!   [`transport`] (one error type mapped to gRPC and HTTP), [`wire`] (gRPC
//!   compression and the HTTP/2 connection lifecycle, for every server and client), [`shutdown`],
//!   [`telemetry`] (JSON logs, OpenTelemetry traces), [`metrics`] (the recorders),
//!   [`proto`] (generated code).
//! - **storage**: [`store`] (the ports and their PostgreSQL / SQLite / Redis
//!   backends, the unit of work), [`bus`], [`db`], [`redis_conn`] (one Redis or a
//!   Redis Cluster behind one pool) and [`health`] (backends and their health), [`privacy`] (crypto-shredding of personal data: ForgetCustomer).
//! - **application**: [`app`] (the only API the transports call), [`projections`]
//!   (the read side), [`relay`] (the settled log to the bus), [`saga`] (the durable fulfillment
//!   saga: engine, workers, sibling clients), [`auth`] (who is calling).
//! - **transports**: [`grpc`] (tonic services, thin over [`app`]), [`rest`] (the
//!   REST/JSON shim, `/openapi.json`, `/docs`, over the same services),
//!   [`metrics::endpoint`] (`/metrics`), [`auth::layer::AuthLayer`], [`ratelimit`], [`bounds`]
//!   (request deadlines, the oversized-message answer), [`serve`] (the accept loop
//!   of the one port: HTTP/1.1 and HTTP/2, one header bound), [`stubs`] (the payment,
//!   inventory and shipping stubs, `commerce stubs`).
//! - **startup**: [`startup`] builds the [`startup::Application`] (chooses the
//!   backends, wires the read side; one port for gRPC and HTTP); [`bench`].

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
pub mod privacy;
pub mod projections;
pub mod proto;
pub mod ratelimit;
pub mod redis_conn;
pub mod relay;
pub mod rest;
pub mod saga;
pub mod serve;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod stubs;
pub mod telemetry;
pub mod transport;
pub mod wire;
