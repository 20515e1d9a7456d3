//! The outside clients some tests drive (Python grpcio, grpcurl), installed by
//! `scripts/install-tools.sh` into `.tools/`. CI installs them, so there a
//! missing tool fails the test; elsewhere the test says so and returns.

use std::path::{Path, PathBuf};

/// The venv python with grpcio: `INTEROP_PYTHON`, else `.tools/venv/bin/python`.
pub fn grpcio_python() -> Option<PathBuf> {
    let python = std::env::var_os("INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools/venv/bin/python"));
    let has_grpcio = std::process::Command::new(&python)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|out| out.status.success());
    found(has_grpcio.then_some(python), "python with grpcio")
}

/// grpcurl on PATH, else `.tools/bin/grpcurl`.
pub fn grpcurl() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("grpcurl"))
            .find(|path| path.is_file())
    });
    let local = repo().join(".tools/bin/grpcurl");
    found(on_path.or_else(|| local.is_file().then_some(local)), "grpcurl")
}

/// Runs the Python fixture `name` with `python` against the app on `port`
/// as `token` (then `extra` arguments); the one JSON line it prints. Fails
/// the test with the script's stderr when it fails.
pub async fn run_grpcio_fixture(
    python: &Path,
    name: &str,
    port: u16,
    token: &str,
    extra: &[&Path],
) -> serde_json::Value {
    let out = tokio::process::Command::new(python)
        .arg(fixture(name))
        .arg(format!("127.0.0.1:{port}"))
        .arg(token)
        .args(extra)
        .output()
        .await
        .expect("python ran");
    assert!(
        out.status.success(),
        "grpcio client {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

/// A file in `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `tool`, or (when missing) a failure in CI and a note elsewhere.
fn found(tool: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    found_or("scripts/install-tools.sh", tool, what)
}

/// `tool`, or (when missing) a failure in CI and elsewhere a note naming the
/// `installer` to run.
pub fn found_or(installer: &str, tool: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    if tool.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!ci, "CI is set but {what} is missing: run {installer}");
        eprintln!("{what} not installed ({installer}): test skipped outside CI");
    }
    tool
}
