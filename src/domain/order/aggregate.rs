//! The Order aggregate: its state, the fold of events into it, and the
//! decisions that turn commands into events.

use super::{
    command::{OrderCommand, PlaceOrder},
    error::OrderError,
    event::{
        CancellationRequested, InventoryReserved, OrderCancelled, OrderConfirmed, OrderCreated, OrderEvent,
        OrderLine, PaymentAuthorized, PaymentCaptured, ShippingArranged,
    },
    status::OrderStatus,
};
use crate::domain::{money::Money, reason::ErrorReason};

/// What an order was placed with (its [`OrderCreated`] event).
pub type PlacedOrder = OrderCreated;

/// The state of one order, rebuilt by folding its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Order {
    /// Number of events folded: the stream version (0: not placed).
    pub version: u64,
    /// Items, totals, customer, personal data; None until placed.
    pub placed: Option<PlacedOrder>,
    /// Current status (meaningless until placed).
    pub status: OrderStatus,
    /// The payment authorization, once recorded.
    pub authorization_id: Option<String>,
    /// The stock reservation, once recorded.
    pub reservation_id: Option<String>,
    /// The shipment, once recorded.
    pub shipment: Option<ShippingArranged>,
    /// The capture, once recorded (the pivot).
    pub capture_id: Option<String>,
    /// A pending cancellation request.
    pub cancellation_requested: Option<CancellationRequested>,
    /// Why it was cancelled, once CANCELLED.
    pub cancellation_reason: Option<String>,
    /// The same as a code, once CANCELLED.
    pub cancellation_reason_code: Option<ErrorReason>,
}

