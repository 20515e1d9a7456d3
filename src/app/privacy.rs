//! Privacy operations: forgetting a customer (GDPR erasure by crypto-shredding).

use chrono::{DateTime, Utc};

use super::App;
use crate::{
    auth::Principal,
    domain::text,
    error::{AppError, FieldViolation},
};

/// Longest customer id (a token's `sub` is capped the same).
const MAX_CUSTOMER_ID_CHARS: usize = 128;
/// Longest recorded reason.
const MAX_REASON_CHARS: usize = 500;

/// Forgets `customer_id`: destroys their personal-data key, so their events
/// still replay but personal fields read as erased, records who asked, when
/// and why, and replaces the hashes of their CreateOrder requests kept with
/// the idempotency keys. Admin only. Repeating it is harmless and returns the time of
/// the erasure that destroyed the key.
#[tracing::instrument(skip(app, principal, reason), fields(admin = %principal.subject))]
pub async fn forget_customer(
    app: &App,
    principal: &Principal,
    customer_id: &str,
    reason: &str,
) -> Result<DateTime<Utc>, AppError> {
    principal.require_admin()?;
    let mut violations = Vec::new();
    let customer_chars = customer_id.chars().count();
    if customer_id.trim().is_empty() || customer_chars > MAX_CUSTOMER_ID_CHARS {
        violations.push(FieldViolation::new(
            "customer_id",
            format!("required, 1 to {MAX_CUSTOMER_ID_CHARS} characters"),
        ));
    }
    if let Some(problem) = text::id_problem(customer_id) {
        violations.push(FieldViolation::new("customer_id", problem));
    }
    if reason.trim().is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        violations.push(FieldViolation::new(
            "reason",
            format!("required (it is recorded), 1 to {MAX_REASON_CHARS} characters"),
        ));
    } else if let Some(problem) = text::text_problem(reason, true) {
        violations.push(FieldViolation::new("reason", problem));
    }
    if !violations.is_empty() {
        return Err(AppError::InvalidArgument(violations));
    }
    let tombstone = app
        .privacy
        .forget(customer_id, &principal.subject, reason.trim())
        .await?;
    // After the key: a failure here leaves the customer forgotten, and
    // repeating ForgetCustomer (harmless) finishes it.
    let request_hashes = app.orders.forget_customer(customer_id).await?;
    // Other replicas drop their cached key at once; without the bus they
    // still do within the cache's lifetime (30 s).
    if let Err(error) = app.bus.announce_forgotten(customer_id).await {
        tracing::warn!(%error, "announcing the forget to other replicas failed; their key caches expire within 30 s");
    }
    tracing::info!(
        customer_id,
        keys_destroyed = tombstone.keys_destroyed,
        request_hashes,
        "customer forgotten: personal data key destroyed"
    );
    Ok(tombstone.forgotten_at)
}
