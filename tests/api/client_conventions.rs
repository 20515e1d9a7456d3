//! The client conventions we publish: `idempotency_level` on the rpcs, and the
//! gRPC service config in `contracts/grpc_service_config.json` that sibling
//! teams load (retry UNAVAILABLE on idempotent methods, per-method timeouts).

use std::collections::{BTreeMap, BTreeSet};

use commerce::proto::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::{FileDescriptorSet, method_options::IdempotencyLevel};

use crate::support::{app::spawn_app, tools};

fn service_config() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts/grpc_service_config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the service config is JSON")
}

/// Every `commerce.v1` rpc (`Service/Method`) with its declared idempotency level.
fn commerce_methods() -> BTreeMap<String, IdempotencyLevel> {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = BTreeMap::new();
    for file in set.file.iter().filter(|f| f.package() == "commerce.v1") {
        for service in &file.service {
            for method in &service.method {
                let level = method
                    .options
                    .as_ref()
                    .map_or(IdempotencyLevel::IdempotencyUnknown, |o| o.idempotency_level());
                methods.insert(format!("commerce.v1.{}/{}", service.name(), method.name()), level);
            }
        }
    }
    methods
}

#[test]
fn the_service_config_names_every_rpc_once_and_retries_exactly_the_idempotent_ones() {
    let config = service_config();
    let methods = commerce_methods();
    let mut seen = BTreeSet::new();
    for entry in config["methodConfig"].as_array().unwrap() {
        let retries = entry.get("retryPolicy").is_some();
        if retries {
            assert_eq!(
                entry["retryPolicy"]["retryableStatusCodes"],
                serde_json::json!(["UNAVAILABLE"])
            );
        }
        for name in entry["name"].as_array().unwrap() {
            let key = format!(
                "{}/{}",
                name["service"].as_str().unwrap(),
                name["method"].as_str().unwrap()
            );
            let level = methods
                .get(&key)
                .unwrap_or_else(|| panic!("{key} is in the service config but not in the protos"));
            assert!(seen.insert(key.clone()), "{key} named twice");
            assert_eq!(
                retries,
                *level != IdempotencyLevel::IdempotencyUnknown,
                "{key}: retried iff annotated NO_SIDE_EFFECTS or IDEMPOTENT"
            );
        }
    }
    let all: BTreeSet<String> = methods.keys().cloned().collect();
    assert_eq!(seen, all, "every rpc has its timeout in the service config");
}

#[tokio::test]
async fn a_python_grpcio_channel_with_the_service_config_retries_an_attempt_the_network_dropped() {
    let Some(python) = tools::grpcio_python() else {
        return;
    };
    let app = spawn_app().await;
    let token = app.customer("python-sibling");
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts/grpc_service_config.json");
    let seen = tools::run_grpcio_fixture(
        &python,
        "grpcio_service_config.py",
        app.port,
        &token,
        &[config.as_path()],
    )
    .await;
    assert_eq!(seen["retried_call"], "OK", "{seen}");
    assert_eq!(seen["unconfigured_call"], "UNAVAILABLE", "{seen}");
}
