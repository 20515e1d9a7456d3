//! Load loops and latency statistics.
//!
//! Two phases per scenario: a closed loop (every worker sends its next request
//! as soon as the previous one answers) measures the maximum throughput; an
//! open loop at a fixed fraction of that rate measures latency. In the open
//! loop each worker follows its own schedule and a late request's latency is
//! counted from when it was due, not from when it was sent, so a stall shows up
//! in the percentiles instead of being hidden (no coordinated omission).
//! One exception, [`TIMER_SLACK`]: Tokio's timer ticks in milliseconds, so a
//! request is sent up to about a millisecond after its due time even on an
//! idle machine; that much lateness is the clock's, not the server's, and is
//! not counted. Lateness beyond it is.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::Serialize;

/// The gRPC code a server refuses with when its rate limit is reached.
pub const RATE_LIMITED: &str = "RESOURCE_EXHAUSTED";

/// One worker of a scenario: owns its clients and state.
#[tonic::async_trait]
pub trait Worker: Send {
    /// What the next operation needs but is not part of what it measures (a
    /// fulfillment's cart: the issue times CreateOrder sent -> CONFIRMED seen);
    /// run before the clock starts. An error counts as a failed operation.
    async fn prepare(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// One operation; an error counts as a failed operation.
    async fn op(&mut self) -> anyhow::Result<()>;
}

/// Latencies and errors of one phase.
#[derive(Debug, Default)]
pub struct Recording {
    /// Latencies of successful operations, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Failed operations.
    pub errors: u64,
    /// Failed operations by gRPC code name (`other` for a failure without one).
    pub errors_by_code: BTreeMap<&'static str, u64>,
    /// Measured wall time.
    pub elapsed: Duration,
}

/// Percentile summary of a recording.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Failed operations by gRPC code name: a server's refusals (RESOURCE_EXHAUSTED from its
    /// rate limit) are told apart from failures.
    pub errors_by_code: BTreeMap<&'static str, u64>,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

impl Recording {
    fn merge(&mut self, other: Recording) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        for (code, n) in other.errors_by_code {
            *self.errors_by_code.entry(code).or_default() += n;
        }
    }

    fn failed(&mut self, code: &'static str) {
        self.errors += 1;
        *self.errors_by_code.entry(code).or_default() += 1;
    }

    /// Percentiles over every latency recorded (consumes the recording).
    pub fn summary(mut self) -> Summary {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let pct = |p: f64| {
            if n == 0 {
                return 0.0;
            }
            let index = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
            self.latencies_us[index] as f64 / 1000.0
        };
        Summary {
            ops: n as u64,
            errors: self.errors,
            errors_by_code: self.errors_by_code,
            ops_per_sec: n as f64 / self.elapsed.as_secs_f64().max(1e-9),
            p50_ms: pct(0.50),
            p90_ms: pct(0.90),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
        }
    }
}

/// The gRPC code name of a failed operation (`other` when it carries no status).
pub fn failure_code(error: &anyhow::Error) -> &'static str {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<tonic::Status>())
        .map_or("other", |status| crate::metrics::grpc_code_name(status.code()))
}

/// How long a closed-loop worker waits after its `refusals`-th refusal in a row by the
/// server's rate limit: 50 ms doubling to 1 s. Sending again at once would measure
/// nothing but the limiter (and flood it); the refusals are counted and reported.
pub fn refusal_backoff(refusals: u32) -> Duration {
    Duration::from_millis(50u64 << refusals.saturating_sub(1).min(5)).min(Duration::from_secs(1))
}

/// Runs every worker as fast as it can for `warmup` (discarded) then `duration`;
/// a worker refused by the rate limit backs off (see [`refusal_backoff`]).
pub async fn closed_loop(workers: Vec<Box<dyn Worker>>, warmup: Duration, duration: Duration) -> Recording {
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            tokio::spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                let mut recording = Recording::default();
                let mut refusals = 0;
                loop {
                    let prepared = worker.prepare().await;
                    let sent = Instant::now();
                    if sent >= deadline {
                        break;
                    }
                    let result = match prepared {
                        Ok(()) => worker.op().await,
                        Err(error) => Err(error),
                    };
                    let code = result.as_ref().err().map(failure_code);
                    let measured = sent >= measure_from;
                    match code {
                        None if measured => recording.latencies_us.push(sent.elapsed().as_micros() as u64),
                        Some(code) if measured => recording.failed(code),
                        _ => {}
                    }
                    if code == Some(RATE_LIMITED) {
                        refusals += 1;
                        tokio::time::sleep(
                            refusal_backoff(refusals).min(deadline.saturating_duration_since(Instant::now())),
                        )
                        .await;
                    } else {
                        refusals = 0;
                    }
                }
                recording
            })
        })
        .collect();
    collect(tasks, duration).await
}

/// Lateness of a send forgiven as the timer's granularity (see the module docs).
pub const TIMER_SLACK: Duration = Duration::from_millis(1);

