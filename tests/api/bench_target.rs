//! `commerce bench --target` against a real server with its rate limit on:
//! the refusals are reported by code, the user is told how to start the target,
//! and the server line names the target's backends and its peak memory.

use serde_json::Value;

use crate::support::{
    app::{Backend, Isolation},
    child::{free_port, spawn},
};

/// The bench's JSON line of `scenario`.
fn line<'a>(lines: &'a [Value], scenario: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["scenario"] == scenario)
        .unwrap_or_else(|| panic!("no {scenario} line in {lines:?}"))
}

/// Runs `bench` (a `commerce bench` command), which must succeed: its stdout, its stderr and
/// its JSON lines.
async fn output_of(bench: &mut tokio::process::Command, backend: Backend) -> (String, String, Vec<Value>) {
    let output = bench.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{backend:?}: {stdout}\n{stderr}");
    let lines = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (stdout, stderr, lines)
}

/// VmHWM (peak resident set) of `pid` in MB, as /proc reports it.
fn peak_rss_mb(pid: u32) -> f64 {
    // Rounded as the bench rounds it.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    (kb / 1024.0 * 10.0).round() / 10.0
}

#[tokio::test]
async fn bench_against_a_rate_limited_target_reports_refusals_by_code_and_the_target_as_it_is() {
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut vars = isolation.vars.clone();
        vars.insert("PORT".into(), port.to_string());
        // The limiter on, as a target started without RATE_LIMIT_PER_SECOND=0 has it. The
        // default (100/s per customer, burst 200) refuses a release build's workers; a debug
        // build on two shared cores does some tens of calls per second per worker, so the
        // same situation is made here with a smaller bucket.
        vars.insert("RATE_LIMIT_PER_SECOND".into(), "2".into());
        vars.insert("RATE_LIMIT_BURST".into(), "2".into());
        let mut server = spawn(&["serve"], &vars, dir.path().join("serve.log"), port);
        server.ready().await;

        // The bench's own configuration: the same test keys, so its tokens verify.
        let bench_vars: Vec<(&String, &String)> = isolation.vars.iter().collect();
        let mut bench = tokio::process::Command::new(env!("CARGO_BIN_EXE_commerce"));
        bench
            .args(["bench", "--target", &server.url(), "--scenario", "cart-ops"])
            .args(["--seconds", "1", "--warmup-seconds", "0"])
            .args(["--concurrency", "2", "--connections", "1"])
            .env_clear()
            .envs(bench_vars)
            .env("RUST_LOG", "warn");
        let (stdout, stderr, lines) = output_of(&mut bench, backend).await;

        // Refusals counted by code, and every failure has its code.
        let cart_ops = line(&lines, "cart_ops");
        let by_code = cart_ops["errors_by_code"].as_object().unwrap();
        let refused = by_code["RESOURCE_EXHAUSTED"].as_u64().unwrap_or(0);
        assert!(refused > 0, "{backend:?}: {cart_ops}");
        let counted: u64 = by_code.values().filter_map(Value::as_u64).sum();
        assert_eq!(counted, cart_ops["errors"].as_u64().unwrap(), "{cart_ops}");
        assert!(
            stdout.contains("cart_ops errors by code:"),
            "the table lists them: {stdout}"
        );
        // ...and the user is told why and how to start the target.
        assert!(
            stderr.contains(&format!("{} refused {refused} requests", server.url()))
                && stderr.contains("RATE_LIMIT_PER_SECOND=0 commerce serve"),
            "{backend:?}: {stderr}"
        );

        // The target as it is: its backends from its /health, its memory from its process.
        let server_line = line(&lines, "server");
        let backends = match backend {
            Backend::Embedded => "sqlite+in-process",
            Backend::Real => "postgres+redis",
            Backend::RealCluster => "postgres+redis-cluster",
        };
        assert_eq!(server_line["backend"], backends, "{server_line}");
        let reported = server_line["peak_rss_mb"]
            .as_f64()
            .expect("peak RSS of a local target");
        // Read again after the bench: about what was reported (the kernel's RSS counters
        // are per-CPU sums, so two reads of the peak differ by some pages either way).
        let actual = peak_rss_mb(server.pid());
        assert!(
            reported > 10.0 && (actual - reported).abs() < 8.0,
            "{backend:?}: reported {reported} MB, the server's VmHWM is {actual} MB"
        );
        assert!(
            stdout.contains(&format!("peak RSS {reported} MB, backend {backends}")),
            "{stdout}"
        );
        drop(server);
    }
}

/// `commerce bench --scenario event-catch-up` on each database: it seeds a fresh one, a
/// consumer catches up on every event exactly once (the bench fails otherwise), acking as it
/// goes, and the line reports the rate and the memory. No server is started for it.
#[tokio::test]
async fn bench_event_catch_up_seeds_a_fresh_database_and_reports_rate_and_memory() {
    for backend in Backend::all() {
        let isolation = Isolation::new(backend).await;
        let mut bench = tokio::process::Command::new(env!("CARGO_BIN_EXE_commerce"));
        bench
            .args([
                "bench",
                "--scenario",
                "event-catch-up",
                "--catch-up-events",
                "6000",
            ])
            .env_clear()
            .envs(isolation.vars.iter())
            .env("RUST_LOG", "warn");
        if backend == Backend::Real {
            bench.args(["--database-url", &std::env::var("TEST_DATABASE_URL").unwrap()]);
        }
        let (stdout, _, lines) = output_of(&mut bench, backend).await;

        let catch_up = line(&lines, "event_catch_up");
        let kind = if backend == Backend::Embedded {
            "sqlite"
        } else {
            "postgres"
        };
        assert_eq!(catch_up["backend"], kind, "{catch_up}");
        assert_eq!(catch_up["events"], 6000, "{catch_up}");
        assert_eq!(catch_up["orders"], 1000, "{catch_up}");
        // One Ack per 5,000 events and one at the end.
        assert_eq!(catch_up["acks"], 2, "{catch_up}");
        let rate = catch_up["events_per_sec"].as_f64().unwrap();
        let elapsed = catch_up["elapsed_s"].as_f64().unwrap();
        assert!(rate > 0.0 && elapsed > 0.0, "{catch_up}");
        assert!((rate * elapsed - 6000.0).abs() < 0.1 * 6000.0, "{catch_up}");
        let (before, peak) = (
            catch_up["rss_before_mb"].as_f64().unwrap(),
            catch_up["rss_peak_mb"].as_f64().unwrap(),
        );
        assert!(before > 10.0 && peak >= before, "{catch_up}");
        assert!(
            stdout.contains("event_catch_up (") && stdout.contains("events/s; RSS"),
            "the summary names it: {stdout}"
        );
        assert!(
            lines.iter().all(|l| l["scenario"] != "server"),
            "no server is started for an in-process scenario: {stdout}"
        );
    }
}
