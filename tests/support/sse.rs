//! A Server-Sent Events client made of a real `curl -N` child process: the
//! response head and the events it prints, read as they arrive.

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

/// One block of the stream up to its blank line: an event, or a comment.
#[derive(Debug, Default, Clone)]
pub struct Frame {
    /// `id:`.
    pub id: Option<String>,
    /// `event:` (none: a plain message).
    pub event: Option<String>,
    /// `data:` lines, joined.
    pub data: String,
    /// `:` comment lines (heartbeats).
    pub comments: Vec<String>,
}

impl Frame {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {self:?}"))
    }
}

/// `curl -N` on one URL.
pub struct Curl {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// The status code of the response.
    pub status: u16,
    /// Response headers, names lower case.
    pub headers: Vec<(String, String)>,
}

impl Curl {
    /// Starts `curl -N -i url` with `headers` (`Name: value`) and reads the head.
    pub async fn get(url: &str, headers: &[&str]) -> Self {
        let mut command = Command::new("curl");
        command.args(["-N", "-sS", "-i", "--max-time", "60"]);
        for header in headers {
            command.args(["-H", header]);
        }
        command
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("curl runs (install curl)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut curl = Self {
            child,
            lines: BufReader::new(stdout).lines(),
            status: 0,
            headers: Vec::new(),
        };
        let status_line = curl.line().await.expect("a status line");
        curl.status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        while let Some(line) = curl.line().await {
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            curl.headers
                .push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        curl
    }

    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The rest of the body (after the head), until curl exits.
    pub async fn rest(mut self) -> String {
        let mut out = String::new();
        while let Some(line) = self.line().await {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// The next frame within `limit`; `None` when the stream ended.
    pub async fn frame(&mut self, limit: Duration) -> Option<Frame> {
        tokio::time::timeout(limit, self.read_frame())
            .await
            .unwrap_or_else(|_| panic!("no frame within {limit:?}"))
    }

    /// The next event, skipping heartbeats; `None` when the stream ended.
    pub async fn event(&mut self, limit: Duration) -> Option<Frame> {
        tokio::time::timeout(limit, async {
            loop {
                match self.read_frame().await {
                    Some(frame) if frame.data.is_empty() && frame.event.is_none() => continue,
                    other => return other,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no event within {limit:?}"))
    }

    /// curl's exit status once the stream ended.
    pub async fn exit_code(mut self) -> Option<i32> {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("curl exits")
            .expect("curl waited")
            .code()
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        let mut frame = Frame::default();
        let mut any = false;
        while let Some(line) = self.line().await {
            if line.is_empty() {
                if any {
                    return Some(frame);
                }
                continue;
            }
            any = true;
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "" => frame.comments.push(value),
                "id" => frame.id = Some(value),
                "event" => frame.event = Some(value),
                "data" if frame.data.is_empty() => frame.data = value,
                "data" => {
                    frame.data.push('\n');
                    frame.data.push_str(&value);
                }
                other => panic!("unexpected SSE field {other:?} in {line:?}"),
            }
        }
        any.then_some(frame)
    }

    async fn line(&mut self) -> Option<String> {
        let line = self.lines.next_line().await.expect("reading curl's output")?;
        Some(line.strip_suffix('\r').unwrap_or(&line).to_string())
    }
}
