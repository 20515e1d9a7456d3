//! One page of the settled log made public: each stored event left out
//! (another stream type, a kind outside the filter) or opened and decoded,
//! in the page's order.
//!
//! # Work per event, and per page
//! A catch-up publishes hundreds of thousands of events, so the per-event path
//! is kept short: the kind comes from the stored type name, so an event outside
//! the filter is never decoded; a sealed OrderCreated is opened before it is
//! decoded, so it is decoded once; the payload is dropped once decoded (the
//! domain event carries it), halving what a buffered message holds.
//!
//! Opening needs the customer's data key, one key-store query on a cache miss.
//! Done one event after the other, a page of a catch-up over many customers
//! waits for one round trip per customer in turn. So the page's sealed events
//! are grouped by customer: the first of each customer is opened with up to
//! [`KEY_LOOKUPS`] lookups in flight, which fills the vault's cache, and the
//! others are opened after it from the cache.

use futures::{StreamExt, stream};
use serde_json::Value;

use super::public::{self, PublicEventType, PublishedEvent};
use crate::{
    error::AppError,
    privacy::{SEALED_FIELD, Vault},
    store::event_store::{ORDER_STREAM, StoredEvent},
};

/// Key lookups in flight per stream while a page is opened.
pub const KEY_LOOKUPS: usize = 4;

/// What a page publishes: one entry per stored event that goes out (None when
/// the stream leaves it out), in order, up to the first event that does not map
/// to the contract, whose error ends the list.
pub(super) struct Published {
    /// The page's events in order.
    pub events: Vec<Option<PublishedEvent>>,
    /// Why the event after the last of `events` could not be published.
    pub failure: Option<AppError>,
}

/// Publishes `page` for a stream of kinds `types` (empty: every kind).
pub(super) async fn publish(
    privacy: &Vault,
    page: Vec<StoredEvent>,
    types: &std::collections::HashSet<PublicEventType>,
) -> Published {
    // Which events go out; an order event of an unknown type goes on to the
    // decoder, which names what is wrong with it.
    let mut entries: Vec<(StoredEvent, bool)> = page
        .into_iter()
        .map(|stored| {
            let wanted = stored.stream_type == ORDER_STREAM
                && PublicEventType::of_type_name(&stored.event_type)
                    .is_none_or(|kind| types.is_empty() || types.contains(&kind));
            (stored, wanted)
        })
        .collect();
    let opened = open_sealed(privacy, &mut entries).await;
    let mut events = Vec::with_capacity(entries.len());
    for ((mut stored, wanted), opened) in entries.into_iter().zip(opened) {
        let position = stored.global_position;
        if !wanted {
            events.push(None);
            continue;
        }
        let decoded = opened.and_then(|()| {
            public::decode(&stored)
                .unwrap_or_else(|| Err(anyhow::anyhow!("not an order stream")))
                .map_err(|why| poison(why, position))
        });
        match decoded {
            Ok(event) => {
                // The domain event carries the payload now.
                stored.payload = Value::Null;
                events.push(Some(PublishedEvent { stored, event }));
            }
            Err(error) => {
                return Published {
                    events,
                    failure: Some(error),
                };
            }
        }
    }
    Published {
        events,
        failure: None,
    }
}

/// Opens the sealed personal data of the wanted events of `entries` in place:
/// the first of each customer with [`KEY_LOOKUPS`] in flight, the rest after.
/// One outcome per entry.
async fn open_sealed(privacy: &Vault, entries: &mut [(StoredEvent, bool)]) -> Vec<Result<(), AppError>> {
    let mut outcomes: Vec<Result<(), AppError>> = entries.iter().map(|_| Ok(())).collect();
    let sealed: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].1 && entries[i].0.payload.get(SEALED_FIELD).is_some())
        .collect();
    if sealed.is_empty() {
        return outcomes;
    }
    let mut customers = std::collections::HashSet::new();
    let (first, rest): (Vec<usize>, Vec<usize>) = sealed
        .into_iter()
        .partition(|&i| customers.insert(sealed_for(&entries[i].0.payload).map(str::to_string)));
    // Taken out of the page while their keys are looked up concurrently.
    let taken: Vec<(usize, Value)> = first
        .iter()
        .map(|&i| (i, std::mem::take(&mut entries[i].0.payload)))
        .collect();
    let mut firsts = stream::iter(taken)
        .map(|(i, mut payload)| async move {
            let outcome = privacy.open_personal(&mut payload).await;
            (i, payload, outcome)
        })
        .buffer_unordered(KEY_LOOKUPS);
    while let Some((i, payload, outcome)) = firsts.next().await {
        entries[i].0.payload = payload;
        outcomes[i] = outcome.map(drop).map_err(AppError::from);
    }
    for i in rest {
        outcomes[i] = privacy
            .open_personal(&mut entries[i].0.payload)
            .await
            .map(drop)
            .map_err(AppError::from);
    }
    outcomes
}

/// The customer a sealed payload was sealed for, as written beside the
/// ciphertext: only a hint for grouping (the vault checks it when opening,
/// and payloads without one are opened one by one after the others).
fn sealed_for(payload: &Value) -> Option<&str> {
    payload.get(SEALED_FIELD)?.get("customer_id")?.as_str()
}

fn poison(why: anyhow::Error, position: i64) -> AppError {
    AppError::Internal(why.context(format!(
        "event at position {position} does not map to the public contract"
    )))
}
