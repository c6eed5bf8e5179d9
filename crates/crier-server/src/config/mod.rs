//! Server configuration.
//!
//! Owns the [`Config`] tree, its defaults, loading it from a TOML, JSON or
//! YAML file plus `CRIER_*` environment overrides, validation, and the
//! `crier check-config` report. Key names and nesting follow Centrifugo v6
//! wherever the feature is shared, so a Centrifugo config file mostly works
//! as is; keys crier does not implement become [`Warning`]s, not errors. The
//! only crier-specific settings live under `[crier]`.
//!
//! This module must never open sockets, verify tokens, or read the process
//! environment anywhere but [`Config::load`].

mod duration;
mod env;
mod keys;
mod logs;
mod origins;
mod proxy;
mod source;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use logs::{LogConfig, LogFormat, LogLevel};
pub(crate) use origins::glob_match;
pub use origins::{is_local_origin, OriginPolicy};
pub use proxy::{
    ChannelProxyConfig, ClientProxyConfig, ProxyConfig, ProxyHttpConfig, RpcConfig, RpcNamespace,
    RpcNamespaceOptions, WebhooksConfig, WEBHOOK_EVENTS,
};
pub use source::Format;

/// The whole server configuration. Every field has a default, so an empty
/// file (or no file) is a valid configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the HTTP server (WebSocket, SSE, server API) listens.
    pub http_server: HttpServerConfig,
    /// Real-time client connections: tokens, origins, pings, limits.
    pub client: ClientConfig,
    /// The server HTTP API (`POST /api/<method>`).
    pub http_api: HttpApiConfig,
    /// Channel options and namespaces.
    pub channel: ChannelConfig,
    /// Which engine keeps channels, history and presence.
    pub engine: EngineConfig,
    /// The bidirectional WebSocket transport.
    pub websocket: WebsocketConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Settings Centrifugo does not have.
    pub crier: CrierConfig,
    /// Unidirectional WebSocket, `/connection/uni_websocket` (off by default).
    pub uni_websocket: UniTransportConfig,
    /// Unidirectional Server-Sent Events, `/connection/uni_sse` (off by default).
    pub uni_sse: UniTransportConfig,
    /// Unidirectional HTTP streaming, `/connection/uni_http_stream` (off by default).
    pub uni_http_stream: UniTransportConfig,
    /// Bidirectional emulation over HTTP streaming,
    /// `/connection/http_stream` (off by default); commands arrive at
    /// `/emulation`.
    pub http_stream: UniTransportConfig,
    /// Bidirectional emulation over Server-Sent Events, `/connection/sse`
    /// (off by default); commands arrive at `/emulation`.
    pub sse: UniTransportConfig,
    /// The `/emulation` endpoint, served when `http_stream` or `sse` is on.
    pub emulation: EmulationConfig,
    /// Prometheus metrics.
    pub prometheus: PrometheusConfig,
    /// The health endpoint.
    pub health: HealthConfig,
    /// Plain TCP listeners (crier only): `[[tcp]]`.
    pub tcp: Vec<TcpListenerConfig>,
    /// File sources (crier only): `[[watch]]`.
    pub watch: Vec<WatchConfig>,
    /// Named proxies that namespaces refer to (`*_proxy_name`).
    pub proxies: Vec<ProxyConfig>,
    /// Client RPC: which methods go to which proxy.
    pub rpc: RpcConfig,
    /// The admin web UI and its endpoints (`/admin/*`).
    pub admin: AdminConfig,
    /// How much to log and where (`crier.log_format` says how).
    pub log: LogConfig,
}

/// `admin.*`: Centrifugo v6's keys for the admin web UI. Off unless
/// enabled (`crier serve --dev` turns it on, insecure).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    /// Serve the UI at `<handler_prefix>/` and its endpoints under
    /// `<handler_prefix>/admin/`.
    pub enabled: bool,
    /// The password the login form asks for.
    pub password: Secret,
    /// The key that signs admin session tokens (HMAC-SHA256).
    pub secret: Secret,
    /// No login: anyone who reaches the port may use the UI and the admin
    /// API. Only behind a trusted network (or under `--dev`).
    pub insecure: bool,
    /// Path the UI and its endpoints are served under (empty = the root).
    pub handler_prefix: String,
    /// A directory to serve the web app from instead of the embedded one
    /// (Centrifugo's own admin web app works against crier's endpoints).
    pub web_path: String,
}

/// `emulation.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmulationConfig {
    /// Largest accepted `POST /emulation` body, in bytes.
    pub max_request_body_size: usize,
}

impl Default for EmulationConfig {
    fn default() -> Self {
        Self {
            max_request_body_size: 65_536,
        }
    }
}

/// `uni_websocket.*`, `uni_sse.*`, `uni_http_stream.*`, `http_stream.*`, `sse.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UniTransportConfig {
    /// Serve this transport.
    pub enabled: bool,
    /// Largest accepted connect request (query or body), in bytes.
    pub max_request_body_size: usize,
}

impl Default for UniTransportConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_request_body_size: 65_536,
        }
    }
}

/// `health.*`: Centrifugo v6's keys; crier's default is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthConfig {
    /// Serve `GET <handler_prefix>` (liveness: `{}` while the process
    /// serves) and `GET <handler_prefix>/ready` (crier's own readiness: 503
    /// while the engine's broker does not answer). Centrifugo's default is
    /// off; crier's is on, as `/health` always was.
    pub enabled: bool,
    /// Path of the endpoint.
    pub handler_prefix: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            handler_prefix: "/health".to_string(),
        }
    }
}

/// `prometheus.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrometheusConfig {
    /// Serve `GET /metrics` in the Prometheus text format.
    pub enabled: bool,
    /// crier only: serve metrics on their own listener (`HOST:PORT`)
    /// instead of the main HTTP server; empty = the main server.
    pub listen: String,
}

/// How a TCP connection's byte stream is cut into frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpFraming {
    /// One frame per line (`\n`, a trailing `\r` is dropped).
    #[default]
    Line,
    /// A frame runs from the `start` marker through the `end` marker.
    Delimited,
}

