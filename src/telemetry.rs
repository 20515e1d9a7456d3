//! Logs and traces. Logs are JSON lines (or pretty) on stderr, each carrying
//! the fields of its spans (request id, cart/order/saga ids) and the trace id.
//! Traces are OpenTelemetry spans, exported over OTLP/gRPC when an endpoint is
//! configured; W3C trace context crosses every gRPC and HTTP boundary.
//!
//! Trace ids exist even with export off (spans are then dropped at the end),
//! so logs always correlate and an incoming `traceparent` is always passed on.
//! Export never blocks or fails a request: a batch processor with a bounded
//! queue sends in the background and drops spans when the collector is away.

mod ids;
mod json;

use std::{collections::HashMap, sync::OnceLock, time::Duration};

use opentelemetry::{
    global,
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::filter_fn,
    fmt::{TestWriter, format::JsonFields, writer::BoxMakeWriter},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::config::{LogFormat, TelemetrySettings};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber, tracer provider and W3C propagator.
/// `RUST_LOG` overrides the default filter. Must run inside the tokio runtime
/// (the OTLP channel is created on it). Safe to call twice (tests): the
/// second call does nothing.
pub fn init(settings: &TelemetrySettings) {
    install(settings, LogOutput::Stderr);
}

/// [`init`] for in-process test servers: the logs go through the test
/// harness's capture (shown for a failing test only), not straight to stderr.
pub fn init_captured(settings: &TelemetrySettings) {
    install(settings, LogOutput::TestCapture);
}

#[derive(Clone, Copy)]
enum LogOutput {
    Stderr,
    TestCapture,
}

fn install(settings: &TelemetrySettings, output: LogOutput) {
    if PROVIDER.get().is_some() {
        return;
    }
    global::set_text_map_propagator(TraceContextPropagator::new());
    let endpoint = settings.tracing_endpoint();
    let (provider, exporter_error) = tracer_provider(endpoint.as_deref());
    let tracer = provider.tracer("commerce");
    global::set_tracer_provider(provider.clone());
    let _ = PROVIDER.set(provider);

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,hyper=warn,tower=warn"));
    // The exporter's own machinery (tonic, h2, hyper) must not trace itself.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(|meta| {
            !["h2", "hyper", "tonic", "tower", "opentelemetry"]
                .iter()
                .any(|internal| meta.target().starts_with(internal))
        }));
    let writer = match output {
        LogOutput::Stderr => BoxMakeWriter::new(std::io::stderr),
        LogOutput::TestCapture => BoxMakeWriter::new(TestWriter::default()),
    };
    let fmt = match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(json::JsonLines)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(ids::BusinessIdsLayer)
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok()
    {
        tracing::dispatcher::get_default(|dispatch| {
            let _ = json::DISPATCH.set(dispatch.clone());
        });
    }
    match (endpoint, exporter_error) {
        (Some(endpoint), None) => tracing::info!(%endpoint, "exporting traces over OTLP"),
        (Some(endpoint), Some(error)) => {
            tracing::warn!(%endpoint, %error, "trace export off: the OTLP exporter could not be built")
        }
        (None, _) => {}
    }
}

/// The tracer provider: with a batch OTLP exporter when `endpoint` is set.
fn tracer_provider(endpoint: Option<&str>) -> (SdkTracerProvider, Option<String>) {
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("commerce");
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    let Some(endpoint) = endpoint else {
        return (builder.build(), None);
    };
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build();
    match exporter {
        Ok(exporter) => {
            // Bounded queue: when the collector is slow or down, spans are dropped, never waited on.
            let batch = BatchConfigBuilder::default().with_max_queue_size(4096).build();
            let processor = BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch)
                .build();
            (builder.with_span_processor(processor).build(), None)
        }
        Err(err) => (builder.build(), Some(err.to_string())),
    }
}

/// Flushes the spans still queued and stops the exporter (end of `serve`).
pub async fn shutdown() {
    if let Some(provider) = PROVIDER.get().cloned() {
        // Blocks while the last batch goes out: off the async threads.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// The span of one incoming gRPC or HTTP request, a child of the caller's
/// span when the request carries W3C `traceparent`. Its `request_id` field
/// (set by the request-id layer in front) lands on every log line inside.
pub fn request_span<B>(request: &http::Request<B>) -> Span {
    let path = request.uri().path();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let name = if crate::transport::is_grpc(request) {
        path.trim_start_matches('/').to_string()
    } else {
        let route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or(path, |matched| matched.as_str());
        format!("{} {route}", request.method())
    };
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        method = %request.method(),
        path,
        request_id,
        rpc.grpc.status_code = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let parent =
        global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(request.headers())));
    let _ = span.set_parent(parent);
    span
}

/// Writes the current span's W3C trace context into outgoing gRPC metadata,
/// so a sibling's spans join the caller's trace.
pub fn inject_trace_context(metadata: &mut tonic::metadata::MetadataMap) {
    let context = Span::current().context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

/// The current span's W3C `traceparent`, to store with work that another task
/// picks up later (a saga): see [`continue_trace`].
pub fn current_traceparent() -> Option<String> {
    let context = Span::current().context();
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut carrier));
    carrier.remove("traceparent")
}

/// Makes `span` a child of the stored `traceparent` (from
/// [`current_traceparent`]), so background work joins the trace of the request
/// that caused it. Call it right after creating the span, before anything is
/// logged in it (the parent is fixed once the span starts).
pub fn continue_trace(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    let _ = span.set_parent(parent);
}

/// Reads W3C headers from an HTTP/gRPC request head.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}
