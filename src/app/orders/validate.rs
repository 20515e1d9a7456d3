//! CreateOrder and CancelOrder input: parsed into typed values, every bad
//! field reported at once (INVALID_ARGUMENT, nothing stored).

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    domain::{
        order::{PersonalData, ShippingAddress},
        text,
    },
    error::{AppError, FieldViolation},
};

/// Longest idempotency key, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest payment method reference.
pub const MAX_PAYMENT_METHOD_CHARS: usize = 128;
/// Longest cancellation reason.
pub const MAX_REASON_CHARS: usize = 500;
/// The reason recorded when a customer gives none.
pub const DEFAULT_CANCEL_REASON: &str = "cancelled by customer";

/// A shipping address as the transports received it (`Debug` prints no field).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AddressInput {
    /// Recipient (required, up to 200).
    pub recipient_name: String,
    /// Street (required, up to 200).
    pub line1: String,
    /// More street (optional, up to 200).
    pub line2: String,
    /// City (required, up to 100).
    pub city: String,
    /// Region (optional, up to 100).
    pub region: String,
    /// Postal code (required, up to 20).
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 (required, two letters).
    pub country: String,
}

/// CreateOrder input as the transports received it (REST passes the
/// `Idempotency-Key` header as `idempotency_key` when the body has none).
/// `Debug` leaves out the personal fields.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CreateOrderInput {
    /// UUID text; the cart must be the caller's and active.
    pub cart_id: String,
    /// The payment service's reference (e.g. `pm_card_visa`); personal data.
    pub payment_method: String,
    /// Shipping address (required).
    pub shipping_address: Option<AddressInput>,
    /// The client's idempotency key (required).
    pub idempotency_key: String,
}

crate::redacted_debug!(AddressInput);

impl std::fmt::Debug for CreateOrderInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateOrderInput")
            .field("cart_id", &self.cart_id)
            .field("idempotency_key", &self.idempotency_key)
            .finish_non_exhaustive()
    }
}

/// A valid CreateOrder request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCreateOrder {
    pub cart_id: Uuid,
    /// Address and payment method, sealed before they are stored.
    pub personal: PersonalData,
    /// A retry with the same key and request gets the first answer.
    pub idempotency_key: String,
}

