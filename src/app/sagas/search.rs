//! Saga search: ListSagas' filters checked at the edge (each bad one named with
//! its field), keyset pages, and CountSagas' counts per status.

use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{SagaApp, SagaView, view_of};
use crate::{
    auth::Principal,
    domain::reason::ErrorReason,
    error::{AppError, FieldViolation},
    saga::plan::{SagaStatus, Step},
    store::saga::{Cursor, SagaFilter, SagaRecord},
};

/// The filters as a caller sent them (ListSagas, CountSagas, BulkRetrySagas);
/// [`FilterInput::parse`] checks them. Transports convert only types (an
/// enum number, a timestamp): every rule is here.
#[derive(Debug, Clone, Default)]
pub struct FilterInput {
    /// Status (None: any).
    pub status: Option<SagaStatus>,
    /// Step name, empty for any.
    pub current_step: String,
    /// Failure reason code (None: any).
    pub failure_code: Option<ErrorReason>,
    /// Customer id, empty for any.
    pub customer_id: String,
    /// Order id (UUID text), empty for any.
    pub order_id: String,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Changed at or after.
    pub updated_after: Option<DateTime<Utc>>,
    /// Changed before.
    pub updated_before: Option<DateTime<Utc>>,
}

/// The codes [`crate::store::saga::failure_code`] gives a saga: the only
/// values a failure filter can match.
pub const FAILURE_CODES: &[ErrorReason] = &[
    ErrorReason::PaymentDeclined,
    ErrorReason::OutOfStock,
    ErrorReason::AddressUnshippable,
    ErrorReason::FulfillmentRefused,
    ErrorReason::CancellationRequested,
    ErrorReason::OrderTimedOut,
    ErrorReason::DependencyUnavailable,
    ErrorReason::DeadlineExceeded,
];

/// Longest accepted customer id (token subjects are shorter).
const MAX_CUSTOMER_ID: usize = 200;

impl FilterInput {
    /// The store filter, or every violation at once (field and why).
    pub fn parse(&self) -> Result<SagaFilter, AppError> {
        let mut bad = Vec::new();
        let current_step = match self.current_step.trim() {
            "" => None,
            name => {
                let step = Step::parse(name);
                if step.is_none() {
                    let names: Vec<&str> = Step::FORWARD
                        .iter()
                        .chain(Step::COMPENSATION.iter())
                        .map(|s| s.name())
                        .collect();
                    bad.push(FieldViolation::new(
                        "current_step",
                        format!("unknown step; one of {}", names.join(", ")),
                    ));
                }
                step
            }
        };
        if let Some(code) = self.failure_code
            && !FAILURE_CODES.contains(&code)
        {
            let names: Vec<&str> = FAILURE_CODES.iter().map(|c| c.as_str()).collect();
            bad.push(FieldViolation::new(
                "failure_reason_code",
                format!(
                    "{} is never a saga's failure reason; one of {}",
                    code.as_str(),
                    names.join(", ")
                ),
            ));
        }
        let customer_id = self.customer_id.trim();
        if customer_id.chars().count() > MAX_CUSTOMER_ID {
            bad.push(FieldViolation::new(
                "customer_id",
                "must be at most 200 characters",
            ));
        } else if let Some(problem) = crate::domain::text::text_problem(customer_id, false) {
            bad.push(FieldViolation::new("customer_id", problem));
        }
        let order_id = match self.order_id.trim() {
            "" => None,
            text => {
                let id = Uuid::parse_str(text).ok();
                if id.is_none() {
                    bad.push(FieldViolation::new("order_id", "must be a UUID"));
                }
                id
            }
        };
        for (after, before, name) in [
            (self.created_after, self.created_before, "created_before"),
            (self.updated_after, self.updated_before, "updated_before"),
        ] {
            if let (Some(after), Some(before)) = (after, before)
                && before <= after
            {
                let from = name.replace("before", "after");
                bad.push(FieldViolation::new(name, format!("must be later than {from}")));
            }
        }
        if !bad.is_empty() {
            return Err(AppError::InvalidArgument(bad));
        }
        Ok(SagaFilter {
            statuses: self.status.into_iter().collect(),
            current_step,
            failure_code: self.failure_code,
            customer_id: (!customer_id.is_empty()).then(|| customer_id.to_string()),
            order_id,
            created_after: self.created_after,
            created_before: self.created_before,
            updated_after: self.updated_after,
            updated_before: self.updated_before,
            updated_at_most: None,
        })
    }
}

/// One page of ListSagas.
#[derive(Debug, Clone)]
pub struct SagaPage {
    /// Sagas, newest first.
    pub sagas: Vec<SagaView>,
    /// Token of the next page; empty on the last.
    pub next_page_token: String,
}

