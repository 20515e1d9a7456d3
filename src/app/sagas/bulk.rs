//! BulkRetrySagas: retry every halted saga a filter matches, dry run first.
//!
//! The first call (no token) counts what the filter matches among FAILED and
//! COMPENSATION_FAILED sagas, per failed step, and answers a confirmation
//! token bound to the filter (its digest) and to a snapshot: the latest
//! `updated_at` among the matched sagas, a database time. Only a call with
//! that token acts, on the sagas that still match *and have not changed since
//! the snapshot*, a bounded batch per call with a keyset continuation.
//!
//! Each saga goes through [`SagaApp::retry`], the single-saga rule with its
//! own operator action and audit event, fenced by the version the batch read:
//! a saga that changed in between (retried by someone else, cancelled, moved
//! on) is skipped, never retried on a state nobody saw. Running the same token
//! twice therefore retries nothing twice: a retried saga's `updated_at` is past
//! the snapshot, so it no longer matches.
//!
//! The token is not signed: it only ever lets an admin do what an admin may
//! do directly (RetrySaga), and its checks (filter digest, expiry, snapshot)
//! guard against mistakes (a stale dry run, a changed filter), not against the
//! admin.

use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    RetryInput, SagaApp, operator_reason,
    search::{FilterInput, bounded_size},
};
use crate::{
    auth::Principal,
    error::{AppError, FieldViolation},
    saga::plan::{SagaStatus, Step},
    store::saga::SagaFilter,
};

/// How long a dry run's token may be acted on.
pub const CONFIRMATION_TTL: Duration = Duration::minutes(10);

/// Sagas per batch when the caller does not say.
const DEFAULT_BATCH: usize = 25;

/// What BulkRetrySagas asks.
#[derive(Debug, Clone, Default)]
pub struct BulkRetryInput {
    /// Which sagas (status: FAILED, COMPENSATION_FAILED or any of the two).
    pub filter: FilterInput,
    /// Why; required to act, recorded on every saga's operator action.
    pub reason: String,
    /// Empty for the dry run.
    pub confirmation_token: String,
    /// The previous batch's continuation.
    pub page_token: String,
    /// Sagas per batch, 1 to 100; 0 for 25.
    pub batch_size: i32,
}

/// How many sagas would retry one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkStep {
    /// The failed step a retry resumes.
    pub step: Step,
    /// How many matching sagas failed at this step.
    pub count: u64,
}

/// What happened to one saga of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkOutcome {
    /// Retried, with its operator action.
    Retried,
    /// Changed since the batch read it: left alone.
    Skipped,
}

/// One saga of a batch.
#[derive(Debug, Clone)]
pub struct BulkRetryResult {
    pub saga_id: Uuid,
    /// Its failed step, as the batch read it.
    pub step: Option<Step>,
    /// Retried, or skipped (and why: `detail`).
    pub outcome: BulkOutcome,
    /// Why it was skipped (empty when retried).
    pub detail: String,
}

/// What BulkRetrySagas answers.
#[derive(Debug, Clone)]
pub enum BulkRetryReport {
    /// No token: what a confirmed call would do.
    DryRun {
        /// Sagas matched now.
        matched: u64,
        /// Their failed steps, with how many sagas each.
        steps: Vec<BulkStep>,
        /// Token to act with; empty when nothing matched.
        confirmation_token: String,
        /// The snapshot the token is bound to.
        snapshot_at: Option<DateTime<Utc>>,
        /// When the token expires.
        expires_at: DateTime<Utc>,
    },
    /// One batch acted on.
    Batch {
        /// The snapshot the token is bound to.
        snapshot_at: DateTime<Utc>,
        /// Each saga of the batch.
        results: Vec<BulkRetryResult>,
        /// Continuation; empty when done.
        next_page_token: String,
    },
}

/// A dry run's promise, carried by the caller between the two calls.
#[derive(Debug, Serialize, Deserialize)]
struct Confirmation {
    /// SHA-256 of the parsed filter, hex.
    filter: String,
    /// Snapshot: latest `updated_at` of the matched sagas, microseconds.
    snapshot: i64,
    /// Expiry, microseconds.
    expires: i64,
}

impl SagaApp {
    /// BulkRetrySagas: a dry run without a token, else one batch. Admin only.
    #[tracing::instrument(skip(self, principal, input))]
    pub async fn bulk_retry(
        &self,
        principal: &Principal,
        input: BulkRetryInput,
    ) -> Result<BulkRetryReport, AppError> {
        principal.require_admin()?;
        let filter = retryable_filter(&input.filter)?;
        let batch = bounded_size("batch_size", input.batch_size, DEFAULT_BATCH)?;
        if input.confirmation_token.is_empty() {
            operator_reason(&input.reason, None)?;
            if !input.page_token.is_empty() {
                return Err(AppError::invalid(
                    "page_token",
                    "only continues a confirmed bulk retry",
                ));
            }
            return self.bulk_dry_run(&filter).await;
        }
        let reason = operator_reason(&input.reason, Some("to retry sagas in bulk"))?;
        let snapshot = check_confirmation(&input.confirmation_token, &filter, Utc::now())?;
        let bound = SagaFilter {
            updated_at_most: Some(snapshot),
            ..filter
        };
        let (records, next_page_token) = self.page_of(&bound, &input.page_token, batch).await?;
        let mut results = Vec::with_capacity(records.len());
        for record in records {
            let retry = RetryInput {
                saga_id: record.saga_id.to_string(),
                reason: reason.clone(),
                expected_updated_at: Some(record.updated_at),
                ..RetryInput::default()
            };
            let (outcome, detail) = match self.retry(principal, retry).await {
                Ok(_) => (BulkOutcome::Retried, String::new()),
                // It changed since this batch read it, or can no longer be
                // retried: someone else acted first.
                Err(e @ (AppError::Aborted { .. } | AppError::FailedPrecondition { .. })) => {
                    (BulkOutcome::Skipped, e.to_string())
                }
                Err(e) => return Err(e),
            };
            results.push(BulkRetryResult {
                saga_id: record.saga_id,
                step: record.current_step,
                outcome,
                detail,
            });
        }
        tracing::info!(
            retried = results.iter().filter(|r| r.outcome == BulkOutcome::Retried).count(),
            skipped = results.iter().filter(|r| r.outcome == BulkOutcome::Skipped).count(),
            operator = %principal.subject,
            "bulk saga retry batch"
        );
        Ok(BulkRetryReport::Batch {
            snapshot_at: snapshot,
            results,
            next_page_token,
        })
    }

