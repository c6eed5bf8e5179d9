//! The listener: binds the configured address, routes HTTP (client
//! transports, the server API), runs housekeeping, and shuts down
//! gracefully (stop accepting, tell every client 3001, wait a bounded time).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
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
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenVerifier;
use crate::config::{Config, ConfigError, Report};
use crate::error::ServerError;
use crate::http;
use crate::net::WriteDeadline;
use crate::node::Node;
use crate::transport::{self, emulation, tcp, uni, websocket};
use crate::watch;

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
        .route("/connection/websocket", get(websocket::upgrade))
        .route("/connection/uni_websocket", get(uni::websocket))
        .route("/connection/uni_sse", get(uni::sse_get).post(uni::sse_post))
        .route("/connection/uni_http_stream", post(uni::http_stream))
        .route(
            "/connection/http_stream",
            post(emulation::http_stream).options(emulation::preflight),
        )
        .route(
            "/connection/sse",
            get(emulation::sse).options(emulation::preflight),
        )
        .route(
            "/emulation",
            post(emulation::emulation).options(emulation::preflight),
        );
    let health = &node.config.health;
    if health.enabled {
        let prefix = health.handler_prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() { "/health" } else { prefix };
        app = app
            .route(prefix, get(|| async { "{}" }))
            .route(&format!("{prefix}/ready"), get(ready));
    }
    if !node.config.http_api.disabled {
        let prefix = node
            .config
            .http_api
            .handler_prefix
            .trim_end_matches('/')
            .to_owned();
        app = app.route(&format!("{prefix}/{{method}}"), post(http::api::handle));
    }
    if let Some(admin) = crate::admin::routes(&node) {
        app = app.merge(admin);
    }
    let prometheus = &node.config.prometheus;
    if prometheus.enabled && prometheus.listen.trim().is_empty() {
        app = app.route("/metrics", get(http::metrics::scrape));
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

fn too_large() -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body larger than http_server.max_request_body_size\n",
    )
        .into_response()
}

/// Readiness: 200 `{}` while the engine answers (always, on the memory
/// engine), 503 with the reason while a Redis or NATS broker does not.
async fn ready(State(node): State<Arc<Node>>) -> Response {
    match node.engine_ready().await {
        Ok(()) => (StatusCode::OK, "{}").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"error": why}).to_string(),
        )
            .into_response(),
    }
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
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limits.max as u64) {
        // Refused before a byte of it is read.
        return too_large();
    }
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(limits.timeout, axum::body::to_bytes(body, limits.max)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(_)) => too_large(),
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
        Self::start(config, None).await
    }

    /// [`Server::bind`] with the decisions of `hooks` (connect without a
    /// token, subscribe, publish, RPC, refresh: each where
    /// [`decides`](crier_core::Hooks::decides) says so) instead of the
    /// configured HTTP proxies, which are then never called. The rest of
    /// the configuration applies as usual. See docs/proxies.md.
    pub async fn bind_with_hooks(
        config: Config,
        hooks: Arc<dyn crier_core::Hooks>,
    ) -> Result<Self, ServerError> {
        Self::start(config, Some(hooks)).await
    }

    async fn start(config: Config, hooks: Option<Arc<dyn crier_core::Hooks>>) -> Result<Self, ServerError> {
        let addr = config.http_server.listen_addr();
        let node = match hooks {
            Some(hooks) => Node::with_hooks(config, hooks)?,
            None => Node::new(config)?,
        };
        // Operations other nodes broadcast reach this node's clients.
        crate::control::listen(&node);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let tcp = tcp::bind(&node).await?;
        let watchers = watch::start(&node)?;
        let metrics = http::metrics::bind(&node).await?;
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
        let server = tokio::spawn(serve_http(self.listener, app, node.clone(), token.clone()));
        let tcp = tokio::spawn(self.tcp.run(token.clone()));
        let watchers = tokio::spawn(self.watchers.run(token.clone()));
        let metrics = self
            .metrics
            .map(|l| tokio::spawn(http::metrics::serve(l, node.clone(), token.clone())));
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
        let node_info = tell_other_nodes(&node);
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
        if let Some(task) = node_info {
            task.abort();
        }
        tcp.abort();
        watchers.abort();
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        Ok(())
    }
}

