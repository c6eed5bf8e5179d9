//! Proxies to the application's backend (Centrifugo v6 keys): the proxy
//! object shared by every kind (`client.proxy.connect`,
//! `channel.proxy.subscribe` / `publish`, `rpc.proxy`, the named
//! `proxies[]`), and the RPC namespaces.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// One proxy: where to POST, how long to wait, what to forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyConfig {
    /// The name other keys refer to it by (`proxies[]` only).
    pub name: String,
    /// Turns the connect proxy on (`client.proxy.connect` only; channel
    /// and RPC proxies are turned on per namespace).
    pub enabled: bool,
    /// `http://` or `https://` URL the request is POSTed to.
    pub endpoint: String,
    /// Longest a call may take; then the client gets error 100.
    #[serde(with = "duration::serde_go")]
    pub timeout: Duration,
    /// Headers of the client's HTTP request forwarded to the backend.
    pub http_headers: Vec<String>,
    /// Headers the client sent in its connect request's `headers` map
    /// (headers emulation) forwarded to the backend; client-controlled.
    pub emulated_headers: Vec<String>,
    /// HTTP-only options.
    pub http: ProxyHttpConfig,
    /// Payloads as base64 (`b64data`, `b64info`) instead of embedded JSON.
    pub binary_encoding: bool,
    /// crier only: calls to this proxy in flight at once; past it, the
    /// client gets error 100 at once instead of queueing.
    pub max_concurrent_requests: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            enabled: false,
            endpoint: String::new(),
            timeout: Duration::from_secs(1),
            http_headers: Vec::new(),
            emulated_headers: Vec::new(),
            http: ProxyHttpConfig::default(),
            binary_encoding: false,
            max_concurrent_requests: 256,
        }
    }
}

/// `<proxy>.http.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyHttpConfig {
    /// Headers added to every request of this proxy.
    pub static_headers: BTreeMap<String, String>,
}

/// `client.proxy.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientProxyConfig {
    /// Asked when a client connects without a token.
    pub connect: ProxyConfig,
    /// Asked when a connection expires (instead of the client refreshing
    /// its token): it may prolong or end it.
    pub refresh: ProxyConfig,
}

/// `channel.proxy.*`: the default proxies of namespaces that turn them on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelProxyConfig {
    /// Asked before a client subscribes (`subscribe_proxy_enabled`).
    pub subscribe: ProxyConfig,
    /// Asked before a client publishes (`publish_proxy_enabled`).
    pub publish: ProxyConfig,
    /// Asked when a subscription with an expiry reaches it
    /// (`sub_refresh_proxy_enabled`).
    pub sub_refresh: ProxyConfig,
}

/// `rpc.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcConfig {
    /// The default RPC proxy.
    pub proxy: ProxyConfig,
    /// Methods without a namespace.
    pub without_namespace: RpcNamespaceOptions,
    /// Methods `<name>:...`.
    pub namespaces: Vec<RpcNamespace>,
}

/// Options of an RPC namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcNamespaceOptions {
    /// Calls go to a proxy (else 104 method not found).
    pub proxy_enabled: bool,
    /// A named proxy of `proxies[]` instead of `rpc.proxy`.
    pub proxy_name: String,
}

/// One entry of `rpc.namespaces`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcNamespace {
    /// `^[-a-zA-Z0-9_.]{2,}$`.
    pub name: String,
    /// Calls go to a proxy.
    pub proxy_enabled: bool,
    /// A named proxy of `proxies[]` instead of `rpc.proxy`.
    pub proxy_name: String,
}

