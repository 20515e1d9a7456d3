//! The one integration-test binary: the service through its API (`api`), the
//! fault, concurrency and bad-input suites (`faults`), and the helpers both
//! share (`support`). One binary links once; under 2 cores linking is most of
//! an incremental test build.
//!
//! Every test runs on PostgreSQL and Redis when `TEST_DATABASE_URL` /
//! `TEST_REDIS_URL` are set (CI sets them), on the embedded backends otherwise.

mod api;
mod faults;
mod support;
