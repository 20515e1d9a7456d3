//! The service (or the stubs) as a child process: `commerce serve` /
//! `commerce stubs` on a port picked here, killed with SIGKILL (a crash, no
//! drain) or stopped, and measured (RSS from /proc).

use std::{
    collections::HashMap,
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

/// A running child process of the `commerce` binary.
pub struct ChildProcess {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl ChildProcess {
    /// Starts `commerce <command>` with `vars` (plus the port variable) and
    /// waits until it accepts connections.
    pub async fn start(command: &str, vars: &HashMap<String, String>, port: u16) -> Self {
        let port_var = if command == "stubs" { "STUBS_PORT" } else { "PORT" };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_commerce"));
        cmd.arg(command)
            .env_clear()
            .envs(vars)
            .env(port_var, port.to_string())
            .env("HOST", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn the commerce binary");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "commerce {command} did not start"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self { port, child }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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

    /// kill -9: no drain, no cleanup; waits until it is gone.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}
