//! A TCP proxy the tests put between the service and a dependency (PostgreSQL,
//! Redis) to make it vanish and come back, without touching the machine's
//! shared servers.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
};

use tokio::{
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
}

impl Proxy {
    /// A proxy on a loopback port forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: impl Into<String>) -> Self {
        let upstream = upstream.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(UP));
        let links = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tokio::spawn({
            let (mode, links) = (mode.clone(), links.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let link = match mode.load(Ordering::SeqCst) {
                        // Dropped: the client sees the connection close.
                        CUT => continue,
                        // Held open until restored or cut, silent.
                        STALLED => tokio::spawn(async move {
                            let _client = client;
                            std::future::pending::<()>().await;
                        }),
                        _ => {
                            let upstream = upstream.clone();
                            tokio::spawn(async move {
                                if let Ok(mut server) = TcpStream::connect(upstream).await {
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
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
        }
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
