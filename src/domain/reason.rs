//! The stable, machine-readable reasons of refusals: the `reason` of the
//! `google.rpc.ErrorInfo` every refused call carries (domain [`REASON_DOMAIN`]),
//! and the code an order cancelled by its saga keeps
//! (`Order.cancellation_reason_code`).
//!
//! The list is part of the contract: `proto/commerce/v1/errors.proto` declares
//! the same names as the `commerce.v1.ErrorReason` enum (a test keeps the two
//! equal), the README lists them. A name is never reused for another meaning;
//! new reasons are added, old ones stay.

/// The `ErrorInfo.domain` of every reason below.
pub const REASON_DOMAIN: &str = "commerce.v1";

macro_rules! reasons {
    ($($(#[$meta:meta])* $variant:ident = $text:literal),+ $(,)?) => {
        /// Why a call was refused, or why an order was cancelled.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorReason { $($(#[$meta])* $variant),+ }

        impl ErrorReason {
            /// Every reason, in declaration order.
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            /// The wire name (`ErrorInfo.reason`, the proto enum value name).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// From the wire name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

reasons!(
    // Bad input (INVALID_ARGUMENT).
    /// One or more fields are invalid; `BadRequest` names them.
    ValidationFailed = "VALIDATION_FAILED",
    /// An idempotency key was sent again with a different request body.
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED",
    // Identity (UNAUTHENTICATED, PERMISSION_DENIED).
    /// No bearer token, or one that does not verify (expired, wrong issuer...).
    Unauthenticated = "UNAUTHENTICATED",
    /// The token's roles do not allow the call (e.g. admin only).
    PermissionDenied = "PERMISSION_DENIED",
    // Missing or duplicate things (NOT_FOUND, ALREADY_EXISTS).
    /// The resource does not exist or belongs to someone else; `ResourceInfo` says which.
    NotFound = "NOT_FOUND",
    /// The resource exists already (ALREADY_EXISTS).
    AlreadyExists = "ALREADY_EXISTS",
    // Concurrency (ABORTED): read again and retry.
    /// The cart is not at the version the caller expected (or changed during checkout).
    CartVersionMismatch = "CART_VERSION_MISMATCH",
    /// Another writer changed the order or saga first.
    ConcurrentModification = "CONCURRENT_MODIFICATION",
    /// A request with the same idempotency key is still being processed.
    IdempotencyKeyInFlight = "IDEMPOTENCY_KEY_IN_FLIGHT",
    // State (FAILED_PRECONDITION): retrying the same call will not help.
    /// The cart was converted into an order and no longer changes.
    CartNotActive = "CART_NOT_ACTIVE",
    /// Checkout of a cart with no items.
    CartEmpty = "CART_EMPTY",
    /// The order can no longer be cancelled (confirmed, cancelled, or paid).
    OrderNotCancellable = "ORDER_NOT_CANCELLABLE",
    /// The order's status does not allow the command.
    OrderStateInvalid = "ORDER_STATE_INVALID",
    /// The saga is not FAILED or COMPENSATION_FAILED, or the step cannot be skipped.
    SagaActionNotAllowed = "SAGA_ACTION_NOT_ALLOWED",
    // Bounds (RESOURCE_EXHAUSTED): `RetryInfo` says when, where known.
    /// The caller's request rate is over its limit.
    RateLimited = "RATE_LIMITED",
    /// The request (or its body) is larger than the configured bound.
    RequestTooLarge = "REQUEST_TOO_LARGE",
    /// Too many server streams (WatchOrder, Subscribe) are open.
    TooManyStreams = "TOO_MANY_STREAMS",
    // Transient (UNAVAILABLE, DEADLINE_EXCEEDED): retry with backoff.
    /// A backend (database, Redis) cannot be reached.
    DependencyUnavailable = "DEPENDENCY_UNAVAILABLE",
    /// The server is shutting down; the call can be repeated on another replica.
    ShuttingDown = "SHUTTING_DOWN",
    /// The request's deadline passed before it finished.
    DeadlineExceeded = "DEADLINE_EXCEEDED",
    // Bugs (INTERNAL).
    /// A bug or an unexpected failure; details are only in the log.
    Internal = "INTERNAL",
    // Why an order was cancelled (Order.cancellation_reason_code only).
    /// The payment provider declined the payment method.
    PaymentDeclined = "PAYMENT_DECLINED",
    /// The inventory service could not reserve an item.
    OutOfStock = "OUT_OF_STOCK",
    /// The shipping service cannot ship to the address.
    AddressUnshippable = "ADDRESS_UNSHIPPABLE",
    /// The order itself refused a fulfillment step.
    FulfillmentRefused = "FULFILLMENT_REFUSED",
    /// Someone asked for the cancellation (CancelOrder).
    CancellationRequested = "CANCELLATION_REQUESTED",
    /// Fulfillment did not finish within ORDER_TIMEOUT_MINUTES.
    OrderTimedOut = "ORDER_TIMED_OUT",
    // Added with the event feed (FAILED_PRECONDITION).
    /// The event feed already has its maximum number of durable consumers.
    ConsumerLimitReached = "CONSUMER_LIMIT_REACHED",
);

/// Stored as its wire name (in `OrderCancelled` events and refusals).
impl serde::Serialize for ErrorReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorReason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown error reason {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_wire_name_and_names_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for reason in ErrorReason::ALL {
            assert_eq!(ErrorReason::parse(reason.as_str()), Some(*reason));
            assert!(seen.insert(reason.as_str()), "{reason:?} twice");
            assert!(
                reason
                    .as_str()
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_'),
                "AIP-193 wants UPPER_SNAKE_CASE: {reason:?}"
            );
        }
        assert_eq!(ErrorReason::parse("payment_declined"), None);
    }
}
