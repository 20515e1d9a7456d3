//! The application error, and the one table that maps it to gRPC status codes
//! (with `google.rpc` details) and to HTTP status codes.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use crate::domain::reason::{ErrorReason, REASON_DOMAIN};

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Field path, e.g. `items[0].unit_price`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// What a NOT_FOUND was about: names the `ResourceInfo.resource_type`.
/// Serialised (snake_case) in the refusals an idempotency key remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// An order (`commerce.v1.Order`).
    Order,
    /// A cart by id (`commerce.v1.Cart`).
    Cart,
    /// The caller's active cart (`commerce.v1.Cart`, named by the customer).
    ActiveCart,
    /// A product line of a cart (`commerce.v1.CartItem`, named by product id).
    CartItem,
    /// A fulfillment saga (`commerce.v1.Saga`).
    Saga,
    /// A durable consumer of the event feed (`commerce.events.v1.Consumer`).
    Consumer,
}

impl Resource {
    /// The proto message name, for `ResourceInfo.resource_type`.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::Order => "commerce.v1.Order",
            Self::Cart | Self::ActiveCart => "commerce.v1.Cart",
            Self::CartItem => "commerce.v1.CartItem",
            Self::Saga => "commerce.v1.Saga",
            Self::Consumer => "commerce.events.v1.Consumer",
        }
    }

    fn describe(self, name: &str) -> String {
        match self {
            Self::Order => "order not found".into(),
            Self::Cart => "cart not found".into(),
            Self::ActiveCart => "active cart not found".into(),
            Self::CartItem => format!("product {name:?} in the cart not found"),
            Self::Saga => format!("saga {name} not found"),
            Self::Consumer => format!("consumer {name} not found"),
        }
    }
}

/// Every error the application layer returns to a transport. Each variant
/// knows its gRPC code ([`AppError::code`]) and its stable reason
/// ([`AppError::reason`]); where one code has several reasons, the variant
/// carries the reason, chosen where a lower layer's error is translated.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad input; nothing was stored.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// An idempotency key sent again with another request (INVALID_ARGUMENT).
    #[error(
        "invalid argument: idempotency_key: this idempotency key was already used with a different request"
    )]
    IdempotencyKeyReused,
    /// No credentials, or bad ones.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Authenticated, but the role does not allow it.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Absent, or owned by someone else (no existence leak).
    #[error("{}", .resource.describe(.name))]
    NotFound {
        /// What kind of thing.
        resource: Resource,
        /// Its id (or the product id, or the customer), for `ResourceInfo`.
        name: String,
    },
    /// The resource exists already (HTTP 409).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A concurrent change won (stale version, key in flight): retry.
    #[error("aborted: {message}")]
    Aborted {
        /// Which race was lost.
        reason: ErrorReason,
        /// Shown to people as the status message; clients branch on `reason`.
        message: String,
    },
    /// The resource's state forbids the operation.
    #[error("failed precondition: {message}")]
    FailedPrecondition {
        /// Which state rule refused it.
        reason: ErrorReason,
        /// Shown to people as the status message; clients branch on `reason`.
        message: String,
    },
    /// Rate limit or size bound hit.
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        /// Which bound was hit (the `ErrorInfo` reason clients branch on).
        reason: ErrorReason,
        /// Which bound was hit, for the client.
        message: String,
        /// When to retry, if known.
        retry_after: Option<std::time::Duration>,
    },
    /// A dependency is down, or the server is going away; retry later.
    #[error("unavailable: {message}")]
    Unavailable {
        /// A backend down, or the server shutting down.
        reason: ErrorReason,
        /// Shown to people as the status message; clients branch on `reason`.
        message: String,
    },
    /// The request's deadline passed.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// A bug or unexpected failure; the client sees an opaque message.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl AppError {
    /// A single-field INVALID_ARGUMENT.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// NOT_FOUND of `resource` named `name`.
    pub fn not_found(resource: Resource, name: impl ToString) -> Self {
        Self::NotFound {
            resource,
            name: name.to_string(),
        }
    }

    /// A backend cannot be reached (UNAVAILABLE, DEPENDENCY_UNAVAILABLE).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: ErrorReason::DependencyUnavailable,
            message: message.into(),
        }
    }

    /// A lost race (ABORTED) for `reason`.
    pub fn aborted(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::Aborted {
            reason,
            message: message.into(),
        }
    }

    /// A state rule refused the call (FAILED_PRECONDITION) for `reason`.
    pub fn failed_precondition(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason,
            message: message.into(),
        }
    }

    /// The gRPC code of this error: the one mapping table.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) | Self::IdempotencyKeyReused => Code::InvalidArgument,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::Aborted { .. } => Code::Aborted,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::Unavailable { .. } => Code::Unavailable,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// The stable reason of this error (`ErrorInfo.reason`): the other half
    /// of the mapping table.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::InvalidArgument(_) => ErrorReason::ValidationFailed,
            Self::IdempotencyKeyReused => ErrorReason::IdempotencyKeyReused,
            Self::Unauthenticated(_) => ErrorReason::Unauthenticated,
            Self::PermissionDenied(_) => ErrorReason::PermissionDenied,
            Self::NotFound { .. } => ErrorReason::NotFound,
            Self::AlreadyExists(_) => ErrorReason::AlreadyExists,
            Self::Aborted { reason, .. }
            | Self::FailedPrecondition { reason, .. }
            | Self::ResourceExhausted { reason, .. }
            | Self::Unavailable { reason, .. } => *reason,
            Self::DeadlineExceeded(_) => ErrorReason::DeadlineExceeded,
            Self::Internal(_) => ErrorReason::Internal,
        }
    }
}