impl ValidCreateOrder {
    /// SHA-256 (hex) of the canonical request, the customer included: the
    /// same key with any other request (or customer) hashes differently.
    pub fn request_hash(&self, customer_id: &str) -> String {
        let address = &self.personal.shipping_address;
        let canonical = serde_json::json!([
            customer_id,
            self.cart_id.to_string(),
            self.personal.payment_method,
            [
                address.recipient_name,
                address.line1,
                address.line2,
                address.city,
                address.region,
                address.postal_code,
                address.country
            ],
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// Validates a CreateOrder request.
pub fn create_order(input: CreateOrderInput) -> Result<ValidCreateOrder, AppError> {
    let mut bad = Vec::new();
    let cart_id = uuid_field("cart_id", &input.cart_id, &mut bad);
    let payment_method = payment_method(&input.payment_method, &mut bad);
    let key = input.idempotency_key.trim().to_string();
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS || text::id_problem(&key).is_some() {
        bad.push(FieldViolation::new(
            "idempotency_key",
            format!("required: 1 to {MAX_KEY_CHARS} printable characters"),
        ));
    }
    let address = match input.shipping_address {
        Some(address) => Some(shipping_address(address, &mut bad)),
        None => {
            bad.push(FieldViolation::new("shipping_address", "required"));
            None
        }
    };
    match (cart_id, address) {
        (Some(cart_id), Some(shipping_address)) if bad.is_empty() => Ok(ValidCreateOrder {
            cart_id,
            personal: PersonalData {
                shipping_address,
                payment_method,
            },
            idempotency_key: key,
        }),
        _ => Err(AppError::InvalidArgument(bad)),
    }
}

/// Validates a cancellation reason; empty gives [`DEFAULT_CANCEL_REASON`].
pub fn cancel_reason(raw: &str) -> Result<String, AppError> {
    let reason = raw.trim();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(AppError::invalid(
            "reason",
            format!("at most {MAX_REASON_CHARS} characters"),
        ));
    }
    if let Some(problem) = text::text_problem(reason, false) {
        return Err(AppError::invalid("reason", problem));
    }
    Ok(if reason.is_empty() {
        DEFAULT_CANCEL_REASON.to_string()
    } else {
        reason.to_string()
    })
}

/// Parses a UUID field, recording a violation when it is not one.
pub fn uuid_field(field: &str, raw: &str, bad: &mut Vec<FieldViolation>) -> Option<Uuid> {
    match Uuid::try_parse(raw.trim()) {
        Ok(id) => Some(id),
        Err(_) => {
            bad.push(FieldViolation::new(field, "must be a UUID"));
            None
        }
    }
}

/// A payment method reference: 1..=128 of `[A-Za-z0-9_:-]`, and nothing that
/// looks like a card number (13 to 19 digits, separators ignored): card data
/// must never reach us.
fn payment_method(raw: &str, bad: &mut Vec<FieldViolation>) -> String {
    let value = raw.trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-');
    let digits_run = value
        .split(|c: char| !(c.is_ascii_digit() || c == '-' || c == ' '))
        .map(|run| run.chars().filter(char::is_ascii_digit).count())
        .max()
        .unwrap_or(0);
    if digits_run >= 13 {
        bad.push(FieldViolation::new(
            "payment_method",
            "looks like a card number: send a payment method reference from the provider (e.g. pm_card_visa), never card data",
        ));
    } else if value.is_empty() || value.len() > MAX_PAYMENT_METHOD_CHARS || !value.chars().all(allowed) {
        bad.push(FieldViolation::new(
            "payment_method",
            format!("required: 1 to {MAX_PAYMENT_METHOD_CHARS} of A-Z a-z 0-9 _ : -"),
        ));
    }
    value.to_string()
}

fn shipping_address(input: AddressInput, bad: &mut Vec<FieldViolation>) -> ShippingAddress {
    let mut text = |name: &str, raw: String, required: bool, max: usize| {
        let value = raw.trim().to_string();
        let count = value.chars().count();
        let field = format!("shipping_address.{name}");
        if (required && count == 0) || count > max {
            let need = if required { "required: 1" } else { "0" };
            bad.push(FieldViolation::new(field, format!("{need} to {max} characters")));
        } else if let Some(problem) = text::text_problem(&value, required) {
            bad.push(FieldViolation::new(field, problem));
        }
        value
    };
    let address = ShippingAddress {
        recipient_name: text("recipient_name", input.recipient_name, true, 200),
        line1: text("line1", input.line1, true, 200),
        line2: text("line2", input.line2, false, 200),
        city: text("city", input.city, true, 100),
        region: text("region", input.region, false, 100),
        postal_code: text("postal_code", input.postal_code, true, 20),
        country: input.country.trim().to_ascii_uppercase(),
    };
    if address.country.len() != 2 || !address.country.chars().all(|c| c.is_ascii_alphabetic()) {
        bad.push(FieldViolation::new(
            "shipping_address.country",
            "required: an ISO 3166-1 alpha-2 code such as US",
        ));
    }
    address
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> CreateOrderInput {
        CreateOrderInput {
            cart_id: Uuid::nil().to_string(),
            payment_method: "pm_card_visa".into(),
            shipping_address: Some(AddressInput {
                recipient_name: "Ada".into(),
                line1: "1 Way".into(),
                city: "London".into(),
                postal_code: "N1".into(),
                country: "gb".into(),
                ..Default::default()
            }),
            idempotency_key: "k-1".into(),
        }
    }

    fn fields(err: AppError) -> Vec<String> {
        match err {
            AppError::InvalidArgument(v) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_valid_request_is_normalised() {
        let valid = create_order(input()).unwrap();
        assert_eq!(valid.personal.shipping_address.country, "GB");
        assert_eq!(
            valid.request_hash("alice"),
            create_order(input()).unwrap().request_hash("alice")
        );
        assert_ne!(valid.request_hash("alice"), valid.request_hash("bob"));
    }

    #[test]
    fn card_numbers_and_bad_fields_are_all_reported() {
        for card in ["4242424242424242", "4242-4242-4242-4242", "pm_4000056655665556"] {
            let mut i = input();
            i.payment_method = card.into();
            let err = create_order(i).unwrap_err();
            assert!(err.to_string().contains("card number"), "{card}: {err}");
        }
        let mut i = input();
        i.cart_id = "nope".into();
        i.idempotency_key = " ".into();
        i.payment_method = "pm card".into();
        i.shipping_address.as_mut().unwrap().country = "GBR".into();
        i.shipping_address.as_mut().unwrap().city = String::new();
        let mut got = fields(create_order(i).unwrap_err());
        got.sort();
        assert_eq!(
            got,
            [
                "cart_id",
                "idempotency_key",
                "payment_method",
                "shipping_address.city",
                "shipping_address.country"
            ]
        );
        let mut i = input();
        i.shipping_address = None;
        assert_eq!(fields(create_order(i).unwrap_err()), ["shipping_address"]);
        i = input();
        i.idempotency_key = "k".repeat(129);
        assert_eq!(fields(create_order(i).unwrap_err()), ["idempotency_key"]);
    }

    #[test]
    fn a_cancel_reason_defaults_and_is_bounded() {
        assert_eq!(cancel_reason("  ").unwrap(), DEFAULT_CANCEL_REASON);
        assert_eq!(cancel_reason(" too slow ").unwrap(), "too slow");
        assert!(cancel_reason(&"x".repeat(501)).is_err());
    }
}
