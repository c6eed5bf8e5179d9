//! The admin web UI (`admin.*`): Centrifugo v6's admin endpoints, so its
//! own web app works against crier too, and crier's own UI, embedded in
//! the binary:
//!
//! - `GET <prefix>/admin/init`: `{"insecure", "edition", "authenticated"}`;
//! - `POST <prefix>/admin/auth`: form field `password` → `{"token": ...}`
//!   (400 on a wrong password, 429 past [`LOGINS_PER_MINUTE`]);
//! - `POST <prefix>/admin/api`: `{"method", "params"}`, any server API
//!   method, answered as the server API answers (`{"result"}` or
//!   `{"error"}`), with `Authorization: token <token>`;
//! - crier's own, for its UI: `GET <prefix>/admin/stats` (the nodes and
//!   the last minutes of this node's figures), `GET .../connections`,
//!   `GET .../config` (secrets masked), `GET .../tail` (a channel's
//!   publications as Server-Sent Events);
//! - the web app at `<prefix>/` (embedded, or `admin.web_path`).
//!
//! Tokens are HS256 JWTs signed with `admin.secret`, valid for
//! [`TOKEN_TTL`]. Under `admin.insecure` (and `--dev`) nothing asks for one.

mod assets;
mod live;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use crier_core::{DisconnectReason, Outbound, SubscribeOptions};
use crier_proto::api::{self, ApiResult};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::api::{call_named, Answer};
use crate::node::Node;
use crate::wire::{hub_error_code, wire_publication};

/// How long a login lasts.
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Login attempts per minute, for the whole node (right or wrong: a
/// guesser gets at most this many tries a minute, whatever its address).
pub(crate) const LOGINS_PER_MINUTE: u32 = 10;

/// Connections listed at most by `GET .../connections`.
const MAX_CONNECTIONS_LISTED: usize = 1000;

/// How often the live tail writes an SSE comment when nothing happens, so
/// a browser that went away is noticed.
const TAIL_KEEPALIVE: Duration = Duration::from_secs(15);

struct Admin {
    node: Arc<Node>,
    insecure: bool,
    // `None` when no secret is set (then only `insecure` lets anyone in).
    keys: Option<(EncodingKey, DecodingKey)>,
    // (start of the current minute, attempts in it)
    logins: Mutex<(Instant, u32)>,
    live: Arc<live::History>,
    assets: assets::Assets,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// The admin routes under `admin.handler_prefix`, or `None` when the UI
/// is off. Starts the sampler the charts read (until the node shuts down).
pub(crate) fn routes<S>(node: &Arc<Node>) -> Option<Router<S>> {
    let cfg = &node.config.admin;
    if !cfg.enabled {
        return None;
    }
    let secret = cfg.secret.expose();
    let keys = (!secret.is_empty()).then(|| {
        (
            EncodingKey::from_secret(secret.as_bytes()),
            DecodingKey::from_secret(secret.as_bytes()),
        )
    });
    node.metrics.keep_live();
    let live = live::History::start(node.clone());
    let admin = Arc::new(Admin {
        node: node.clone(),
        insecure: cfg.insecure,
        keys,
        logins: Mutex::new((Instant::now(), 0)),
        live,
        assets: assets::Assets::new(&cfg.web_path),
    });
    let prefix = cfg.handler_prefix.trim_end_matches('/');
    let at = |path: &str| format!("{prefix}{path}");
    let home = if prefix.is_empty() {
        "/".to_owned()
    } else {
        format!("{prefix}/")
    };
    let mut router = Router::new()
        .route(&at("/admin/init"), get(init))
        .route(&at("/admin/auth"), post(auth))
        .route(&at("/admin/api"), post(admin_api))
        .route(&at("/admin/stats"), get(stats))
        .route(&at("/admin/connections"), get(connections))
        .route(&at("/admin/config"), get(config))
        .route(&at("/admin/tail"), get(tail))
        .route(&home, get(index))
        .route(&at("/{*file}"), get(file));
    if !prefix.is_empty() {
        // `/prefix` without its slash goes to the UI too.
        router = router.route(prefix, get(index));
    }
    Some(router.with_state(admin))
}

impl Admin {
    /// Whether the request carries a valid admin token (`Authorization:
    /// token <t>`, or `?token=` where a header cannot be set: the live
    /// tail's `EventSource`), or the UI is insecure.
    fn authorized(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        if self.insecure {
            return true;
        }
        let Some((_, decode)) = &self.keys else {
            return false;
        };
        let from_header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let mut parts = v.split_whitespace();
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(kind), Some(token), None) if kind.eq_ignore_ascii_case("token") => Some(token),
                    _ => None,
                }
            });
        let Some(token) = from_header.or(query) else {
            return false;
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, decode, &validation).is_ok_and(|t| t.claims.sub == "admin")
    }

    /// Takes one login attempt from this minute's budget.
    fn may_try_login(&self) -> bool {
        let mut g = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.elapsed() >= Duration::from_secs(60) {
            *g = (Instant::now(), 0);
        }
        g.1 += 1;
        g.1 <= LOGINS_PER_MINUTE
    }
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response()
}

