//! The steps of the fulfillment saga and their idempotency keys.

use crate::domain::reason::ErrorReason;

/// One step of the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Payment: hold the amount.
    AuthorizePayment,
    /// Inventory: reserve every line.
    ReserveInventory,
    /// Shipping: create the shipment.
    CreateShipment,
    /// Payment: capture the hold. The pivot.
    CapturePayment,
    /// Order: confirm (local, last forward step).
    ConfirmOrder,
    /// Shipping: compensates CreateShipment.
    CancelShipment,
    /// Inventory: compensates ReserveInventory.
    ReleaseInventory,
    /// Payment: compensates AuthorizePayment (never a capture: compensation
    /// only runs before the pivot).
    VoidPayment,
    /// Order: cancel with the compensation reason (local, last).
    CancelOrder,
}

impl Step {
    /// Forward steps in order.
    pub const FORWARD: [Step; 5] = [
        Step::AuthorizePayment,
        Step::ReserveInventory,
        Step::CreateShipment,
        Step::CapturePayment,
        Step::ConfirmOrder,
    ];
    /// Compensation steps in order.
    pub const COMPENSATION: [Step; 4] = [
        Step::CancelShipment,
        Step::ReleaseInventory,
        Step::VoidPayment,
        Step::CancelOrder,
    ];

    /// The step's name, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::AuthorizePayment => "authorize_payment",
            Self::ReserveInventory => "reserve_inventory",
            Self::CreateShipment => "create_shipment",
            Self::CapturePayment => "capture_payment",
            Self::ConfirmOrder => "confirm_order",
            Self::CancelShipment => "cancel_shipment",
            Self::ReleaseInventory => "release_inventory",
            Self::VoidPayment => "void_payment",
            Self::CancelOrder => "cancel_order",
        }
    }

    /// The step named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::FORWARD
            .into_iter()
            .chain(Self::COMPENSATION)
            .find(|s| s.name() == name)
    }

    /// Why an order is cancelled when this (forward) step's sibling refused:
    /// the payment, the stock or the address, else the order's own rule.
    pub fn refusal_code(self) -> ErrorReason {
        match self {
            Self::AuthorizePayment => ErrorReason::PaymentDeclined,
            Self::ReserveInventory => ErrorReason::OutOfStock,
            Self::CreateShipment => ErrorReason::AddressUnshippable,
            _ => ErrorReason::FulfillmentRefused,
        }
    }

    /// True for the steps that call no sibling, only the order (ConfirmOrder,
    /// CancelOrder): nothing leaves the process, so the engine records such
    /// a step's start together with its end, in the next write.
    pub fn is_local(self) -> bool {
        matches!(self, Self::ConfirmOrder | Self::CancelOrder)
    }

    /// True for compensation steps.
    pub fn is_compensation(self) -> bool {
        Self::COMPENSATION.contains(&self)
    }

    /// The forward step a compensation undoes.
    pub fn undoes(self) -> Option<Step> {
        match self {
            Self::CancelShipment => Some(Self::CreateShipment),
            Self::ReleaseInventory => Some(Self::ReserveInventory),
            Self::VoidPayment => Some(Self::AuthorizePayment),
            _ => None,
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The idempotency key of `step` for the saga seeded with `seed`: the same
/// key on every attempt, every replica and every restart.
pub fn idempotency_key(seed: &str, step: Step) -> String {
    format!("{seed}:{}", step.name())
}