/// On a cluster engine, tells the other nodes what this node is every
/// `NODE_INFO_EVERY` (so `info`, and the admin UI, show every node).
fn tell_other_nodes(node: &Arc<Node>) -> Option<tokio::task::JoinHandle<()>> {
    if !node.clustered() {
        return None;
    }
    let node = node.clone();
    Some(tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::node::NODE_INFO_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = node.shutdown.cancelled() => break,
            }
            #[cfg(feature = "cluster")]
            if let Some(cluster) = &node.cluster {
                let info = crate::control::Control::Node {
                    info: node.node_result(),
                };
                // An engine outage is counted and logged by the publishes
                // that fail meanwhile; the others forget this node after
                // `NODE_INFO_TTL`.
                let _ = cluster.broadcast_control(&info.encode()).await;
            }
        }
    }))
}

/// Accepts HTTP/1.1 connections (over TLS with `http_server.tls`) and
/// serves `app` on each, with upgrades, until `shutdown`; then each
/// connection finishes its request in flight. A plain hyper connection
/// (not axum::serve, which wraps the socket to sniff for HTTP/2) lets an
/// upgraded WebSocket get its `TcpStream` back.
async fn serve_http(listener: TcpListener, app: Router, node: Arc<Node>, shutdown: CancellationToken) {
    let limits = node.config.http_server.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper applies the header deadline only with a timer; it runs from
    // when the connection waits for a request head, so an idle keep-alive
    // connection is closed by it too.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_size);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
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
        crate::net::prepare(&stream, limits.send_buffer_size);
        let (http, shutdown) = (http.clone(), shutdown.clone());
        let app = WithRemote(TowerToHyperService::new(app.clone()), remote);
        match &node.tls {
            None => {
                let io = WriteDeadline::new(stream, limits.write_timeout);
                tokio::spawn(serve_connection(http, io, app, shutdown));
            }
            Some(tls) => {
                let (acceptor, deadline, write_timeout) =
                    (tls.acceptor(), limits.header_read_timeout, limits.write_timeout);
                tokio::spawn(async move {
                    // The handshake counts against the header deadline: a
                    // client that opens a socket and says nothing is cut off.
                    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let io = WriteDeadline::new(stream, write_timeout);
                            serve_connection(http, io, app, shutdown).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => {
                            tracing::debug!("TLS handshake not done within http_server.header_read_timeout")
                        }
                    }
                });
            }
        }
    }
}

/// Serves one HTTP/1.1 connection until it ends, or, once `shutdown`,
/// until its request in flight is answered.
async fn serve_connection<S>(
    http: hyper::server::conn::http1::Builder,
    io: WriteDeadline<S>,
    app: WithRemote,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http.serve_connection(TokioIo::new(io), app).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The app as hyper serves it on one connection: each request carries the
/// connection's remote address (axum's [`ConnectInfo`]), for the client
/// problems the transports log. Once per request, never per delivery.
///
/// [`ConnectInfo`]: axum::extract::ConnectInfo
struct WithRemote(TowerToHyperService<Router>, SocketAddr);

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for WithRemote {
    type Response = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
    >>::Response;
    type Error = std::convert::Infallible;
    type Future =
        hyper_util::service::TowerToHyperServiceFuture<Router, hyper::Request<hyper::body::Incoming>>;

    fn call(&self, mut request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.1));
        self.0.call(request)
    }
}

