//! The domain: pure business rules, no I/O, no transport or storage types.

pub mod cart;
pub mod money;
pub mod order;
pub mod reason;
pub mod text;
