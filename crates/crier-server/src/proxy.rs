//! The application's backend asked over HTTP (Centrifugo's proxy protocol,
//! JSON): whether a client without a token may connect and as whom, whether
//! a subscription or a client publication is allowed (and with what data),
//! and what a client RPC returns. Each proxy is a pooled keep-alive
//! HTTP/1.1 client with a timeout, a bound on calls in flight, and a bound
//! on the answer's size; every call is counted by result and timed.
//!
//! [`Proxies`] is one implementation of [`crier_core::Hooks`]: it maps
//! each hook's request onto the proxy's JSON body and the backend's answer
//! (or how the call failed) onto a [`Decision`]; the session and the
//! admission path ask the node's hooks and never see HTTP or JSON.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crier_core::{
    Caller, ConnectAnswer, ConnectRequest, Decision, Hook, Hooks, Pending, PublishAnswer, PublishRequest,
    RefreshAnswer, RefreshRequest, RpcAnswer, RpcRequest, ServerSubscription, SubscribeAnswer,
    SubscribeRequest,
};

use crate::config::{ChannelConfig, ChannelOptions, Config, ConfigError, ProxyConfig};
use crate::metrics::Metrics;
use crate::net::client::{http_client, HttpClient};

/// Largest answer a backend may send; past it the call fails ("invalid").
pub(crate) const MAX_ANSWER: usize = 1 << 20;

/// How a call failed, when the backend did not answer as the protocol says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No answer within the proxy's `timeout`.
    Timeout,
    /// The backend could not be reached (refused, reset).
    Unavailable,
    /// The backend answered with a status other than 200.
    Status(u16),
    /// The answer is not the JSON the protocol expects, or too large.
    Invalid,
    /// `max_concurrent_requests` calls are already in flight.
    Busy,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Unavailable => "unavailable",
            Failure::Status(_) => "status",
            Failure::Invalid => "invalid",
            Failure::Busy => "busy",
        }
    }
}

/// What the backend answered.
#[derive(Debug)]
enum Answer<T> {
    /// Go ahead, with this result.
    Result(T),
    /// Refuse with this error (codes 400–1999 by the protocol's rule).
    Error { code: u32, message: String },
    /// Close the connection with this disconnect (4000–4999).
    Disconnect { code: u32, reason: String },
}

#[derive(Deserialize)]
struct Wire<T> {
    #[serde(default = "none")]
    result: Option<T>,
    #[serde(default)]
    error: Option<WireError>,
    #[serde(default)]
    disconnect: Option<WireDisconnect>,
}

fn none<T>() -> Option<T> {
    None
}

#[derive(Deserialize)]
struct WireError {
    code: u32,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct WireDisconnect {
    code: u32,
    #[serde(default)]
    reason: String,
}

/// A payload of a result: embedded JSON (`data`) or base64 (`b64data`).
fn payload(json: Option<&RawValue>, b64: &str) -> Result<Option<Bytes>, Failure> {
    use base64::Engine as _;
    if !b64.is_empty() {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|_| Failure::Invalid);
    }
    Ok(json.map(|r| Bytes::copy_from_slice(r.get().as_bytes())))
}

/// One configured proxy.
struct Proxy {
    // The metrics label: the `proxies[]` name, or the kind.
    label: String,
    uri: Uri,
    timeout: Duration,
    http_headers: Vec<HeaderName>,
    emulated_headers: Vec<String>,
    static_headers: Vec<(HeaderName, HeaderValue)>,
    /// Payloads go as base64 (`b64data`) instead of embedded JSON.
    binary: bool,
    permits: Semaphore,
    client: HttpClient,
}

