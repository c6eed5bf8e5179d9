//! The listener: binds the configured address, routes HTTP (client
//! transports, the server API), runs housekeeping, and shuts down
//! gracefully (stop accepting, tell every client 3001, wait a bounded time).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::node::Node;
use crate::{api, metrics, tcp, uni, watch, ws};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A `[[watch]]` path could not be watched (e.g. the inotify watch limit).
    #[error("{key}: cannot watch {path}: {source}")]
    Watch {
        /// The config key, `watch[i].path`.
        key: String,
        /// The path asked for.
        path: String,
        /// What the OS (through notify) said.
        source: notify::Error,
    },
}

/// A bound, not yet running, crier server.
pub struct Server {
    node: Arc<Node>,
    listener: TcpListener,
    tcp: tcp::TcpListeners,
    watchers: watch::Watchers,
    // `GET /metrics` on its own listener, when `prometheus.listen` is set.
    metrics: Option<TcpListener>,
}

/// The HTTP routes of a node.
pub fn router(node: Arc<Node>) -> Router {
    let mut app = Router::new()
        .route("/connection/websocket", get(ws::upgrade))
        .route("/connection/uni_websocket", get(uni::websocket))
        .route("/connection/uni_sse", get(uni::sse_get).post(uni::sse_post))
        .route("/connection/uni_http_stream", post(uni::http_stream))
        .route("/health", get(|| async { "{}" }));
    if !node.config.http_api.disabled {
        let prefix = node
            .config
            .http_api
            .handler_prefix
            .trim_end_matches('/')
            .to_owned();
        app = app.route(&format!("{prefix}/{{method}}"), post(api::handle));
    }
    let prometheus = &node.config.prometheus;
    if prometheus.enabled && prometheus.listen.trim().is_empty() {
        app = app.route("/metrics", get(metrics::scrape));
    }
    let http = &node.config.http_server;
    let body = BodyLimits {
        timeout: http.body_read_timeout,
        max: http.max_request_body_size,
    };
    app.layer(axum::middleware::from_fn_with_state(body, read_body))
        .layer(DefaultBodyLimit::max(http.max_request_body_size))
        .with_state(node)
}

/// How a request body must arrive: `http_server.body_read_timeout` and
/// `http_server.max_request_body_size`.
#[derive(Clone, Copy)]
struct BodyLimits {
    timeout: Duration,
    max: usize,
}

/// Reads a request's whole body within the deadline before any handler
/// runs, so a client that trickles a body (or announces more than it
/// sends) holds its connection for `body_read_timeout` at most (408), and
/// one that sends too much is refused (413). Every route that takes a body
/// reads all of it anyway.
async fn read_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(limits.timeout, axum::body::to_bytes(body, limits.max)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(_)) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body larger than http_server.max_request_body_size\n",
        )
            .into_response(),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            "request body not received within http_server.body_read_timeout\n",
        )
            .into_response(),
    }
}