impl SagaApp {
    /// Sagas matching `filter`, newest first, a keyset page at a time. Admin only.
    #[tracing::instrument(skip(self, principal))]
    pub async fn list(
        &self,
        principal: &Principal,
        filter: &FilterInput,
        page_size: i32,
        page_token: &str,
    ) -> Result<SagaPage, AppError> {
        principal.require_admin()?;
        let limit = bounded_size("page_size", page_size, 20)?;
        let (records, next_page_token) = self.page_of(&filter.parse()?, page_token, limit).await?;
        // One query for the page's operator actions, not one per saga.
        let ids: Vec<Uuid> = records.iter().map(|r| r.saga_id).collect();
        let actions = self.store.operator_actions_of(&ids).await?;
        let now = Utc::now();
        let sagas = records
            .into_iter()
            .map(|record| {
                let own = actions
                    .iter()
                    .filter(|(id, _)| *id == record.saga_id)
                    .map(|(_, a)| a.clone())
                    .collect();
                view_of(record, own, now)
            })
            .collect();
        Ok(SagaPage {
            sagas,
            next_page_token,
        })
    }

    /// How many sagas matching `filter` (its status aside) are in each
    /// status: every status, zero included. Admin only.
    #[tracing::instrument(skip(self, principal))]
    pub async fn count(
        &self,
        principal: &Principal,
        filter: &FilterInput,
    ) -> Result<Vec<(SagaStatus, u64)>, AppError> {
        principal.require_admin()?;
        let filter = FilterInput {
            status: None,
            ..filter.clone()
        }
        .parse()?;
        let mut by_status: BTreeMap<usize, u64> = BTreeMap::new();
        for row in self.store.count(&filter).await? {
            let at = SagaStatus::ALL.iter().position(|s| *s == row.status).unwrap_or(0);
            *by_status.entry(at).or_default() += row.count;
        }
        Ok(SagaStatus::ALL
            .iter()
            .enumerate()
            .map(|(at, status)| (*status, by_status.get(&at).copied().unwrap_or(0)))
            .collect())
    }
}

impl SagaApp {
    /// One keyset page of `filter`'s sagas (newest first) after `page_token`,
    /// at most `limit`, and the token of the next page ("" after the last).
    pub(super) async fn page_of(
        &self,
        filter: &SagaFilter,
        page_token: &str,
        limit: usize,
    ) -> Result<(Vec<SagaRecord>, String), AppError> {
        let after = decode_cursor(page_token, "page_token")?;
        let mut records = self.store.list(filter, after, limit + 1).await?;
        let next_page_token = if records.len() > limit {
            records.truncate(limit);
            records
                .last()
                .map(|r| encode_cursor((r.created_at, r.saga_id)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((records, next_page_token))
    }
}

/// A page or batch size as requested: 0 takes `default`, 1 to 100 are taken
/// as they are, anything else is INVALID_ARGUMENT on `field`.
pub(super) fn bounded_size(field: &str, requested: i32, default: usize) -> Result<usize, AppError> {
    match requested {
        0 => Ok(default),
        1..=100 => Ok(usize::try_from(requested).unwrap_or(default)),
        _ => Err(AppError::invalid(field, "must be 0 to 100")),
    }
}

/// A keyset position (`created_at` in microseconds and the saga id), opaque.
fn encode_cursor((created_at, saga_id): Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{saga_id}", created_at.timestamp_micros()))
}

/// A position from [`encode_cursor`]; anything else is INVALID_ARGUMENT on `field`.
fn decode_cursor(token: &str, field: &str) -> Result<Option<Cursor>, AppError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || AppError::invalid(field, "not a token from a previous response");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = raw.split_once(':').ok_or_else(bad)?;
    let at = crate::app::paging::page_token_time(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok(Some((at, Uuid::parse_str(id).map_err(|_| bad())?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_invalid() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(
            decode_cursor(&encode_cursor((at, id)), "t").unwrap(),
            Some((at, id))
        );
        assert_eq!(decode_cursor("", "t").unwrap(), None);
        assert!(matches!(
            decode_cursor("%%%", "t"),
            Err(AppError::InvalidArgument(_))
        ));
        let future = URL_SAFE_NO_PAD.encode(format!("{}:{id}", i64::MAX / 2));
        assert!(matches!(
            decode_cursor(&future, "t"),
            Err(AppError::InvalidArgument(_))
        ));
    }

    #[test]
    fn every_bad_filter_is_named_with_its_field() {
        let input = FilterInput {
            current_step: "teleport".into(),
            failure_code: Some(ErrorReason::CartEmpty),
            order_id: "not-a-uuid".into(),
            created_after: DateTime::from_timestamp(2_000, 0),
            created_before: DateTime::from_timestamp(1_000, 0),
            ..FilterInput::default()
        };
        let Err(AppError::InvalidArgument(violations)) = input.parse() else {
            panic!("a bad filter was accepted");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "current_step",
                "failure_reason_code",
                "order_id",
                "created_before"
            ]
        );
        let good = FilterInput {
            current_step: "capture_payment".into(),
            failure_code: Some(ErrorReason::OutOfStock),
            customer_id: " alice ".into(),
            ..FilterInput::default()
        }
        .parse()
        .unwrap();
        assert_eq!(good.current_step, Some(Step::CapturePayment));
        assert_eq!(good.customer_id.as_deref(), Some("alice"));
    }
}
