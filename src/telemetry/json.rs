//! The JSON log line: one flat object per event, so that a log pipeline can
//! filter on `request_id`, `trace_id`, `order_id` without digging.
//!
//! Fields come from every span in scope (outermost first, so an inner span's
//! field wins; business ids lifted to the root by [`super::ids`] included),
//! then from the event; `trace_id` and `span_id` come from the
//! OpenTelemetry context of the innermost span that has one.

use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::{Dispatch, Event, Subscriber, field::Field};
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormattedFields,
        format::{JsonFields, Writer},
    },
    registry::LookupSpan,
};

use super::ids::BusinessIds;

/// The dispatcher the formatter reads OpenTelemetry contexts through. Set once
/// the global subscriber is installed: inside an event the thread's current
/// dispatcher is masked, so it cannot be looked up there.
pub(super) static DISPATCH: OnceLock<Dispatch> = OnceLock::new();

/// Formats events as flat JSON lines (see the module documentation).
pub(super) struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        let mut scope_ids = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(ids) = extensions.get::<BusinessIds>() {
                    for (key, value) in &ids.0 {
                        line.insert((*key).to_string(), value.as_str().into());
                    }
                }
                if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&fields.fields)
                {
                    for (key, value) in fields {
                        // Dotted keys (`otel.name`, `rpc.grpc.status_code`) are span
                        // attributes for the exporter; the event says the same in words.
                        if !key.contains('.') {
                            line.insert(key, value);
                        }
                    }
                }
                scope_ids.push(span.id());
            }
        }
        // The extensions above are released: reading the OpenTelemetry context locks them.
        if let Some(dispatch) = DISPATCH.get() {
            let context = scope_ids.iter().rev().find_map(|id| {
                let context = tracing_opentelemetry::get_otel_context(id, dispatch)?;
                let span_context = context.span().span_context().clone();
                span_context.is_valid().then_some(span_context)
            });
            if let Some(span_context) = context {
                line.insert("trace_id".into(), span_context.trace_id().to_string().into());
                line.insert("span_id".into(), span_context.span_id().to_string().into());
            }
        }
        event.record(&mut Visitor(&mut line));
        line.insert("target".into(), meta.target().into());
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects an event's fields as JSON values.
struct Visitor<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for Visitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // `{:#}`-style chain: the whole cause, as the style guide asks.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.0.insert(field.name().into(), text.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}
