//! What an unknown configuration key most likely is: a Centrifugo v6 key
//! crier does not implement yet, a Centrifugo v5 (flat) key with a v6 name,
//! or a typo of a key crier knows ("did you mean"). Unknown keys are errors
//! unless allowed (`--allow-unknown-keys`), so a misspelt or unsupported
//! setting never passes silently (a TLS section ignored would serve plain
//! HTTP).

use std::collections::BTreeSet;

use super::{Config, Namespace, ProxyConfig, RpcNamespace, TcpListenerConfig, WatchConfig};

/// Centrifugo v6 sections and keys that crier does not implement (yet).
const CENTRIFUGO_V6_NOT_IMPLEMENTED: &[&str] = &[
    "http_server.tls.server_ca_pem",
    "http_server.tls.insecure_skip_verify",
    "http_server.tls.server_name",
    "http_server.tls_autocert",
    "http_server.tls_external",
    "http_server.internal_address",
    "http_server.internal_port",
    "http_server.http3",
    "client.connect_proxy_name",
    "client.refresh_proxy_name",
    "client.history_meta_ttl",
    "channel.proxy.subscribe_stream",
    "channel.namespaces[].delta_publish",
    "channel.namespaces[].allowed_delta_types",
    "channel.without_namespace.delta_publish",
    "channel.without_namespace.allowed_delta_types",
    "rpc.namespace_boundary",
    "rpc.ping",
    "admin.web_proxy_address",
    "swagger",
    "debug",
    "emulation.handler_prefix",
    "websocket.use_write_buffer_pool",
    "websocket.read_buffer_size",
    "websocket.write_buffer_size",
    "grpc_api",
    "uni_grpc",
    "unified_proxy",
    "proxies[].grpc",
    "proxies[].grpc_metadata",
    "proxies[].include_connection_meta",
    "consumers",
    "broker",
    "presence_manager",
    "opentelemetry",
    "graphite",
    "usage_stats",
    "node",
    "shutdown.exit_timeout",
];

/// Centrifugo v5 flat keys and their v6 names.
const CENTRIFUGO_V5: &[(&str, &str)] = &[
    ("token_hmac_secret_key", "client.token.hmac_secret_key"),
    ("token_rsa_public_key", "client.token.rsa_public_key"),
    ("token_ecdsa_public_key", "client.token.ecdsa_public_key"),
    ("token_jwks_public_endpoint", "client.token.jwks_public_endpoint"),
    ("token_audience", "client.token.audience"),
    ("token_issuer", "client.token.issuer"),
    ("api_key", "http_api.key"),
    ("api_insecure", "http_api.insecure"),
    ("allowed_origins", "client.allowed_origins"),
    ("client_insecure", "client.insecure"),
    (
        "allow_anonymous_connect_without_token",
        "client.allow_anonymous_connect_without_token",
    ),
    ("client_channel_limit", "client.channel_limit"),
    ("client_user_connection_limit", "client.user_connection_limit"),
    ("client_concurrency", "client.concurrency"),
    ("client_queue_max_size", "client.queue_max_size"),
    ("client_expired_close_delay", "client.expired_close_delay"),
    ("client_stale_close_delay", "client.stale_close_delay"),
    ("channel_max_length", "channel.max_length"),
    ("channel_private_prefix", "channel.private_prefix"),
    ("channel_namespace_boundary", "channel.namespace_boundary"),
    ("namespaces", "channel.namespaces"),
    ("presence", "channel.without_namespace.presence"),
    ("join_leave", "channel.without_namespace.join_leave"),
    ("history_size", "channel.without_namespace.history_size"),
    ("history_ttl", "channel.without_namespace.history_ttl"),
    ("force_recovery", "channel.without_namespace.force_recovery"),
    (
        "allow_subscribe_for_client",
        "channel.without_namespace.allow_subscribe_for_client",
    ),
    (
        "allow_publish_for_client",
        "channel.without_namespace.allow_publish_for_client",
    ),
    ("port", "http_server.port"),
    ("address", "http_server.address"),
    ("engine", "engine.type"),
    ("redis_address", "engine.redis.address"),
    ("redis_prefix", "engine.redis.prefix"),
    ("nats_url", "engine.nats.address"),
    ("prometheus", "prometheus.enabled"),
    ("ping_interval", "client.ping_interval"),
    ("pong_timeout", "client.pong_timeout"),
    ("websocket_message_size_limit", "websocket.message_size_limit"),
    ("websocket_compression", "websocket.compression"),
    ("websocket_compression_min_size", "websocket.compression_min_size"),
    ("websocket_compression_level", "websocket.compression_level"),
    ("uni_websocket", "uni_websocket.enabled"),
    ("uni_sse", "uni_sse.enabled"),
    ("uni_http_stream", "uni_http_stream.enabled"),
    ("shutdown_timeout", "shutdown.timeout"),
    ("tls", "http_server.tls.enabled"),
    ("tls_cert", "http_server.tls.cert_pem"),
    ("tls_key", "http_server.tls.key_pem"),
    ("log_level", "log.level"),
    ("log_file", "log.file"),
];

