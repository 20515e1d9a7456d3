//! The OpenAPI 3 document of the shim, derived from the same descriptors and
//! http rules the transcoder serves: paths, parameters, request bodies and
//! response schemas with proto field names, the bearer scheme and the
//! grpc-gateway error body. Comments in the protos become descriptions.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::{
    rule::HttpRule,
    schema::{Field, Kind, MessageInfo, Schema},
};

const ERROR_SCHEMA: &str = "Status";

/// The document for `rules`.
pub fn document(schema: &Schema, rules: &[HttpRule]) -> Value {
    let mut refs = Refs::default();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    // Tags in the protos' order (carts, orders, sagas, admin), as the page lists them.
    let mut tags: Vec<&str> = Vec::new();
    for rule in rules {
        if !tags.contains(&rule.service) {
            tags.push(rule.service);
        }
        let operation = operation(schema, rule, &mut refs);
        paths
            .entry(rule.path)
            .or_default()
            .insert(rule.verb.to_ascii_lowercase(), operation);
    }
    let tags: Vec<Value> = tags
        .into_iter()
        .map(|service| {
            json!({
                "name": service.rsplit('.').next().unwrap_or(service),
                "description": schema.comment(service),
            })
        })
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "commerce REST/JSON API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The REST shim of the commerce gRPC service: each operation calls the same \
                service code as its gRPC method. JSON uses the proto field names (lowerCamelCase is \
                accepted on input); 64-bit integers are strings; money is a decimal string such as \
                \"29.99\". Authenticate with a bearer JWT (development: `commerce token --sub alice`). \
                Errors carry the grpc-gateway body `{code, message, details}` with the HTTP status \
                of the gRPC code.",
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": refs.into_schemas(schema),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
        "security": [{"bearerAuth": []}],
    })
}

fn operation(schema: &Schema, rule: &HttpRule, refs: &mut Refs) -> Value {
    let empty = MessageInfo {
        full_name: rule.input.to_string(),
        fields: Vec::new(),
        comment: String::new(),
    };
    let input = schema.message(rule.input).unwrap_or(&empty);
    let path_vars: Vec<&str> = rule.path_variables().collect();
    let mut parameters = Vec::new();
    for var in &path_vars {
        if let Some(field) = input.field(var) {
            parameters.push(parameter(field, "path", true, refs));
        }
    }
    if rule.body.is_empty() {
        for field in input
            .fields
            .iter()
            .filter(|f| !path_vars.contains(&f.name.as_str()))
        {
            if query_capable(field) {
                parameters.push(parameter(field, "query", field.required, refs));
            }
        }
    }
    let keyed = input.field("idempotency_key");
    if let Some(key) = keyed {
        let description = if key.required {
            "Fills `idempotency_key` when the body has none: one of the two is required."
        } else {
            "Fills `idempotency_key` when the body has none."
        };
        parameters.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string"},
            "description": description,
        }));
    }
    if input.field("expected_version").is_some() {
        parameters.push(json!({
            "name": "If-Match", "in": "header", "required": false, "schema": {"type": "string"},
            "description": "ETag of the cart (e.g. `\"3\"`): fills `expected_version`; a stale one answers 409.",
        }));
    }
    if let Some(field) = input.field(rule.resume_field) {
        parameters.push(json!({
            "name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "string"},
            "description": format!(
                "The `id` of the last event seen, sent on reconnect: fills `{}` (over the query) \
                 and resumes the stream after that event.",
                field.name
            ),
        }));
    }
    let carries_cart = schema
        .message(rule.output)
        .and_then(|m| m.field("cart"))
        .is_some();
    if rule.verb == "GET" && carries_cart {
        parameters.push(json!({
            "name": "If-None-Match", "in": "header", "required": false, "schema": {"type": "string"},
            "description": "ETag from a previous answer: 304 with no body while the cart is unchanged.",
        }));
    }
    let mut op = json!({
        "tags": [rule.service_name()],
        "operationId": format!("{}_{}", rule.service_name(), rule.rpc),
        "summary": rule.rpc,
        "description": schema.comment(&rule.full_method()),
        "parameters": parameters,
        "responses": responses(schema, rule, refs),
    });
    if !rule.body.is_empty() {
        let body = if rule.body == "*" {
            // The Idempotency-Key header may stand in for the body's key.
            let mut skip = path_vars.clone();
            skip.extend(keyed.map(|_| "idempotency_key"));
            let mut body = message_schema(input, refs, &path_vars);
            body["additionalProperties"] = Value::Bool(false);
            set_required(&mut body, input, &skip);
            body
        } else {
            input
                .field(rule.body)
                .map(|f| field_schema(f, refs))
                .unwrap_or_else(|| json!({}))
        };
        // A body with required fields is itself required.
        let required = body.get("required").is_some();
        op["requestBody"] = json!({
            "required": required,
            "content": {"application/json": {"schema": body}},
        });
    }
    op
}

