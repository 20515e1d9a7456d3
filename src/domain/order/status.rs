//! Where an order is in its life, and its one name (`PAYMENT_AUTHORIZED`): the API, the
//! read models' `status` column and the error messages all use [`OrderStatus::as_str`],
//! and [`FromStr`] reads it back.

use std::{fmt, str::FromStr};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Created; fulfillment not started or in progress.
    #[default]
    Pending,
    /// The amount is held by the payment provider; stock not yet reserved.
    PaymentAuthorized,
    /// Stock is held too; no shipment yet.
    InventoryReserved,
    /// A shipment exists; the payment is not captured yet, so it can still be cancelled.
    ShippingArranged,
    /// Captured and fulfilled: terminal, no command applies any more.
    Confirmed,
    /// Cancelled (after compensation, if the saga had started): terminal.
    Cancelled,
}

impl OrderStatus {
    /// The API name, e.g. `PAYMENT_AUTHORIZED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::PaymentAuthorized => "PAYMENT_AUTHORIZED",
            Self::InventoryReserved => "INVENTORY_RESERVED",
            Self::ShippingArranged => "SHIPPING_ARRANGED",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::PaymentAuthorized,
        Self::InventoryReserved,
        Self::ShippingArranged,
        Self::Confirmed,
        Self::Cancelled,
    ];

    /// CONFIRMED or CANCELLED: nothing changes any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Confirmed | Self::Cancelled)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an [`OrderStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for OrderStatus {
    type Err = UnknownStatus;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
            .ok_or_else(|| UnknownStatus(name.to_owned()))
    }
}
