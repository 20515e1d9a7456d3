//! `google.api.field_behavior` REQUIRED against the service's own checks, over
//! REST: every annotated field is refused when missing (INVALID_ARGUMENT
//! naming it) and listed as required in /openapi.json; and the other way
//! round, a request with nothing but its path refused for missing fields
//! names only annotated ones.

use std::collections::{BTreeSet, HashMap};

use commerce::{
    auth::Role,
    proto::FILE_DESCRIPTOR_SET,
    rest::{
        rules::{HttpRule, RULES},
        schema::{Kind, REQUIRED_FIELDS, Schema},
    },
};
use serde_json::{Value, json};

use crate::support::{
    app::{TestApp, spawn_app},
    rest::{Reply, call},
};

/// A request body that passes the checks of `rpc` (before any lookup), for
/// the rpcs with REQUIRED fields in their body: the test removes one field at a time.
fn valid_body(rpc: &str, cart_id: &str) -> Value {
    match rpc {
        "commerce.v1.CartService/AddItem" => {
            json!({"product_id": "p-1", "product_name": "Widget", "quantity": 1, "unit_price": "1.00"})
        }
        "commerce.v1.CartService/UpdateItemQuantity" => json!({"quantity": 1}),
        "commerce.v1.OrderService/CreateOrder" => json!({
            "cart_id": cart_id,
            "payment_method": "pm_card_visa",
            "idempotency_key": "required-1",
            "shipping_address": {
                "recipient_name": "Ada Lovelace", "line1": "1 Analytical Way", "city": "London",
                "postal_code": "N1 9GU", "country": "GB",
            },
        }),
        "commerce.v1.AdminService/ForgetCustomer" => json!({"reason": "erasure request"}),
        "commerce.events.v1.OrderEventService/CreateConsumer" => json!({"name": "required-c"}),
        _ => json!({}),
    }
}

/// A valid value for a path variable (a cart of the caller for `cart_id`).
fn path_value(var: &str, cart_id: &str) -> String {
    match var {
        "cart_id" => cart_id.to_string(),
        "order_id" | "saga_id" => uuid::Uuid::new_v4().to_string(),
        "product_id" => "p-1".into(),
        "customer_id" => "someone".into(),
        _ => "required-c".into(),
    }
}

/// The REQUIRED fields of `message` as dotted paths, into the required
/// fields of a required message field (`shipping_address.city`), each with
/// the message that declares it.
fn required_paths(schema: &Schema, message: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for field in schema.message(message).into_iter().flat_map(|m| &m.fields) {
        if !field.required {
            continue;
        }
        out.push((field.name.clone(), message.to_string(), field.name.clone()));
        if let Kind::Message(inner) = &field.kind {
            for (path, declared_in, name) in required_paths(schema, inner) {
                out.push((format!("{}.{path}", field.name), declared_in, name));
            }
        }
    }
    out
}

/// Calls `rule` with `vars` in its path and `body` (if it takes one).
async fn send(
    app: &TestApp,
    token: &str,
    rule: &HttpRule,
    vars: &HashMap<&str, String>,
    body: &Value,
) -> Reply {
    let mut path = rule.path.to_string();
    for (var, value) in vars {
        path = path.replace(&format!("{{{var}}}"), value);
    }
    let request = call(app, rule.verb, &path).bearer(token);
    if rule.body.is_empty() {
        request.send().await
    } else {
        request.json(body).send().await
    }
}

fn remove(body: &mut Value, path: &str) {
    match path.split_once('.') {
        Some((head, rest)) => remove(&mut body[head], rest),
        None => {
            body.as_object_mut().unwrap().remove(path);
        }
    }
}

fn invalid_fields(reply: &Reply) -> Vec<String> {
    if reply.status != 400 || reply.json()["code"] != 3 {
        return Vec::new();
    }
    reply.violated_fields()
}

#[tokio::test]
async fn every_required_field_is_refused_when_missing_and_listed_as_required_in_openapi() {
    let app = spawn_app().await;
    // Every role, so each rpc reaches its checks.
    let token = app.token("required-omni", &[Role::Customer, Role::Admin, Role::Service]);
    let cart_id = async || {
        let reply = call(&app, "POST", "/api/v1/cart/")
            .bearer(&token)
            .json(&json!({}))
            .send()
            .await;
        reply.json()["cart"]["cart_id"].as_str().unwrap().to_string()
    };
    let doc = call(&app, "GET", "/openapi.json").send().await.json();
    let schema = Schema::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut exercised = BTreeSet::new();

    for rule in RULES {
        let rpc = rule.full_method();
        let required = required_paths(&schema, rule.input);
        if required.is_empty() {
            continue;
        }
        let op = &doc["paths"][rule.path][rule.verb.to_ascii_lowercase()];
        let cart = cart_id().await;
        let vars: HashMap<&str, String> = rule.path_variables().map(|v| (v, path_value(v, &cart))).collect();
        for (path, declared_in, name) in required {
            exercised.insert((declared_in.clone(), name.clone()));
            let mut vars = vars.clone();
            let mut body = valid_body(&rpc, &cart);
            if vars.contains_key(path.as_str()) {
                // A path variable cannot be left out of the URL: send it blank.
                vars.insert(rule.path_variables().find(|v| *v == path).unwrap(), "%20".into());
                let parameter = op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == path.as_str())
                    .unwrap_or_else(|| panic!("{rpc}: no parameter {path}"));
                assert_eq!(parameter["in"], "path", "{rpc} {path}");
                assert_eq!(parameter["required"], true, "{rpc} {path}");
            } else {
                remove(&mut body, &path);
                let listed = if declared_in == rule.input {
                    op["requestBody"]["content"]["application/json"]["schema"]["required"].clone()
                } else {
                    doc["components"]["schemas"][&declared_in]["required"].clone()
                };
                if path == "idempotency_key" {
                    // The Idempotency-Key header may stand in: one of the two is required.
                    let header = op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| p["name"] == "Idempotency-Key");
                    assert!(header.is_some(), "{rpc}: no Idempotency-Key header");
                } else {
                    assert!(
                        listed.as_array().is_some_and(|l| l.contains(&json!(name))),
                        "{rpc}: {path} not required in /openapi.json ({declared_in}: {listed})"
                    );
                }
            }
            let reply = send(&app, &token, rule, &vars, &body).await;
            assert!(
                invalid_fields(&reply).contains(&path),
                "{rpc} without {path}: {} {}",
                reply.status,
                reply.text()
            );
        }
    }
    let annotated: BTreeSet<(String, String)> = REQUIRED_FIELDS
        .iter()
        .map(|(message, field)| (message.to_string(), field.to_string()))
        .collect();
    assert_eq!(
        exercised, annotated,
        "every REQUIRED field is reached through a REST mapping"
    );

    // The other way round: with only its path, no rpc refuses a missing field that is not annotated.
    for rule in RULES.iter().filter(|r| !r.server_streaming) {
        let rpc = rule.full_method();
        let cart = cart_id().await;
        let vars: HashMap<&str, String> = rule.path_variables().map(|v| (v, path_value(v, &cart))).collect();
        let reply = send(&app, &token, rule, &vars, &json!({})).await;
        let required: Vec<String> = required_paths(&schema, rule.input)
            .into_iter()
            .map(|(p, ..)| p)
            .collect();
        for field in invalid_fields(&reply) {
            assert!(
                required.contains(&field),
                "{rpc} refuses a request without {field}, which is not annotated REQUIRED: {}",
                reply.text()
            );
        }
    }
}