fn responses(schema: &Schema, rule: &HttpRule, refs: &mut Refs) -> Value {
    let error = json!({
        "description": "Error: INVALID_ARGUMENT and FAILED_PRECONDITION 400, UNAUTHENTICATED 401, \
            PERMISSION_DENIED 403, NOT_FOUND 404, ALREADY_EXISTS and ABORTED 409, body too large 413, \
            RESOURCE_EXHAUSTED 429, UNAVAILABLE 503.",
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{ERROR_SCHEMA}")}}},
    });
    if rule.server_streaming {
        let id = match rule.event_id_field {
            "" => String::new(),
            fields => format!(
                " `id:` is the message's `{}`: send the last one back as `Last-Event-ID` to resume.",
                fields.split(',').collect::<Vec<_>>().join("` or `")
            ),
        };
        let ok = json!({
            "description": format!(
                "Server-Sent Events, one per stream message: `data:` is the message's JSON (this schema).{id} \
                 A comment line is a heartbeat. An error after the first event arrives as `event: error` \
                 with the error body as data, and ends the stream; an end without it is a clean end."
            ),
            "content": {"text/event-stream": {"schema": refs.message(rule.output)}},
        });
        return json!({"200": ok, "default": error});
    }
    let mut ok = json!({
        "description": "OK",
        "content": {"application/json": {"schema": refs.message(rule.output)}},
    });
    let carries_cart = schema
        .message(rule.output)
        .and_then(|m| m.field("cart"))
        .is_some();
    if carries_cart {
        ok["headers"] = json!({
            "ETag": {"description": "The cart's version, for If-Match.", "schema": {"type": "string"}},
        });
    }
    json!({"200": ok, "default": error})
}

fn parameter(field: &Field, location: &str, required: bool, refs: &mut Refs) -> Value {
    json!({
        "name": field.name,
        "in": location,
        "required": required,
        "description": field.comment,
        "schema": value_schema(field, refs),
    })
}

/// Fields a query string can carry: scalars, enums, and lists of them.
fn query_capable(field: &Field) -> bool {
    field.map.is_none()
        && match &field.kind {
            Kind::Message(name) => name == "google.protobuf.Timestamp" || name == "google.protobuf.Duration",
            _ => true,
        }
}

/// An object schema of `message`'s fields, leaving out `skip` (path-bound).
fn message_schema(message: &MessageInfo, refs: &mut Refs, skip: &[&str]) -> Value {
    let properties: Map<String, Value> = message
        .fields
        .iter()
        .filter(|f| !skip.contains(&f.name.as_str()))
        .map(|f| (f.name.clone(), field_schema(f, refs)))
        .collect();
    json!({"type": "object", "description": message.comment, "properties": properties})
}