/// Checks a configuration file on its own (the environment is not applied,
/// so the result does not depend on the shell it runs in): parses it,
/// validates it, checks the `[[tcp]]` listeners and `[[watch]]` sources as
/// `crier serve` would before binding and watching, and loads the token
/// keys it names.
///
/// Unknown keys are an error unless `allow_unknown_keys` (or the file's
/// `crier.allow_unknown_keys`) turns them into warnings.
pub fn check_config(path: &Path, allow_unknown_keys: bool) -> Result<Report, ConfigError> {
    let (config, warnings) = Config::check_file(path)?;
    if !allow_unknown_keys {
        crate::config::refuse_unknown_keys(path, &config, &warnings)?;
    }
    transport::tcp::validate(&config)?;
    watch::validate(&config)?;
    // Building the verifier proves the PEM keys load; its key list feeds the
    // summary.
    let verifier = TokenVerifier::from_config(&config)?;
    // The TLS certificate and key load and match, as `serve` needs.
    if config.http_server.tls.enabled {
        crate::node::tls_config(&config.http_server.tls, "http_server.tls")?;
    }
    let summary = summarize(path, &config, &verifier, warnings.len());
    Ok(Report { warnings, summary })
}

fn summarize(path: &Path, config: &Config, verifier: &TokenVerifier, warning_count: usize) -> String {
    let names: Vec<&str> = config
        .channel
        .namespaces
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    let namespaces = if names.is_empty() {
        "no namespaces".to_string()
    } else {
        format!("{} namespace(s): {}", names.len(), names.join(", "))
    };
    let algorithms = |list: Vec<&'static str>| {
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    };
    let api = if config.http_api.disabled {
        "disabled"
    } else if config.http_api.insecure {
        "insecure (no key needed)"
    } else if config.http_api.key.is_empty() {
        "no key set"
    } else {
        "key set"
    };
    let tls = match &config.http_server.tls {
        t if !t.enabled => "off (plain HTTP)".to_owned(),
        t if t.client_ca_pem.is_empty() => "on".to_owned(),
        _ => "on, client certificates required".to_owned(),
    };
    let admin = match &config.admin {
        a if !a.enabled => "off",
        a if a.insecure => "on, insecure (no login)",
        _ => "on, with a password",
    };
    // Passwords in engine URLs are not printed.
    let hide = |url: &String| match url.split_once("://").zip(url.rsplit_once('@')) {
        Some(((scheme, _), (_, host))) => format!("{scheme}://***@{host}"),
        None => url.clone(),
    };
    let engine = match config.engine.kind {
        crate::config::EngineType::Memory => "memory (one node)".to_owned(),
        crate::config::EngineType::Redis => format!(
            "redis at {}",
            config
                .engine
                .redis
                .address
                .iter()
                .map(hide)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        crate::config::EngineType::Nats => format!(
            "nats at {}",
            config
                .engine
                .nats
                .address
                .iter()
                .map(hide)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut transports = vec!["websocket"];
    for (on, name) in [
        (config.uni_websocket.enabled, "uni_websocket"),
        (config.uni_sse.enabled, "uni_sse"),
        (config.uni_http_stream.enabled, "uni_http_stream"),
        (config.http_stream.enabled, "http_stream"),
        (config.sse.enabled, "sse"),
    ] {
        if on {
            transports.push(name);
        }
    }
    let tcp = match config.tcp.len() {
        0 => "none".to_owned(),
        _ => config
            .tcp
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "tcp[{i}] {} ({:?}{})",
                    t.listen,
                    t.framing,
                    if t.tls.enabled { ", tls" } else { "" }
                )
                .to_lowercase()
            })
            .collect::<Vec<_>>()
            .join("; "),
    };
    let watch = match config.watch.len() {
        0 => "none".to_owned(),
        _ => config
            .watch
            .iter()
            .enumerate()
            .map(|(i, w)| format!("watch[{i}] {}", w.path))
            .collect::<Vec<_>>()
            .join("; "),
    };
    let metrics = match &config.prometheus {
        p if !p.enabled => "off".to_owned(),
        p if p.listen.trim().is_empty() => "GET /metrics on the main listener".to_owned(),
        p => format!("GET /metrics on {}", p.listen.trim()),
    };
    format!(
        "{}: OK\n\
         listen: {}\n\
         engine: {engine}\n\
         transports: {}\n\
         tcp listeners: {tcp}\n\
         file sources: {watch}\n\
         metrics: {metrics}\n\
         channels: {namespaces}\n\
         connection tokens: {}\n\
         subscription tokens: {}\n\
         client insecure: {}\n\
         http api: {api}\n\
         tls: {tls}\n\
         admin ui: {admin}\n\
         warnings: {warning_count}",
        path.display(),
        config.http_server.listen_addr(),
        transports.join(", "),
        algorithms(verifier.connect_algorithms()),
        algorithms(verifier.subscribe_algorithms()),
        config.client.insecure,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // A file of this test's own, removed when the process ends is not
    // needed: names are unique per test and live in the temp dir.
    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("crier-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("temp file");
        path
    }

    #[test]
    fn check_config_summarizes_and_warns() {
        let file = temp_file(
            "centrifugo.json",
            r#"{"client": {"token": {"hmac_secret_key": "s"}, "connect_proxy_name": "app"},
                "http_api": {"key": "k"},
                "channel": {"namespaces": [{"name": "chat"}]}}"#,
        );
        let refused = check_config(&file, false).expect_err("client.connect_proxy_name is not implemented");
        let text = refused.to_string();
        assert!(
            text.contains("client.connect_proxy_name: a Centrifugo v6 setting"),
            "{text}"
        );
        assert!(text.contains("--allow-unknown-keys"), "{text}");
        let report = check_config(&file, true).expect("valid");
        assert!(report.summary.contains("OK"), "{}", report.summary);
        assert!(report.summary.contains("chat"), "{}", report.summary);
        assert!(
            report.summary.contains("engine: memory (one node)"),
            "{}",
            report.summary
        );
        assert!(
            report.summary.contains("transports: websocket\n"),
            "{}",
            report.summary
        );
        assert!(
            report.summary.contains("tcp listeners: none"),
            "{}",
            report.summary
        );
        assert!(report.summary.contains("tls: off"), "{}", report.summary);
        // The Redis engine needs the feature (on in the workspace's builds).
        #[cfg(feature = "redis")]
        {
            let busy = temp_file(
                "busy.toml",
                "[engine]\ntype = \"redis\"\n[engine.redis]\naddress = \"redis://:hunter2@127.0.0.1:6379\"\n\
                 [uni_sse]\nenabled = true\n[prometheus]\nenabled = true\n\
                 [[tcp]]\nlisten = \"127.0.0.1:10001\"\nchannels = [\"lines\"]\n",
            );
            let report = check_config(&busy, false).expect("valid");
            for line in [
                "engine: redis at redis://***@127.0.0.1:6379",
                "transports: websocket, uni_sse",
                "tcp listeners: tcp[0] 127.0.0.1:10001 (line)",
                "file sources: none",
                "metrics: GET /metrics on the main listener",
            ] {
                assert!(report.summary.contains(line), "{line}: {}", report.summary);
            }
            assert!(!report.summary.contains("hunter2"), "{}", report.summary);
        }
        assert!(report.summary.contains("HS256"), "{}", report.summary);
        assert_eq!(report.warnings.len(), 1);
        assert_eq!(report.warnings[0].key, "client.connect_proxy_name");
        assert!(report.to_string().contains("warning: client.connect_proxy_name"));

        let bad = temp_file(
            "bad.toml",
            "[client.token]\nrsa_public_key = \"/no/such/key.pem\"\n",
        );
        match check_config(&bad, false) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "client.token.rsa_public_key"),
            other => panic!("expected a key error, got {other:?}"),
        }
    }
}
