//! Builds the proto3 JSON of a request from its HTTP parts, grpc-gateway style:
//! the body (`*` or one field), then query parameters (routes without a `*`
//! body), path variables and the `Idempotency-Key` / `If-Match` headers, each
//! bound to the request field of the same name. The result is decoded by the
//! generated pbjson impls, which judge types and unknown fields.

use std::collections::HashMap;

use axum::extract::Query;
use serde_json::{Map, Value};

use super::{
    rule::HttpRule,
    schema::{Kind, MessageInfo, Schema},
};
use crate::error::AppError;

/// Headers that fill a request field when the request has it and the body does not.
const HEADER_FIELDS: &[(&str, &str)] = &[
    ("idempotency-key", "idempotency_key"),
    ("if-match", "expected_version"),
];

/// The request JSON for `rule` from the path variables, query, headers and body.
pub fn request_json(
    schema: &Schema,
    rule: &HttpRule,
    parts: &http::request::Parts,
    path: &HashMap<String, String>,
    body: &[u8],
) -> Result<Value, AppError> {
    let input = schema
        .message(rule.input)
        .ok_or_else(|| anyhow::anyhow!("no descriptor for {}", rule.input))?;
    let mut object = body_object(rule, body).map_err(|err| with_content_type(err, parts))?;

    let query: Vec<(String, String)> = Query::try_from_uri(&parts.uri)
        .map_err(|e| AppError::invalid("query", e.body_text()))?
        .0;
    for (key, value) in query {
        if rule.body == "*" {
            return Err(AppError::invalid(
                key,
                "not a query parameter: this route takes its fields in the JSON body",
            ));
        }
        bind_query(schema, input, &mut object, &key, value)?;
    }

    for var in rule.path_variables() {
        let value = path
            .get(var)
            .ok_or_else(|| anyhow::anyhow!("router gave no value for {{{var}}}"))?;
        let field = input
            .field(var)
            .ok_or_else(|| anyhow::anyhow!("no field {var}"))?;
        let typed = scalar(schema, &field.kind, var, value)?;
        set_once(
            &mut object,
            input,
            var,
            typed,
            "differs from the value in the path",
        )?;
    }

    for (header, name) in HEADER_FIELDS {
        let Some(field) = input.field(name) else { continue };
        let Some(raw) = parts.headers.get(*header) else {
            continue;
        };
        let raw = raw
            .to_str()
            .map_err(|_| AppError::invalid(*header, "not valid text"))?;
        let value = match *header {
            "if-match" => match etag_version(raw)? {
                Some(version) => version,
                None => continue,
            },
            _ => raw.trim().to_string(),
        };
        let typed = scalar(schema, &field.kind, name, &value)?;
        set_once(
            &mut object,
            input,
            name,
            typed,
            &format!("differs from the {header} header"),
        )?;
    }
    bind_last_event_id(schema, rule, input, parts, &mut object)?;
    Ok(Value::Object(object))
}

/// A reconnecting Server-Sent Events client's `Last-Event-ID` fills the
/// stream's resume field (see [`HttpRule::resume_field`]). It wins over the
/// same field in the query: an EventSource reconnects to the URL it started
/// with, so the header is the newer position.
fn bind_last_event_id(
    schema: &Schema,
    rule: &HttpRule,
    input: &MessageInfo,
    parts: &http::request::Parts,
    object: &mut Map<String, Value>,
) -> Result<(), AppError> {
    const HEADER: &str = "last-event-id";
    let (Some(field), Some(raw)) = (input.field(rule.resume_field), parts.headers.get(HEADER)) else {
        return Ok(());
    };
    let raw = raw
        .to_str()
        .map_err(|_| AppError::invalid(HEADER, "not valid text"))?
        .trim();
    if raw.is_empty() {
        return Ok(());
    }
    let typed = scalar(schema, &field.kind, HEADER, raw)?;
    object.remove(&field.json_name);
    object.insert(field.name.clone(), typed);
    Ok(())
}

