//! Tokens verified recently, so a client that sends the same token with every
//! call pays for its signature and claims once, not per call.
//!
//! What a verification decides depends on the token's bytes, the keys and
//! the clock. The keys of an [`super::Authenticator`] never change, so for the
//! same bytes only the clock can change the answer: an entry keeps the time
//! window in which the token's `exp` and `nbf` pass (with the same leeway and
//! comparisons as jsonwebtoken's), and outside it the token is verified in
//! full again, which gives the refusal its reason. Only successful
//! verifications are kept: a refused token costs a full verification every
//! time, as before. Tokens whose `exp` or `nbf` are not plain integers are
//! never kept (jsonwebtoken rounds fractional ones; they are rare enough to
//! verify each time).
//!
//! Bounded in entries and in the size of a token kept, so a client minting a
//! new valid token per call only evicts older entries.

use std::sync::{Mutex, PoisonError};

use hashlink::LruCache;

use super::Principal;

/// Most tokens kept (a few hundred bytes each, typically).
pub const MAX_ENTRIES: usize = 4096;

/// Longest token kept; longer ones (up to `MAX_TOKEN_BYTES`) are verified each time.
pub const MAX_KEPT_TOKEN_BYTES: usize = 2048;

/// When a verified token's time claims pass, in seconds since the epoch, leeway included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Passes `nbf` from this second on (0 without `nbf`).
    pub from: u64,
    /// Passes `exp` up to this second, included.
    pub until: u64,
}

impl Window {
    /// The window of a token whose claims jsonwebtoken accepted with `leeway`:
    /// it refuses `exp < now - leeway` and `nbf > now + leeway`. None when a
    /// claim is not a plain non-negative integer (not kept, see the module doc).
    pub fn of(exp: Option<&serde_json::Value>, nbf: Option<&serde_json::Value>, leeway: u64) -> Option<Self> {
        let until = exp?.as_u64()?.saturating_add(leeway);
        let from = match nbf {
            None | Some(serde_json::Value::Null) => 0,
            Some(nbf) => nbf.as_u64()?.saturating_sub(leeway),
        };
        Some(Self { from, until })
    }

    fn contains(&self, now: u64) -> bool {
        self.from <= now && now <= self.until
    }
}

/// The verified tokens of one authenticator; see the module doc.
pub struct VerifiedTokens {
    entries: Mutex<LruCache<Box<str>, (Principal, Window)>>,
}

impl VerifiedTokens {
    /// An empty cache of at most [`MAX_ENTRIES`] tokens.
    pub fn new() -> Self {
        Self {
            entries: Mutex::new(LruCache::new(MAX_ENTRIES)),
        }
    }

    /// The principal of `token` if it was verified and its time claims still
    /// pass at `now`; an entry whose window has passed is dropped.
    pub fn recall(&self, token: &str, now: u64) -> Option<Principal> {
        // A poisoned lock only means a holder panicked between two map
        // operations; every entry is still a verified token.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (principal, window) = entries.get(token)?;
        if window.contains(now) {
            return Some(principal.clone());
        }
        entries.remove(token);
        None
    }

    /// Keeps `token`, just verified, as `principal` for its `window`.
    pub fn remember(&self, token: &str, principal: &Principal, window: Window) {
        if token.len() > MAX_KEPT_TOKEN_BYTES {
            return;
        }
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.into(), (principal.clone(), window));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::Role;

    fn alice() -> Principal {
        Principal {
            subject: "alice".into(),
            roles: vec![Role::Customer],
        }
    }

    #[test]
    fn a_token_is_recalled_only_inside_the_window_its_claims_pass_in() {
        let cache = VerifiedTokens::new();
        let window = Window::of(Some(&json!(1_000)), Some(&json!(900)), 30).unwrap();
        assert_eq!(
            window,
            Window {
                from: 870,
                until: 1_030
            }
        );
        cache.remember("token", &alice(), window);
        assert_eq!(cache.recall("token", 870), Some(alice()));
        assert_eq!(cache.recall("token", 1_030), Some(alice()));
        assert_eq!(cache.recall("other", 1_000), None);
        assert_eq!(cache.recall("token", 869), None, "before nbf - leeway");
        assert_eq!(cache.recall("token", 1_000), None, "dropped once outside");
        cache.remember("token", &alice(), window);
        assert_eq!(cache.recall("token", 1_031), None, "after exp + leeway");
    }

    #[test]
    fn only_plain_integer_time_claims_make_a_window() {
        assert_eq!(
            Window::of(Some(&json!(100)), None, 30),
            Some(Window { from: 0, until: 130 })
        );
        assert_eq!(Window::of(Some(&json!(100.4)), None, 30), None);
        assert_eq!(Window::of(Some(&json!(100)), Some(&json!(5.5)), 30), None);
        assert_eq!(Window::of(None, None, 30), None);
        assert_eq!(Window::of(Some(&json!(-1)), None, 30), None);
    }

    #[test]
    fn long_tokens_are_not_kept_and_the_cache_is_bounded() {
        let cache = VerifiedTokens::new();
        let window = Window { from: 0, until: 10 };
        let long = "x".repeat(MAX_KEPT_TOKEN_BYTES + 1);
        cache.remember(&long, &alice(), window);
        assert_eq!(cache.recall(&long, 5), None);
        for n in 0..=MAX_ENTRIES {
            cache.remember(&format!("token-{n}"), &alice(), window);
        }
        assert_eq!(cache.recall("token-0", 5), None, "the oldest was evicted");
        assert_eq!(cache.recall(&format!("token-{MAX_ENTRIES}"), 5), Some(alice()));
    }
}
