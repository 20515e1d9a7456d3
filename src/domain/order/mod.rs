//! The Order aggregate: commands in, events out, state rebuilt by folding
//! events. Pure: no I/O, no clock, no JSON (the event store's codec does that).
//!
//! # State machine
//! ```text
//! PENDING -> PAYMENT_AUTHORIZED -> INVENTORY_RESERVED -> SHIPPING_ARRANGED -> CONFIRMED
//!    \______________\____________________\___________________\  (before capture)
//!                                                              -> CANCELLED(reason)
//! ```
//! Payment capture (recorded while SHIPPING_ARRANGED) is the pivot: before it
//! the order can be cancelled, after it only confirmation remains. Facts
//! reported by the saga (authorized, reserved, arranged, captured) are recorded
//! in sequence even while a cancellation is pending, since they happened;
//! repeating a fact already recorded is a no-op, so the saga may retry.

mod aggregate;
mod command;
mod error;
mod event;
mod status;

#[cfg(test)]
mod tests;

pub use self::{
    aggregate::{Order, PlacedOrder},
    command::{OrderCommand, PlaceOrder},
    error::OrderError,
    event::{
        CancellationRequested, InventoryReserved, OrderCancelled, OrderConfirmed, OrderCreated, OrderEvent,
        OrderLine, PaymentAuthorized, PaymentCaptured, PersonalData, ShippingAddress, ShippingArranged,
    },
    status::{OrderStatus, UnknownStatus},
};
