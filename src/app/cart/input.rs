//! Cart request inputs as the transports receive them, their field checks,
//! and the mapping of cart rule errors to [`AppError`].

use uuid::Uuid;

use crate::{
    domain::cart::{CartError, Violation},
    error::{AppError, FieldViolation, Resource},
};

/// AddItem input, as the transports received it.
#[derive(Debug, Clone, Default)]
pub struct AddItem {
    /// Cart id (UUID text).
    pub cart_id: String,
    /// The catalogue's id; a second AddItem of it adds to the same line.
    pub product_id: String,
    /// Kept with the line as given: the cart does not look it up.
    pub product_name: String,
    /// Added to the line's quantity, which stays within 1..=999.
    pub quantity: i64,
    /// Unit price, decimal text.
    pub unit_price: String,
    /// Refuse with ABORTED unless the cart is at this version.
    pub expected_version: Option<i64>,
}

/// UpdateItemQuantity input (quantity 0 removes the line).
#[derive(Debug, Clone, Default)]
pub struct UpdateItemQuantity {
    /// Cart id (UUID text).
    pub cart_id: String,
    /// Product id of the line.
    pub product_id: String,
    /// New quantity, 0..=999.
    pub quantity: i64,
    /// Refuse with ABORTED unless the cart is at this version.
    pub expected_version: Option<i64>,
}

/// Collects field violations so one answer reports every bad field.
#[derive(Default)]
pub(super) struct Checks(Vec<FieldViolation>);

impl Checks {
    pub(super) fn check<T>(&mut self, result: Result<T, Violation>) -> Option<T> {
        result
            .map_err(|v| self.0.push(FieldViolation::new(v.field, v.reason)))
            .ok()
    }

    pub(super) fn into_error(self) -> AppError {
        AppError::InvalidArgument(self.0)
    }
}

/// An optional expected version: not negative.
pub(super) fn expected_of(raw: Option<i64>) -> Result<Option<u64>, Violation> {
    raw.map(u64::try_from)
        .transpose()
        .map_err(|_| Violation::new("expected_version", "must not be negative"))
}

pub(super) fn cart_id_of(raw: &str) -> Result<Uuid, Violation> {
    Uuid::parse_str(raw).map_err(|_| Violation::new("cart_id", "must be a UUID"))
}

/// A cart id: a UUID in any of its usual spellings.
pub(super) fn parse_cart_id(raw: &str) -> Result<Uuid, AppError> {
    cart_id_of(raw).map_err(|v| AppError::invalid(v.field, v.reason))
}

impl From<CartError> for AppError {
    fn from(err: CartError) -> Self {
        match err {
            CartError::Invalid(violations) => AppError::InvalidArgument(
                violations
                    .into_iter()
                    .map(|v| FieldViolation::new(v.field, v.reason))
                    .collect(),
            ),
            CartError::ItemNotFound(product) => AppError::not_found(Resource::CartItem, product),
            CartError::NotActive => {
                AppError::failed_precondition(crate::error::ErrorReason::CartNotActive, err.to_string())
            }
            CartError::Empty => {
                AppError::failed_precondition(crate::error::ErrorReason::CartEmpty, err.to_string())
            }
            CartError::StaleVersion { .. } => {
                AppError::aborted(crate::error::ErrorReason::CartVersionMismatch, err.to_string())
            }
            CartError::Money(e) => AppError::Internal(anyhow::Error::new(e).context("cart arithmetic")),
        }
    }
}
