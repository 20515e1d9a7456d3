//! The real binary as a child process (`commerce serve`, `commerce stubs`):
//! started on a port picked here with its log in a file, killed with SIGKILL
//! (a crash: no drain) and measured (RSS from /proc).

use std::{collections::HashMap, process::Stdio, time::Duration};

use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process of the real binary, killed when dropped.
pub struct Proc {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    log: std::path::PathBuf,
}

/// Starts `commerce <args>` with exactly `env`, stderr appended to `log`.
pub fn spawn(args: &[&str], env: &HashMap<String, String>, log: std::path::PathBuf, port: u16) -> Proc {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_commerce"))
        .args(args)
        .env_clear()
        .envs(env)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn commerce");
    Proc { child, port, log }
}

impl Drop for Proc {
    /// Kills the process and reaps it before the test's other resources go (tokio's
    /// `kill_on_drop` only sends the signal): a process still running while its Isolation is
    /// cleaned up could write a Redis key (its event stream) after the cleanup.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Proc {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until the port accepts gRPC.
    pub async fn ready(&mut self) -> Channel {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(channel) = Channel::from_shared(self.url()).unwrap().connect().await {
                return channel;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "not ready: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// SIGKILL: no shutdown, no drain.
    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

/// A throwaway `redis-server` of the test's own on a free port (no
/// persistence), killed and reaped when dropped.
pub struct RedisServer {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl RedisServer {
    /// Starts one with `extra` arguments (e.g. `--replicaof 127.0.0.1 PORT`)
    /// and waits until it answers PING.
    pub async fn start(extra: &[&str]) -> Self {
        let port = free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &std::env::temp_dir().display().to_string(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let server = Self { child, port };
        let client = redis::Client::open(server.url()).unwrap();
        for _ in 0..100 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {port} did not answer");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