/// How TCP bytes map to text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TcpEncoding {
    /// Bytes are UTF-8 text; invalid UTF-8 is refused.
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// Each byte is one character U+0000–U+00FF, passed through byte-exact.
    #[serde(rename = "latin-1", alias = "latin1", alias = "iso-8859-1")]
    Latin1,
}

/// What a `[[tcp]]` listener does with a publication whose text contains
/// its framing (a start or end marker; a line break in line framing),
/// which would otherwise reach its clients as more than one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpUnsafeData {
    /// Not delivered to this listener's clients (other transports still
    /// get it).
    #[default]
    Drop,
    /// Delivered with every framing byte replaced by `?`.
    Replace,
}

/// One `[[tcp]]` listener (crier only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TcpListenerConfig {
    /// `HOST:PORT` to listen on.
    pub listen: String,
    /// `line` or `delimited`.
    pub framing: TcpFraming,
    /// Start marker for `delimited` framing (e.g. `"<"`).
    pub start: String,
    /// End marker for `delimited` framing (e.g. `">"`).
    pub end: String,
    /// Channels every connection is subscribed to.
    pub channels: Vec<String>,
    /// Channel each received frame is published to; empty = read-only.
    pub publish_to: String,
    /// Whether the sending connection also receives the publication its own
    /// frame caused.
    pub echo: bool,
    /// `utf-8` or `latin-1`.
    pub encoding: TcpEncoding,
    /// Largest frame accepted, in bytes; a longer one closes the connection.
    pub max_frame_size: usize,
    /// Client addresses allowed to connect (IPs); empty = any.
    pub allow: Vec<String>,
    /// Require a connection token (JWT) as the first frame.
    pub token: bool,
    /// `drop` or `replace`: a publication whose text contains the framing.
    pub unsafe_data: TcpUnsafeData,
    /// TLS on this listener (the same keys as `http_server.tls`; read at
    /// start only).
    pub tls: TlsConfig,
}

impl Default for TcpListenerConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            framing: TcpFraming::Line,
            start: String::new(),
            end: String::new(),
            channels: Vec::new(),
            publish_to: String::new(),
            echo: true,
            encoding: TcpEncoding::Utf8,
            max_frame_size: 4096,
            allow: Vec::new(),
            token: false,
            unsafe_data: TcpUnsafeData::Drop,
            tls: TlsConfig::default(),
        }
    }
}

/// One `[[watch]]` file source (crier only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WatchConfig {
    /// Directory (watched recursively) or single file.
    pub path: String,
    /// Which files count, relative to `path` (e.g. `**/*.jsonl`).
    pub glob: String,
    /// Channel for file events (created, modified, removed, renamed);
    /// empty = no events.
    pub channel: String,
    /// Publish each complete line appended to a matching file.
    pub tail: bool,
    /// Channel for tailed lines; `{stem}` and `{name}` are replaced by the
    /// file's stem and name.
    pub tail_channel: String,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            path: String::new(),
            glob: "**/*".to_string(),
            channel: String::new(),
            tail: false,
            tail_channel: String::new(),
        }
    }
}

/// `http_server.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpServerConfig {
    /// Interface to bind. Centrifugo's default is `""` (all interfaces);
    /// crier defaults to loopback so a first run is not exposed. `""` still
    /// means all interfaces.
    pub address: String,
    /// TCP port; `0` picks a free port (useful in tests).
    pub port: u16,
    /// crier's own: longest a write to an HTTP connection (an API answer,
    /// an SSE or HTTP stream) may wait for the peer to take bytes before
    /// the connection is dropped, so a client that stopped reading cannot
    /// pin it for ever. WebSockets have `websocket.write_timeout`.
    #[serde(with = "duration::serde_go")]
    pub write_timeout: Duration,
    /// crier's own: longest a client may take to send a request's line and
    /// headers, counted from when the connection starts waiting for them
    /// (so it also ends an idle keep-alive connection). A client trickling
    /// headers a byte at a time is cut off after it.
    #[serde(with = "duration::serde_go")]
    pub header_read_timeout: Duration,
    /// crier's own: longest a client may take to send a request body (API
    /// calls, uni_sse and uni_http_stream POSTs); answered 408 after it.
    #[serde(with = "duration::serde_go")]
    pub body_read_timeout: Duration,
    /// crier's own: largest request line plus headers, in bytes; a larger
    /// one is answered 431.
    pub max_header_size: usize,
    /// crier's own: largest request body, in bytes (the server API, uni
    /// POSTs); a larger one is answered 413.
    pub max_request_body_size: usize,
    /// crier's own: the kernel send buffer (SO_SNDBUF) of every client
    /// socket, HTTP and `[[tcp]]`, in bytes; bounds what a client that
    /// stops reading pins in kernel memory. 0 leaves the kernel's
    /// autotuning (up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default).
    pub send_buffer_size: usize,
    /// TLS on this listener (WebSocket, SSE, HTTP streams, the API, the
    /// admin UI), Centrifugo v6's keys.
    pub tls: TlsConfig,
}

/// `http_server.tls.*`: Centrifugo v6's TLS keys that a server listener
/// uses. Each PEM key takes a file path or the PEM text itself. The files
/// are read again on SIGHUP (a renewed certificate is used by new
/// connections; open ones keep theirs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// Serve TLS instead of plain TCP.
    pub enabled: bool,
    /// The certificate chain (leaf first): a path or the PEM itself.
    pub cert_pem: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1): a path or the PEM itself.
    pub key_pem: Secret,
    /// When set, clients must present a certificate signed by one of
    /// these CAs (mutual TLS): a path or the PEM itself.
    pub client_ca_pem: String,
}

impl TlsConfig {
    /// `value` as PEM text: itself when it holds a PEM block, otherwise
    /// the file it names.
    pub fn pem(value: &str) -> std::io::Result<Vec<u8>> {
        if value.contains("-----BEGIN") {
            Ok(value.as_bytes().to_vec())
        } else {
            std::fs::read(value)
        }
    }
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".to_string(),
            port: 8000,
            write_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_header_size: 32 * 1024,
            max_request_body_size: 2 * 1024 * 1024,
            send_buffer_size: 256 * 1024,
            tls: TlsConfig::default(),
        }
    }
}

