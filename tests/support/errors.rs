//! The machine-readable side of refusals, as a client reads it: the
//! `google.rpc.ErrorInfo` (and its companions) of a gRPC status, and the same
//! details in a REST error body (grpc-gateway shape, found by `@type`).

use serde_json::Value;
use tonic_types::StatusExt;

/// The `ErrorInfo.reason` of a status, after checking it is ours (domain `commerce.v1`).
pub fn reason_of(status: &tonic::Status) -> String {
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"));
    assert_eq!(info.domain, "commerce.v1", "{status:?}");
    info.reason.clone()
}

/// The detail of `type_name` (e.g. "google.rpc.ErrorInfo") in a REST error body.
pub fn rest_detail<'a>(body: &'a Value, type_name: &str) -> &'a Value {
    let wanted = format!("type.googleapis.com/{type_name}");
    body["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["@type"] == wanted.as_str())
        .unwrap_or_else(|| panic!("no {type_name} in {body}"))
}

/// The `ErrorInfo.reason` of a REST error body, after checking its domain.
pub fn rest_reason(body: &Value) -> String {
    let info = rest_detail(body, "google.rpc.ErrorInfo");
    assert_eq!(info["domain"], "commerce.v1", "{body}");
    info["reason"].as_str().unwrap_or_default().to_string()
}