/// An open-loop latency: from `due` to `done`, less the send's lateness up
/// to [`TIMER_SLACK`].
fn open_loop_latency(due: Instant, sent: Instant, done: Instant) -> Duration {
    let lateness = sent.saturating_duration_since(due).min(TIMER_SLACK);
    done.saturating_duration_since(due).saturating_sub(lateness)
}

/// Runs the workers at `rate` operations per second in total for `duration`,
/// latency measured from each operation's scheduled time.
pub async fn open_loop(workers: Vec<Box<dyn Worker>>, rate: f64, duration: Duration) -> Recording {
    let count = workers.len().max(1);
    let interval = Duration::from_secs_f64(count as f64 / rate.max(1.0));
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + duration;
    let tasks: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(i, mut worker)| {
            // Stagger the workers evenly over one interval.
            let offset = interval.mul_f64(i as f64 / count as f64);
            tokio::spawn(async move {
                let mut recording = Recording::default();
                let mut due = start + offset;
                while due < deadline {
                    let prepared = worker.prepare().await;
                    tokio::time::sleep_until(due.into()).await;
                    let sent = Instant::now();
                    let result = match prepared {
                        Ok(()) => worker.op().await,
                        Err(error) => Err(error),
                    };
                    match result {
                        Ok(()) => recording
                            .latencies_us
                            .push(open_loop_latency(due, sent, Instant::now()).as_micros() as u64),
                        Err(error) => recording.failed(failure_code(&error)),
                    }
                    due += interval;
                }
                recording
            })
        })
        .collect();
    collect(tasks, duration).await
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Recording>>, duration: Duration) -> Recording {
    let mut total = Recording {
        elapsed: duration,
        ..Default::default()
    };
    for task in tasks {
        if let Ok(recording) = task.await {
            total.merge(recording);
        }
    }
    total
}

/// `x` to one decimal, as the JSON lines give figures.
pub fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Waits until the gRPC health service at `url` answers SERVING.
pub async fn wait_serving(url: &str, within: Duration) -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Ok(channel) = tonic::transport::Channel::from_shared(url.to_string())?
            .connect()
            .await
        {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .map(|r| r.into_inner().status);
            if matches!(status, Ok(1)) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{url} did not become healthy within {within:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_timer_tick_of_lateness_is_forgiven() {
        let due = Instant::now();
        let done = due + Duration::from_millis(10);
        // Sent 0.5 ms late: all of it is the timer's.
        let on_time = open_loop_latency(due, due + Duration::from_micros(500), done);
        assert_eq!(on_time, Duration::from_micros(9_500));
        // Sent 4 ms late: 3 ms of it counts (a stall, not the timer).
        let stalled = open_loop_latency(due, due + Duration::from_millis(4), done);
        assert_eq!(stalled, Duration::from_millis(9));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let recording = Recording {
            latencies_us: (1..=100).map(|ms| ms * 1000).collect(),
            errors: 2,
            errors_by_code: BTreeMap::from([("UNAVAILABLE", 2)]),
            elapsed: Duration::from_secs(10),
        };
        let s = recording.summary();
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(s.ops, 100);
        assert!((s.ops_per_sec - 10.0).abs() < 1e-9);
    }

    /// Refused by the rate limit on every call.
    struct Limited(std::sync::Arc<std::sync::atomic::AtomicU64>);
    #[tonic::async_trait]
    impl Worker for Limited {
        async fn op(&mut self) -> anyhow::Result<()> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(tonic::Status::resource_exhausted("rate limit exceeded").into())
        }
    }

    #[tokio::test]
    async fn rate_limit_refusals_are_counted_by_code_and_backed_off() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let worker = Limited(calls.clone());
        let summary = closed_loop(vec![Box::new(worker)], Duration::ZERO, Duration::from_millis(600))
            .await
            .summary();
        assert_eq!(summary.errors_by_code.get(RATE_LIMITED), Some(&summary.errors));
        // Backing off 50, 100, 200 ms...: a handful of calls, not thousands.
        let calls = calls.load(std::sync::atomic::Ordering::Relaxed);
        assert!((2..=8).contains(&calls), "{calls} calls in 600 ms");
        assert_eq!(refusal_backoff(1), Duration::from_millis(50));
        assert_eq!(refusal_backoff(30), Duration::from_secs(1));
    }

    struct Sleepy;
    #[tonic::async_trait]
    impl Worker for Sleepy {
        async fn op(&mut self) -> anyhow::Result<()> {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn open_loop_counts_queueing_behind_a_slow_worker() {
        // One worker asked for 100 ops/s but each op takes 30 ms: requests fall
        // behind schedule, and the recorded latency must grow past 30 ms.
        let recording = open_loop(vec![Box::new(Sleepy)], 100.0, Duration::from_millis(400)).await;
        let summary = recording.summary();
        assert!(summary.max_ms > 60.0, "{summary:?}");
    }
}