/// Lists `message`'s REQUIRED fields (but those in `skip`, bound elsewhere) as
/// the schema's `required` (OpenAPI 3.0 allows no empty list: none, no key).
fn set_required(schema: &mut Value, message: &MessageInfo, skip: &[&str]) {
    let required: Vec<&str> = message
        .fields
        .iter()
        .filter(|f| f.required && !skip.contains(&f.name.as_str()))
        .map(|f| f.name.as_str())
        .collect();
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
}

/// The schema of a field's value (a parameter's schema: its description is beside it).
fn value_schema(field: &Field, refs: &mut Refs) -> Value {
    if let Some((_, value)) = &field.map {
        json!({"type": "object", "additionalProperties": refs.kind(value)})
    } else if field.repeated {
        json!({"type": "array", "items": refs.kind(&field.kind)})
    } else {
        refs.kind(&field.kind)
    }
}

/// The schema of a field as a property, with its comment as description.
fn field_schema(field: &Field, refs: &mut Refs) -> Value {
    let mut schema = value_schema(field, refs);
    let mut description = field.comment.clone();
    if let Some(oneof) = &field.oneof {
        description.push_str(&format!(" (one of `{oneof}`: set at most one of its fields)"));
    }
    if schema.get("$ref").is_some() {
        // OpenAPI 3.0 ignores siblings of $ref: wrap to keep the description.
        schema = json!({"allOf": [schema]});
    }
    schema["description"] = Value::String(description.trim().to_string());
    schema
}

/// Named schemas referenced so far, resolved at the end.
#[derive(Default)]
struct Refs {
    named: BTreeSet<String>,
}

impl Refs {
    fn message(&mut self, name: &str) -> Value {
        match well_known(name) {
            Some(schema) => schema,
            None => {
                self.named.insert(name.to_string());
                json!({"$ref": format!("#/components/schemas/{name}")})
            }
        }
    }

    fn kind(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Bool => json!({"type": "boolean"}),
            Kind::Int32 => json!({"type": "integer", "format": "int32"}),
            Kind::Int64 => json!({"type": "string", "format": "int64"}),
            Kind::Float => json!({"type": "number"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "format": "byte"}),
            Kind::Enum(name) | Kind::Message(name) => self.message(name),
        }
    }

    /// Every referenced message and enum, following references transitively.
    fn into_schemas(mut self, schema: &Schema) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert(
            ERROR_SCHEMA.into(),
            json!({
                "type": "object",
                "description": "The grpc-gateway error body.",
                "properties": {
                    "code": {"type": "integer", "format": "int32", "description": "gRPC status code, e.g. 3 INVALID_ARGUMENT."},
                    "message": {"type": "string"},
                    "details": {"type": "array", "description": "Every google.rpc detail of the status, each with its @type: first ErrorInfo (domain commerce.v1, reason one of the commerce.v1.ErrorReason names), then BadRequest field_violations, PreconditionFailure, ResourceInfo or RetryInfo where they apply.", "items": {
                        "type": "object",
                        "properties": {"@type": {"type": "string"}},
                        "additionalProperties": true,
                    }},
                },
            }),
        );
        while let Some(name) = self.named.iter().find(|n| !out.contains_key(*n)).cloned() {
            let resolved = if let Some(message) = schema.message(&name) {
                let mut resolved = message_schema(message, &mut self, &[]);
                set_required(&mut resolved, message, &[]);
                resolved
            } else if let Some(e) = schema.enumeration(&name) {
                json!({"type": "string", "enum": e.values, "description": e.comment})
            } else {
                json!({"description": format!("{name} (not described)")})
            };
            out.insert(name, resolved);
        }
        out
    }
}