impl HttpServerConfig {
    /// `address:port` ready for a bind call: `""` becomes `0.0.0.0` and IPv6
    /// literals get brackets.
    pub fn listen_addr(&self) -> String {
        let address = self.address.trim();
        if address.is_empty() {
            format!("0.0.0.0:{}", self.port)
        } else if address.contains(':') && !address.starts_with('[') {
            format!("[{address}]:{}", self.port)
        } else {
            format!("{address}:{}", self.port)
        }
    }
}

/// A `listen` value (`[[tcp]].listen`, `prometheus.listen`) ready for a
/// bind call: Go-style `:PORT` means every interface, as in Centrifugo's
/// configurations; anything else is taken as written (`IP:PORT`,
/// `[::1]:PORT`, `host:PORT`).
pub fn listen_addr(listen: &str) -> String {
    let listen = listen.trim();
    match listen.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => listen.to_owned(),
    }
}

/// A secret string (HMAC key, API key). Serialized as a plain string; its
/// `Debug` output is redacted so a logged config never leaks it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

/// `client.token.*`: how connection tokens (and, unless
/// `client.subscription_token.enabled`, subscription tokens) are verified.
/// An empty string means "not configured".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    /// Enables HS256/HS384/HS512.
    pub hmac_secret_key: Secret,
    /// Enables RS256/RS384/RS512: a PEM public key, the PEM base64-encoded,
    /// or a path to a PEM file (the order Centrifugo tries them in).
    pub rsa_public_key: String,
    /// Enables ES256/ES384: PEM, base64 PEM or a file path, as above.
    pub ecdsa_public_key: String,
    /// When set, the token's `aud` must contain this value.
    pub audience: String,
    /// When set, the token's `iss` must equal this value.
    pub issuer: String,
}

impl TokenConfig {
    /// Whether at least one verification key is configured.
    pub fn has_keys(&self) -> bool {
        !self.hmac_secret_key.is_empty()
            || !self.rsa_public_key.trim().is_empty()
            || !self.ecdsa_public_key.trim().is_empty()
    }
}

/// `client.subscription_token.*`: a separate key set for subscription tokens,
/// used only when `enabled` (Centrifugo v6 semantics); otherwise subscription
/// tokens are checked with `client.token`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscriptionTokenConfig {
    /// Use this section instead of `client.token` for subscription tokens.
    pub enabled: bool,
    /// As `client.token.hmac_secret_key`.
    pub hmac_secret_key: Secret,
    /// As `client.token.rsa_public_key`.
    pub rsa_public_key: String,
    /// As `client.token.ecdsa_public_key`.
    pub ecdsa_public_key: String,
    /// As `client.token.audience`.
    pub audience: String,
    /// As `client.token.issuer`.
    pub issuer: String,
}

impl SubscriptionTokenConfig {
    /// The key set this section describes, in `client.token`'s shape.
    pub fn as_token_config(&self) -> TokenConfig {
        TokenConfig {
            hmac_secret_key: self.hmac_secret_key.clone(),
            rsa_public_key: self.rsa_public_key.clone(),
            ecdsa_public_key: self.ecdsa_public_key.clone(),
            audience: self.audience.clone(),
            issuer: self.issuer.clone(),
        }
    }
}

/// `client.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// Connection token verification.
    pub token: TokenConfig,
    /// Optional separate subscription token verification.
    pub subscription_token: SubscriptionTokenConfig,
    /// Development only: connect without a token, and every channel
    /// operation is allowed (except subscribing to `$` private channels
    /// without a token, as in Centrifugo).
    pub insecure: bool,
    /// Accept connections without a token as anonymous (empty user).
    pub allow_anonymous_connect_without_token: bool,
    /// Refuse valid connection tokens whose `sub` is empty.
    pub disallow_anonymous_connection_tokens: bool,
    /// Origin patterns for browser connections; see [`OriginPolicy`].
    pub allowed_origins: Vec<String>,
    /// How often the server pings (sent to clients in the connect reply).
    #[serde(with = "duration::serde_go")]
    pub ping_interval: Duration,
    /// How long the server waits for a pong before disconnecting (3012).
    #[serde(with = "duration::serde_go")]
    pub pong_timeout: Duration,
    /// How long an expired connection may stay before it is closed (3005),
    /// giving the client time to refresh its token.
    #[serde(with = "duration::serde_go")]
    pub expired_close_delay: Duration,
    /// As `expired_close_delay`, for subscriptions made with an expiring
    /// subscription token: not refreshed in time, the subscription ends
    /// with an `unsubscribe` push, code 2501.
    #[serde(with = "duration::serde_go")]
    pub expired_sub_close_delay: Duration,
    /// How long a transport may stay open without a connect command (3502).
    #[serde(with = "duration::serde_go")]
    pub stale_close_delay: Duration,
    /// Maximum subscriptions per connection: a client subscribe beyond it
    /// gets error 106; a connection token with more server-side
    /// subscriptions is refused with disconnect 3505.
    pub channel_limit: usize,
    /// Maximum connections per node; 0 = unlimited.
    pub connection_limit: usize,
    /// Maximum connections per user per node; 0 = unlimited.
    pub user_connection_limit: usize,
    /// New connections admitted per second on this node (every transport;
    /// a burst of one second's worth); past it a connect is refused with
    /// 3013 and the client reconnects with backoff. 0 = unlimited.
    pub connection_rate_limit: u32,
    /// crier's own: commands one connection may send per second (a burst
    /// of one second's worth); past it a command gets error 111 (too many
    /// requests, temporary). 0 = unlimited.
    pub command_rate_limit: u32,
    /// crier's own: commands one WebSocket frame may carry; a frame with
    /// more closes the connection with 3501. 0 = unlimited.
    pub max_commands_per_frame: usize,
    /// Bytes queued for one slow client before it is disconnected (3008).
    pub queue_max_size: usize,
    /// Cap on `limit` in a client history request.
    pub history_max_publication_limit: usize,
    /// Cap on publications replayed by one recovery.
    pub recovery_max_publication_limit: usize,
    /// Proxies asked about connections (`client.proxy.connect`).
    pub proxy: ClientProxyConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            token: TokenConfig::default(),
            subscription_token: SubscriptionTokenConfig::default(),
            insecure: false,
            allow_anonymous_connect_without_token: false,
            disallow_anonymous_connection_tokens: false,
            allowed_origins: Vec::new(),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(8),
            expired_close_delay: Duration::from_secs(25),
            expired_sub_close_delay: Duration::from_secs(25),
            stale_close_delay: Duration::from_secs(10),
            channel_limit: 128,
            connection_limit: 0,
            user_connection_limit: 0,
            connection_rate_limit: 0,
            command_rate_limit: 0,
            max_commands_per_frame: 1024,
            queue_max_size: 1_048_576,
            history_max_publication_limit: 300,
            recovery_max_publication_limit: 300,
            proxy: ClientProxyConfig::default(),
        }
    }
}

