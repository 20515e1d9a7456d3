//! What the observability tests need around the service: the real binary as
//! a child process (its stderr is the log), an in-process OTLP collector, and
//! a reader for the Prometheus text format.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
    trace::v1::Span,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::eventually;

/// How long a test waits for a log line or a span before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// `commerce serve` in a child process on a random port, with its own SQLite
/// file, JSON logs collected from stderr.
pub struct ServerProcess {
    /// The port it bound.
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `commerce serve` with `vars` over a minimal test environment
    /// and waits until it serves.
    pub async fn spawn(vars: &[(&str, &str)]) -> Self {
        Self::spawn_command("serve", "serving gRPC and HTTP", vars).await
    }

    /// Starts `commerce stubs` the same way.
    pub async fn spawn_stubs(vars: &[(&str, &str)]) -> Self {
        Self::spawn_command("stubs", "serving the sibling stubs", vars).await
    }

    async fn spawn_command(subcommand: &str, ready: &str, vars: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_commerce"));
        command
            .arg(subcommand)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ENVIRONMENT", "test")
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("STUBS_PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("SQLITE_PATH", dir.path().join("commerce.db"))
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn commerce serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let mut server = Self {
            port: 0,
            lines,
            _child: child,
            _dir: dir,
        };
        let serving = server.wait_for_log(|line| line["message"] == ready).await;
        let addr = serving["addr"].as_str().expect("addr field");
        server.port = addr.rsplit(':').next().unwrap().parse().expect("port");
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every line written so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first JSON log line matching `wanted`, waiting for it to be written.
    pub async fn wait_for_log(&self, wanted: impl Fn(&Value) -> bool) -> Value {
        let found = eventually(PATIENCE, || {
            let line = self
                .lines()
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|line| wanted(line));
            async move { line }
        })
        .await;
        found.unwrap_or_else(|| panic!("no such log line in:\n{}", self.lines().join("\n")))
    }
}

/// One exported span with the `service.name` of its resource.
#[derive(Clone, Debug)]
pub struct ExportedSpan {
    /// The resource's `service.name`.
    pub service: String,
    /// The span as received.
    pub span: Span,
}

impl ExportedSpan {
    /// Trace id in hex.
    pub fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }

    /// Parent span id in hex ("" for a root).
    pub fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }

    /// A string attribute.
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                AnyValue::IntValue(i) => Some(i.to_string()),
                other => Some(format!("{other:?}")),
            })
    }
}

/// An OTLP/gRPC trace collector on a random loopback port, keeping every span.
pub struct Collector {
    /// `http://127.0.0.1:PORT`, for OTEL_EXPORTER_OTLP_ENDPOINT.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<ExportedSpan>>>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ExportedSpan {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Starts the collector.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(Sink(spans.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self { endpoint, spans }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until the spans received satisfy `done`, and returns them.
    pub async fn wait_for(&self, done: impl Fn(&[ExportedSpan]) -> bool) -> Vec<ExportedSpan> {
        let found = eventually(PATIENCE, || {
            let spans = self.spans();
            let found = done(&spans).then_some(spans);
            async move { found }
        })
        .await;
        found.unwrap_or_else(|| {
            let names: Vec<_> = self.spans().iter().map(|s| s.span.name.clone()).collect();
            panic!("the collector never saw the expected spans; it saw {names:?}")
        })
    }
}

/// The sum of the samples of `name` whose labels include all of `labels`
/// (0 when there is none), read from a Prometheus text exposition.
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let label_text = rest.trim_end_matches('}');
            let all = labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A W3C `traceparent` for a fresh trace: (header, trace id, parent span id).
pub fn fresh_traceparent() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

/// Every PromQL series selector `name{key="value", ...}` in `text`, as the
/// metric name and its matchers (label key, matched value or regex).
pub fn selectors(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut found = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for (at, _) in text.match_indices('{') {
        let name: String = text[..at]
            .chars()
            .rev()
            .take_while(|c| ident(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            continue;
        }
        let Some(end) = text[at..].find('}') else { continue };
        let matchers = text[at + 1..at + end]
            .split(',')
            .filter_map(|matcher| {
                let key = matcher.split(['=', '!']).next()?.trim();
                let value = matcher[matcher.find('"')?..].trim().trim_matches('"');
                (!key.is_empty()).then(|| (key.to_string(), value.to_string()))
            })
            .collect();
        found.push((name, matchers));
    }
    found
}

/// The labels of every `by (...)` / `without (...)` clause in `text`.
pub fn grouping_labels(text: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for clause in ["by (", "without ("] {
        for (at, _) in text.match_indices(clause) {
            let rest = &text[at + clause.len()..];
            let Some(end) = rest.find(')') else { continue };
            labels.extend(
                rest[..end]
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
        }
    }
    labels
}
