//! The hello-world ceiling: a bare tonic server (the standard health `Check`,
//! no layers, no storage) in a process of its own, driven like the product.
//! What one unary gRPC call costs on this machine bounds every scenario; the
//! ratio of AddItem to it shows what the service adds.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use anyhow::Context;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::runner::Worker;

/// Serves the bare health service on `port` until killed (`commerce bench --serve-hello`).
pub async fn serve(port: u16) -> anyhow::Result<()> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(crate::transport::incoming(listener))
        .await
        .context("serving hello")
}

/// The bare server as a child process, killed on drop.
pub struct HelloServer {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl HelloServer {
    /// Starts it and waits until it answers.
    pub async fn spawn() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["bench", "--serve-hello", &port.to_string()])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the hello server")?;
        let url = format!("http://127.0.0.1:{port}");
        super::runner::wait_serving(&url, Duration::from_secs(5)).await?;
        Ok(Self { child, url })
    }

    /// Its process id, for its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// One health check per operation.
pub struct HelloWorker(pub HealthClient<Channel>);

#[tonic::async_trait]
impl Worker for HelloWorker {
    async fn op(&mut self) -> anyhow::Result<()> {
        self.0.check(HealthCheckRequest::default()).await?;
        Ok(())
    }
}
