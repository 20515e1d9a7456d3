//! Fault, concurrency and bad-input suites (issue 12): nothing lost, nothing doubled.
//!
//! # Layout
//! - `fuzz_*`: property-based fuzzing (proptest) of money parsing and
//!   arithmetic, event decoding and upcasting, and request validation. A short
//!   run in CI; a long one with `PROPTEST_CASES=100000 cargo test --test integration
//!   faults::fuzz_`.
//! - The service-level suites (crash, outages, concurrency, bad input,
//!   idempotency, event gaps, resource abuse) run the real server, in process
//!   or as a child process; long variants behind `LONG_TESTS=1`.

mod bad_input;
mod concurrency;
mod event_feed;
mod event_gaps;
mod fuzz_events;
mod fuzz_money;
mod fuzz_requests;
mod idempotency;
mod outages;
mod resource_abuse;
mod saga_sim;
mod soak;