    async fn bulk_dry_run(&self, filter: &SagaFilter) -> Result<BulkRetryReport, AppError> {
        let counts = self.store.count(filter).await?;
        let matched = counts.iter().map(|c| c.count).sum();
        let snapshot = counts.iter().filter_map(|c| c.last_updated).max();
        let mut by_step: BTreeMap<&'static str, BulkStep> = BTreeMap::new();
        for count in &counts {
            if let Some(step) = count.current_step {
                by_step
                    .entry(step.name())
                    .or_insert(BulkStep { step, count: 0 })
                    .count += count.count;
            }
        }
        let expires_at = Utc::now() + CONFIRMATION_TTL;
        let confirmation_token = match snapshot {
            Some(snapshot) if matched > 0 => issue_confirmation(filter, snapshot, expires_at)?,
            _ => String::new(),
        };
        Ok(BulkRetryReport::DryRun {
            matched,
            steps: by_step.into_values().collect(),
            confirmation_token,
            snapshot_at: snapshot,
            expires_at,
        })
    }
}

/// The store filter of a bulk retry: the caller's, limited to the statuses a
/// retry applies to. Violations are named under `filter.`.
fn retryable_filter(input: &FilterInput) -> Result<SagaFilter, AppError> {
    let mut filter = input.parse().map_err(|e| match e {
        AppError::InvalidArgument(violations) => AppError::InvalidArgument(
            violations
                .into_iter()
                .map(|v| FieldViolation::new(format!("filter.{}", v.field), v.description))
                .collect(),
        ),
        other => other,
    })?;
    filter.statuses = match input.status {
        None => vec![SagaStatus::Failed, SagaStatus::CompensationFailed],
        Some(status @ (SagaStatus::Failed | SagaStatus::CompensationFailed)) => vec![status],
        Some(_) => {
            return Err(AppError::invalid(
                "filter.status",
                "only FAILED or COMPENSATION_FAILED sagas can be retried (unspecified: both)",
            ));
        }
    };
    Ok(filter)
}

fn filter_digest(filter: &SagaFilter) -> String {
    hex::encode(Sha256::digest(format!("{filter:?}").as_bytes()))
}

fn issue_confirmation(
    filter: &SagaFilter,
    snapshot: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<String, AppError> {
    let confirmation = Confirmation {
        filter: filter_digest(filter),
        snapshot: snapshot.timestamp_micros(),
        expires: expires_at.timestamp_micros(),
    };
    let json = serde_json::to_vec(&confirmation).map_err(anyhow::Error::from)?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// The snapshot a valid token for `filter` is bound to.
fn check_confirmation(
    token: &str,
    filter: &SagaFilter,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, AppError> {
    let bad = |why: &str| AppError::invalid("confirmation_token", why);
    let confirmation: Confirmation = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| bad("not a token from a BulkRetrySagas dry run"))?;
    let snapshot = crate::app::paging::page_token_time(confirmation.snapshot)
        .ok_or_else(|| bad("not a token from a BulkRetrySagas dry run"))?;
    let expires = DateTime::from_timestamp_micros(confirmation.expires)
        .ok_or_else(|| bad("not a token from a BulkRetrySagas dry run"))?;
    if confirmation.filter != filter_digest(filter) {
        return Err(bad(
            "was issued for another filter: run the dry run again with this one",
        ));
    }
    if expires <= now || expires > now + CONFIRMATION_TTL {
        return Err(bad("has expired: run the dry run again"));
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmation_binds_its_filter_and_expires() {
        let now = Utc::now();
        let failed = retryable_filter(&FilterInput::default()).unwrap();
        let other = retryable_filter(&FilterInput {
            current_step: "capture_payment".into(),
            ..FilterInput::default()
        })
        .unwrap();
        let token = issue_confirmation(&failed, now, now + CONFIRMATION_TTL).unwrap();
        let snapshot = check_confirmation(&token, &failed, now).unwrap();
        assert_eq!(snapshot.timestamp_micros(), now.timestamp_micros());
        assert!(check_confirmation(&token, &other, now).is_err());
        assert!(check_confirmation(&token, &failed, now + CONFIRMATION_TTL).is_err());
        assert!(check_confirmation("eyJub3QiOiJpdCJ9", &failed, now).is_err());
        let running = FilterInput {
            status: Some(SagaStatus::Running),
            ..FilterInput::default()
        };
        assert!(
            matches!(retryable_filter(&running), Err(AppError::InvalidArgument(v)) if v[0].field == "filter.status")
        );
    }
}