/// `GET /admin/init`: what the web app needs before it shows anything.
async fn init(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let authenticated = a.authorized(&headers, q.get("token").map(String::as_str));
    json_response(
        StatusCode::OK,
        &json!({"insecure": a.insecure, "edition": "oss", "authenticated": authenticated}),
    )
}

#[derive(Deserialize)]
struct Login {
    #[serde(default)]
    password: String,
}

/// `POST /admin/auth` with the form field `password` (or a JSON body
/// `{"password": ...}`).
async fn auth(State(a): State<Arc<Admin>>, headers: HeaderMap, body: Bytes) -> Response {
    if !a.may_try_login() {
        tracing::warn!("admin login refused: more than {LOGINS_PER_MINUTE} attempts this minute");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "60")],
            "Too Many Requests\n",
        )
            .into_response();
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let login: Option<Login> = if json {
        serde_json::from_slice(&body).ok()
    } else {
        serde_urlencoded::from_bytes::<Login>(&body).ok()
    };
    let password = a.node.config.admin.password.expose();
    let (Some(login), Some((encode, _))) = (login, &a.keys) else {
        return (StatusCode::BAD_REQUEST, "Bad Request\n").into_response();
    };
    if password.is_empty() || !crate::auth::api_key_matches(password, &login.password) {
        tracing::info!("admin login refused: wrong password");
        return (StatusCode::BAD_REQUEST, "Bad Request\n").into_response();
    }
    let exp = crate::clock::unix_now_ms() / 1000 + TOKEN_TTL.as_secs();
    let claims = Claims {
        sub: "admin".to_owned(),
        exp,
    };
    match jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encode) {
        Ok(token) => json_response(StatusCode::OK, &json!({"token": token})),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Deserialize)]
struct ApiCall {
    method: String,
    #[serde(default)]
    params: Option<Box<RawValue>>,
}

/// `POST /admin/api`: `{"method": ..., "params": {...}}`, any server API
/// method.
async fn admin_api(State(a): State<Arc<Admin>>, headers: HeaderMap, body: Bytes) -> Response {
    if !a.authorized(&headers, None) {
        return unauthorized();
    }
    let Ok(call) = serde_json::from_slice::<ApiCall>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "expected {\"method\": ..., \"params\": {...}}\n",
        )
            .into_response();
    };
    let params = call.params.as_deref().map_or("{}", RawValue::get);
    match call_named(&a.node, &call.method, params.as_bytes()).await {
        Answer::Malformed(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
        Answer::One(Ok(result)) => json_response(StatusCode::OK, &api::Response::ok(result)),
        Answer::One(Err(error)) => json_response(StatusCode::OK, &api::Response::<ApiResult>::error(error)),
        Answer::Batch(batch) => json_response(StatusCode::OK, &batch),
    }
}

