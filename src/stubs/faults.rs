//! Failure injection shared by the stubs: configured latency and transient
//! failure rate (STUB_LATENCY_MS, STUB_FAILURE_RATE), and the deterministic
//! "fail the first n attempts" behind magic inputs such as `pm_transient_3`.
//!
//! Every injected failure happens *before* a request is applied, so it is a
//! true transient fault: the same idempotency key applies later.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use rand::Rng;
use rust_decimal::Decimal;
use tonic::Status;

use crate::config::StubSettings;

/// Resolution of the failure probability: parts per million.
const PPM: u32 = 1_000_000;

/// Fault injection of one stub process.
#[derive(Debug)]
pub struct Faults {
    /// Probability of a random UNAVAILABLE, in parts per million.
    failure_ppm: u32,
    latency: Duration,
    /// Attempts seen per `(operation, idempotency key)`, for `fail_first`.
    attempts: Mutex<HashMap<String, u32>>,
}

impl Faults {
    /// From STUB_FAILURE_RATE and STUB_LATENCY_MS.
    pub fn from_settings(settings: &StubSettings) -> Self {
        Self::new(settings.failure_rate, settings.latency)
    }

    /// A failure rate in [0, 1] (clamped) and an added latency.
    pub fn new(failure_rate: Decimal, latency: Duration) -> Self {
        let ppm = (failure_rate.clamp(Decimal::ZERO, Decimal::ONE) * Decimal::from(PPM)).trunc();
        Self {
            failure_ppm: u32::try_from(ppm).unwrap_or(PPM).min(PPM),
            latency,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Waits the configured latency, then fails at the configured rate.
    pub async fn before_call(&self, operation: &str) -> Result<(), Status> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.failure_ppm > 0 && rand::rng().random_range(0..PPM) < self.failure_ppm {
            return Err(Status::unavailable(format!(
                "{operation}: injected transient failure"
            )));
        }
        Ok(())
    }

    /// UNAVAILABLE for the first `n` attempts of `key` at `operation`, then Ok.
    pub fn fail_first(&self, operation: &str, key: &str, n: u32) -> Result<(), Status> {
        if n == 0 {
            return Ok(());
        }
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let seen = attempts.entry(format!("{operation}\u{0}{key}")).or_insert(0);
        *seen += 1;
        if *seen <= n {
            return Err(Status::unavailable(format!(
                "{operation}: transient failure {seen} of {n} (magic input)"
            )));
        }
        Ok(())
    }
}

/// The `n` of a magic value `{prefix}{n}`, e.g. 3 for `pm_transient_3`.
pub fn magic_count(value: &str, prefix: &str) -> Option<u32> {
    value.strip_prefix(prefix)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_first_fails_exactly_n_attempts_per_key() {
        let faults = Faults::new(Decimal::ZERO, Duration::ZERO);
        for _ in 0..2 {
            assert!(faults.fail_first("authorize", "k1", 2).is_err());
        }
        assert!(faults.fail_first("authorize", "k1", 2).is_ok());
        assert!(
            faults.fail_first("authorize", "k2", 2).is_err(),
            "counted per key"
        );
        assert!(
            faults.fail_first("capture", "k1", 1).is_err(),
            "and per operation"
        );
    }

    #[tokio::test]
    async fn the_failure_rate_bounds_what_is_injected() {
        let never = Faults::new(Decimal::ZERO, Duration::ZERO);
        let always = Faults::new(Decimal::ONE, Duration::ZERO);
        for _ in 0..50 {
            assert!(never.before_call("x").await.is_ok());
            assert_eq!(
                always.before_call("x").await.unwrap_err().code(),
                tonic::Code::Unavailable
            );
        }
    }

    #[test]
    fn magic_counts_parse_their_suffix() {
        assert_eq!(magic_count("pm_transient_3", "pm_transient_"), Some(3));
        assert_eq!(magic_count("pm_transient_x", "pm_transient_"), None);
        assert_eq!(magic_count("pm_card_visa", "pm_transient_"), None);
    }
}