/// The proto3 JSON forms of the well-known types.
fn well_known(name: &str) -> Option<Value> {
    Some(match name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => json!({"type": "string", "example": "1.5s"}),
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({"type": "integer"}),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "format": "int64"})
        }
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::rules::RULES;

    fn doc() -> Value {
        document(&Schema::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap(), RULES)
    }

    #[test]
    fn every_rule_is_an_operation_and_every_reference_resolves() {
        let doc = doc();
        for rule in RULES {
            let op = &doc["paths"][rule.path][rule.verb.to_ascii_lowercase()];
            assert_eq!(op["summary"], rule.rpc, "{}", rule.full_method());
        }
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "unresolved {name}"
            );
        }
    }

    #[test]
    fn required_fields_are_listed_and_the_idempotency_header_may_stand_in_for_its_field() {
        let doc = doc();
        let create = &doc["paths"]["/api/v1/orders/"]["post"];
        let body = &create["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(
            body["required"],
            json!(["cart_id", "payment_method", "shipping_address"])
        );
        let header = create["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap();
        assert!(
            header["description"]
                .as_str()
                .unwrap()
                .contains("one of the two is required")
        );
        let address = &doc["components"]["schemas"]["commerce.v1.Address"]["required"];
        assert_eq!(
            address,
            &json!(["recipient_name", "line1", "city", "postal_code", "country"])
        );
        // Nothing required: no `required` key (OpenAPI 3.0 allows no empty list), body optional.
        let cart = &doc["paths"]["/api/v1/cart/"]["post"];
        assert!(
            cart["requestBody"]["content"]["application/json"]["schema"]
                .get("required")
                .is_none()
        );
        assert_eq!(cart["requestBody"]["required"], false);
    }

    #[test]
    fn a_server_stream_answers_text_event_stream_and_takes_last_event_id() {
        let doc = doc();
        let watch = &doc["paths"]["/api/v1/orders/{order_id}/watch"]["get"];
        let ok = &watch["responses"]["200"];
        assert_eq!(
            ok["content"]["text/event-stream"]["schema"]["$ref"],
            "#/components/schemas/commerce.v1.WatchOrderResponse"
        );
        assert!(ok["description"].as_str().unwrap().contains("order.version"));
        let names: Vec<&str> = watch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["order_id", "after_version", "Last-Event-ID"]);
    }

    #[test]
    fn the_event_feed_is_listed_as_an_event_stream_resumed_by_position() {
        let doc = doc();
        let feed = &doc["paths"]["/api/v1/events"]["get"];
        let ok = &feed["responses"]["200"];
        assert_eq!(
            ok["content"]["text/event-stream"]["schema"]["$ref"],
            "#/components/schemas/commerce.events.v1.SubscribeResponse"
        );
        let description = ok["description"].as_str().unwrap();
        assert!(
            description.contains("`event.position` or `checkpoint.position`"),
            "{description}"
        );
        let names: Vec<&str> = feed["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "consumer",
                "from_now",
                "after_position",
                "event_types",
                "resume_after_position",
                "Last-Event-ID"
            ]
        );
    }

    #[test]
    fn bodies_leave_out_path_fields_and_queries_carry_the_rest() {
        let doc = doc();
        let add = &doc["paths"]["/api/v1/cart/{cart_id}/items"]["post"];
        let body = &add["requestBody"]["content"]["application/json"]["schema"]["properties"];
        assert!(
            body["unit_price"]["description"]
                .as_str()
                .unwrap()
                .contains("29.99")
        );
        assert!(body.get("cart_id").is_none());
        let schema = &add["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(
            schema["required"],
            json!(["product_id", "product_name", "quantity", "unit_price"])
        );
        assert_eq!(add["requestBody"]["required"], true);
        assert_eq!(add["parameters"][0]["name"], "cart_id");
        assert_eq!(
            add["responses"]["200"]["headers"]["ETag"]["schema"]["type"],
            "string"
        );
        let list = &doc["paths"]["/api/v1/orders/"]["get"]["parameters"];
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["page_size", "page_token", "status"]);
        let status = &doc["components"]["schemas"]["commerce.v1.OrderStatus"]["enum"];
        assert!(
            status
                .as_array()
                .unwrap()
                .contains(&json!("ORDER_STATUS_CONFIRMED"))
        );
    }
}
