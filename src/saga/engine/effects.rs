//! What each step does: the sibling call (unless its answer is known
//! already) and the order command that records it, decided but not yet
//! written (the engine commits it with the step's outcome); for a
//! compensation, the undo, after learning what to undo.

use super::{Engine, OrderBasis};
use crate::{
    domain::order::OrderCommand,
    saga::{
        plan::{Step, idempotency_key},
        ports::{CallError, FailureKind, OrderChange, OrderFacts},
    },
    store::saga::SagaRecord,
};

impl Engine {
    /// The step's effect: the sibling call (unless its id is already known)
    /// and the order change that records it (none for an undo, or when the
    /// order shows it already), decided on `order`'s basis. A local step's
    /// command goes on top of the pending change's commands (decided, not yet
    /// committed), so that its change holds both.
    pub(super) async fn call(
        &self,
        step: Step,
        key: &str,
        record: &mut SagaRecord,
        facts: &mut Option<OrderFacts>,
        order: OrderBasis<'_>,
    ) -> Result<Option<OrderChange>, CallError> {
        let order_id = record.order_id;
        let command = match step {
            Step::AuthorizePayment => OrderCommand::MarkPaymentAuthorized {
                authorization_id: self.learn(step, record, facts).await?,
            },
            Step::ReserveInventory => OrderCommand::MarkInventoryReserved {
                reservation_id: self.learn(step, record, facts).await?,
            },
            Step::CreateShipment => OrderCommand::MarkShippingArranged {
                shipment_id: self.learn(step, record, facts).await?,
                tracking_number: record.refs.tracking_number.clone().unwrap_or_default(),
            },
            Step::CapturePayment => {
                let authorization_id = self.learn(Step::AuthorizePayment, record, facts).await?;
                if record.refs.capture_id.is_none() {
                    record.refs.capture_id = Some(self.siblings.capture(key, &authorization_id).await?);
                }
                OrderCommand::MarkPaymentCaptured {
                    capture_id: record.refs.capture_id.clone().unwrap_or_default(),
                }
            }
            Step::ConfirmOrder => OrderCommand::Confirm,
            Step::VoidPayment => {
                if let Some(id) = self.undo_target(Step::AuthorizePayment, record, facts).await? {
                    self.siblings.void(key, &id).await?;
                }
                return Ok(None);
            }
            Step::ReleaseInventory => {
                if let Some(id) = self.undo_target(Step::ReserveInventory, record, facts).await? {
                    self.siblings.release(key, &id).await?;
                }
                return Ok(None);
            }
            Step::CancelShipment => {
                if let Some(id) = self.undo_target(Step::CreateShipment, record, facts).await? {
                    self.siblings.cancel_shipment(key, &id).await?;
                }
                return Ok(None);
            }
            Step::CancelOrder => OrderCommand::Cancel {
                code: record.state().cancellation_code(),
                reason: record
                    .compensation_reason
                    .clone()
                    .unwrap_or_else(|| "fulfillment compensated".into()),
            },
        };
        let mut commands = match order.pending {
            Some(change) if step.is_local() => change.commands.clone(),
            _ => Vec::new(),
        };
        commands.push(command);
        self.orders
            .decide(order_id, order.committed.cloned(), commands)
            .await
    }

    /// What a compensation undoes: the forward step's id, or `None` when the
    /// sibling refused that step (it had no effect, nothing to undo).
    async fn undo_target(
        &self,
        forward: Step,
        record: &mut SagaRecord,
        facts: &mut Option<OrderFacts>,
    ) -> Result<Option<String>, CallError> {
        match self.learn(forward, record, facts).await {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.kind == FailureKind::Refused => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The id a forward sibling step produced: known already, or obtained by
    /// sending the step with its own key (a first attempt, or a repeat whose
    /// answer was lost: the sibling answers it with the first answer).
    async fn learn(
        &self,
        forward: Step,
        record: &mut SagaRecord,
        facts: &mut Option<OrderFacts>,
    ) -> Result<String, CallError> {
        let known = match forward {
            Step::AuthorizePayment => record.refs.authorization_id.clone(),
            Step::ReserveInventory => record.refs.reservation_id.clone(),
            _ => record.refs.shipment_id.clone(),
        };
        if let Some(id) = known {
            return Ok(id);
        }
        if facts.is_none() {
            *facts = Some(self.orders.facts(record.order_id).await?);
        }
        let Some(order) = facts.as_ref() else {
            return Err(CallError::transient("LOCAL", "order facts unavailable"));
        };
        let key = idempotency_key(&record.seed, forward);
        match forward {
            Step::AuthorizePayment => {
                let id = self.siblings.authorize(&key, order).await?;
                record.refs.authorization_id = Some(id.clone());
                Ok(id)
            }
            Step::ReserveInventory => {
                let id = self.siblings.reserve(&key, order).await?;
                record.refs.reservation_id = Some(id.clone());
                Ok(id)
            }
            _ => {
                let (id, tracking) = self.siblings.create_shipment(&key, order).await?;
                record.refs.shipment_id = Some(id.clone());
                record.refs.tracking_number = Some(tracking);
                Ok(id)
            }
        }
    }
}