/// The subject of a `PreconditionFailure` violation: the kind of resource
/// whose state refused the call.
fn precondition_subject(reason: ErrorReason) -> &'static str {
    match reason {
        ErrorReason::CartNotActive | ErrorReason::CartEmpty => "commerce.v1.Cart",
        ErrorReason::SagaActionNotAllowed => "commerce.v1.Saga",
        ErrorReason::ConsumerLimitReached => "commerce.events.v1.Consumer",
        _ => "commerce.v1.Order",
    }
}

/// The grpc-gateway mapping of a gRPC code to an HTTP status.
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as H;
    match code {
        Code::Ok => H::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => H::BAD_REQUEST,
        Code::Unauthenticated => H::UNAUTHORIZED,
        Code::PermissionDenied => H::FORBIDDEN,
        Code::NotFound => H::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => H::CONFLICT,
        Code::ResourceExhausted => H::TOO_MANY_REQUESTS,
        Code::Cancelled => H::from_u16(499).unwrap_or(H::BAD_REQUEST),
        Code::Unimplemented => H::NOT_IMPLEMENTED,
        Code::Unavailable => H::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => H::INTERNAL_SERVER_ERROR,
    }
}

impl From<AppError> for Status {
    fn from(err: AppError) -> Self {
        let code = err.code();
        let mut details = ErrorDetails::new();
        details.set_error_info(err.reason().as_str(), REASON_DOMAIN, HashMap::new());
        let message = match err {
            AppError::InvalidArgument(violations) => {
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                format!("invalid argument: {}", describe(&violations))
            }
            AppError::IdempotencyKeyReused => {
                let message = AppError::IdempotencyKeyReused.to_string();
                details.add_bad_request_violation(
                    "idempotency_key",
                    "this idempotency key was already used with a different request",
                );
                message
            }
            AppError::NotFound { resource, ref name } => {
                let message = err.to_string();
                details.set_resource_info(resource.type_name(), name.clone(), "", message.clone());
                message
            }
            AppError::FailedPrecondition { reason, ref message } => {
                details.add_precondition_failure_violation(
                    reason.as_str(),
                    precondition_subject(reason),
                    message.clone(),
                );
                err.to_string()
            }
            AppError::ResourceExhausted {
                message, retry_after, ..
            } => {
                if let Some(delay) = retry_after {
                    details.set_retry_info(Some(delay));
                }
                message
            }
            AppError::Internal(source) => {
                // The chain goes to the log; the client gets nothing it could exploit.
                tracing::error!(error = format!("{source:#}"), "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_field_violations() {
        let status: Status = AppError::invalid("quantity", "must be 1 to 999").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "quantity");
    }

    #[test]
    fn internal_errors_are_opaque() {
        let status: Status = AppError::Internal(anyhow::anyhow!("password=hunter2")).into();
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn http_mapping_follows_grpc_gateway() {
        assert_eq!(http_status(Code::InvalidArgument), 400);
        assert_eq!(http_status(Code::FailedPrecondition), 400);
        assert_eq!(http_status(Code::Aborted), 409);
        assert_eq!(http_status(Code::ResourceExhausted), 429);
        assert_eq!(http_status(Code::Unavailable), 503);
    }

    #[test]
    fn every_refusal_carries_error_info_with_its_reason_in_the_commerce_domain() {
        let cases: Vec<(AppError, &str)> = vec![
            (AppError::invalid("quantity", "bad"), "VALIDATION_FAILED"),
            (AppError::IdempotencyKeyReused, "IDEMPOTENCY_KEY_REUSED"),
            (AppError::Unauthenticated("no token".into()), "UNAUTHENTICATED"),
            (AppError::PermissionDenied("admin".into()), "PERMISSION_DENIED"),
            (AppError::not_found(Resource::Order, "o-1"), "NOT_FOUND"),
            (
                AppError::aborted(ErrorReason::CartVersionMismatch, "v"),
                "CART_VERSION_MISMATCH",
            ),
            (
                AppError::failed_precondition(ErrorReason::CartNotActive, "c"),
                "CART_NOT_ACTIVE",
            ),
            (AppError::unavailable("db down"), "DEPENDENCY_UNAVAILABLE"),
            (AppError::DeadlineExceeded("slow".into()), "DEADLINE_EXCEEDED"),
            (AppError::Internal(anyhow::anyhow!("bug")), "INTERNAL"),
        ];
        for (err, reason) in cases {
            let status: Status = err.into();
            let details = status.get_error_details();
            let info = details.error_info().expect("ErrorInfo on every status");
            assert_eq!(
                (info.reason.as_str(), info.domain.as_str()),
                (reason, "commerce.v1")
            );
        }
    }

    #[test]
    fn state_refusals_carry_precondition_failure_and_missing_things_resource_info() {
        let status: Status =
            AppError::failed_precondition(ErrorReason::CartEmpty, "the cart is empty").into();
        let details = status.get_error_details();
        let violation = &details.precondition_failure().unwrap().violations[0];
        assert_eq!(
            (violation.r#type.as_str(), violation.subject.as_str()),
            ("CART_EMPTY", "commerce.v1.Cart")
        );
        let status: Status = AppError::not_found(Resource::CartItem, "sku-1").into();
        assert_eq!(status.message(), "product \"sku-1\" in the cart not found");
        let details = status.get_error_details();
        let resource = details.resource_info().unwrap();
        assert_eq!(
            (resource.resource_type.as_str(), resource.resource_name.as_str()),
            ("commerce.v1.CartItem", "sku-1")
        );
        let status: Status = AppError::IdempotencyKeyReused.into();
        let bad = status.get_error_details().bad_request().cloned().unwrap();
        assert_eq!(bad.field_violations[0].field, "idempotency_key");
    }

    #[test]
    fn the_proto_error_reason_enum_names_exactly_the_domain_reasons() {
        use crate::proto::commerce::v1::ErrorReason as Proto;
        let proto: Vec<&str> = (1..)
            .map_while(|n| Proto::try_from(n).ok())
            .map(|r| r.as_str_name())
            .collect();
        let domain: Vec<&str> = ErrorReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            proto, domain,
            "proto/commerce/v1/errors.proto and src/domain/reason.rs differ"
        );
    }
}