impl Proxy {
    fn new(label: String, cfg: &ProxyConfig, key: &str) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError::Invalid {
            key: key.to_owned(),
            message,
        };
        let uri: Uri = cfg
            .endpoint
            .parse()
            .map_err(|e| bad(format!("{:?} is not a URL: {e}", cfg.endpoint)))?;
        let header_names = |names: &[String]| -> Result<Vec<HeaderName>, ConfigError> {
            names
                .iter()
                .map(|n| {
                    HeaderName::try_from(n.as_str()).map_err(|_| bad(format!("{n:?} is not a header name")))
                })
                .collect()
        };
        let static_headers = cfg
            .http
            .static_headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::try_from(k.as_str())
                        .map_err(|_| bad(format!("{k:?} is not a header name")))?,
                    HeaderValue::try_from(v.as_str())
                        .map_err(|_| bad(format!("{v:?} is not a header value")))?,
                ))
            })
            .collect::<Result<_, ConfigError>>()?;
        let client = http_client();
        Ok(Self {
            label,
            uri,
            timeout: cfg.timeout,
            http_headers: header_names(&cfg.http_headers)?,
            emulated_headers: cfg
                .emulated_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            static_headers,
            binary: cfg.binary_encoding,
            permits: Semaphore::new(cfg.max_concurrent_requests),
            client,
        })
    }

    /// The headers of a client's HTTP request this proxy forwards.
    fn wants(&self, name: &HeaderName) -> bool {
        self.http_headers.contains(name)
    }

    /// POSTs `body` (JSON) with the client's forwarded headers; the
    /// backend's answer, or how the call failed. Counted and timed.
    async fn call<T: DeserializeOwned + Default>(
        &self,
        metrics: &Metrics,
        body: Vec<u8>,
        client: &Forwarded,
    ) -> Result<Answer<T>, Failure> {
        let started = Instant::now();
        let outcome = self.call_quietly(body, client).await;
        let label = match &outcome {
            Ok(Answer::Result(_)) => "ok",
            Ok(Answer::Error { .. }) => "error",
            Ok(Answer::Disconnect { .. }) => "disconnect",
            Err(f) => f.label(),
        };
        metrics.proxy_call(&self.label, label, started.elapsed());
        if let Err(failure) = &outcome {
            if let Some(left_out) = metrics.client_problem_line() {
                tracing::info!(proxy = %self.label, endpoint = %self.uri, ?failure, left_out, "proxy call failed");
            }
        }
        outcome
    }

    async fn call_quietly<T: DeserializeOwned + Default>(
        &self,
        body: Vec<u8>,
        client: &Forwarded,
    ) -> Result<Answer<T>, Failure> {
        let _permit = self.permits.try_acquire().map_err(|_| Failure::Busy)?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| Failure::Invalid)?;
        let h = request.headers_mut();
        // Lowest priority first: static, then emulated, then transport.
        for (k, v) in &self.static_headers {
            h.insert(k.clone(), v.clone());
        }
        for (k, v) in &client.emulated {
            if self.emulated_headers.iter().any(|e| e == k) {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::try_from(k.as_str()),
                    HeaderValue::try_from(v.as_str()),
                ) {
                    h.insert(k, v);
                }
            }
        }
        for (k, v) in client.http.iter() {
            if self.wants(k) {
                h.insert(k.clone(), v.clone());
            }
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|_| Failure::Unavailable)?;
            let status = response.status().as_u16();
            if status != 200 {
                return Err(Failure::Status(status));
            }
            let bytes = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|_| Failure::Invalid)?
                .to_bytes();
            Ok(bytes)
        };
        let bytes = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Failure::Timeout)??;
        let wire: Wire<T> = serde_json::from_slice(&bytes).map_err(|_| Failure::Invalid)?;
        Ok(match (wire.disconnect, wire.error) {
            (Some(d), _) => Answer::Disconnect {
                code: d.code,
                reason: d.reason,
            },
            (None, Some(e)) => Answer::Error {
                code: e.code,
                message: e.message,
            },
            (None, None) => Answer::Result(wire.result.unwrap_or_default()),
        })
    }
}

/// What of a client's request its proxies may forward: the transport's
/// HTTP headers that some configured proxy asks for, and the `headers` of
/// its connect request (headers emulation). The session hands it to the
/// node's [`Hooks`] as [`Caller::context`]; an implementation of its own
/// can read it with `downcast_ref::<Forwarded>()`.
#[derive(Debug, Default, Clone)]
pub struct Forwarded {
    /// The HTTP headers of the request that opened the connection (the
    /// WebSocket upgrade, the stream request) that some proxy forwards
    /// (`http_headers`); none when no proxy forwards any.
    pub http: HeaderMap,
    /// The connect request's `headers` (lower-case names), kept when the
    /// connect hook is asked.
    pub emulated: Vec<(String, String)>,
}

