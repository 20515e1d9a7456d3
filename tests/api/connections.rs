//! The HTTP/2 connection lifecycle end to end: keepalive pings and their
//! timeout, recycling at the maximum age (GOAWAY, calls in flight finish,
//! closed after the grace period), and the cap on concurrent streams.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use commerce::proto::commerce::v1::{GetActiveCartRequest, cart_service_client::CartServiceClient};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Endpoint;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::app::{Backend, TestApp, authed, spawn_app_with};

async fn app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with(Backend::from_env(), overrides).await
}

/// HTTP/2 frame types and the one setting read here (RFC 9113).
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// A raw HTTP/2 connection that sends the preface and empty SETTINGS, then
/// only reads: it answers no PING. Returns the frames `(type, flags, payload)`
/// it read until the server closed the connection, and when that was.
async fn silent_client(port: u16, give_up: Duration) -> (Vec<(u8, u8, Vec<u8>)>, Duration) {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    tcp.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]).await.unwrap();
    let mut frames = Vec::new();
    let read_all = async {
        loop {
            let mut header = [0u8; 9];
            if tcp.read_exact(&mut header).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; len];
            if tcp.read_exact(&mut payload).await.is_err() {
                break;
            }
            frames.push((header[3], header[4], payload));
        }
    };
    tokio::time::timeout(give_up, read_all)
        .await
        .expect("the server closed the connection");
    (frames, started.elapsed())
}

#[tokio::test]
async fn an_unanswered_keepalive_ping_closes_the_connection_and_settings_cap_streams() {
    let app = app_with(&[
        ("HTTP2_KEEPALIVE_INTERVAL_SECONDS", "0.3"),
        ("HTTP2_KEEPALIVE_TIMEOUT_SECONDS", "0.3"),
        ("MAX_CONCURRENT_STREAMS", "7"),
    ])
    .await;
    let (frames, closed_after) = silent_client(app.port, Duration::from_secs(10)).await;
    assert!(
        frames
            .iter()
            .any(|(kind, flags, _)| *kind == PING && flags & ACK == 0),
        "the server pinged: {frames:?}"
    );
    assert!(
        closed_after >= Duration::from_millis(500),
        "closed only after interval + timeout, not at once: {closed_after:?}"
    );
    let (_, _, settings) = frames
        .iter()
        .find(|(kind, flags, _)| *kind == SETTINGS && flags & ACK == 0)
        .expect("the server's SETTINGS");
    let max_streams = settings
        .chunks_exact(6)
        .find(|s| u16::from_be_bytes([s[0], s[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(max_streams, Some(7), "MAX_CONCURRENT_STREAMS is told to clients");
}

/// True for a call the server provably did not process, which gRPC's
/// transparent retry sends again: tonic's client (hyper) dropped it unsent
/// because the GOAWAY arrived while it was queued for the connection
/// (CANCELLED "connection closed"), or the server's final GOAWAY named a last
/// stream below it (an h2 GOAWAY error with NO_ERROR). grpc-go, grpc-java
/// and C-core retry both on a new connection; tonic has no transparent retry,
/// so its callers see them (the saga's sibling clients retry them as transient).
fn not_processed(status: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = cause {
        let unsent = error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled);
        let refused = error
            .downcast_ref::<h2::Error>()
            .is_some_and(|e| e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR));
        if unsent || refused {
            return true;
        }
        cause = error.source();
    }
    false
}

#[tokio::test]
async fn a_client_calling_across_the_max_connection_age_sees_no_failed_call() {
    let app = app_with(&[
        ("MAX_CONNECTION_AGE_SECONDS", "0.7"),
        ("MAX_CONNECTION_AGE_GRACE_SECONDS", "5"),
    ])
    .await;
    // Counts the TCP connections the channel opens.
    let connects = Arc::new(AtomicUsize::new(0));
    let counter = connects.clone();
    let addr = format!("127.0.0.1:{}", app.port);
    let channel =
        Endpoint::from_shared(app.base_url.clone())
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                counter.fetch_add(1, Ordering::SeqCst);
                let addr = addr.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await?))
                }
            }))
            .await
            .unwrap();
    let token = app.customer("long-lived-client");
    let mut health = HealthClient::new(channel.clone());
    let mut carts = CartServiceClient::new(channel);
    let (mut calls, mut resent, mut failures) = (0, 0, Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        // A call the server did not process is sent again, as gRPC's
        // transparent retry does (once: the new connection is fresh).
        let mut checked = health.check(HealthCheckRequest::default()).await.map(|_| ());
        if checked.as_ref().is_err_and(not_processed) {
            resent += 1;
            checked = health.check(HealthCheckRequest::default()).await.map(|_| ());
        }
        let mut fetched = carts
            .get_active_cart(authed(GetActiveCartRequest {}, &token))
            .await
            .map(|_| ());
        if fetched.as_ref().is_err_and(not_processed) {
            resent += 1;
            fetched = carts
                .get_active_cart(authed(GetActiveCartRequest {}, &token))
                .await
                .map(|_| ());
        }
        // No cart yet is an answer, not a failed call.
        let fetched = fetched.or_else(|status| match status.code() {
            tonic::Code::NotFound => Ok(()),
            _ => Err(status),
        });
        calls += 2;
        failures.extend(checked.err());
        failures.extend(fetched.err());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed ({resent} not processed and sent again): {failures:?}",
        failures.len()
    );
    assert!(
        connects.load(Ordering::SeqCst) >= 3,
        "the connection was recycled at its age: {} connections in 2.5 s",
        connects.load(Ordering::SeqCst)
    );
}