impl ClientConfig {
    /// The compiled `allowed_origins` check.
    pub fn origin_policy(&self) -> OriginPolicy {
        OriginPolicy::new(&self.allowed_origins)
    }

    /// The key set subscription tokens are verified with.
    pub fn effective_subscription_token(&self) -> TokenConfig {
        if self.subscription_token.enabled {
            self.subscription_token.as_token_config()
        } else {
            self.token.clone()
        }
    }
}

/// `http_api.error_mode`: how API errors reach HTTP callers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApiErrorMode {
    /// `""`: HTTP 200 with `{"error": {"code", "message"}}`.
    #[default]
    Default,
    /// `"transport"`: errors mapped onto HTTP statuses.
    Transport,
}

impl Serialize for ApiErrorMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            ApiErrorMode::Default => "",
            ApiErrorMode::Transport => "transport",
        })
    }
}

impl<'de> Deserialize<'de> for ApiErrorMode {
    // By hand, so the error names the empty-string mode legibly.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mode = String::deserialize(d)?;
        match mode.as_str() {
            "" => Ok(ApiErrorMode::Default),
            "transport" => Ok(ApiErrorMode::Transport),
            other => Err(serde::de::Error::custom(format!(
                "unknown error_mode {other:?}; use \"\" (errors in the body) or \"transport\" (HTTP statuses)"
            ))),
        }
    }
}

/// `http_api.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpApiConfig {
    /// Turn the HTTP API off.
    pub disabled: bool,
    /// Path prefix of the API endpoints.
    pub handler_prefix: String,
    /// The API key (`X-API-Key: KEY` or `Authorization: apikey KEY`).
    pub key: Secret,
    /// Accept API requests without a key (firewalled setups only).
    pub insecure: bool,
    /// See [`ApiErrorMode`].
    pub error_mode: ApiErrorMode,
}

impl Default for HttpApiConfig {
    fn default() -> Self {
        Self {
            disabled: false,
            handler_prefix: "/api".to_string(),
            key: Secret::default(),
            insecure: false,
            error_mode: ApiErrorMode::Default,
        }
    }
}

/// Generates [`ChannelOptions`] and the on-disk shape of a namespace (the
/// same fields plus `name`) from one field list, so the two cannot drift.
/// A namespace is not `#[serde(flatten)]`ed because flatten would hide
/// unknown keys and error positions inside namespaces.
macro_rules! channel_options {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty $(=> $with:literal)? ),* $(,)?) => {
        /// Options for a group of channels (`channel.without_namespace`, or
        /// one entry of `channel.namespaces`). There is no inheritance: a
        /// namespace starts from these defaults, not from the top level.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct ChannelOptions {
            $( $(#[$doc])* $(#[serde(with = $with)])? pub $field: $ty, )*
        }

        /// A namespace as written in a file: `name` next to the options.
        #[derive(Clone, Default, Serialize, Deserialize)]
        #[serde(default)]
        struct NamespaceWire {
            name: String,
            $( $(#[serde(with = $with)])? $field: $ty, )*
        }

        impl From<NamespaceWire> for Namespace {
            fn from(w: NamespaceWire) -> Self {
                Namespace { name: w.name, options: ChannelOptions { $( $field: w.$field, )* } }
            }
        }

        impl From<Namespace> for NamespaceWire {
            fn from(n: Namespace) -> Self {
                NamespaceWire { name: n.name, $( $field: n.options.$field, )* }
            }
        }
    };
}

channel_options! {
    /// Keep online presence for channels.
    presence: bool,
    /// Emit join/leave events.
    join_leave: bool,
    /// Deliver join/leave to every subscriber without asking.
    force_push_join_leave: bool,
    /// Publications kept per channel; 0 = no history.
    history_size: usize,
    /// How long history is kept (whole seconds); 0 = no history.
    history_ttl: Duration => "duration::serde_go",
    /// Every subscription is positioned.
    force_positioning: bool,
    /// Clients may ask for positioning.
    allow_positioning: bool,
    /// Every subscription is recoverable (needs history).
    force_recovery: bool,
    /// Clients may ask for recovery.
    allow_recovery: bool,
    /// Any authenticated connection may subscribe without a token.
    allow_subscribe_for_client: bool,
    /// Extends `allow_subscribe_for_client` to anonymous connections.
    allow_subscribe_for_anonymous: bool,
    /// Subscribers may publish.
    allow_publish_for_subscriber: bool,
    /// Any authenticated connection may publish.
    allow_publish_for_client: bool,
    /// Extends the publish permissions above to anonymous connections.
    allow_publish_for_anonymous: bool,
    /// Subscribers may read history.
    allow_history_for_subscriber: bool,
    /// Any authenticated connection may read history.
    allow_history_for_client: bool,
    /// Extends the history permissions above to anonymous connections.
    allow_history_for_anonymous: bool,
    /// Subscribers may read presence.
    allow_presence_for_subscriber: bool,
    /// Any authenticated connection may read presence.
    allow_presence_for_client: bool,
    /// Extends the presence permissions above to anonymous connections.
    allow_presence_for_anonymous: bool,
    /// Client subscriptions are asked of the subscribe proxy (not those
    /// with a subscription token, nor server-side ones).
    subscribe_proxy_enabled: bool,
    /// A named proxy of `proxies[]` instead of `channel.proxy.subscribe`.
    subscribe_proxy_name: String,
    /// Client publications are asked of the publish proxy, which may
    /// change their data.
    publish_proxy_enabled: bool,
    /// A named proxy of `proxies[]` instead of `channel.proxy.publish`.
    publish_proxy_name: String,
    /// Subscriptions with an expiry are prolonged (or ended) by the
    /// sub_refresh proxy instead of the client's new token.
    sub_refresh_proxy_enabled: bool,
    /// A named proxy of `proxies[]` instead of `channel.proxy.sub_refresh`.
    sub_refresh_proxy_name: String,
}

impl ChannelOptions {
    /// History is on only when both size and TTL are set.
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }
}

/// One entry of `channel.namespaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "NamespaceWire", into = "NamespaceWire")]
pub struct Namespace {
    /// Unique, `^[-a-zA-Z0-9_]{2,}$`.
    pub name: String,
    /// The options of channels named `<name><boundary>...`.
    pub options: ChannelOptions,
}

/// `channel.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelConfig {
    /// Options for channels without a namespace.
    pub without_namespace: ChannelOptions,
    /// Named option sets.
    pub namespaces: Vec<Namespace>,
    /// Longest accepted channel name, in bytes.
    pub max_length: usize,
    /// Channels starting with this need a subscription token; `""` disables.
    pub private_prefix: String,
    /// Separates the namespace from the rest of a channel name.
    pub namespace_boundary: String,
    /// The default subscribe and publish proxies.
    pub proxy: ChannelProxyConfig,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            without_namespace: ChannelOptions::default(),
            namespaces: Vec::new(),
            max_length: 255,
            private_prefix: "$".to_string(),
            namespace_boundary: ":".to_string(),
            proxy: ChannelProxyConfig::default(),
        }
    }
}