/// Every proxy of a node, and which one each namespace asks: the node's
/// [`Hooks`] unless an embedder gives its own.
pub(crate) struct Proxies {
    connect: Option<Proxy>,
    refresh: Option<Proxy>,
    subscribe: Option<Proxy>,
    publish: Option<Proxy>,
    sub_refresh: Option<Proxy>,
    rpc: Option<Proxy>,
    named: HashMap<String, Arc<Proxy>>,
    // RPC namespace → its proxy (named or `rpc.proxy`), when on.
    rpc_namespaces: HashMap<String, Option<String>>,
    rpc_without_namespace: Option<Option<String>>,
    // Every header name some proxy forwards, lower-case.
    forwarded: Vec<HeaderName>,
    // The namespaces, to find a channel's proxies (`channel_options`).
    channels: ChannelConfig,
    // `crier.dev`: unknown namespaces get the top level's options.
    dev: bool,
    // Where every call is counted and timed.
    metrics: Arc<Metrics>,
}

impl Proxies {
    /// The proxies `config` sets up (it was validated), counted in `metrics`.
    pub(crate) fn from_config(config: &Config, metrics: Arc<Metrics>) -> Result<Self, ConfigError> {
        let mut p = Proxies {
            connect: None,
            refresh: None,
            subscribe: None,
            publish: None,
            sub_refresh: None,
            rpc: None,
            named: HashMap::new(),
            rpc_namespaces: HashMap::new(),
            rpc_without_namespace: None,
            forwarded: Vec::new(),
            channels: config.channel.clone(),
            dev: config.crier.dev,
            metrics,
        };
        let mut forwarded: Vec<HeaderName> = Vec::new();
        let mut make = |label: &str, cfg: &ProxyConfig, key: &str| -> Result<Proxy, ConfigError> {
            let proxy = Proxy::new(label.to_owned(), cfg, key)?;
            forwarded.extend(proxy.http_headers.iter().cloned());
            Ok(proxy)
        };
        for cfg in &config.proxies {
            let proxy = make(&cfg.name, cfg, "proxies[].endpoint")?;
            p.named.insert(cfg.name.clone(), Arc::new(proxy));
        }
        let connect = &config.client.proxy.connect;
        if connect.enabled {
            p.connect = Some(make("connect", connect, "client.proxy.connect.endpoint")?);
        }
        let refresh = &config.client.proxy.refresh;
        if refresh.enabled {
            p.refresh = Some(make("refresh", refresh, "client.proxy.refresh.endpoint")?);
        }
        let channel = &config.channel;
        let options = || {
            std::iter::once(&channel.without_namespace).chain(channel.namespaces.iter().map(|n| &n.options))
        };
        if options().any(|o| o.subscribe_proxy_enabled && o.subscribe_proxy_name.is_empty()) {
            p.subscribe = Some(make(
                "subscribe",
                &channel.proxy.subscribe,
                "channel.proxy.subscribe.endpoint",
            )?);
        }
        if options().any(|o| o.sub_refresh_proxy_enabled && o.sub_refresh_proxy_name.is_empty()) {
            p.sub_refresh = Some(make(
                "sub_refresh",
                &channel.proxy.sub_refresh,
                "channel.proxy.sub_refresh.endpoint",
            )?);
        }
        if options().any(|o| o.publish_proxy_enabled && o.publish_proxy_name.is_empty()) {
            p.publish = Some(make(
                "publish",
                &channel.proxy.publish,
                "channel.proxy.publish.endpoint",
            )?);
        }
        let rpc = &config.rpc;
        let name = |n: &str| (!n.is_empty()).then(|| n.to_owned());
        if rpc.without_namespace.proxy_enabled {
            p.rpc_without_namespace = Some(name(&rpc.without_namespace.proxy_name));
        }
        for ns in rpc.namespaces.iter().filter(|ns| ns.proxy_enabled) {
            p.rpc_namespaces.insert(ns.name.clone(), name(&ns.proxy_name));
        }
        let default_rpc = p
            .rpc_without_namespace
            .iter()
            .chain(p.rpc_namespaces.values())
            .any(Option::is_none);
        if default_rpc {
            p.rpc = Some(make("rpc", &rpc.proxy, "rpc.proxy.endpoint")?);
        }
        forwarded.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        forwarded.dedup();
        p.forwarded = forwarded;
        Ok(p)
    }