impl Server {
    /// Builds the node and binds its listener.
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let addr = config.http_server.listen_addr();
        let node = Node::new(config)?;
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let tcp = tcp::bind(&node).await?;
        let watchers = watch::start(&node)?;
        let metrics = metrics::bind(&node).await?;
        Ok(Self {
            node,
            listener,
            tcp,
            watchers,
            metrics,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The addresses the `[[tcp]]` listeners bound, in configuration order
    /// (useful with port 0).
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp.local_addrs()
    }

    /// The address of the separate metrics listener, if `prometheus.listen`
    /// asked for one (useful with port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The node this server runs.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Serves until `signal` completes (or the node's shutdown token is
    /// cancelled), then shuts down gracefully within the configured timeout.
    pub async fn run(self, signal: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let node = self.node;
        let token = node.shutdown.clone();
        let app = router(node.clone());
        let server = tokio::spawn(serve_http(
            self.listener,
            app,
            HttpLimits::of(&node.config),
            token.clone(),
        ));
        let tcp = tokio::spawn(self.tcp.run(token.clone()));
        let watchers = tokio::spawn(self.watchers.run(token.clone()));
        let metrics = self
            .metrics
            .map(|l| tokio::spawn(metrics::serve(l, node.clone(), token.clone())));
        let housekeeping = {
            let hub = node.hub.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tokio::select! {
                        _ = every.tick() => hub.sweep(),
                        _ = token.cancelled() => break,
                    }
                }
            })
        };
        tokio::select! {
            _ = signal => {}
            _ = token.cancelled() => {}
        }
        token.cancel();
        let told = node.hub.shutdown();
        tracing::info!(
            clients = told,
            "shutting down: told every client to reconnect elsewhere (3001)"
        );
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &node.cluster {
            // Their presence entries leave Redis now, not after the TTL.
            cluster.flush(Duration::from_secs(2)).await;
        }
        node.connections.close();
        let deadline = node.config.shutdown.timeout;
        let finished = tokio::time::timeout(deadline, async {
            node.connections.wait().await;
        })
        .await;
        if finished.is_err() {
            tracing::warn!(?deadline, "shutdown timeout: closing remaining connections");
        }
        server.abort();
        housekeeping.abort();
        tcp.abort();
        watchers.abort();
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        Ok(())
    }
}

/// What an HTTP connection may do (`http_server.*`).
#[derive(Clone, Copy)]
struct HttpLimits {
    write_timeout: Duration,
    header_read_timeout: Duration,
    max_header_size: usize,
}

impl HttpLimits {
    fn of(config: &Config) -> Self {
        let http = &config.http_server;
        HttpLimits {
            write_timeout: http.write_timeout,
            header_read_timeout: http.header_read_timeout,
            max_header_size: http.max_header_size,
        }
    }
}

/// Accepts HTTP/1.1 connections and serves `app` on each, with upgrades,
/// until `shutdown`; then each connection finishes its request in flight.
/// A plain hyper connection (not axum::serve, which wraps the socket to
/// sniff for HTTP/2) lets an upgraded WebSocket get its `TcpStream` back.
async fn serve_http(listener: TcpListener, app: Router, limits: HttpLimits, shutdown: CancellationToken) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper applies the header deadline only with a timer; it runs from
    // when the connection waits for a request head, so an idle keep-alive
    // connection is closed by it too.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_size);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: back off instead
                    // of spinning, and keep serving the connections we have.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        // Nagle off: a small frame written while an earlier one is
        // unacknowledged would otherwise wait for the peer's delayed ACK
        // (up to 40 ms; docs/benchmarks.md).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        let conn = http
            .serve_connection(
                TokioIo::new(WriteDeadline::new(stream, limits.write_timeout)),
                service,
            )
            .with_upgrades();
        tokio::spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// A TCP stream whose writes fail with `TimedOut` once the peer has taken
/// no bytes for `timeout`: hyper has no write timeout, and a client that
/// stops reading an SSE stream would otherwise keep its connection (and
/// the kernel's buffers) for ever. An upgraded WebSocket unwraps it
/// ([`WriteDeadline::into_inner`]) and keeps its own per-frame timeout.
pub(crate) struct WriteDeadline {
    inner: TcpStream,
    timeout: Duration,
    // Armed when a write first finds the socket full; gone once it drains.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(inner: TcpStream, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// The stream itself.
    pub(crate) fn into_inner(self) -> TcpStream {
        self.inner
    }

    fn check<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took no bytes within http_server.write_timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_peer_that_stops_reading_fails_the_write_after_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = WriteDeadline::new(stream, Duration::from_millis(200));
        let chunk = vec![b'z'; 64 * 1024];
        // 64 MiB never fits in loopback buffers: some write must stall.
        let mut outcome = Ok(());
        for _ in 0..1024 {
            outcome = stream.write_all(&chunk).await;
            if outcome.is_err() {
                break;
            }
        }
        let err = outcome.expect_err("a stalled write fails");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        drop(peer);
    }
}
