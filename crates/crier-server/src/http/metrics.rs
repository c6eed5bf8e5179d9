//! `GET /metrics`: on the main router, or on its own listener when
//! `prometheus.listen` asks for one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::ServerError;
use crate::metrics::CONTENT_TYPE;
use crate::node::Node;

/// `GET /metrics`.
pub(crate) async fn scrape(State(node): State<Arc<Node>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], node.metrics.render()).into_response()
}

/// Binds the separate metrics listener when `prometheus.enabled` and
/// `prometheus.listen` ask for one (`HOST:PORT`, or `:PORT` for every
/// interface); `None` when metrics are off or served by the main router.
pub(crate) async fn bind(node: &Node) -> Result<Option<TcpListener>, ServerError> {
    let cfg = &node.config.prometheus;
    let listen = cfg.listen.trim();
    if !cfg.enabled || listen.is_empty() {
        return Ok(None);
    }
    let addr = crate::config::listen_addr(listen);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listener bound");
    Ok(Some(listener))
}

/// Serves `GET /metrics` on its own listener until `shutdown` is cancelled.
pub(crate) async fn serve(listener: TcpListener, node: Arc<Node>, shutdown: CancellationToken) {
    let app = Router::new().route("/metrics", get(scrape)).with_state(node);
    let served = axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::warn!(%error, "metrics listener failed");
    }
}
