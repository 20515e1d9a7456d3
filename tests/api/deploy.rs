//! The deployment artefacts agree with the code: every variable the Helm chart and the
//! compose file set is one `src/config.rs` reads (no drift), the Docker build context holds
//! what cargo needs, and the health service answers the chart's liveness probe.
//!
//! Plain text scans, no helm or YAML crate: scripts/check-deploy.sh repeats the drift check
//! on the manifests helm actually renders.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::app::{Backend, spawn_app_with};

/// Variables read by libraries rather than by `Config` (tracing's EnvFilter, std).
const STANDARD: &[&str] = &["RUST_LOG", "RUST_BACKTRACE"];

/// The OpenTelemetry SDK honours the specification's `OTEL_*` variables itself.
const STANDARD_PREFIX: &str = "OTEL_";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The `"NAME"` of every `env.<method>("NAME", ...)` call in config.rs; the receiver,
/// the dot and the arguments may sit on different lines.
fn config_vars() -> BTreeSet<String> {
    let text = read(&root().join("src/config.rs"));
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    for (dot, _) in text.match_indices('.') {
        let receiver = text[..dot].trim_end();
        let Some(before) = receiver.strip_suffix("env") else {
            continue;
        };
        if before.ends_with(is_ident) {
            continue;
        }
        let call = text[dot + 1..].trim_start();
        let method_len = call.find(|c: char| !is_ident(c)).unwrap_or(call.len());
        let Some(args) = call[method_len..].trim_start().strip_prefix('(') else {
            continue;
        };
        let Some(quoted) = args.trim_start().strip_prefix('"') else {
            continue;
        };
        if let Some(name) = quoted.split('"').next().filter(|n| is_var_name(n)) {
            names.insert(name.to_string());
        }
    }
    names
}

/// Names read directly with `std::env::var("NAME")` / `var_os("NAME")` anywhere in src/
/// (outside `Config`, e.g. HOSTNAME for the event-bus consumer name).
fn direct_reads(dir: &Path, names: &mut BTreeSet<String>) {
    for entry in fs::read_dir(dir).expect("src/") {
        let path = entry.expect("src entry").path();
        if path.is_dir() {
            direct_reads(&path, names);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = read(&path);
            for call in ["env::var(\"", "env::var_os(\""] {
                for (at, _) in text.match_indices(call) {
                    let name = text[at + call.len()..].split('"').next().unwrap_or("");
                    if is_var_name(name) {
                        names.insert(name.to_string());
                    }
                }
            }
        }
    }
}

/// Every quoted ALL_CAPS token of a line (`list "DATABASE_URL" ...` in a template).
fn quoted_names(line: &str) -> impl Iterator<Item = &str> {
    line.split('"').skip(1).step_by(2).filter(|t| is_var_name(t))
}

/// `- name: VAR` (an EnvVar) or `VAR: value` (a ConfigMap/Secret/compose map key).
fn declared_name(line: &str) -> Option<&str> {
    let line = line.trim_start().trim_start_matches("- ").trim_start();
    if let Some(value) = line.strip_prefix("name:") {
        let value = value.trim().trim_matches('"');
        return is_var_name(value).then_some(value);
    }
    let (key, _) = line.split_once(':')?;
    is_var_name(key).then_some(key)
}

/// Variables the chart sets: in templates every EnvVar name, data key and quoted name that
/// looks like a variable; in values files only `extraEnv`-style `name:` entries.
fn chart_vars() -> BTreeSet<String> {
    let chart = root().join("helm/commerce");
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(chart.join("templates")).expect("templates/") {
        let path = entry.expect("template entry").path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "yaml" | "yml" | "tpl") {
            continue;
        }
        for line in read(&path).lines() {
            names.extend(declared_name(line).map(String::from));
            names.extend(quoted_names(line).map(String::from));
        }
    }
    let mut values = vec![chart.join("values.yaml")];
    for entry in fs::read_dir(chart.join("ci")).expect("ci/") {
        values.push(entry.expect("ci entry").path());
    }
    for path in values {
        for line in read(&path).lines() {
            if line.trim_start().starts_with("- name:") {
                names.extend(declared_name(line).map(String::from));
            }
        }
    }
    names
}

/// Variables compose.yaml gives the services running the commerce image (those merging
/// the `*commerce-image` anchor or naming a `commerce` image), read by indentation.
fn compose_vars() -> BTreeSet<String> {
    let text = read(&root().join("compose.yaml"));
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    let start = lines
        .iter()
        .position(|l| *l == "services:")
        .expect("compose.yaml has services:");
    let mut names = BTreeSet::new();
    let mut i = start + 1;
    while i < lines.len() && indent(lines[i]) > 0 {
        // One service: its header at indent 2, its body deeper.
        let body_start = i + 1;
        let mut end = body_start;
        while end < lines.len() && indent(lines[end]) > 2 {
            end += 1;
        }
        let body = &lines[body_start..end];
        let runs_commerce = body.iter().any(|l| {
            let l = l.trim();
            l == "<<: *commerce-image" || l.starts_with("image: commerce")
        });
        if runs_commerce && let Some(env_at) = body.iter().position(|l| l.trim() == "environment:") {
            let depth = indent(body[env_at]);
            for line in body[env_at + 1..].iter().take_while(|l| indent(l) > depth) {
                let entry = line.trim().trim_start_matches("- ");
                let key = entry.split(['=', ':']).next().unwrap_or("").trim();
                assert!(is_var_name(key), "compose environment entry {line:?}");
                names.insert(key.to_string());
            }
        }
        i = end;
    }
    names
}

