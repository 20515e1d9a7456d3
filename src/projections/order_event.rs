//! How the projections read an order event: the write side's codec decodes
//! it into the domain [`OrderEvent`] (one definition of the stored shape), and
//! [`project_personal`] is the one place that takes the personal fields.

use crate::{
    domain::order::{OrderCreated, OrderEvent, PersonalData},
    store::event_store::{OrderCodec, StoredEvent},
};

use super::error::ProjectionError;

/// The domain event of a stored event; an event that does not decode (an
/// unknown type, a corrupt payload) is poison.
pub fn decode(event: &StoredEvent) -> Result<OrderEvent, ProjectionError> {
    OrderCodec
        .decode(event)
        .map_err(|e| ProjectionError::poison(event, format!("{e:#}")))
}

/// The personal data a read model keeps of an order, as the event gives it.
pub fn project_personal(created: &OrderCreated) -> PersonalData {
    created.personal.clone()
}
