//! Headless Chromium driven through chromedriver (W3C WebDriver over plain
//! HTTP, no client crate): the console test clicks, types, waits on what the
//! page shows and saves screenshots. `scripts/install-browser.sh` installs
//! both; CI fails without them, elsewhere the test says so and returns.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::{
    browser::{HEADLESS, find_chromium},
    child::free_port,
    eventually,
    tools::found_or,
};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver` on PATH with `chromium`, if both are installed.
pub fn find_driver() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_chromium()?;
    let path = std::env::var_os("PATH")?;
    let driver = std::env::split_paths(&path)
        .map(|dir| dir.join("chromedriver"))
        .find(|candidate| candidate.is_file());
    let driver = found_or("scripts/install-browser.sh", driver, "chromedriver")?;
    Some((driver, chromium))
}

/// A chromedriver process and one browser session in it (both ended on drop).
pub struct Browser {
    port: u16,
    session: String,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width` x `height`.
    pub async fn start(driver: &Path, chromium: &Path, width: u32, height: u32) -> Self {
        let port = free_port();
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let ready = eventually(Duration::from_secs(20), || async move {
            let (status, body) = request(port, "GET", "/status", None).await.ok()?;
            (status == 200 && body["value"]["ready"] == true).then_some(())
        })
        .await;
        assert!(ready.is_some(), "chromedriver ready within 20 s");
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = HEADLESS.iter().map(|flag| flag.to_string()).collect();
        args.extend([
            "--hide-scrollbars".to_string(),
            "--force-device-scale-factor=1".to_string(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ]);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let (status, body) = request(port, "POST", "/session", Some(capabilities))
            .await
            .expect("new session");
        assert_eq!(status, 200, "new session: {body}");
        let session = body["value"]["sessionId"].as_str().unwrap().to_string();
        Self {
            port,
            session,
            _driver: child,
            _profile: profile,
        }
    }

    /// One WebDriver command of this session; its `value` (fails the test on an error).
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("/session/{}{path}", self.session);
        let (status, answer) = request(self.port, method, &url, body).await.expect("webdriver");
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    /// Opens `url` and waits for its load.
    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its result.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits (up to 20 s) until `script` returns something truthy; that value.
    pub async fn wait(&self, what: &str, script: &str, args: Value) -> Value {
        let found = eventually(Duration::from_secs(20), || {
            let args = args.clone();
            async move {
                let value = self.run(script, args).await;
                let truthy = !(value.is_null()
                    || value == false
                    || value == ""
                    || value == 0
                    || value.as_array().is_some_and(Vec::is_empty));
                truthy.then_some(value)
            }
        })
        .await;
        match found {
            Some(value) => value,
            None => panic!(
                "timed out waiting for {what}; the page shows:\n{}",
                self.text("body").await
            ),
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .command(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        match found[ELEMENT].as_str() {
            Some(id) => id.to_string(),
            None => panic!("no element {css}: {found}"),
        }
    }

    /// Clicks the element `css` (as a user would: it must be visible and enabled).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
    }

    /// Types `text` into the element `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The rendered text of the element `css`.
    pub async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        let text = self.command("GET", &format!("/element/{id}/text"), None).await;
        text.as_str().unwrap_or_default().to_string()
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self.command("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser; the driver itself is killed with its handle.
        let (port, session) = (self.port, self.session.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let path = format!("/session/{session}");
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), request(port, "DELETE", &path, None)).await;
            });
        })
        .join();
    }
}

/// One HTTP/1.1 request to chromedriver: status and JSON body.
async fn request(port: u16, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value), String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .map_err(|_| format!("{method} {path}: no answer in 60 s"))?
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

/// `target/console-screenshots/<name>`: where the console tests leave their
/// screenshots (kept by CI as artifacts).
pub fn screenshot_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots").join(name)
}