/// The server's half of a recycle without a failed call: every call a client
/// wrote before the GOAWAY reached it is answered, however close to the age.
/// The server's GOAWAY is the two-step one (last stream 2^31-1 and a PING,
/// then the real last stream after the PING's answer), so a call already on
/// the wire when the client learns of the GOAWAY is still served; a client
/// that learnt of it first does not send (h2 refuses locally, visibly), and a
/// stream the final GOAWAY declares unprocessed may be sent again. What must
/// never happen: a call the server took ends without its answer.
#[tokio::test]
async fn every_call_written_before_the_goaway_arrived_is_answered() {
    let app = app_with(&[
        ("MAX_CONNECTION_AGE_SECONDS", "0.2"),
        ("MAX_CONNECTION_AGE_GRACE_SECONDS", "5"),
    ])
    .await;
    let started = Instant::now();
    let (mut answered, mut connections, mut failed) = (0, 0, Vec::new());
    while started.elapsed() < Duration::from_millis(2000) {
        connections += 1;
        let tcp = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let connection = tokio::spawn(connection);
        // Two callers on the connection, calling back to back until it goes away.
        let callers = (0..2).map(|_| {
            let client = client.clone();
            let port = app.port;
            tokio::spawn(async move {
                let (mut answered, mut failed) = (0, Vec::new());
                let mut client = client;
                loop {
                    // Not ready / refused here: the GOAWAY arrived, nothing was written.
                    let Ok(ready) = client.ready().await else { break };
                    client = ready;
                    let Ok((response, mut body)) = client.send_request(health_check_request(port), false)
                    else {
                        break;
                    };
                    // Written: from here on the server owes an answer.
                    let result = async {
                        body.send_data(Bytes::from_static(EMPTY_MESSAGE), true)?;
                        let mut body = response.await?.into_body();
                        while let Some(chunk) = body.data().await {
                            chunk?;
                        }
                        body.trailers().await
                    }
                    .await;
                    match result {
                        Ok(Some(trailers)) if trailers.get("grpc-status").is_some_and(|s| s == "0") => {
                            answered += 1
                        }
                        // Above the final GOAWAY's last stream: declared unprocessed, the
                        // client may send it again. Not a failed call.
                        Err(e)
                            if e.is_go_away()
                                && e.is_remote()
                                && e.reason() == Some(h2::Reason::NO_ERROR) =>
                        {
                            break;
                        }
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (answered, failed)
            })
        });
        for caller in callers.collect::<Vec<_>>() {
            let (n, errors) = caller.await.unwrap();
            answered += n;
            failed.extend(errors);
        }
        let _ = client.ready().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
    }
    assert!(
        failed.is_empty(),
        "{} written calls failed: {failed:?}",
        failed.len()
    );
    assert!(connections >= 5, "recycled at the age: {connections} connections");
    assert!(answered > connections * 2, "{answered} calls answered");
}

/// An HTTP/2 gRPC request to Health/Check whose body is sent later.
fn health_check_request(port: u16) -> http::Request<()> {
    http::Request::post(format!("http://127.0.0.1:{port}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// An empty HealthCheckRequest in gRPC framing (uncompressed, length 0).
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

#[tokio::test]
async fn at_max_age_a_call_in_flight_finishes_and_the_grace_period_bounds_the_rest() {
    let app = app_with(&[
        ("MAX_CONNECTION_AGE_SECONDS", "0.5"),
        ("MAX_CONNECTION_AGE_GRACE_SECONDS", "1"),
    ])
    .await;
    let started = Instant::now();
    let tcp = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    // Two calls in flight, their bodies not sent yet.
    let (finished_call, mut finished_body) = client
        .send_request(health_check_request(app.port), false)
        .unwrap();
    let mut client = client.ready().await.unwrap();
    let (endless_call, _endless_body) = client
        .send_request(health_check_request(app.port), false)
        .unwrap();

    // Past the age (GOAWAY sent), within the grace: the first call completes.
    tokio::time::sleep(Duration::from_millis(800)).await;
    finished_body
        .send_data(Bytes::from_static(EMPTY_MESSAGE), true)
        .unwrap();
    let response = finished_call.await.expect("answered after the GOAWAY");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");

    // The call that never ends is cut with its connection after age + grace.
    assert!(
        endless_call.await.is_err(),
        "the endless call ends with its connection"
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the connection closed");
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(1400) && lived < Duration::from_secs(4),
        "closed about age + grace (1.5 s) after it opened: {lived:?}"
    );
}

#[tokio::test]
async fn a_call_beyond_max_concurrent_streams_waits_for_a_stream_to_free() {
    let app = app_with(&[("MAX_CONCURRENT_STREAMS", "1")]).await;
    let tcp = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    // Let the server's SETTINGS (one stream) arrive before opening streams.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (first_call, mut first_body) = client
        .send_request(health_check_request(app.port), false)
        .unwrap();
    let mut client = client.ready().await.unwrap();
    let (second_call, _) = client.send_request(health_check_request(app.port), true).unwrap();
    let mut second_call = std::pin::pin!(second_call);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut second_call)
            .await
            .is_err(),
        "the second call waits while the one allowed stream is taken"
    );
    first_body
        .send_data(Bytes::from_static(EMPTY_MESSAGE), true)
        .unwrap();
    assert_eq!(first_call.await.unwrap().status(), 200);
    let second = tokio::time::timeout(Duration::from_secs(5), second_call)
        .await
        .expect("the second call proceeds once the first is done")
        .unwrap();
    assert_eq!(second.status(), 200);
}