/// The body as the start of the request object (`{}` when empty).
fn body_object(rule: &HttpRule, body: &[u8]) -> Result<Map<String, Value>, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    if rule.body.is_empty() {
        return Err(AppError::invalid("body", "this route takes no request body"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AppError::invalid("body", format!("malformed JSON: {e}")))?;
    match (rule.body, value) {
        ("*", Value::Object(object)) => Ok(object),
        ("*", other) => Err(AppError::invalid(
            "body",
            format!("expected a JSON object, found {}", json_type(&other)),
        )),
        (field, value) => Ok(Map::from_iter([(field.to_string(), value)])),
    }
}

/// Tells a client whose body is not JSON which content type it sent.
fn with_content_type(err: AppError, parts: &http::request::Parts) -> AppError {
    let sent = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    match err {
        AppError::InvalidArgument(mut violations) if !sent.contains("json") => {
            for v in &mut violations {
                v.description
                    .push_str(&format!(" (Content-Type {sent}: send application/json)"));
            }
            AppError::InvalidArgument(violations)
        }
        other => other,
    }
}

/// Binds `a.b.c=value` to the (nested) field; repeated fields collect every value.
fn bind_query(
    schema: &Schema,
    input: &MessageInfo,
    object: &mut Map<String, Value>,
    key: &str,
    value: String,
) -> Result<(), AppError> {
    let unknown = || AppError::invalid(key, "unknown query parameter");
    let mut message = input;
    let mut target = object;
    let mut names = key.split('.').peekable();
    while let Some(name) = names.next() {
        let field = message.field(name).ok_or_else(unknown)?;
        if names.peek().is_none() {
            if field.map.is_some() {
                return Err(AppError::invalid(key, "a map cannot be set from the query"));
            }
            let typed = scalar(schema, &field.kind, key, &value)?;
            if field.repeated {
                let list = target
                    .entry(field.name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                match list {
                    Value::Array(items) => items.push(typed),
                    _ => return Err(AppError::invalid(key, "given twice")),
                }
            } else if target.insert(field.name.clone(), typed).is_some() {
                return Err(AppError::invalid(key, "given more than once"));
            }
            return Ok(());
        }
        let Kind::Message(name) = &field.kind else {
            return Err(unknown());
        };
        message = schema.message(name).ok_or_else(unknown)?;
        let child = target
            .entry(field.name.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        target = match child {
            Value::Object(child) => child,
            _ => return Err(unknown()),
        };
    }
    Err(unknown())
}

/// A path, query or header string as the JSON value its field type takes.
/// Numbers stay strings (proto3 JSON accepts quoted numbers and pbjson checks
/// them); bools and numeric enum values become JSON literals.
fn scalar(schema: &Schema, kind: &Kind, field: &str, value: &str) -> Result<Value, AppError> {
    Ok(match kind {
        Kind::Bool => match value {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(AppError::invalid(field, "expected true or false")),
        },
        Kind::Enum(_) => match value.parse::<i64>() {
            Ok(number) => Value::from(number),
            Err(_) => Value::String(value.to_string()),
        },
        Kind::Message(name) if !is_string_valued(name) || schema.message(name).is_none() => {
            return Err(AppError::invalid(field, "cannot be given as a single value"));
        }
        _ => Value::String(value.to_string()),
    })
}

/// Well-known messages whose proto3 JSON form is a string.
fn is_string_valued(message: &str) -> bool {
    matches!(
        message,
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
    )
}

/// Sets a top-level field unless the body already has it; an equal value is
/// fine, a different one is refused rather than silently overridden.
fn set_once(
    object: &mut Map<String, Value>,
    input: &MessageInfo,
    name: &str,
    value: Value,
    conflict: &str,
) -> Result<(), AppError> {
    let field = input
        .field(name)
        .ok_or_else(|| anyhow::anyhow!("no field {name}"))?;
    // Both spellings count: `{"order_id": null, "orderId": "<other>"}` is a
    // disagreement too, not a body that leaves the field to the path.
    let disagrees = [&field.name, &field.json_name]
        .into_iter()
        .filter_map(|key| object.get(key.as_str()))
        .any(|existing| !existing.is_null() && as_text(existing) != as_text(&value));
    if disagrees {
        return Err(AppError::invalid(name, conflict));
    }
    object.remove(&field.json_name);
    object.insert(field.name.clone(), value);
    Ok(())
}

fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The version in an `If-Match` ETag (`"3"`, `W/"3"` or `3`); `*` means any.
fn etag_version(raw: &str) -> Result<Option<String>, AppError> {
    let raw = raw.trim();
    if raw == "*" {
        return Ok(None);
    }
    let tag = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AppError::invalid(
            "If-Match",
            "expected one ETag from a previous response, e.g. \"3\"",
        ));
    }
    Ok(Some(tag.to_string()))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_strip_quotes_and_weakness_and_refuse_garbage() {
        assert_eq!(etag_version("\"3\"").unwrap().as_deref(), Some("3"));
        assert_eq!(etag_version("W/\"12\"").unwrap().as_deref(), Some("12"));
        assert_eq!(etag_version("*").unwrap(), None);
        assert!(etag_version("\"abc\"").is_err());
        assert!(etag_version("\"1\", \"2\"").is_err());
    }
}
