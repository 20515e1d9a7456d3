//! The event feed's README examples, run as written: the grpcurl session
//! (CreateConsumer, Subscribe, Ack) and the Rust client `examples/order_events.rs`.

use std::{path::PathBuf, process::Stdio, time::Duration};

use commerce::auth::Role;

use crate::support::{
    app::{Backend, spawn_app_with},
    events::append_orders,
    store::EventLog,
    tools,
};

/// The commands of the README's event-feed grpcurl block (continuation lines joined).
fn readme_grpcurl_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Order events for sibling services")
        .nth(1)
        .expect("the README section");
    let block = section
        .split("```bash")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    block
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("grpcurl "))
        .map(str::to_string)
        .collect()
}

/// The example binary, next to this test binary: `cargo test` builds every
/// example; before a filtered run build it (`cargo build --example
/// order_events`, as `make test-integration` does). Building it from inside the
/// test would rebuild the dependencies under the test's environment.
fn example_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let binary = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/order_events");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/order_events.rs");
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    assert!(
        modified(&binary) >= modified(std::path::Path::new(source)),
        "{} is missing or older than its source: run `cargo build --example order_events`",
        binary.display()
    );
    binary
}

#[tokio::test]
async fn the_readme_grpcurl_session_and_the_rust_example_client_work_as_written() {
    let Some(grpcurl) = tools::grpcurl() else {
        return;
    };
    for backend in Backend::all() {
        let app = spawn_app_with(backend, &[("ENABLE_SAGA_ORCHESTRATION", "false")]).await;
        append_orders(&EventLog::of(&app.app), 2).await;
        // Settled: on PostgreSQL another test's open transaction may hold the log back a moment.
        let position = EventLog::of(&app.app).read_all_settled(12).await[2].global_position;
        let commands = readme_grpcurl_commands();
        assert_eq!(commands.len(), 3, "CreateConsumer, Subscribe, Ack");
        let env = [
            ("ADMIN", app.token("ops", &[Role::Admin])),
            ("SVC", app.token("notifications", &[Role::Service])),
        ];
        let mut outputs = Vec::new();
        for command in &commands {
            let command = command
                .replacen("grpcurl ", &format!("{} ", grpcurl.display()), 1)
                .replace("localhost:8084", &format!("127.0.0.1:{}", app.port))
                .replace("\"42\"", &format!("\"{position}\""));
            // Subscribe never ends on its own: stop it after a few seconds.
            let command = command.replacen(" -plaintext", " -max-time 4 -plaintext", 1);
            let out = tokio::process::Command::new("bash")
                .args(["-c", &command])
                .envs(env.iter().map(|(k, v)| (k, v)))
                .output()
                .await
                .unwrap();
            outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
            let stderr = String::from_utf8_lossy(&out.stderr);
            let timed_out = stderr.contains("DeadlineExceeded") || stderr.contains("context deadline");
            assert!(
                out.status.success() || timed_out,
                "{backend:?}: {command}: {stderr}"
            );
        }
        assert!(
            outputs[0].contains("\"name\": \"notifications\""),
            "{}",
            outputs[0]
        );
        assert_eq!(
            outputs[1].matches("\"eventType\"").count(),
            12,
            "{backend:?}: {}",
            outputs[1]
        );
        assert!(outputs[1].contains("EVENT_TYPE_ORDER_CREATED"));
        assert!(
            outputs[2].contains(&format!("\"ackedPosition\": \"{position}\"")),
            "{}",
            outputs[2]
        );

        // The Rust client resumes after that ack: 9 of the 12 events are left.
        let run = tokio::process::Command::new(example_binary())
            .args(["--consumer", "notifications", "--limit", "9", "--ack-every", "4"])
            .env("COMMERCE_URL", &app.base_url)
            .env("COMMERCE_TOKEN", &env[1].1)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the example ends after --limit events")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 9, "{backend:?}: {stdout}");
        assert!(lines[0].contains("EVENT_TYPE_SHIPMENT_CREATED"), "{}", lines[0]);
        let consumer = app
            .app
            .feed
            .statuses()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.record.name == "notifications")
            .unwrap();
        assert_eq!(
            consumer.lag_events, 0,
            "{backend:?}: the example acknowledged what it printed"
        );
    }
}
