//! Why the aggregate refused a command. Every variant is a precondition the
//! order's state does not meet (FAILED_PRECONDITION over gRPC), except
//! [`OrderError::NotFound`].

use super::status::OrderStatus;
use crate::domain::money::MoneyError;

/// A refused order command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// A command other than PlaceOrder on an order that does not exist.
    #[error("order not found")]
    NotFound,
    /// PlaceOrder on an existing order.
    #[error("the order already exists")]
    AlreadyPlaced,
    /// PlaceOrder without lines.
    #[error("an order needs at least one item")]
    Empty,
    /// A line with quantity 0 or a price in another currency.
    #[error("invalid order line {product_id:?}: {reason}")]
    InvalidLine {
        /// The offending line's product id, so the client can find the line.
        product_id: String,
        /// What is wrong with the line (quantity 0, a price in another currency).
        reason: String,
    },
    /// A total did not fit.
    #[error("order total: {0}")]
    Money(#[from] MoneyError),
    /// The command does not apply in the order's status.
    #[error("{command} is not allowed while the order is {status}")]
    InvalidTransition {
        /// Name of the refused command, e.g. `Confirm`.
        command: &'static str,
        /// The status that does not allow it.
        status: OrderStatus,
    },
    /// Cancellation after the payment was captured (the pivot).
    #[error("the payment was already captured; the order can no longer be cancelled")]
    CaptureIsFinal,
    /// The same step reported again with a different id.
    #[error("{step} was already recorded with a different id")]
    ConflictingFact {
        /// The step reported twice, e.g. `PaymentAuthorized`.
        step: &'static str,
    },
}
