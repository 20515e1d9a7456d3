//! Why an event cannot be applied: shared by the folds and the decoding of
//! stored events.

use uuid::Uuid;

use crate::store::event_store::StoredEvent;

/// A failure to apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The event cannot be applied, however often it is retried (bad payload,
    /// a stream that does not start with `OrderCreated`): dead-letter it.
    #[error("event {event_id} ({event_type} v{version} of {stream_id}) cannot be applied: {reason}")]
    Poison {
        /// The event.
        event_id: Uuid,
        /// Its type.
        event_type: String,
        /// Its stream.
        stream_id: Uuid,
        /// Its version.
        version: u64,
        /// Why.
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
