//! Business ids travel up to the root span, so that every log line of a
//! request carries them, including the access line written after the
//! handler's own span has closed.
//!
//! A handler names its ids as span fields (`#[instrument(fields(cart_id =
//! ..))]` or `span.record("order_id", ..)`); this layer copies each one to
//! the outermost span in scope (the request span, or a worker's root span),
//! where the JSON formatter finds it.

use std::collections::BTreeMap;

use tracing::{
    Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

/// The field names lifted to the root span.
const BUSINESS_IDS: &[&str] = &["cart_id", "order_id", "saga_id"];

/// The business ids recorded anywhere under a root span.
#[derive(Debug, Default)]
pub(super) struct BusinessIds(pub(super) BTreeMap<&'static str, String>);

/// The layer doing the lifting.
pub(super) struct BusinessIdsLayer;

impl<S> Layer<S> for BusinessIdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut found = FoundIds::default();
        attrs.record(&mut found);
        lift(found, id, &ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut found = FoundIds::default();
        values.record(&mut found);
        lift(found, id, &ctx);
    }
}

fn lift<S>(found: FoundIds, id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if found.0.is_empty() {
        return;
    }
    let Some(root) = ctx.span(id).and_then(|span| span.scope().last()) else {
        return;
    };
    let mut extensions = root.extensions_mut();
    match extensions.get_mut::<BusinessIds>() {
        Some(ids) => ids.0.extend(found.0),
        None => extensions.insert(BusinessIds(found.0)),
    }
}

/// Picks the business ids out of a span's fields.
#[derive(Default)]
struct FoundIds(BTreeMap<&'static str, String>);

impl FoundIds {
    fn keep(&mut self, field: &Field, value: String) {
        if let Some(name) = BUSINESS_IDS.iter().find(|name| **name == field.name()) {
            self.0.insert(name, value);
        }
    }
}

impl Visit for FoundIds {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if BUSINESS_IDS.contains(&field.name()) {
            // `%id` arrives as a Display wrapper whose Debug is the plain text;
            // a `&str` argument of `#[instrument]` arrives quoted.
            let text = format!("{value:?}");
            let text = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                Some(unquoted) => unquoted.to_string(),
                None => text,
            };
            self.keep(field, text);
        }
    }
}
