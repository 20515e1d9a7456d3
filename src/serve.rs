//! The accept loop of the one port: HTTP/1.1 and HTTP/2 (prior knowledge,
//! as gRPC clients speak it) on every connection, with the same header bound
//! on both.
//!
//! tonic's `Server` would serve the same router, but it leaves hyper's HTTP/1
//! read buffer at its default of about 400 KB, so an HTTP/1.1 request could
//! carry a 390,000-byte header while HTTP/2 refused anything over 16 KiB.
//! Here hyper's connection builder is configured directly: HTTP/1 reads at
//! most [`MAX_HEADER_BYTES`] of request head (then 431), HTTP/2 takes a
//! header list of at most the same (then 431 or a stream reset).
//!
//! What tonic's server added and this keeps: TCP_NODELAY, the peer address
//! as [`TcpConnectInfo`] (the rate limit of anonymous callers keys on it),
//! hyper's HTTP/1 header read timeout, HTTP/2 stream limits, and a graceful
//! shutdown that stops accepting and drains open connections. And the
//! connection lifecycle of [`ConnectionSettings`]: HTTP/2 keepalive pings
//! with their timeout, a GOAWAY at the maximum age (calls in flight go on),
//! and the connection closed at age + grace ([`crate::wire::AgedStream`]).
//!
//! [`TcpConnectInfo`]: tonic::transport::server::TcpConnectInfo

use std::{convert::Infallible, future::Future, time::Duration};

use axum::{Router, body::Body};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceExt;

use crate::{
    config::{ConnectionSettings, LimitSettings},
    wire::AgedStream,
};

/// Largest request head (request line and headers) over HTTP/1.1, and
/// largest header list over HTTP/2.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Serves `router` on `listener` until `shutdown` resolves, then drains the
/// open connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: &ConnectionSettings,
    limits: &LimitSettings,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(connections.keepalive_interval)
        .keep_alive_timeout(connections.keepalive_timeout);
    let max_age = connections.max_age;
    let lifetime = max_age.map(|age| age + connections.max_age_grace);
    // Each connection holds a receiver: it hears the drain through it, and
    // the loop knows the drain is over when none is left.
    let (drain, draining) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without it, a reply written in several pieces waits for the
        // client's delayed ACK (see transport::incoming).
        let _ = stream.set_nodelay(true);
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(remote),
        };
        let router = router.clone();
        let service = tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(info.clone());
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(
                    router
                        .oneshot(request.map(Body::new))
                        .await
                        .unwrap_or_else(|never| match never {}),
                )
            }
        });
        let connection = builder
            .serve_connection(
                TokioIo::new(AgedStream::new(stream, lifetime)),
                TowerToHyperService::new(service),
            )
            .into_owned();
        let mut draining = draining.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = async {
                    let drained = draining.wait_for(|drain| *drain);
                    match max_age {
                        Some(age) => {
                            tokio::select! {
                                _ = drained => {},
                                () = tokio::time::sleep(age) => {},
                            }
                        }
                        None => {
                            let _ = drained.await;
                        }
                    }
                } => {
                    // Draining, or the connection reached its maximum age: finish
                    // the requests in flight (HTTP/2: GOAWAY), then close; an old
                    // connection's calls have until age + grace (AgedStream).
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(error = %error, "connection ended with an error");
            }
            drop(draining);
        });
    }
    // Stop accepting before draining: a client that connects now gets a
    // refusal at once rather than hanging until its deadline.
    drop(listener);
    drop(draining);
    let _ = drain.send(true);
    drain.closed().await;
    Ok(())
}