impl ChannelConfig {
    /// The namespace part of `channel`: the text before the first boundary,
    /// after stripping the private prefix (so `$chat:room` is in `chat`).
    /// `None` for channels without a namespace.
    /// Asks crier-core's resolver, which the hub uses too.
    pub fn namespace_of<'c>(&self, channel: &'c str) -> Option<&'c str> {
        crier_core::ChannelNames::split(channel, &self.namespace_boundary, &self.private_prefix)
    }

    /// The resolver with these rules, for the hub.
    pub fn names(&self) -> crier_core::ChannelNames {
        crier_core::ChannelNames::new(&self.namespace_boundary, &self.private_prefix)
    }

    /// The options that apply to `channel`, or `None` when it names a
    /// namespace that is not configured (protocol error 102 unknown channel).
    pub fn options_for(&self, channel: &str) -> Option<&ChannelOptions> {
        match self.namespace_of(channel) {
            None => Some(&self.without_namespace),
            Some(ns) => self.namespaces.iter().find(|n| n.name == ns).map(|n| &n.options),
        }
    }

    /// Whether `channel` is private (starts with `channel.private_prefix`).
    pub fn is_private(&self, channel: &str) -> bool {
        crier_core::ChannelNames::private(channel, &self.private_prefix)
    }
}

/// `engine.type`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineType {
    /// In-process: one node.
    #[default]
    Memory,
    /// Redis (feature `redis`): several nodes share channels, offsets,
    /// history and presence through `engine.redis`.
    Redis,
    /// NATS with JetStream (feature `nats`): several nodes share channels,
    /// offsets, history and presence through `engine.nats`.
    Nats,
}

impl EngineType {
    /// The name as written in `engine.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineType::Memory => "memory",
            EngineType::Redis => "redis",
            EngineType::Nats => "nats",
        }
    }
}

/// `engine.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// See [`EngineType`].
    #[serde(rename = "type")]
    pub kind: EngineType,
    /// `engine.memory.*`, used when `type = "memory"`.
    pub memory: MemoryEngineConfig,
    /// `engine.redis.*`, used when `type = "redis"`.
    pub redis: RedisEngineConfig,
    /// `engine.nats.*`, used when `type = "nats"`.
    pub nats: NatsEngineConfig,
}

/// `engine.memory.*` (crier's own: Centrifugo's memory engine has no bound)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryEngineConfig {
    /// Bytes all channels' history may hold together on this node
    /// (payloads plus a fixed overhead per publication and per channel);
    /// past it, the channels published to least recently lose their
    /// history (`crier_history_evicted_streams_total`). 0 = no limit.
    pub history_max_bytes: usize,
}

