//! Everything the tests share: the service in process ([`app`]) or as a child
//! process ([`child`], [`saga_processes`], [`observability`]), request fixtures
//! ([`orders`]), store and read-side rigs, the sibling stubs' clients and
//! ledgers, a TCP proxy to cut dependencies, the REST client, the outside
//! clients (Python grpcio, grpcurl, curl for Server-Sent Events, headless
//! Chromium, and Chromium driven by chromedriver), and the switches
//! of the randomized and long-running suites.

use std::time::Duration;

pub mod app;
pub mod browser;
pub mod child;
pub mod errors;
pub mod events;
pub mod ledgers;
pub mod observability;
pub mod orders;
pub mod pooler;
pub mod proxy;
pub mod read_side;
pub mod rebuild_check;
pub mod replica;
pub mod rest;
pub mod saga;
pub mod saga_processes;
pub mod sse;
pub mod store;
pub mod stubs;
pub mod tools;
pub mod webdriver;

/// True when the long variants are asked for (`LONG_TESTS=1`).
pub fn long() -> bool {
    std::env::var("LONG_TESTS").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// `short` in CI, `long` under `LONG_TESTS=1`.
pub fn scale(short: usize, long_run: usize) -> usize {
    if long() { long_run } else { short }
}

/// The seed of a randomized test: `FAULT_SEED` to replay one, else fresh.
/// Printed so a failing run can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{test}: seed {seed} (replay with FAULT_SEED={seed})");
    seed
}

/// Polls `probe` until it yields a value, or gives up after `limit` (`None`):
/// the one wait of the suites, for whatever settles eventually (read models,
/// sagas, a child process's log).
pub async fn eventually<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `condition` holds; fails the test after 10 s (the health
/// monitor checks every 2 s).
pub async fn wait_for<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_within(what, Duration::from_secs(10), condition).await;
}

/// [`wait_for`] with its own time limit.
pub async fn wait_for_within<F, Fut>(what: &str, limit: Duration, condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let held = eventually(limit, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await;
    assert!(held.is_some(), "timed out after {limit:?} waiting for {what}");
}
