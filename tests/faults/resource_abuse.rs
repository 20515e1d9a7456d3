//! Resource abuse against the real binary: a message over MAX_MESSAGE_BYTES
//! is RESOURCE_EXHAUSTED, and a flood of HTTP/2 streams opened and reset at
//! once (the "rapid reset" attack) neither grows the server's memory (RSS
//! read from /proc) nor stops it answering.

use std::time::{Duration, Instant};

use commerce::proto::commerce::v1::{CreateOrderRequest, order_service_client::OrderServiceClient};
use futures::future::join_all;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{
    self,
    app::{Backend, Isolation, authed},
    child::{free_port, spawn},
};

/// What one client of the flood achieved.
#[derive(Default)]
struct Flooded {
    resets: u64,
    connections: u64,
    /// Connections whose last call the server refused (REFUSED_STREAM: its
    /// reset-flood defence) or that it closed (GOAWAY).
    pushed_back: u64,
}

fn grpc_request(port: u16) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://127.0.0.1:{port}/commerce.v1.CartService/GetActiveCart"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request")
}

/// Opens and resets `count` streams on connections to `port`, reconnecting
/// whenever the server closes one (GOAWAY).
async fn flood(port: u16, count: u64) -> Flooded {
    let mut done = Flooded::default();
    while done.resets < count {
        let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        done.connections += 1;
        let Ok((client, connection)) = h2::client::handshake(tcp).await else {
            continue;
        };
        let driver = tokio::spawn(connection);
        let mut client = client;
        let mut open = true;
        while open && done.resets < count {
            match client.clone().ready().await {
                Ok(ready) => client = ready,
                Err(_) => break,
            }
            match client.send_request(grpc_request(port), false) {
                Ok((_response, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    done.resets += 1;
                }
                Err(_) => open = false,
            }
        }
        // A last complete call: frames are handled in order, so its answer
        // (or its refusal) means the server has taken every reset before it.
        let last = async {
            let (response, _) = client.ready().await?.send_request(grpc_request(port), true)?;
            response.await.map(drop)
        };
        match tokio::time::timeout(Duration::from_secs(10), last).await {
            Ok(Ok(())) => {}
            // A reset, a GOAWAY, or the connection closed under the client
            // (the server dropped it after its GOAWAY): all push back.
            Ok(Err(e)) if e.is_remote() || e.is_go_away() || e.is_io() => done.pushed_back += 1,
            other => panic!("the server neither answered nor refused: {other:?}"),
        }
        driver.abort();
    }
    done
}

async fn serving(channel: &Channel) -> bool {
    let mut client = HealthClient::new(channel.clone());
    let check = client.check(HealthCheckRequest {
        service: "liveness".into(),
    });
    matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_and_a_reset_flood_keeps_memory_flat() {
    let isolation = Isolation::new(Backend::from_env()).await;
    let mut vars = isolation.vars.clone();
    let port = free_port();
    vars.insert("MAX_MESSAGE_BYTES".into(), "4096".into());
    vars.insert("PORT".into(), port.to_string());
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn(&["serve"], &vars, dir.path().join("serve.log"), port);
    let channel = server.ready().await;
    let config = isolation.config(&[]);
    let token = commerce::auth::mint_token(
        &config.auth,
        "alice",
        &[commerce::auth::Role::Customer],
        Duration::from_secs(600),
    )
    .unwrap();

    let huge = CreateOrderRequest {
        cart_id: uuid::Uuid::new_v4().to_string(),
        payment_method: "pm_card_visa".into(),
        idempotency_key: "k".repeat(8192),
        ..Default::default()
    };
    let refused = OrderServiceClient::new(channel.clone())
        .create_order(authed(huge, &token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    // Warm up the allocator and the connection machinery, then measure.
    for _ in 0..200 {
        assert!(serving(&channel).await);
    }
    let before = server.rss_kib();
    let (connections, total) = (4u64, support::scale(20_000, 400_000) as u64);
    let started = Instant::now();
    let floods = join_all((0..connections).map(|_| flood(server.port, total / connections))).await;
    let elapsed = started.elapsed();
    let resets: u64 = floods.iter().map(|f| f.resets).sum();
    let opened: u64 = floods.iter().map(|f| f.connections).sum();
    let pushed_back: u64 = floods.iter().map(|f| f.pushed_back).sum();
    let started = Instant::now();
    assert!(
        serving(&channel).await,
        "the server answers right after the flood"
    );
    let answer = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = server.rss_kib();
    println!(
        "reset flood: {resets} streams reset on {opened} connections (the server refused or closed {pushed_back}) in \
         {elapsed:.1?}; RSS {before} KiB -> {after} KiB; next health answer in {answer:.1?}"
    );
    assert!(resets >= total);
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    server.kill9().await;
}