impl Default for MemoryEngineConfig {
    fn default() -> Self {
        Self {
            history_max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// `engine.nats.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsEngineConfig {
    /// Servers of one NATS system (`nats://[user:password@]host:port` or
    /// `host:port`); one string, a comma list or a list. The client
    /// connects to one and fails over to the others; JetStream must be
    /// enabled on them.
    #[serde(deserialize_with = "one_or_many")]
    pub address: Vec<String>,
    /// Prefix of every subject, stream and consumer crier uses (letters,
    /// digits, `-` and `_`).
    pub prefix: String,
    /// How long a client stays in presence after its node last refreshed
    /// it: a crashed node's clients vanish from presence within this.
    #[serde(with = "duration::serde_go")]
    pub presence_ttl: Duration,
    /// How long a channel's offset and epoch live after its last
    /// publication (the history stream's `max_age`; then its stream starts
    /// a new epoch).
    #[serde(with = "duration::serde_go")]
    pub history_meta_ttl: Duration,
    /// Bound on opening a connection to NATS.
    #[serde(with = "duration::serde_go")]
    pub connect_timeout: Duration,
    /// Bound on one request's round trip: past it the request fails with a
    /// temporary error (API code 100).
    #[serde(with = "duration::serde_go")]
    pub io_timeout: Duration,
    /// Replicas of crier's JetStream streams (1 on a single server; 3 on a
    /// JetStream cluster to survive a server's loss).
    pub replicas: usize,
}

impl Default for NatsEngineConfig {
    fn default() -> Self {
        Self {
            address: vec!["nats://127.0.0.1:4222".into()],
            prefix: "crier".into(),
            presence_ttl: Duration::from_secs(60),
            history_meta_ttl: Duration::from_secs(90 * 24 * 3600),
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(4),
            replicas: 1,
        }
    }
}

/// `engine.redis.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisEngineConfig {
    /// One address per Redis shard (`redis://[user:password@]host:port[/db]`
    /// or `host:port`); one string or a list. Channels are spread over the
    /// shards by a consistent hash of their name; every node must list the
    /// same shards in the same order.
    #[serde(deserialize_with = "one_or_many")]
    pub address: Vec<String>,
    /// Prefix of every Redis key and pub/sub channel crier uses.
    pub prefix: String,
    /// How long a client stays in presence after its node last refreshed
    /// it: a crashed node's clients vanish from presence within this.
    #[serde(with = "duration::serde_go")]
    pub presence_ttl: Duration,
    /// How long a channel's offset and epoch live after its last
    /// publication or subscription (then its stream starts a new epoch).
    #[serde(with = "duration::serde_go")]
    pub history_meta_ttl: Duration,
    /// Bound on opening a connection to Redis.
    #[serde(with = "duration::serde_go")]
    pub connect_timeout: Duration,
    /// Bound on one command's round trip: past it the command fails with a
    /// temporary error (API code 100).
    #[serde(with = "duration::serde_go")]
    pub io_timeout: Duration,
}

impl Default for RedisEngineConfig {
    fn default() -> Self {
        Self {
            address: vec!["redis://127.0.0.1:6379".into()],
            prefix: "crier".into(),
            presence_ttl: Duration::from_secs(60),
            history_meta_ttl: Duration::from_secs(90 * 24 * 3600),
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(4),
        }
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

/// `websocket.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebsocketConfig {
    /// Largest accepted incoming WebSocket message, in bytes.
    pub message_size_limit: usize,
    /// Longest one frame may take to go out; a client that stops reading is
    /// disconnected then instead of pinning its socket buffers for ever.
    /// Longer than Centrifugo's 1 s on purpose: the per-client queue limit
    /// is what drops slow clients (3008); this only frees a socket whose
    /// reader is gone.
    #[serde(with = "duration::serde_go")]
    pub write_timeout: Duration,
    /// permessage-deflate (RFC 7692) for clients that offer it, on both
    /// WebSocket endpoints; negotiated without context takeover.
    pub compression: bool,
    /// Messages shorter than this many bytes go out uncompressed.
    pub compression_min_size: usize,
    /// 1 (fastest) to 9 (smallest).
    pub compression_level: u32,
}

impl Default for WebsocketConfig {
    fn default() -> Self {
        Self {
            message_size_limit: 65_536,
            write_timeout: Duration::from_secs(10),
            compression: false,
            compression_min_size: 0,
            compression_level: 1,
        }
    }
}

/// `shutdown.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShutdownConfig {
    /// Longest a graceful shutdown waits for connections to close.
    #[serde(with = "duration::serde_go")]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
        }
    }
}

/// `crier.*`: settings Centrifugo does not have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CrierConfig {
    /// Development mode (`crier serve --dev`): anonymous connections are
    /// accepted and the server API needs no key. `crier serve --dev` also
    /// turns on `client.insecure` and `http_api.insecure`.
    pub dev: bool,
    /// Messages queued for one client before it counts as slow (3008), on
    /// top of the byte cap `client.queue_max_size`; 0 = no count cap.
    pub client_queue_max_messages: usize,
    /// Unknown keys in the file are warnings instead of errors (as
    /// `crier serve --allow-unknown-keys`).
    pub allow_unknown_keys: bool,
    /// Lifecycle events POSTed to the backend.
    pub webhooks: WebhooksConfig,
    /// Log lines as text (default) or as JSON objects, one per line.
    pub log_format: LogFormat,
}

impl Default for CrierConfig {
    fn default() -> Self {
        Self {
            dev: false,
            client_queue_max_messages: 4096,
            allow_unknown_keys: false,
            webhooks: WebhooksConfig::default(),
            log_format: LogFormat::default(),
        }
    }
}

/// Something the user should know about but that does not stop the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What kind of warning.
    pub kind: WarningKind,
    /// The key path (`client.foo`) or environment variable it is about.
    pub key: String,
    /// Human explanation.
    pub message: String,
}

/// Kinds of [`Warning`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// A key in the file that crier does not know (often a Centrifugo
    /// feature crier does not implement); it is ignored.
    UnknownKey,
    /// A `CRIER_*` variable that names no key; it is ignored.
    UnknownEnvVar,
    /// A valid but probably unintended setting.
    Advice,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A configuration that failed to load. Every variant names the key path;
