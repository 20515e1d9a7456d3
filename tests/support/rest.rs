//! A small HTTP/1.1 client for the REST shim tests: one connection per request,
//! the raw status, headers and body back.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{app::TestApp, eventually};

/// An answer of the server.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Raw body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (panics with the text when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The field names of the BadRequest violations in a grpc-gateway error body.
    pub fn violated_fields(&self) -> Vec<String> {
        let body = self.json();
        body["details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| d["field_violations"].as_array().cloned().unwrap_or_default())
            .map(|v| v["field"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// A request under construction.
pub struct Call {
    port: u16,
    request: http::request::Builder,
    body: Bytes,
}

impl Call {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request = self.request.header(name, value);
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Sets a JSON body (and its content type).
    pub fn json(self, body: &Value) -> Self {
        self.raw("application/json", body.to_string())
    }

    /// Sets a body of any content type.
    pub fn raw(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self.header("content-type", content_type)
    }

    /// Sends it and reads the whole answer.
    pub async fn send(self) -> Reply {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let request = self
            .request
            .header("host", format!("127.0.0.1:{}", self.port))
            .body(Full::new(self.body))
            .expect("request");
        let response = sender.send_request(request).await.expect("send");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// Starts a request to the app.
pub fn call(app: &TestApp, method: &str, path: &str) -> Call {
    Call {
        port: app.port,
        request: http::Request::builder().method(method).uri(path),
        body: Bytes::new(),
    }
}

/// GETs `path` as `token` until the JSON answer satisfies `done` (the read
/// side is eventually consistent); fails the test after 20 s.
pub async fn get_until(app: &TestApp, token: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let found = eventually(Duration::from_secs(20), || async {
        let reply = call(app, "GET", path).bearer(token).send().await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let body = reply.json();
        done(&body).then_some(body)
    })
    .await;
    found.unwrap_or_else(|| panic!("{path} never satisfied the condition"))
}

/// A raw HTTP/1.1 GET (no client crate needed), returning the whole response.
pub async fn http_get(port: u16, path: &str) -> String {
    http_get_with(port, path, &[]).await
}

/// A raw HTTP/1.1 GET with extra headers, returning the whole response.
pub async fn http_get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}