    /// The headers of `request` that some proxy forwards (none, usually:
    /// then nothing is kept per connection).
    pub(crate) fn forwarded_headers(&self, request: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        for name in &self.forwarded {
            for v in request.get_all(name) {
                out.append(name.clone(), v.clone());
            }
        }
        out
    }

    /// [`Proxies::forwarded_headers`], boxed, and `None` when there are
    /// none: what a connection's task keeps (8 bytes when idle).
    pub(crate) fn kept_headers(&self, request: &HeaderMap) -> Option<Box<HeaderMap>> {
        Some(self.forwarded_headers(request))
            .filter(|h| !h.is_empty())
            .map(Box::new)
    }

    /// The options of `channel`'s namespace, as `Node::channel_options`
    /// finds them.
    fn channel_options(&self, channel: &str) -> Option<&ChannelOptions> {
        self.channels
            .options_for(channel)
            .or(self.dev.then_some(&self.channels.without_namespace))
    }

    fn pick<'a>(&'a self, name: &str, default: &'a Option<Proxy>) -> Option<&'a Proxy> {
        if name.is_empty() {
            default.as_ref()
        } else {
            self.named.get(name).map(|p| &**p)
        }
    }

    /// The subscribe proxy of `channel`'s namespace, when on.
    fn subscribe_proxy(&self, channel: &str) -> Option<&Proxy> {
        let options = self.channel_options(channel)?;
        if !options.subscribe_proxy_enabled {
            return None;
        }
        self.pick(&options.subscribe_proxy_name, &self.subscribe)
    }

    /// The sub_refresh proxy of `channel`'s namespace, when on.
    fn sub_refresh_proxy(&self, channel: &str) -> Option<&Proxy> {
        let options = self.channel_options(channel)?;
        if !options.sub_refresh_proxy_enabled {
            return None;
        }
        self.pick(&options.sub_refresh_proxy_name, &self.sub_refresh)
    }

    /// The publish proxy of `channel`'s namespace, when on.
    fn publish_proxy(&self, channel: &str) -> Option<&Proxy> {
        let options = self.channel_options(channel)?;
        if !options.publish_proxy_enabled {
            return None;
        }
        self.pick(&options.publish_proxy_name, &self.publish)
    }

    /// The proxy of RPC `method` (namespace: the part before the first
    /// `:`), when its namespace turns one on.
    fn rpc_proxy(&self, method: &str) -> Option<&Proxy> {
        let named = match method.split_once(':') {
            Some((ns, _)) => self.rpc_namespaces.get(ns)?,
            None => self.rpc_without_namespace.as_ref()?,
        };
        self.pick(named.as_deref().unwrap_or_default(), &self.rpc)
    }
}

impl Proxy {
    /// A request body: the caller's fields (its `user` unless `connecting`:
    /// a connect request has none yet), `fields`, and `data` as
    /// embedded JSON (`data`) or, in binary mode or for bytes that are not
    /// JSON, as base64 (`b64data`).
    fn body(
        &self,
        caller: &Caller<'_>,
        connecting: bool,
        fields: &[(&str, &str)],
        data: Option<&[u8]>,
    ) -> Vec<u8> {
        use base64::Engine as _;
        let mut m = serde_json::Map::new();
        m.insert("client".into(), caller.id.to_string().into());
        m.insert("transport".into(), caller.transport.into());
        m.insert("protocol".into(), caller.protocol.into());
        m.insert(
            "encoding".into(),
            if self.binary { "binary" } else { "json" }.into(),
        );
        if !connecting {
            m.insert("user".into(), caller.user.into());
        }
        for (k, v) in fields.iter().filter(|(_, v)| !v.is_empty()) {
            m.insert((*k).into(), (*v).into());
        }
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(flatten)]
            fields: serde_json::Map<String, serde_json::Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<&'a RawValue>,
            #[serde(skip_serializing_if = "Option::is_none")]
            b64data: Option<String>,
        }
        let data = data.filter(|d| !d.is_empty());
        // Embedded exactly as the client sent it, when it is JSON.
        let json = data
            .filter(|_| !self.binary)
            .and_then(|d| serde_json::from_slice::<&RawValue>(d).ok());
        let b64data = match json {
            Some(_) => None,
            None => data.map(|d| base64::engine::general_purpose::STANDARD.encode(d)),
        };
        serde_json::to_vec(&Body {
            fields: m,
            data: json,
            b64data,
        })
        .unwrap_or_default()
    }
}

