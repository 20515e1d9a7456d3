//! A TCP proxy the tests put between the service and a dependency (PostgreSQL,
//! Redis) to make it vanish and come back, without touching the machine's
//! shared servers. It also counts the Redis commands (RESP arrays) clients
//! send through it, so a test can count round trips per operation, and the
//! bytes the upstream sends back (what a compressed answer saves).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

const UP: u8 = 0;
const CUT: u8 = 1;
const STALLED: u8 = 2;

/// A TCP proxy that can be cut (connections dropped, new ones closed at
/// once: a dependency that is down), stalled (connections accepted and held,
/// nothing forwarded: a network partition) and restored.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
    commands: Arc<AtomicU64>,
    bytes_down: Arc<AtomicU64>,
}

impl Proxy {
    /// A proxy on a loopback port forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: impl Into<String>) -> Self {
        let upstream = upstream.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(UP));
        let links = Arc::new(Mutex::new(Vec::new()));
        let commands = Arc::new(AtomicU64::new(0));
        let bytes_down = Arc::new(AtomicU64::new(0));
        let acceptor = tokio::spawn({
            let (mode, links, commands, bytes_down) =
                (mode.clone(), links.clone(), commands.clone(), bytes_down.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let link = match mode.load(Ordering::SeqCst) {
                        // Dropped: the client sees the connection close.
                        CUT => continue,
                        // Held open until restored or cut, silent.
                        STALLED => tokio::spawn(async move {
                            let _client = client;
                            std::future::pending::<()>().await;
                        }),
                        _ => {
                            let (upstream, commands, bytes_down) =
                                (upstream.clone(), commands.clone(), bytes_down.clone());
                            tokio::spawn(async move {
                                if let Ok(server) = TcpStream::connect(upstream).await {
                                    forward(client, server, &commands, &bytes_down).await;
                                }
                            })
                        }
                    };
                    links.lock().unwrap().push(link);
                }
            }
        });
        Self {
            addr,
            mode,
            links,
            acceptor,
            commands,
            bytes_down,
        }
    }

    /// Bytes the upstream has sent back to clients through the proxy so far.
    pub fn bytes_down(&self) -> u64 {
        self.bytes_down.load(Ordering::SeqCst)
    }

    /// Redis commands clients have sent through the proxy so far (a
    /// pipeline counts each of its commands).
    pub fn redis_commands(&self) -> u64 {
        self.commands.load(Ordering::SeqCst)
    }

    /// A proxy to the host and port of `url` (`scheme://[user@]host:port/...`)
    /// and `url` rewritten to go through it.
    pub async fn for_url(url: &str) -> (Self, String) {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (user, host) = match authority.rsplit_once('@') {
            Some((user, host)) => (format!("{user}@"), host),
            None => (String::new(), authority),
        };
        let proxy = Self::start(host).await;
        let proxied = format!("{scheme}://{user}{}{tail}", proxy.addr);
        (proxy, proxied)
    }

    /// The dependency is down: live connections dropped, new ones closed.
    pub fn cut(&self) {
        self.mode.store(CUT, Ordering::SeqCst);
        self.drop_links();
    }

    /// The network is partitioned: live connections dropped, new ones
    /// accepted but never answered (a client waits for its own timeout).
    pub fn stall(&self) {
        self.mode.store(STALLED, Ordering::SeqCst);
        self.drop_links();
    }

    /// The dependency is back: new connections are forwarded again (stalled
    /// ones are dropped, so their clients reconnect).
    pub fn restore(&self) {
        if self.mode.swap(UP, Ordering::SeqCst) == STALLED {
            self.drop_links();
        }
    }

    fn drop_links(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.acceptor.abort();
    }
}

/// Copies both ways until either side closes, counting the RESP commands
/// going upstream and the bytes coming back.
async fn forward(client: TcpStream, server: TcpStream, commands: &AtomicU64, bytes_down: &AtomicU64) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut counter = RespCounter::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Counted before forwarding: once the reply is back, so is the count.
            commands.fetch_add(counter.feed(&buf[..n]), Ordering::SeqCst);
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            bytes_down.fetch_add(n as u64, Ordering::SeqCst);
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

/// Counts complete RESP arrays (`*N` then N bulk strings `$len`) in a byte
/// stream fed in arbitrary pieces: the shape every Redis client sends. Any
/// other protocol (PostgreSQL's) stops the counting for that connection.
#[derive(Default)]
struct RespCounter {
    pending: Vec<u8>,
    /// Bulk strings still to come in the current command.
    elements_left: u64,
    not_resp: bool,
}

impl RespCounter {
    /// Takes the next bytes; returns how many commands they completed.
    fn feed(&mut self, bytes: &[u8]) -> u64 {
        if self.not_resp {
            return 0;
        }
        self.pending.extend_from_slice(bytes);
        if self.elements_left == 0 && self.pending.first().is_some_and(|b| *b != b'*') {
            self.not_resp = true;
            self.pending = Vec::new();
            return 0;
        }
        let mut done = 0;
        let mut at = 0;
        while let Some(line_end) = find_crlf(&self.pending[at..]).map(|i| at + i) {
            let line = &self.pending[at..line_end];
            let number = || std::str::from_utf8(&line[1..]).ok()?.parse::<u64>().ok();
            match (line.first(), number()) {
                (Some(b'*'), Some(n)) if self.elements_left == 0 => {
                    self.elements_left = n;
                    at = line_end + 2;
                }
                (Some(b'$'), Some(len)) => {
                    let next = line_end + 2 + len as usize + 2;
                    if next > self.pending.len() {
                        break;
                    }
                    self.elements_left -= 1;
                    at = next;
                }
                _ => {
                    self.not_resp = true;
                    self.pending = Vec::new();
                    return done;
                }
            }
            if self.elements_left == 0 {
                done += 1;
            }
        }
        self.pending.drain(..at);
        done
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

mod tests {
    use super::RespCounter;

    #[test]
    fn counts_commands_split_anywhere() {
        let stream = b"*2\r\n$4\r\nPING\r\n$1\r\n1\r\n*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n";
        for split in 0..stream.len() {
            let mut counter = RespCounter::default();
            let total = counter.feed(&stream[..split]) + counter.feed(&stream[split..]);
            assert_eq!(total, 3, "split at {split}");
        }
    }

    #[test]
    fn another_protocol_is_not_counted() {
        let mut counter = RespCounter::default();
        assert_eq!(counter.feed(b"\0\0\0\x08\x04\xd2\x16\x2f"), 0);
        assert_eq!(counter.feed(b"*1\r\n$4\r\nPING\r\n"), 0);
    }
}
