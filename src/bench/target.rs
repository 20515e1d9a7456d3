//! What `commerce bench` reports about the server it measures, whether it started it or was
//! given `--target`: its backends (from its own `/health`), its peak memory (VmHWM from
//! /proc, found through the process listening on the target's port when that is this machine)
//! and the CPU time per operation of it, of the load generator, of PostgreSQL and of Redis.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The server's backends as its `/health` names them: `postgres+redis`, `sqlite+in-process`.
pub async fn backends(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url.parse().context("parsing the target URL")?;
    let authority = uri
        .authority()
        .context("the target URL has no host")?
        .as_str()
        .to_string();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&authority).await?;
        let request = format!("GET /health HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("GET /health timed out")??;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .context("GET /health: no body")?;
    let health: serde_json::Value = serde_json::from_str(body).context("GET /health: not JSON")?;
    let kind = |part: &str| health[part]["kind"].as_str().map(str::to_string);
    match (kind("database"), kind("cache")) {
        (Some(database), Some(cache)) => Ok(format!("{database}+{cache}")),
        _ => anyhow::bail!("GET /health names no database or cache kind"),
    }
}

/// The process serving `url`, when its host is a loopback address of this machine.
pub fn local_pid(url: &str) -> Option<u32> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_matches(['[', ']']);
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return None;
    }
    let port = uri.port_u16().unwrap_or(80);
    listener_pid(port)
}

/// The pid holding the listening socket of `port` (Linux: /proc/net/tcp{,6}, then /proc/*/fd).
fn listener_pid(port: u16) -> Option<u32> {
    const LISTEN: &str = "0A";
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if local_port == Some(port) && fields.get(3) == Some(&LISTEN) {
                sockets.extend(fields.get(9).map(|inode| format!("socket:[{inode}]")));
            }
        }
    }
    if sockets.is_empty() {
        return None;
    }
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
        let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
        fds.flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|link| sockets.iter().any(|s| link.as_os_str() == s.as_str()))
            .then_some(pid)
    })
}

/// VmHWM (the peak resident set) of `pid`, in MB.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let kb = status_kib(pid, "VmHWM")? as f64;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// The resident set of this process over an in-process scenario: where it
/// started and the largest seen, sampled every 10 ms.
pub struct OwnRss {
    before_kib: u64,
    peak_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl OwnRss {
    /// Starts sampling.
    pub fn sample() -> Self {
        let before_kib = rss_kib(std::process::id()).unwrap_or(0);
        let peak_kib = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before_kib));
        let peak = peak_kib.clone();
        let sampler = tokio::spawn(async move {
            loop {
                if let Some(kib) = rss_kib(std::process::id()) {
                    peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Self {
            before_kib,
            peak_kib,
            sampler,
        }
    }

    /// Stops sampling: the resident set at the start and its peak, in KiB.
    pub fn finish(self) -> (u64, u64) {
        self.sampler.abort();
        let now = rss_kib(std::process::id()).unwrap_or(0);
        let peak = self.peak_kib.load(std::sync::atomic::Ordering::Relaxed).max(now);
        (self.before_kib, peak)
    }
}

/// KiB as MB, to one decimal.
pub fn mb(kib: u64) -> f64 {
    super::runner::round(kib as f64 / 1024.0)
}

/// VmRSS (the resident set now) of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// A `kB` field of /proc/`pid`/status.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Linux reports process CPU times in clock ticks of 1/100 s (USER_HZ) on every architecture
/// this runs on.
const MS_PER_TICK: u64 = 10;

/// Reads the CPU time of the processes a phase keeps busy: the server (when on this machine),
/// this load generator, and every `postgres` and `redis-server` process of the machine (those
/// of other users included: read it on a quiet machine).
#[derive(Debug, Clone, Copy)]
pub struct CpuProbe {
    server: Option<u32>,
}

/// CPU ticks (user + system) at one moment, per process group.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    server: Option<u64>,
    bench: Option<u64>,
    postgres: u64,
    redis: u64,
}

impl CpuProbe {
    /// A probe for the server process `server` (None: in-process or elsewhere).
    pub fn new(server: Option<u32>) -> Self {
        Self { server }
    }

    /// The ticks used so far.
    pub fn sample(&self) -> CpuSample {
        CpuSample {
            server: self.server.and_then(cpu_ticks),
            bench: cpu_ticks(std::process::id()),
            postgres: ticks_of_named("postgres"),
            redis: ticks_of_named("redis-server"),
        }
    }
}

impl CpuSample {
    /// CPU milliseconds per operation from this sample to `later`, over `ops` operations
    /// (null where unknown; 10 ms resolution in total, so read it over many operations).
    pub fn per_op_ms(&self, later: &CpuSample, ops: u64) -> serde_json::Value {
        let per_op = |before: Option<u64>, after: Option<u64>| match (before, after) {
            (Some(b), Some(a)) if ops > 0 => {
                let ms = a.saturating_sub(b) as f64 * MS_PER_TICK as f64 / ops as f64;
                serde_json::json!((ms * 100.0).round() / 100.0)
            }
            _ => serde_json::Value::Null,
        };
        serde_json::json!({
            "server": per_op(self.server, later.server),
            "bench": per_op(self.bench, later.bench),
            "postgres": per_op(Some(self.postgres), Some(later.postgres)),
            "redis": per_op(Some(self.redis), Some(later.redis)),
        })
    }
}

/// utime + stime of `pid`, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (2nd field) may hold spaces: count fields after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The ticks of every process whose command name is `comm`.
fn ticks_of_named(comm: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|name| name.trim_end() == comm)
        })
        .filter_map(cpu_ticks)
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_cpu_time_is_read_and_grows() {
        let probe = super::CpuProbe::new(Some(std::process::id()));
        let before = probe.sample();
        // Spin until 50 ms of CPU show (wall time says little on a busy machine).
        let clock = std::time::Instant::now();
        let mut x = 0u64;
        let per_op = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let per_op = before.per_op_ms(&probe.sample(), 1);
            let server = per_op["server"].as_f64().expect("the server's CPU is known");
            if server >= 50.0 || clock.elapsed() > std::time::Duration::from_secs(30) {
                break per_op;
            }
        };
        let server = per_op["server"].as_f64().unwrap();
        assert!(server >= 50.0, "30 s of spinning read as {server} ms");
        assert_eq!(per_op["server"], per_op["bench"], "same process");
    }

    #[tokio::test]
    async fn the_process_listening_on_a_loopback_port_is_found() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        assert_eq!(super::local_pid(&url), Some(std::process::id()));
        assert!(super::peak_rss_mb(std::process::id()).is_some_and(|mb| mb > 0.0));
        assert_eq!(
            super::local_pid("http://192.0.2.1:8084"),
            None,
            "not this machine"
        );
    }
}