/// The connect proxy's `result`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConnectResult {
    user: String,
    expire_at: i64,
    info: Option<Box<RawValue>>,
    b64info: String,
    data: Option<Box<RawValue>>,
    b64data: String,
    channels: Vec<String>,
    subs: std::collections::BTreeMap<String, SubscribeResult>,
}

/// The subscribe proxy's `result`; also the options of one of the connect
/// result's `subs`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SubscribeResult {
    info: Option<Box<RawValue>>,
    b64info: String,
    data: Option<Box<RawValue>>,
    b64data: String,
    expire_at: i64,
}

/// The publish proxy's `result`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PublishResult {
    data: Option<Box<RawValue>>,
    b64data: String,
    skip_history: bool,
}

/// The refresh proxy's `result`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RefreshResult {
    expired: bool,
    expire_at: i64,
}

/// The RPC proxy's `result`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RpcResult {
    data: Option<Box<RawValue>>,
    b64data: String,
}

impl ConnectResult {
    /// The backend's answer in the hooks' terms: `channels` as server-side
    /// subscriptions without options, then `subs` with theirs.
    fn answer(self) -> Result<ConnectAnswer, Failure> {
        let mut channels: std::collections::BTreeMap<String, ServerSubscription> = self
            .channels
            .into_iter()
            .map(|c| (c, ServerSubscription::default()))
            .collect();
        for (channel, s) in self.subs {
            let sub = ServerSubscription {
                info: payload(s.info.as_deref(), &s.b64info)?,
                data: payload(s.data.as_deref(), &s.b64data)?,
            };
            channels.insert(channel, sub);
        }
        Ok(ConnectAnswer {
            user: self.user,
            expire_at: (self.expire_at > 0).then_some(self.expire_at),
            info: payload(self.info.as_deref(), &self.b64info)?,
            data: payload(self.data.as_deref(), &self.b64data)?,
            channels,
        })
    }
}

impl SubscribeResult {
    fn answer(self) -> Result<SubscribeAnswer, Failure> {
        Ok(SubscribeAnswer {
            info: payload(self.info.as_deref(), &self.b64info)?,
            data: payload(self.data.as_deref(), &self.b64data)?,
            expire_at: (self.expire_at > 0).then_some(self.expire_at),
        })
    }
}

impl Proxies {
    /// Calls `proxy` with `body` for `caller` (forwarding what its
    /// [`Forwarded`] context holds), and turns the backend's result into
    /// the hook's answer with `answer`. A failed call, or a result whose
    /// payloads do not decode, is [`Decision::Unavailable`].
    async fn decide<T: DeserializeOwned + Default, A>(
        &self,
        proxy: &Proxy,
        body: Vec<u8>,
        caller: &Caller<'_>,
        answer: impl FnOnce(T) -> Result<A, Failure>,
    ) -> Decision<A> {
        let none = Forwarded::default();
        let forwarded = caller
            .context
            .and_then(|c| c.downcast_ref::<Forwarded>())
            .unwrap_or(&none);
        match proxy.call::<T>(&self.metrics, body, forwarded).await {
            Ok(Answer::Result(r)) => answer(r).map_or(Decision::Unavailable, Decision::Allow),
            Ok(Answer::Error { code, message }) => Decision::Refuse {
                code,
                reason: message,
            },
            Ok(Answer::Disconnect { code, reason }) => Decision::Disconnect { code, reason },
            Err(_) => Decision::Unavailable,
        }
    }
}