/// Every key crier knows, with `[]` for any list index.
fn known_keys() -> BTreeSet<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(&path, v, out);
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    let as_json = |v: serde_json::Result<serde_json::Value>| v.unwrap_or_default();
    walk("", &as_json(serde_json::to_value(Config::default())), &mut out);
    walk(
        "channel.namespaces[]",
        &as_json(serde_json::to_value(Namespace {
            name: String::new(),
            options: Default::default(),
        })),
        &mut out,
    );
    walk(
        "tcp[]",
        &as_json(serde_json::to_value(TcpListenerConfig::default())),
        &mut out,
    );
    walk(
        "watch[]",
        &as_json(serde_json::to_value(WatchConfig::default())),
        &mut out,
    );
    walk(
        "proxies[]",
        &as_json(serde_json::to_value(ProxyConfig::default())),
        &mut out,
    );
    walk(
        "rpc.namespaces[]",
        &as_json(serde_json::to_value(RpcNamespace::default())),
        &mut out,
    );
    out
}

/// `channel.namespaces[3].foo` as `channel.namespaces[].foo`.
fn generic(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut in_index = false;
    for c in key.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

/// Edit distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Why `key` (a path serde ignored) is unknown, in one sentence.
pub(super) fn explain(key: &str) -> String {
    let g = generic(key);
    if let Some(v6) = CENTRIFUGO_V6_NOT_IMPLEMENTED
        .iter()
        .find(|k| g == **k || g.starts_with(&format!("{k}.")))
    {
        return format!("a Centrifugo v6 setting (`{v6}`) that crier does not implement yet; remove it, or run with --allow-unknown-keys to ignore it");
    }
    if let Some((_, v6)) = CENTRIFUGO_V5.iter().find(|(v5, _)| g == *v5) {
        return format!("a Centrifugo v5 key: crier reads the v6 layout, where this is `{v6}`");
    }
    let known = known_keys();
    // The closest known key, compared as the whole path; a suggestion only
    // when it is close for its length.
    let best = known.iter().map(|k| (distance(&g, k), k)).min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= (g.len() / 4).max(2) => format!("unknown key; did you mean `{k}`?"),
        _ => "unknown key (not a crier or Centrifugo v6 setting)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion_and_centrifugo_keys_are_named() {
        assert_eq!(
            explain("client.token.hmac_secret_keyy"),
            "unknown key; did you mean `client.token.hmac_secret_key`?"
        );
        assert!(explain("channel.namespaces[2].histroy_size").contains("`channel.namespaces[].history_size`"));
        assert!(explain("http_server.tls_autocert.enabled")
            .contains("Centrifugo v6 setting (`http_server.tls_autocert`)"));
        assert!(explain("http_server.tls.server_name")
            .contains("Centrifugo v6 setting (`http_server.tls.server_name`)"));
        assert!(explain("tls_cert").contains("where this is `http_server.tls.cert_pem`"));
        assert!(explain("channel.proxy.subscribe_stream.endpoint").contains("does not implement yet"));
        assert!(explain("log_level").contains("where this is `log.level`"));
        assert!(explain("log_file").contains("where this is `log.file`"));
        assert!(explain("token_hmac_secret_key")
            .contains("v6 layout, where this is `client.token.hmac_secret_key`"));
        assert_eq!(
            explain("zzzzzzzzzzzz"),
            "unknown key (not a crier or Centrifugo v6 setting)"
        );
    }

    #[test]
    fn every_key_the_server_reads_is_known() {
        let known = known_keys();
        for key in [
            "client.token.hmac_secret_key",
            "http_server.send_buffer_size",
            "engine.memory.history_max_bytes",
            "channel.namespaces[].history_ttl",
            "tcp[].unsafe_data",
            "watch[].tail",
            "log.level",
            "log.file",
            "crier.log_format",
        ] {
            assert!(known.contains(key), "{key}");
        }
    }
}
