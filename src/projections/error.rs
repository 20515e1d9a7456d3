//! Why an event cannot be applied: shared by the folds and the decoding of
//! stored events.

use uuid::Uuid;

use crate::{
    domain::order::{OrderCreated, OrderEvent},
    store::event_store::StoredEvent,
};

/// A failure to apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The event cannot be applied, however often it is retried (bad payload,
    /// a stream that does not start with `OrderCreated`): dead-letter it.
    #[error("event {event_id} ({event_type} v{version} of {stream_id}) cannot be applied: {reason}")]
    Poison {
        /// The poison event's id, for the dead-letter record.
        event_id: Uuid,
        /// Its type, e.g. `OrderCreated`.
        event_type: String,
        /// The order stream it belongs to.
        stream_id: Uuid,
        /// Its version in that stream.
        version: u64,
        /// Why it cannot be applied (the decode or fold error).
        reason: String,
    },
}

impl ProjectionError {
    /// A poison error about `event`.
    pub fn poison(event: &StoredEvent, reason: impl Into<String>) -> Self {
        Self::Poison {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            stream_id: event.stream_id,
            version: event.version,
            reason: reason.into(),
        }
    }
}

/// The row a fold continues from: at a stream's start, the one `create`
/// builds from its `OrderCreated`; later, `state`. A stream that starts with
/// anything else, or an `OrderCreated` in the middle of one, is poison (no
/// retry can make it apply).
pub fn started_or_poison<R>(
    state: Option<R>,
    stored: &StoredEvent,
    event: &OrderEvent,
    create: impl FnOnce(&OrderCreated) -> R,
) -> Result<R, ProjectionError> {
    match (state, event) {
        (None, OrderEvent::Created(created)) => Ok(create(created)),
        (None, _) => Err(ProjectionError::poison(
            stored,
            "the stream does not start with OrderCreated",
        )),
        (Some(_), OrderEvent::Created(_)) => Err(ProjectionError::poison(
            stored,
            "OrderCreated after the stream's start",
        )),
        (Some(row), _) => Ok(row),
    }
}