/// file errors also carry the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The extension is not .toml, .json, .yaml or .yml.
    #[error("{}: unknown config format; use a .toml, .json, .yaml or .yml file", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file is malformed or a value has the wrong type.
    #[error("{}{}: {}{message}", file, position(*line, *column), key_prefix(key))]
    Parse {
        /// The file name as given.
        file: String,
        /// Key path such as `channel.namespaces[0].history_ttl`; empty when
        /// the error is not inside a key (a syntax error at top level).
        key: String,
        /// 1-based line, when the format reports it.
        line: Option<usize>,
        /// 1-based column, when the format reports it.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// An environment variable has a value its key cannot take.
    #[error("environment variable {var} (key {key}): {message}")]
    Env {
        /// The variable.
        var: String,
        /// The key it sets.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Keys crier does not know, refused (`--allow-unknown-keys` turns
    /// them into warnings).
    #[error("{}", unknown_keys(file, keys))]
    UnknownKeys {
        /// The file.
        file: String,
        /// Each key, the line it is on when found, and what it most likely is.
        keys: Vec<(String, Option<usize>, String)>,
    },
    /// The values parse but do not make sense together.
    #[error("{key}: {message}")]
    Invalid {
        /// The key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

fn unknown_keys(file: &str, keys: &[(String, Option<usize>, String)]) -> String {
    let lines: Vec<String> = keys
        .iter()
        .map(|(key, line, why)| {
            let at = line.map_or(String::new(), |l| format!(":{l}"));
            format!("{file}{at}: {key}: {why}")
        })
        .collect();
    format!(
        "{}\n(unknown keys are errors; `crier serve --allow-unknown-keys` or `crier.allow_unknown_keys = true` ignores them with a warning)",
        lines.join("\n")
    )
}

/// Refuses the unknown keys among `warnings` (read from the file at
/// `path`) unless the configuration allows them: each with its line and
/// what it most likely is.
pub fn refuse_unknown_keys(path: &Path, config: &Config, warnings: &[Warning]) -> Result<(), ConfigError> {
    if config.crier.allow_unknown_keys {
        return Ok(());
    }
    let mut unknown = warnings
        .iter()
        .filter(|w| w.kind == WarningKind::UnknownKey)
        .peekable();
    if unknown.peek().is_none() {
        return Ok(());
    }
    // Read again only to say where each key is.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let keys = unknown
        .map(|w| (w.key.clone(), line_of(&text, &w.key), w.message.clone()))
        .collect();
    Err(ConfigError::UnknownKeys {
        file: path.display().to_string(),
        keys,
    })
}

/// The first line that sets `key`'s last segment (`name =`, `name:`,
/// `"name":`), 1-based; a best effort, as the parsers do not report where
/// an ignored key was.
fn line_of(text: &str, key: &str) -> Option<usize> {
    // A TOML table of its own: `[http_server.tls]`.
    let header = format!("[{key}]");
    if let Some(i) = text.lines().position(|l| l.trim() == header) {
        return Some(i + 1);
    }
    let last = key.rsplit('.').next()?.split('[').next()?;
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches('"').trim_start_matches('[');
            l.strip_prefix(last).is_some_and(|rest| {
                let rest = rest.trim_start_matches(['"', ']']).trim_start();
                rest.is_empty() || rest.starts_with('=') || rest.starts_with(':')
            })
        })
        .map(|i| i + 1)
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A loaded, validated configuration and what the user should be told about it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The configuration to run with.
    pub config: Config,
    /// Unknown keys, unknown `CRIER_*` variables and advice.
    pub warnings: Vec<Warning>,
}

/// The environment variable prefix: `CRIER_HTTP_SERVER_PORT` sets
/// `http_server.port`.
pub const ENV_PREFIX: &str = "CRIER_";

impl Config {
    /// Loads `path` (or the defaults when `None`), applies `CRIER_*`
    /// variables from the process environment, and validates.
    pub fn load(path: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Reads and validates the file at `path` on its own: no environment,
    /// so the result does not depend on the shell (`crier check-config`).
    pub fn check_file(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
        let (config, mut warnings) = source::read_file(path)?;
        warnings.extend(config.validate()?);
        Ok((config, warnings))
    }

    /// As [`Config::load`], with the environment given explicitly so callers
    /// (and tests) decide what it contains.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<LoadedConfig, ConfigError> {
        let (config, mut warnings) = match path {
            Some(path) => source::read_file(path)?,
            None => (Config::default(), Vec::new()),
        };
        let (config, env_warnings) = env::apply(config, env)?;
        warnings.extend(env_warnings);
        warnings.extend(config.validate()?);
        Ok(LoadedConfig { config, warnings })
    }

    /// Parses configuration text in `format` (no environment, no
    /// validation). `file` only names the source in error messages.
    pub fn parse_str(text: &str, format: Format, file: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
        source::parse_str(text, format, file)
    }

    /// Checks that the values make sense together. Returns advice worth
    /// showing; fails on the first real problem, naming its key.
    pub fn validate(&self) -> Result<Vec<Warning>, ConfigError> {
        let mut advice = Vec::new();
        let mut advise = |key: &str, message: &str| {
            advice.push(Warning {
                kind: WarningKind::Advice,
                key: key.to_string(),
                message: message.to_string(),
            })
        };

        match self.engine.kind {
            EngineType::Memory => {}
            EngineType::Redis if !cfg!(feature = "redis") => {
                return Err(invalid(
                    "engine.type",
                    "this crier was built without the \"redis\" cargo feature",
                ))
            }
            EngineType::Redis => {
                let r = &self.engine.redis;
                if r.address.is_empty() || r.address.iter().any(|a| a.trim().is_empty()) {
                    return Err(invalid(
                        "engine.redis.address",
                        "must name at least one Redis server",
                    ));
                }
                if r.prefix.is_empty() || r.prefix.contains(['{', '}']) {
                    return Err(invalid(
                        "engine.redis.prefix",
                        "must be non-empty and without braces",
                    ));
                }
                if r.presence_ttl < Duration::from_secs(1) {
                    return Err(invalid("engine.redis.presence_ttl", "must be at least 1s"));
                }
                if r.connect_timeout.is_zero() || r.io_timeout.is_zero() {
                    return Err(invalid("engine.redis.io_timeout", "timeouts must be above zero"));
                }
            }
            EngineType::Nats if !cfg!(feature = "nats") => {
                return Err(invalid(
                    "engine.type",
                    "this crier was built without the \"nats\" cargo feature",
                ))
            }
            EngineType::Nats => {
                let n = &self.engine.nats;
                if n.address.is_empty() || n.address.iter().any(|a| a.trim().is_empty()) {
                    return Err(invalid(
                        "engine.nats.address",
                        "must name at least one NATS server",
                    ));
                }
                if n.prefix.is_empty()
                    || !n
                        .prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(invalid(
                        "engine.nats.prefix",
                        "must be non-empty: letters, digits, '-' and '_' only",
                    ));
                }
                if n.presence_ttl < Duration::from_secs(1) {
                    return Err(invalid("engine.nats.presence_ttl", "must be at least 1s"));
                }
                if n.history_meta_ttl < Duration::from_secs(1) {
                    return Err(invalid("engine.nats.history_meta_ttl", "must be at least 1s"));
                }
                if n.connect_timeout.is_zero() || n.io_timeout.is_zero() {
                    return Err(invalid("engine.nats.io_timeout", "timeouts must be above zero"));
                }
                if !(1..=5).contains(&n.replicas) {
                    return Err(invalid("engine.nats.replicas", "must be between 1 and 5"));
                }
            }
        }

        let client = &self.client;
        if client.ping_interval.is_zero() {
            return Err(invalid("client.ping_interval", "must be greater than 0"));
        }
        if client.pong_timeout.is_zero() || client.pong_timeout >= client.ping_interval {
            return Err(invalid(
                "client.pong_timeout",
                format!(
                    "must be greater than 0 and less than client.ping_interval ({})",
                    duration::format(client.ping_interval)
                ),
            ));
        }
        if client.stale_close_delay.is_zero() {
            return Err(invalid("client.stale_close_delay", "must be greater than 0"));
        }
        if client.channel_limit == 0 {
            return Err(invalid("client.channel_limit", "must be greater than 0"));
        }
        if client.queue_max_size == 0 {
            return Err(invalid("client.queue_max_size", "must be greater than 0"));
        }
        if self.websocket.message_size_limit == 0 {
            return Err(invalid("websocket.message_size_limit", "must be greater than 0"));
        }
        if self.http_server.write_timeout.is_zero() {
            return Err(invalid("http_server.write_timeout", "must be greater than 0"));
        }
        if self.health.enabled && !self.health.handler_prefix.starts_with('/') {
            return Err(invalid("health.handler_prefix", "must start with /"));
        }
        let tls = &self.http_server.tls;
        if tls.enabled {
            if tls.cert_pem.is_empty() || tls.key_pem.is_empty() {
                return Err(invalid(
                    "http_server.tls",
                    "enabled needs cert_pem and key_pem (a file path or the PEM itself)",
                ));
            }
            for (key, value) in [
                ("http_server.tls.cert_pem", tls.cert_pem.as_str()),
                ("http_server.tls.key_pem", tls.key_pem.expose()),
                ("http_server.tls.client_ca_pem", tls.client_ca_pem.as_str()),
            ] {
                if !value.is_empty() {
                    if let Err(e) = TlsConfig::pem(value) {
                        return Err(invalid(key, format!("cannot read {value}: {e}")));
                    }
                }
            }
        }
        let admin = &self.admin;
        if admin.enabled {
            if !admin.handler_prefix.is_empty() && !admin.handler_prefix.starts_with('/') {
                return Err(invalid("admin.handler_prefix", "must be empty or start with /"));
            }
            if !admin.insecure && (admin.password.is_empty() || admin.secret.is_empty()) {
                return Err(invalid(
                    "admin",
                    "admin.password and admin.secret must both be set (or admin.insecure = true, only on a trusted network)",
                ));
            }
            if !admin.web_path.is_empty() && !Path::new(&admin.web_path).is_dir() {
                return Err(invalid("admin.web_path", "must be a directory"));
            }
            if admin.insecure {
                advise(
                    "admin.insecure",
                    "the admin UI and API are open to anyone who reaches the port; never use it in production",
                );
            }
        }
        if self.http_server.header_read_timeout.is_zero() {
            return Err(invalid(
                "http_server.header_read_timeout",
                "must be greater than 0",
            ));
        }
        if self.http_server.body_read_timeout.is_zero() {
            return Err(invalid("http_server.body_read_timeout", "must be greater than 0"));
        }
        if self.http_server.max_header_size < 4096 {
            return Err(invalid(
                "http_server.max_header_size",
                "must be at least 4096 bytes",
            ));
        }
        if self.http_server.max_request_body_size == 0 {
            return Err(invalid(
                "http_server.max_request_body_size",
                "must be greater than 0",
            ));
        }
        proxy::validate(self)?;
        proxy::validate_webhooks(&self.crier.webhooks)?;
        if !(1..=9).contains(&self.websocket.compression_level) {
            return Err(invalid(
                "websocket.compression_level",
                "must be from 1 (fastest) to 9 (smallest)",
            ));
        }
        if self.websocket.write_timeout.is_zero() {
            return Err(invalid("websocket.write_timeout", "must be greater than 0"));
        }
        if client.insecure {
            advise(
                "client.insecure",
                "insecure mode: clients connect without tokens and may do anything in any channel; never use it in production",
            );
        } else if !client.token.has_keys() && !client.allow_anonymous_connect_without_token {
            advise(
                "client.token",
                "no hmac_secret_key, rsa_public_key or ecdsa_public_key is set, so no client can connect",
            );
        }
        if client.subscription_token.enabled && !client.subscription_token.as_token_config().has_keys() {
            advise(
                "client.subscription_token",
                "enabled without any key, so every subscription token will be refused",
            );
        }

        let api = &self.http_api;
        if !api.handler_prefix.is_empty() && !api.handler_prefix.starts_with('/') {
            return Err(invalid("http_api.handler_prefix", "must start with \"/\""));
        }
        if !api.disabled && !api.insecure && api.key.is_empty() {
            advise(
                "http_api.key",
                "no API key and http_api.insecure is off, so every API request will get HTTP 401",
            );
        }

        let channel = &self.channel;
        if channel.max_length == 0 {
            return Err(invalid("channel.max_length", "must be greater than 0"));
        }
        if channel.namespace_boundary.is_empty() {
            return Err(invalid("channel.namespace_boundary", "must not be empty"));
        }
        validate_channel_options("channel.without_namespace", &channel.without_namespace)?;
        for (i, ns) in channel.namespaces.iter().enumerate() {
            let key = format!("channel.namespaces[{i}]");
            if !valid_namespace_name(&ns.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!(
                        "invalid namespace name {:?}: it must match ^[-a-zA-Z0-9_]{{2,}}$",
                        ns.name
                    ),
                ));
            }
            if channel.namespaces[..i].iter().any(|n| n.name == ns.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("namespace name {:?} is used twice; names must be unique", ns.name),
                ));
            }
            validate_channel_options(&key, &ns.options)?;
        }
        Ok(advice)
    }
}

/// `^[-a-zA-Z0-9_]{2,}$`, as documented by Centrifugo.
fn valid_namespace_name(name: &str) -> bool {
    name.len() >= 2
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn validate_channel_options(key: &str, o: &ChannelOptions) -> Result<(), ConfigError> {
    if o.history_ttl.subsec_nanos() != 0 {
        return Err(invalid(
            format!("{key}.history_ttl"),
            format!(
                "{} has sub-second precision; history_ttl takes whole seconds",
                duration::format(o.history_ttl)
            ),
        ));
    }
    if (o.history_size > 0) == o.history_ttl.is_zero() {
        return Err(invalid(
            key,
            "history needs both history_size and history_ttl (set both, or neither)",
        ));
    }
    if o.force_recovery && !o.history_enabled() {
        return Err(invalid(
            format!("{key}.force_recovery"),
            "recovery needs history: set history_size and history_ttl",
        ));
    }
    Ok(())
}

/// What `crier check-config FILE` prints.
#[derive(Debug, Clone)]
pub struct Report {
    /// Unknown keys and advice.
    pub warnings: Vec<Warning>,
    /// A few lines describing what the server would run with.
    pub summary: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)?;
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