impl Order {
    /// Folds `events` from the start of the stream.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a OrderEvent>) -> Self {
        let mut order = Self::default();
        for event in events {
            order.apply(event);
        }
        order
    }

    /// Folds one event. Events are facts: applying never fails.
    pub fn apply(&mut self, event: &OrderEvent) {
        self.version += 1;
        match event {
            OrderEvent::Created(created) => {
                self.placed = Some((**created).clone());
                self.status = OrderStatus::Pending;
            }
            OrderEvent::PaymentAuthorized(e) => {
                self.authorization_id = Some(e.authorization_id.clone());
                self.status = OrderStatus::PaymentAuthorized;
            }
            OrderEvent::InventoryReserved(e) => {
                self.reservation_id = Some(e.reservation_id.clone());
                self.status = OrderStatus::InventoryReserved;
            }
            OrderEvent::ShippingArranged(e) => {
                self.shipment = Some(e.clone());
                self.status = OrderStatus::ShippingArranged;
            }
            OrderEvent::PaymentCaptured(e) => self.capture_id = Some(e.capture_id.clone()),
            OrderEvent::Confirmed(_) => self.status = OrderStatus::Confirmed,
            OrderEvent::CancellationRequested(e) => self.cancellation_requested = Some(e.clone()),
            OrderEvent::Cancelled(e) => {
                self.cancellation_reason = Some(e.reason.clone());
                self.cancellation_reason_code = Some(e.reason_code);
                self.status = OrderStatus::Cancelled;
            }
        }
    }

    /// Decides: the events `command` produces, or why it is refused. An empty
    /// list means the command's outcome is already recorded (a repeat).
    pub fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        if let OrderCommand::Place(place) = command {
            return self.place(*place);
        }
        if self.placed.is_none() {
            return Err(OrderError::NotFound);
        }
        let name = command.name();
        match command {
            OrderCommand::Place(_) => unreachable!("handled above"),
            OrderCommand::MarkPaymentAuthorized { authorization_id } => self.record_step(
                name,
                OrderStatus::Pending,
                self.authorization_id.as_deref(),
                &authorization_id,
                || {
                    OrderEvent::PaymentAuthorized(PaymentAuthorized {
                        authorization_id: authorization_id.clone(),
                    })
                },
            ),
            OrderCommand::MarkInventoryReserved { reservation_id } => self.record_step(
                name,
                OrderStatus::PaymentAuthorized,
                self.reservation_id.as_deref(),
                &reservation_id,
                || {
                    OrderEvent::InventoryReserved(InventoryReserved {
                        reservation_id: reservation_id.clone(),
                    })
                },
            ),
            OrderCommand::MarkShippingArranged {
                shipment_id,
                tracking_number,
            } => self.record_step(
                name,
                OrderStatus::InventoryReserved,
                self.shipment.as_ref().map(|s| s.shipment_id.as_str()),
                &shipment_id,
                || {
                    OrderEvent::ShippingArranged(ShippingArranged {
                        shipment_id: shipment_id.clone(),
                        tracking_number: tracking_number.clone(),
                    })
                },
            ),
            OrderCommand::MarkPaymentCaptured { capture_id } => self.record_step(
                name,
                OrderStatus::ShippingArranged,
                self.capture_id.as_deref(),
                &capture_id,
                || {
                    OrderEvent::PaymentCaptured(PaymentCaptured {
                        capture_id: capture_id.clone(),
                    })
                },
            ),
            OrderCommand::Confirm => match self.status {
                OrderStatus::Confirmed => Ok(vec![]),
                OrderStatus::ShippingArranged if self.capture_id.is_some() => {
                    Ok(vec![OrderEvent::Confirmed(OrderConfirmed {})])
                }
                status => Err(OrderError::InvalidTransition {
                    command: name,
                    status,
                }),
            },
            OrderCommand::RequestCancellation { reason, requested_by } => {
                self.check_cancellable(name)?;
                if self.status == OrderStatus::Cancelled || self.cancellation_requested.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![OrderEvent::CancellationRequested(CancellationRequested {
                    reason,
                    requested_by,
                })])
            }
            OrderCommand::Cancel { reason, code } => {
                self.check_cancellable(name)?;
                if self.status == OrderStatus::Cancelled {
                    return Ok(vec![]);
                }
                Ok(vec![OrderEvent::Cancelled(OrderCancelled {
                    reason,
                    reason_code: code,
                })])
            }
        }
    }

    /// True once the payment was captured (past the pivot).
    pub fn is_captured(&self) -> bool {
        self.capture_id.is_some()
    }

    /// Sum of the quantities.
    pub fn item_count(&self) -> u32 {
        self.placed
            .as_ref()
            .map_or(0, |p| p.items.iter().map(|i| i.quantity).sum())
    }

    fn place(&self, place: PlaceOrder) -> Result<Vec<OrderEvent>, OrderError> {
        if self.placed.is_some() {
            return Err(OrderError::AlreadyPlaced);
        }
        if place.items.is_empty() {
            return Err(OrderError::Empty);
        }
        let mut total = Money::zero(place.currency);
        let mut items = Vec::with_capacity(place.items.len());
        for item in place.items {
            let bad = |reason: &str| OrderError::InvalidLine {
                product_id: item.product_id.clone(),
                reason: reason.to_string(),
            };
            if item.quantity == 0 {
                return Err(bad("quantity must be at least 1"));
            }
            if item.unit_price.currency() != place.currency || item.unit_price.is_negative() {
                return Err(bad(
                    "the unit price must be a non-negative amount in the order's currency",
                ));
            }
            let line_total = item.unit_price.checked_mul(item.quantity)?;
            total = total.checked_add(&line_total)?;
            items.push(OrderLine {
                product_id: item.product_id,
                product_name: item.product_name,
                quantity: item.quantity,
                unit_price: item.unit_price,
                line_total,
            });
        }
        Ok(vec![OrderEvent::Created(Box::new(OrderCreated {
            order_id: place.order_id,
            customer_id: place.customer_id,
            cart_id: place.cart_id,
            items,
            currency: place.currency,
            total,
            personal: place.personal,
            saga_id: place.saga_id,
        }))])
    }

    /// A saga step's fact: recorded once, in sequence. The same id again is
    /// a repeat (no events); another id for a recorded step is a conflict.
    fn record_step(
        &self,
        command: &'static str,
        required: OrderStatus,
        recorded: Option<&str>,
        id: &str,
        event: impl FnOnce() -> OrderEvent,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        match recorded {
            Some(existing) if existing == id => Ok(vec![]),
            Some(_) => Err(OrderError::ConflictingFact { step: command }),
            None if self.status == required => Ok(vec![event()]),
            None => Err(OrderError::InvalidTransition {
                command,
                status: self.status,
            }),
        }
    }

    /// Cancellation is possible before the pivot and before CONFIRMED.
    fn check_cancellable(&self, command: &'static str) -> Result<(), OrderError> {
        if self.status == OrderStatus::Confirmed {
            return Err(OrderError::InvalidTransition {
                command,
                status: self.status,
            });
        }
        if self.is_captured() {
            return Err(OrderError::CaptureIsFinal);
        }
        Ok(())
    }
}