/// `GET /admin/stats`: the nodes, and this node's figures over the last
/// minutes.
async fn stats(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if !a.authorized(&headers, None) {
        return unauthorized();
    }
    let node = &a.node;
    let engine = match node.engine_ready().await {
        Ok(()) => json!({"kind": node.config.engine.kind.as_str(), "ok": true}),
        Err(why) => json!({"kind": node.config.engine.kind.as_str(), "ok": false, "error": why}),
    };
    let nodes = match call_named(node, "info", b"{}").await {
        Answer::One(Ok(ApiResult::Info(info))) => serde_json::to_value(info.nodes).unwrap_or_default(),
        _ => Value::Array(Vec::new()),
    };
    // How long ago each other node was heard from (it says what it is
    // every NODE_INFO_EVERY): the UI flags the ones gone quiet.
    let heard: serde_json::Map<String, Value> = node
        .peers_heard()
        .into_iter()
        .map(|(info, ago)| (info.uid, json!(ago.as_millis() as u64)))
        .collect();
    let connections: serde_json::Map<String, Value> = node
        .metrics
        .live()
        .connections
        .into_iter()
        .map(|(t, n)| (t.to_owned(), json!(n)))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "node": {
                "name": node.id,
                "version": crate::node::VERSION,
                "uptime": node.uptime().as_secs(),
                "engine": engine,
                "connections": connections,
            },
            "nodes": nodes,
            "heard_ms_ago": heard,
            "node_info_every_ms": crate::node::NODE_INFO_EVERY.as_millis() as u64,
            "series": a.live.series(),
        }),
    )
}

