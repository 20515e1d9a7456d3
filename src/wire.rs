//! gRPC on the wire, the same for every server and client of ours: which
//! compression encodings are accepted and sent, the end of life of an
//! accepted connection (max age plus grace; the rest of the lifecycle is set
//! on the connection builder in [`crate::serve`]), and what reflection says a
//! port serves.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Sleep,
};
use tonic::codec::CompressionEncoding;

use tonic_reflection::server::{
    v1::ServerReflectionServer as ReflectionV1Server,
    v1alpha::ServerReflectionServer as ReflectionV1AlphaServer,
};

/// The encodings every server accepts (and sends, when the caller advertises
/// one of them): gzip, which every gRPC stack speaks, and zstd.
pub const ENCODINGS: [CompressionEncoding; 2] = [CompressionEncoding::Gzip, CompressionEncoding::Zstd];

/// What our own clients compress requests with: gzip, since a sibling in any
/// language can read it (zstd is not in every gRPC stack).
pub const CLIENT_ENCODING: CompressionEncoding = CompressionEncoding::Gzip;

/// A generated tonic server that accepts every encoding of [`ENCODINGS`] and,
/// when `$send` is true, compresses its responses for callers that accept one.
///
/// tonic compresses every response message once the caller advertises an
/// encoding: it has no size threshold (only a per-message opt-out a handler
/// would have to set), so the switch is all or nothing.
macro_rules! compressed_server {
    ($server:expr, $send:expr) => {{
        let mut server = $server;
        for encoding in $crate::wire::ENCODINGS {
            server = server.accept_compressed(encoding);
            if $send {
                server = server.send_compressed(encoding);
            }
        }
        server
    }};
}
pub(crate) use compressed_server;

/// A service that browsers can also call with grpc-web (HTTP/1.1 or HTTP/2,
/// `application/grpc-web[-text][+proto]`): tonic-web translates such a call to
/// gRPC and the answer back, trailers in the body. Everything else reaches
/// the service untouched: tonic-web alone would refuse any HTTP/1.1 request
/// that is not grpc-web, and gRPC over HTTP/1.1 is served on this port.
/// CORS for the browser's preflight is [`crate::rest::cors_layer`], outside
/// every route.
pub fn grpc_web<S: Clone>(service: S) -> GrpcWeb<S> {
    GrpcWeb {
        web: tower::Layer::layer(&tonic_web::GrpcWebLayer::new(), service.clone()),
        plain: service,
    }
}

/// A tonic service that also answers grpc-web; see [`grpc_web`].
#[derive(Clone)]
pub struct GrpcWeb<S> {
    plain: S,
    web: tonic_web::GrpcWebService<S>,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for GrpcWeb<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::Either<tonic_web::ResponseFuture<S::Future>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both sides are the same tonic server, which is always ready.
        self.plain.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let web = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc-web"));
        if web {
            futures::future::Either::Left(self.web.call(request))
        } else {
            futures::future::Either::Right(self.plain.call(request))
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for GrpcWeb<S> {
    const NAME: &'static str = S::NAME;
}

/// A generated tonic client that sends [`CLIENT_ENCODING`] and accepts
/// compressed responses in every encoding of [`ENCODINGS`].
macro_rules! compressed_client {
    ($client:expr) => {{
        let mut client = $client.send_compressed($crate::wire::CLIENT_ENCODING);
        for encoding in $crate::wire::ENCODINGS {
            client = client.accept_compressed(encoding);
        }
        client
    }};
}
pub(crate) use compressed_client;

/// The services every port serves besides its own.
const PROTOCOL_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Reflection, v1 and v1alpha (grpcurl 1.8 speaks only v1alpha; newer
/// clients try v1 first), listing exactly the port's `services` plus health
/// and reflection: the descriptor set holds the commerce and the sibling
/// services alike, and a port must not list a service it would answer
/// UNIMPLEMENTED. Every descriptor (ours, health's, both reflections') stays
/// resolvable for `describe`.
pub fn reflection(
    services: &[&str],
) -> Result<
    (
        ReflectionV1Server<impl tonic_reflection::server::v1::ServerReflection>,
        ReflectionV1AlphaServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
        services
            .iter()
            .chain(PROTOCOL_SERVICES)
            .fold(builder, |builder, name| builder.with_service_name(*name))
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// An accepted TCP stream that fails every read and write once its lifetime
/// is over, which ends hyper's connection (and every stream still on it).
pub struct AgedStream {
    stream: TcpStream,
    end_of_life: Option<Pin<Box<Sleep>>>,
}

impl AgedStream {
    /// `stream`, ended once `lifetime` (if any) is over.
    pub fn new(stream: TcpStream, lifetime: Option<Duration>) -> Self {
        Self {
            stream,
            end_of_life: lifetime.map(|lifetime| Box::pin(tokio::time::sleep(lifetime))),
        }
    }

    /// Err once the lifetime is over. Polling the timer registers the
    /// connection's task to be woken at the end of life even while idle:
    /// hyper always has a read pending.
    fn check_alive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let over = self
            .end_of_life
            .as_mut()
            .is_some_and(|end| end.as_mut().poll(cx).is_ready());
        if over {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection outlived MAX_CONNECTION_AGE_SECONDS plus the grace period",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for AgedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check_alive(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check_alive(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