fn assert_all_read(source: &str, set: &BTreeSet<String>) {
    let mut known = config_vars();
    direct_reads(&root().join("src"), &mut known);
    let unknown: Vec<&String> = set
        .iter()
        .filter(|n| !known.contains(*n) && !STANDARD.contains(&n.as_str()) && !n.starts_with(STANDARD_PREFIX))
        .collect();
    assert!(
        unknown.is_empty(),
        "{source} sets variables the service never reads (src/config.rs): {unknown:?}"
    );
}

#[test]
fn config_rs_names_are_found_including_calls_split_over_lines() {
    let names = config_vars();
    for expected in [
        "PORT",
        "DATABASE_URL",
        "SIBLING_CALL_TIMEOUT_MS",
        "PII_MASTER_KEY",
    ] {
        assert!(names.contains(expected), "{expected} not found in {names:?}");
    }
}

#[test]
fn every_variable_the_helm_chart_sets_is_read_by_the_service() {
    let chart = chart_vars();
    // The scan must see the variables the chart is known to set, or it proves nothing.
    for expected in [
        "DATABASE_URL",
        "REDIS_URL",
        "PII_MASTER_KEY",
        "JWT_SECRET",
        "JWT_PUBLIC_KEY_FILE",
        "RUN_MIGRATIONS",
        "PAYMENT_SERVICE_URL",
        "STUB_FAILURE_RATE",
        "STUBS_PORT",
        "ENVIRONMENT",
    ] {
        assert!(
            chart.contains(expected),
            "chart scan missed {expected}: {chart:?}"
        );
    }
    assert_all_read("the Helm chart", &chart);
}

#[test]
fn every_variable_the_compose_file_gives_commerce_and_stubs_is_read_by_the_service() {
    let compose = compose_vars();
    for expected in [
        "DATABASE_URL",
        "REDIS_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "STUB_FAILURE_RATE",
        "STUBS_PORT",
    ] {
        assert!(
            compose.contains(expected),
            "compose scan missed {expected}: {compose:?}"
        );
    }
    assert!(
        !compose.contains("POSTGRES_PASSWORD"),
        "other images' variables must not count"
    );
    assert_all_read("compose.yaml", &compose);
}

#[test]
fn the_docker_build_context_holds_every_path_cargo_reads() {
    let ignore = read(&root().join(".dockerignore"));
    let allowed: BTreeSet<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    let manifest = read(&root().join("Cargo.toml"));
    // Every target path Cargo.toml names, plus what build.rs reads.
    let mut needed: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path = \""))
        .filter_map(|l| l.split('"').next())
        .map(String::from)
        .collect();
    needed.extend(
        [
            "Cargo.toml",
            "Cargo.lock",
            "build.rs",
            "proto",
            "migrations",
            "src",
        ]
        .map(String::from),
    );
    for path in needed {
        let top = path.split('/').next().unwrap_or(&path);
        assert!(
            allowed.contains(top),
            ".dockerignore leaves out {path} (allowlist: {allowed:?})"
        );
        assert!(root().join(&path).exists(), "{path} named but missing");
    }
    let dockerfile = read(&root().join("Dockerfile"));
    assert!(
        dockerfile.contains("--bin commerce"),
        "builds the commerce binary"
    );
    assert!(dockerfile.contains("ENTRYPOINT [\"commerce\"]"));
    assert!(
        dockerfile.contains("USER 10001:10001"),
        "runs as the chart's non-root uid"
    );
    assert!(
        !dockerfile
            .lines()
            .any(|l| l.trim_start().starts_with("HEALTHCHECK")),
        "Kubernetes probes check health; no HEALTHCHECK"
    );
}

#[tokio::test]
async fn the_liveness_health_service_serves_for_the_chart_probes() {
    let app = spawn_app_with(Backend::Embedded, &[]).await;
    let mut health = HealthClient::new(app.channel.clone());
    // The chart's livenessProbe asks for "liveness", its readinessProbe for "".
    for service in [commerce::startup::LIVENESS_SERVICE, ""] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let values = read(&root().join("helm/commerce/values.yaml"));
    assert!(
        values.contains(&format!(
            "livenessService: {}",
            commerce::startup::LIVENESS_SERVICE
        )),
        "values.yaml probes the service name the server registers"
    );
}
