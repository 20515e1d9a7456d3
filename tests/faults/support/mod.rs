//! Shared tools of the fault suites: seeds, long-run switches, figures.

#![allow(dead_code)]

pub mod ledgers;
pub mod shop;

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