/// Centrifugo's HTTP proxies as the node's hooks: a hook is decided where
/// its proxy is configured (per namespace for channels and RPC methods).
impl Hooks for Proxies {
    fn decides(&self, hook: Hook<'_>) -> bool {
        match hook {
            Hook::Connect => self.connect.is_some(),
            Hook::Refresh => self.refresh.is_some(),
            Hook::Subscribe(channel) => self.subscribe_proxy(channel).is_some(),
            Hook::SubRefresh(channel) => self.sub_refresh_proxy(channel).is_some(),
            Hook::Publish(channel) => self.publish_proxy(channel).is_some(),
            Hook::Rpc(method) => self.rpc_proxy(method).is_some(),
        }
    }

    fn connect<'a>(&'a self, request: ConnectRequest<'a>) -> Pending<'a, Decision<ConnectAnswer>> {
        Box::pin(async move {
            let Some(proxy) = self.connect.as_ref() else {
                return Decision::Unavailable;
            };
            let fields = [("name", request.name), ("version", request.version)];
            let mut body = proxy.body(&request.caller, true, &fields, request.data);
            if !request.channels.is_empty() {
                // `channels`: a list, which `body` does not take; added here.
                if let Ok(serde_json::Value::Object(mut m)) =
                    serde_json::from_slice::<serde_json::Value>(&body)
                {
                    m.insert("channels".into(), request.channels.to_vec().into());
                    body = serde_json::to_vec(&m).unwrap_or(body);
                }
            }
            self.decide(proxy, body, &request.caller, ConnectResult::answer)
                .await
        })
    }

    fn refresh<'a>(&'a self, request: RefreshRequest<'a>) -> Pending<'a, Decision<RefreshAnswer>> {
        Box::pin(async move {
            let (proxy, fields) = match request.channel {
                None => (self.refresh.as_ref(), None),
                Some(channel) => (self.sub_refresh_proxy(channel), Some(("channel", channel))),
            };
            let Some(proxy) = proxy else {
                return Decision::Unavailable;
            };
            let body = proxy.body(&request.caller, false, fields.as_slice(), None);
            self.decide(proxy, body, &request.caller, |r: RefreshResult| {
                Ok(RefreshAnswer {
                    expired: r.expired,
                    expire_at: (r.expire_at > 0).then_some(r.expire_at),
                })
            })
            .await
        })
    }

    fn subscribe<'a>(&'a self, request: SubscribeRequest<'a>) -> Pending<'a, Decision<SubscribeAnswer>> {
        Box::pin(async move {
            let Some(proxy) = self.subscribe_proxy(request.channel) else {
                return Decision::Unavailable;
            };
            let body = proxy.body(
                &request.caller,
                false,
                &[("channel", request.channel)],
                request.data,
            );
            self.decide(proxy, body, &request.caller, SubscribeResult::answer)
                .await
        })
    }

    fn publish<'a>(&'a self, request: PublishRequest<'a>) -> Pending<'a, Decision<PublishAnswer>> {
        Box::pin(async move {
            let Some(proxy) = self.publish_proxy(request.channel) else {
                return Decision::Unavailable;
            };
            let body = proxy.body(
                &request.caller,
                false,
                &[("channel", request.channel)],
                Some(request.data),
            );
            self.decide(proxy, body, &request.caller, |r: PublishResult| {
                Ok(PublishAnswer {
                    data: payload(r.data.as_deref(), &r.b64data)?,
                    skip_history: r.skip_history,
                })
            })
            .await
        })
    }

    fn rpc<'a>(&'a self, request: RpcRequest<'a>) -> Pending<'a, Decision<RpcAnswer>> {
        Box::pin(async move {
            let Some(proxy) = self.rpc_proxy(request.method) else {
                return Decision::Unavailable;
            };
            let body = proxy.body(
                &request.caller,
                false,
                &[("method", request.method)],
                request.data,
            );
            self.decide(proxy, body, &request.caller, |r: RpcResult| {
                Ok(RpcAnswer {
                    data: payload(r.data.as_deref(), &r.b64data)?,
                })
            })
            .await
        })
    }
}
