//! Headless Chromium (installed by `scripts/install-browser.sh`): the browser
//! tests load a page and read back the DOM it ends with ([`chromium`]), or
//! what a page of theirs reports when it is done ([`run_page`]). CI installs it, so
//! there a missing browser fails the test; elsewhere the test says so and returns.

use std::{path::PathBuf, process::Stdio, time::Duration};

use axum::response::IntoResponse;

use super::tools::found_or;

/// `chromium` on PATH, if installed (a failure in CI when not).
pub fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let on_path = std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file());
    found_or("scripts/install-browser.sh", on_path, "chromium")
}

/// Headless, and quiet: no sandbox (root in CI), no GPU, no background traffic.
pub const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];

/// Runs headless Chromium with `args` on a fresh `profile`; its stdout.
///
/// Virtual time: the page is done when the budget has passed with nothing
/// pending, and it does not pass while a fetch is open, so a page reading a
/// stream is dumped once the stream ended (bounded by 90 s of real time).
pub async fn chromium(binary: &PathBuf, profile: &std::path::Path, args: &[String]) -> String {
    let mut command = tokio::process::Command::new(binary);
    command
        .args(HEADLESS)
        .args([
            "--hide-scrollbars",
            "--window-size=1280,2400",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium ran");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A page for [`run_page`]: `index.html` and whatever it loads, by path.
pub struct Page {
    /// Files served at `/<name>`, with their content types.
    pub files: Vec<(String, &'static str, Vec<u8>)>,
}

/// Loads `/index.html` of `page` (served from a small server of the test,
/// its own origin, so the service sees a real cross-origin browser) in
/// headless Chromium, and returns the JSON the page POSTs to `/result`.
///
/// The page says when it is done, rather than the browser guessing: a
/// stream read with fetch does not hold `--dump-dom`'s virtual time.
pub async fn run_page(binary: &PathBuf, page: Page) -> serde_json::Value {
    use axum::{Router, body::Bytes, extract::Path, routing::post};

    let (done, result) = tokio::sync::mpsc::channel::<Bytes>(1);
    let files = std::sync::Arc::new(page.files);
    let router = Router::new()
        .route(
            "/result",
            post(move |body: Bytes| async move {
                let _ = done.send(body).await;
            }),
        )
        .route(
            "/{name}",
            axum::routing::get(move |Path(name): Path<String>| async move {
                match files.iter().find(|(n, _, _)| *n == name) {
                    Some((_, content_type, bytes)) => {
                        ([(http::header::CONTENT_TYPE, *content_type)], bytes.clone()).into_response()
                    }
                    None => http::StatusCode::NOT_FOUND.into_response(),
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let profile = tempfile::tempdir().unwrap();
    let mut browser = tokio::process::Command::new(binary)
        .args(HEADLESS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("{origin}/index.html"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let mut result = result;
    let body = tokio::time::timeout(Duration::from_secs(90), result.recv())
        .await
        .expect("the page reported within 90 s")
        .expect("a result");
    let _ = browser.kill().await;
    server.abort();
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "the page reported no JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}