/// `GET /admin/connections?user=&limit=`: this node's connections, oldest
/// first, with their subscriptions.
async fn connections(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !a.authorized(&headers, None) {
        return unauthorized();
    }
    let hub = &a.node.hub;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(200)
        .min(MAX_CONNECTIONS_LISTED);
    let user = q.get("user").map(String::as_str).unwrap_or("");
    let clients = if user.is_empty() {
        hub.client_list(limit)
    } else {
        let mut ids = hub.clients_of_user(user);
        ids.sort_unstable_by_key(|id| id.0);
        ids.into_iter()
            .filter_map(|id| hub.client(id))
            .take(limit)
            .collect()
    };
    let list: Vec<Value> = clients
        .iter()
        .map(|c| {
            json!({
                "client": c.id.to_string(),
                "user": &*c.user,
                "channels": c.channels.iter().map(|ch| &**ch).collect::<Vec<_>>(),
                "queued": c.queued,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"node": a.node.id, "total": hub.client_count(), "connections": list}),
    )
}

/// `GET /admin/config`: the configuration this node runs with, secrets
/// masked.
async fn config(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if !a.authorized(&headers, None) {
        return unauthorized();
    }
    let mut value = serde_json::to_value(&a.node.config).unwrap_or_default();
    mask_secrets(&mut value, "");
    json_response(StatusCode::OK, &value)
}

/// What [`mask_secrets`] puts in place of a secret.
const MASK: &str = "********";

/// Replaces every secret in a configuration's JSON: keys, passwords,
/// tokens and header values (which often carry credentials), and the
/// password in a URL (`redis://:pw@host`).
fn mask_secrets(value: &mut Value, key: &str) {
    let secret_name = |k: &str| {
        let k = k.to_ascii_lowercase();
        k.contains("secret")
            || k.contains("password")
            || k == "key"
            || k.ends_with("_key")
            || k.contains("token")
    };
    match value {
        Value::Object(map) => {
            let headers = key.ends_with("headers");
            for (k, v) in map.iter_mut() {
                if headers
                    || (secret_name(k) && !matches!(v, Value::Object(_) | Value::Array(_) | Value::Bool(_)))
                {
                    if !matches!(v, Value::String(s) if s.is_empty()) {
                        *v = Value::String(MASK.to_owned());
                    }
                } else {
                    mask_secrets(v, k);
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|v| mask_secrets(v, key)),
        Value::String(s) => {
            if let Some(masked) = mask_url_password(s) {
                *s = masked;
            }
        }
        _ => {}
    }
}

/// `scheme://user:password@host...` with the password masked.
fn mask_url_password(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (userinfo, host) = rest[..authority_end].rsplit_once('@')?;
    let (user, _) = userinfo.split_once(':')?;
    Some(format!(
        "{scheme}://{user}:{MASK}@{host}{}",
        &rest[authority_end..]
    ))
}

/// `GET /admin/tail?channel=...`: the channel's publications from now on,
/// as Server-Sent Events (`data: {"channel", "pub"}`), through a hub
/// client of its own (user `crier-admin`), gone when the page closes.
async fn tail(
    State(a): State<Arc<Admin>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !a.authorized(&headers, q.get("token").map(String::as_str)) {
        return unauthorized();
    }
    let node = a.node.clone();
    let channel = q.get("channel").cloned().unwrap_or_default();
    if channel.is_empty() || node.channel_options(&channel).is_none() {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "channel missing or in an unknown namespace"}),
        );
    }
    let (id, receiver) = node.hub.connect("crier-admin", None);
    let guard = TailClient {
        node: node.clone(),
        id,
    };
    if let Err(e) = node
        .subscribe(id, &channel, SubscribeOptions::default(), |_| None)
        .await
    {
        let code = hub_error_code(&e);
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": {"code": code.code(), "message": code.message()}}),
        );
    }
    let state = (guard, receiver, Vec::new(), channel, true);
    let stream = futures_util::stream::unfold(state, |(guard, mut rx, mut out, channel, first)| async move {
        if first {
            // The browser's `open` event fires on the first bytes.
            let hello = Bytes::from_static(b": tailing\n\n");
            return Some((Ok::<_, std::io::Error>(hello), (guard, rx, out, channel, false)));
        }
        let drained = tokio::select! {
            r = rx.drain(&mut out) => r,
            _ = tokio::time::sleep(TAIL_KEEPALIVE) => Ok(0),
            _ = guard.node.shutdown.cancelled() => return None,
        };
        drained.ok()?;
        let mut buf = Vec::new();
        for item in out.drain(..) {
            if let Outbound::Event(event) = item {
                if let crier_core::EventKind::Publication(p) = &event.kind {
                    let message = json!({"channel": &channel, "pub": wire_publication(p)});
                    buf.extend_from_slice(b"data: ");
                    buf.extend_from_slice(message.to_string().as_bytes());
                    buf.extend_from_slice(b"\n\n");
                }
            }
        }
        if buf.is_empty() {
            buf.extend_from_slice(b": keepalive\n\n");
        }
        Some((Ok(Bytes::from(buf)), (guard, rx, out, channel, false)))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The live tail's hub client: disconnected when the stream ends.
struct TailClient {
    node: Arc<Node>,
    id: crier_core::ClientId,
}

impl Drop for TailClient {
    fn drop(&mut self) {
        self.node.hub.disconnect(self.id, DisconnectReason::Removed);
    }
}

async fn index(State(a): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    a.assets.serve("index.html", &headers).await
}

async fn file(State(a): State<Arc<Admin>>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    a.assets.serve(&file, &headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_the_rest_kept() {
        let mut v = json!({
            "client": {"token": {"hmac_secret_key": "s3", "rsa_public_key": "", "audience": "a"},
                       "insecure": false},
            "http_api": {"key": "k", "handler_prefix": "/api"},
            "admin": {"password": "p", "secret": "x", "enabled": true},
            "engine": {"redis": {"address": "redis://:hunter2@127.0.0.1:6379/0"}},
            "proxies": [{"name": "a", "http": {"static_headers": {"Authorization": "Bearer t"}}}],
        });
        mask_secrets(&mut v, "");
        let text = v.to_string();
        for secret in ["s3", "\"k\"", "\"p\"", "\"x\"", "hunter2", "Bearer"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(
            v["client"]["token"]["rsa_public_key"], "",
            "an unset key stays empty"
        );
        assert_eq!(v["client"]["token"]["audience"], "a");
        assert_eq!(v["http_api"]["handler_prefix"], "/api");
        assert_eq!(v["admin"]["enabled"], true);
        assert_eq!(
            v["engine"]["redis"]["address"],
            "redis://:********@127.0.0.1:6379/0"
        );
    }

    #[test]
    fn url_passwords_only() {
        assert_eq!(mask_url_password("nats://127.0.0.1:4222"), None);
        assert_eq!(mask_url_password("http://u@h/x"), None);
        assert_eq!(
            mask_url_password("nats://u:p@h:1/x?y").as_deref(),
            Some("nats://u:********@h:1/x?y")
        );
    }
}
