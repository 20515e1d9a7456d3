//! The application error, and the one table that maps it to gRPC status codes
//! (with `google.rpc` details) and to HTTP status codes.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

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

/// Every error the application layer returns to a transport.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad input; nothing was stored.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// No credentials, or bad ones.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Authenticated, but the role does not allow it.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Absent, or owned by someone else (no existence leak).
    #[error("{0} not found")]
    NotFound(String),
    /// The resource exists already (HTTP 409).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A concurrent change won (stale version, key in flight): retry.
    #[error("aborted: {0}")]
    Aborted(String),
    /// The resource's state forbids the operation.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Rate limit or size bound hit.
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        /// Which bound was hit, for the client.
        message: String,
        /// When to retry, if known.
        retry_after: Option<std::time::Duration>,
    },
    /// A dependency is down; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
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

    /// The gRPC code of this error: the one mapping table.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::Aborted(_) => Code::Aborted,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Internal(_) => Code::Internal,
        }
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
        match err {
            AppError::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in &violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                Status::with_error_details(
                    code,
                    format!("invalid argument: {}", describe(&violations)),
                    details,
                )
            }
            AppError::ResourceExhausted { message, retry_after } => {
                let mut details = ErrorDetails::new();
                if let Some(delay) = retry_after {
                    details.set_retry_info(Some(delay));
                }
                Status::with_error_details(code, message, details)
            }
            AppError::Internal(source) => {
                // The chain goes to the log; the client gets nothing it could exploit.
                tracing::error!(error = format!("{source:#}"), "internal error");
                Status::new(code, "internal error")
            }
            other => Status::new(code, other.to_string()),
        }
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
}
