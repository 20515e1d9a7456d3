//! Rate limiting: a token bucket per principal, per client IP when anonymous.
//!
//! Buckets live in memory, so the limit holds **per replica**: with N replicas
//! behind a balancer a caller gets up to N times the configured rate. That is
//! the usual trade for a check that costs no network round trip; a global limit
//! belongs in the ingress or a shared store.
//!
//! Each bucket is kept as GCRA's "theoretical arrival time" (one `Instant`),
//! which is the token bucket in integer arithmetic: a request is admitted when
//! the bucket would not overflow, and the bucket is full again (so forgettable)
//! once that time has passed. The map is bounded: when it reaches
//! [`MAX_BUCKETS`] it first drops idle (full) buckets, which changes no
//! decision, and only under a flood of distinct callers the closest-to-full half.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::config::RateLimitSettings;

/// Most buckets kept at once (a few MB); see the module doc for eviction.
pub const MAX_BUCKETS: usize = 100_000;

/// Whose bucket a request draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    /// An authenticated caller, by `sub`.
    Subject(String),
    /// An anonymous caller (or one with a bad token), by TCP peer address.
    Ip(IpAddr),
}

/// Shared token buckets; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    /// Time one token takes to refill.
    interval: Duration,
    /// Bucket size as a time span: `burst * interval`.
    capacity: Duration,
    buckets: Arc<Mutex<HashMap<BucketKey, Instant>>>,
}

impl RateLimiter {
    /// The limiter the configuration asks for; None when RATE_LIMIT_PER_SECOND is 0.
    pub fn from_settings(settings: &RateLimitSettings) -> Option<Self> {
        Self::new(settings.per_second, settings.burst)
    }

    /// `per_second` tokens refilled each second, at most `burst` banked; None when `per_second` is 0.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        if per_second == 0 {
            return None;
        }
        let interval =
            Duration::from_nanos(1_000_000_000 / u64::from(per_second)).max(Duration::from_nanos(1));
        Some(Self {
            interval,
            capacity: interval.saturating_mul(burst.max(1)),
            buckets: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Takes one token from `key`'s bucket, or says how long until one is there.
    pub fn check(&self, key: BucketKey) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: BucketKey, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another request panicked mid-update of a
        // timestamp; the map is still consistent, so keep using it.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let tat = match buckets.get(&key) {
            Some(tat) => (*tat).max(now),
            None => {
                if buckets.len() >= MAX_BUCKETS {
                    evict(&mut buckets, now);
                }
                now
            }
        };
        let next = tat + self.interval;
        let used = next - now;
        if used > self.capacity {
            return Err(used - self.capacity);
        }
        buckets.insert(key, next);
        Ok(())
    }

    /// Buckets currently kept (for tests and metrics).
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes room: drops the full buckets, then if that was not enough the half
/// closest to full (those callers merely get a fresh bucket).
fn evict(buckets: &mut HashMap<BucketKey, Instant>, now: Instant) {
    buckets.retain(|_, tat| *tat > now);
    if buckets.len() < MAX_BUCKETS {
        return;
    }
    let mut times: Vec<Instant> = buckets.values().copied().collect();
    let middle = times.len() / 2;
    let (_, median, _) = times.select_nth_unstable(middle);
    let median = *median;
    buckets.retain(|_, tat| *tat > median);
}

/// Paths never limited: probes and scrapes must work while a caller is throttled.
pub fn is_exempt(path: &str) -> bool {
    path == "/health" || path == "/metrics" || path.starts_with("/grpc.health.v1.Health/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> BucketKey {
        BucketKey::Subject("alice".into())
    }

    #[test]
    fn a_burst_is_admitted_then_refused_with_the_time_to_the_next_token() {
        let limiter = RateLimiter::new(10, 3).unwrap();
        let now = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(alice(), now).is_ok());
        }
        let wait = limiter.check_at(alice(), now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Another caller has its own bucket.
        assert!(limiter.check_at(BucketKey::Subject("bob".into()), now).is_ok());
        // One interval later exactly one more token is there.
        let later = now + Duration::from_millis(100);
        assert!(limiter.check_at(alice(), later).is_ok());
        assert!(limiter.check_at(alice(), later).is_err());
    }

    #[test]
    fn a_steady_rate_below_the_limit_is_never_refused() {
        let limiter = RateLimiter::new(100, 1).unwrap();
        let start = Instant::now();
        for i in 0..1_000 {
            let at = start + Duration::from_millis(10 * i);
            assert!(limiter.check_at(alice(), at).is_ok(), "request {i}");
        }
    }

    #[test]
    fn zero_per_second_disables_the_limiter() {
        assert!(RateLimiter::new(0, 10).is_none());
    }

    #[test]
    fn the_bucket_map_stays_bounded_and_drops_idle_buckets_first() {
        let limiter = RateLimiter::new(1, 5).unwrap();
        let ip = |i: u32| BucketKey::Ip(IpAddr::from(i.to_be_bytes()));
        let now = Instant::now();
        // A flood of distinct callers at one instant: bounded by evicting half.
        for i in 0..(MAX_BUCKETS as u32 + 10) {
            assert!(limiter.check_at(ip(i), now).is_ok());
        }
        assert!(limiter.len() <= MAX_BUCKETS, "{}", limiter.len());
        // Fill a fresh map to the bound; once every bucket is full again
        // (idle), the next new caller evicts all of them and nobody else.
        let limiter = RateLimiter::new(1, 5).unwrap();
        for i in 0..(MAX_BUCKETS as u32) {
            assert!(limiter.check_at(ip(i), now).is_ok());
        }
        assert_eq!(limiter.len(), MAX_BUCKETS);
        let later = now + Duration::from_secs(10);
        assert!(limiter.check_at(alice(), later).is_ok());
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn probes_and_scrapes_are_exempt() {
        assert!(is_exempt("/health"));
        assert!(is_exempt("/grpc.health.v1.Health/Check"));
        assert!(!is_exempt("/commerce.v1.CartService/GetCart"));
        assert!(!is_exempt("/api/v1/cart/active"));
    }
}
