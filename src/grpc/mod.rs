//! gRPC transport: one file per service, thin over [`crate::app`].

pub mod admin;
pub mod cart;
pub mod convert;
pub mod events;
pub mod order;
pub mod saga_admin;
