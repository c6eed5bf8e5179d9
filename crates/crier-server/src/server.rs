//! The listener: binds the configured address, routes HTTP (client
//! transports, the server API), runs housekeeping, and shuts down
//! gracefully (stop accepting, tell every client 3001, wait a bounded time).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
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
    app.with_state(node)
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
        let server = tokio::spawn(serve_http(self.listener, app, token.clone()));
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

/// Accepts HTTP/1.1 connections and serves `app` on each, with upgrades,
/// until `shutdown`; then each connection finishes its request in flight.
/// A plain hyper connection (not axum::serve, which wraps the socket to
/// sniff for HTTP/2) lets an upgraded WebSocket get its `TcpStream` back.
async fn serve_http(listener: TcpListener, app: Router, shutdown: CancellationToken) {
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
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
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