/// Checks every proxy and every reference to one: endpoints are `http://`
/// URLs, named proxies have unique names, a namespace that turns a proxy
/// on has one to ask.
pub(super) fn validate(cfg: &super::Config) -> Result<(), super::ConfigError> {
    use super::invalid;
    let endpoint = |key: &str, p: &ProxyConfig| -> Result<(), super::ConfigError> {
        if p.endpoint.starts_with("https://") {
            return Err(invalid(
                key,
                "https:// proxy endpoints are not supported yet; use http:// (a sidecar or a local TLS terminator)",
            ));
        }
        let rest = p.endpoint.strip_prefix("http://").unwrap_or_default();
        if rest.is_empty() || rest.starts_with('/') {
            return Err(invalid(key, format!("{:?} is not an http:// URL", p.endpoint)));
        }
        if p.timeout.is_zero() {
            return Err(invalid(key, "timeout must be greater than 0"));
        }
        if p.max_concurrent_requests == 0 {
            return Err(invalid(key, "max_concurrent_requests must be greater than 0"));
        }
        Ok(())
    };
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in cfg.proxies.iter().enumerate() {
        let key = format!("proxies[{i}]");
        if !valid_name(&p.name) {
            return Err(invalid(
                format!("{key}.name"),
                format!("{:?} must match ^[-a-zA-Z0-9_.]{{2,}}$", p.name),
            ));
        }
        if !names.insert(p.name.as_str()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("{:?} is used twice", p.name),
            ));
        }
        endpoint(&format!("{key}.endpoint"), p)?;
    }
    let connect = &cfg.client.proxy.connect;
    if connect.enabled {
        endpoint("client.proxy.connect.endpoint", connect)?;
    }
    let refresh = &cfg.client.proxy.refresh;
    if refresh.enabled {
        endpoint("client.proxy.refresh.endpoint", refresh)?;
    }
    // A proxy a namespace turns on: the named one, or the default.
    let needs = |key: String, name: &str, default: &ProxyConfig, default_key: &str| {
        if !name.is_empty() {
            if !names.contains(name) {
                return Err(invalid(key, format!("no proxy named {name:?} in proxies[]")));
            }
            return Ok(());
        }
        endpoint(default_key, default).map_err(|_| {
            invalid(
                key,
                format!("turned on, but {default_key} is not set to an http:// URL (or name a proxy of proxies[])"),
            )
        })
    };
    let channels = std::iter::once((
        "channel.without_namespace".to_owned(),
        &cfg.channel.without_namespace,
    ))
    .chain(
        cfg.channel
            .namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| (format!("channel.namespaces[{i}]"), &ns.options)),
    );
    for (key, o) in channels {
        if o.subscribe_proxy_enabled {
            needs(
                format!("{key}.subscribe_proxy_enabled"),
                &o.subscribe_proxy_name,
                &cfg.channel.proxy.subscribe,
                "channel.proxy.subscribe.endpoint",
            )?;
        }
        if o.sub_refresh_proxy_enabled {
            needs(
                format!("{key}.sub_refresh_proxy_enabled"),
                &o.sub_refresh_proxy_name,
                &cfg.channel.proxy.sub_refresh,
                "channel.proxy.sub_refresh.endpoint",
            )?;
        }
        if o.publish_proxy_enabled {
            needs(
                format!("{key}.publish_proxy_enabled"),
                &o.publish_proxy_name,
                &cfg.channel.proxy.publish,
                "channel.proxy.publish.endpoint",
            )?;
        }
    }
    let rpc = &cfg.rpc;
    if rpc.without_namespace.proxy_enabled {
        needs(
            "rpc.without_namespace.proxy_enabled".into(),
            &rpc.without_namespace.proxy_name,
            &rpc.proxy,
            "rpc.proxy.endpoint",
        )?;
    }
    for (i, ns) in rpc.namespaces.iter().enumerate() {
        if !valid_name(&ns.name) {
            return Err(invalid(
                format!("rpc.namespaces[{i}].name"),
                format!("{:?} must match ^[-a-zA-Z0-9_.]{{2,}}$", ns.name),
            ));
        }
        if ns.proxy_enabled {
            needs(
                format!("rpc.namespaces[{i}].proxy_enabled"),
                &ns.proxy_name,
                &rpc.proxy,
                "rpc.proxy.endpoint",
            )?;
        }
    }
    Ok(())
}

/// `^[-a-zA-Z0-9_.]{2,}$`
fn valid_name(name: &str) -> bool {
    name.len() >= 2
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `crier.webhooks.*`: lifecycle events POSTed to the backend (crier only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhooksConfig {
    /// `http://` URL the batches are POSTed to; empty turns webhooks off.
    pub endpoint: String,
    /// Which events: `disconnect`, `unsubscribe`, `occupied`, `vacated`.
    pub events: Vec<String>,
    /// Longest one POST may take before it counts as failed.
    #[serde(with = "duration::serde_go")]
    pub timeout: Duration,
    /// Events per POST at most.
    pub batch_size: usize,
    /// Events waiting at most; past it new events are dropped (counted).
    pub queue_size: usize,
    /// Longest wait between retries of a failed POST (from 100 ms, doubling).
    #[serde(with = "duration::serde_go")]
    pub max_retry_delay: Duration,
    /// Headers added to every POST (an authorization for the backend).
    pub static_headers: BTreeMap<String, String>,
    /// On a cluster engine, with `occupied` or `vacated` asked for: how
    /// long a node's channels count as held after it stops refreshing
    /// them (killed); it refreshes every third of this, and the other
    /// nodes then release what it held (`vacated` where nobody is left).
    #[serde(with = "duration::serde_go")]
    pub node_ttl: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            events: WEBHOOK_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            timeout: Duration::from_secs(2),
            batch_size: 100,
            queue_size: 10_000,
            max_retry_delay: Duration::from_secs(10),
            static_headers: BTreeMap::new(),
            node_ttl: Duration::from_secs(30),
        }
    }
}

/// The webhook events there are.
pub const WEBHOOK_EVENTS: [&str; 4] = ["disconnect", "unsubscribe", "occupied", "vacated"];

pub(super) fn validate_webhooks(w: &WebhooksConfig) -> Result<(), super::ConfigError> {
    use super::invalid;
    if w.endpoint.is_empty() {
        return Ok(());
    }
    let rest = w.endpoint.strip_prefix("http://").unwrap_or_default();
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid(
            "crier.webhooks.endpoint",
            format!("{:?} is not an http:// URL", w.endpoint),
        ));
    }
    if let Some(e) = w.events.iter().find(|e| !WEBHOOK_EVENTS.contains(&e.as_str())) {
        return Err(invalid(
            "crier.webhooks.events",
            format!(
                "unknown event {e:?}; the events are {}",
                WEBHOOK_EVENTS.join(", ")
            ),
        ));
    }
    for (key, n) in [("batch_size", w.batch_size), ("queue_size", w.queue_size)] {
        if n == 0 {
            return Err(invalid(format!("crier.webhooks.{key}"), "must be greater than 0"));
        }
    }
    if w.node_ttl < Duration::from_millis(300) {
        return Err(invalid(
            "crier.webhooks.node_ttl",
            "must be at least 300ms (a node refreshes every third of it)",
        ));
    }
    if w.timeout.is_zero() || w.max_retry_delay.is_zero() {
        return Err(invalid(
            "crier.webhooks.timeout",
            "timeouts must be greater than 0",
        ));
    }
    Ok(())
}
