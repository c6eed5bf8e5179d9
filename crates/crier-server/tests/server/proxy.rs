//! The backend's proxies against a real HTTP backend the test starts on a
//! free loopback port (axum): connect without a token, subscribe, publish
//! and RPC, the backend's errors and disconnects reaching the client, and
//! every way a backend can fail (slow, down, 500, not JSON, too large),
//! each answered with error 100 while other clients are served.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::support::*;

/// What the backend saw: every request body, by path.
#[derive(Clone, Default)]
pub(super) struct Seen(std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>);

impl Seen {
    fn push(&self, path: &str, body: &Value) {
        self.0.lock().unwrap().push((path.to_owned(), body.clone()));
    }

    fn of(&self, path: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// A backend: `/connect` admits `data.user` (into `news`, with connect
/// data echoing the `X-Auth` header), refuses `data.deny` with 1001,
/// disconnects `data.kick` with 4501; `/subscribe` refuses `proxied:denied`
/// with 1403, else gives info and data; `/publish` wraps the data in
/// `{"modified": ...}`; `/rpc` answers `sum` and refuses anything else
/// with 1404. `/slow`, `/500`, `/invalid` and `/huge` fail as named.
pub(super) async fn backend() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/connect", post(connect))
        .route("/subscribe", post(subscribe))
        .route("/publish", post(publish))
        .route("/rpc", post(rpc))
        .route("/refresh", post(refresh))
        .route("/sub_refresh", post(sub_refresh))
        .route(
            "/slow",
            post(|| async {
                // The backend being slow, past crier's timeout: what is tested.
                tokio::time::sleep(Duration::from_secs(2)).await;
                Json(json!({"result": {}}))
            }),
        )
        .route("/500", post(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/invalid", post(|| async { "this is not JSON" }))
        .route("/huge", post(|| async { "x".repeat(2 << 20) }))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// A JSON answer.
#[allow(non_snake_case)]
fn Json(v: Value) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("crier sends JSON")
}

async fn connect(State(seen): State<Seen>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let body = parse(&body);
    seen.push("/connect", &body);
    let data = &body["data"];
    if data["deny"].as_bool() == Some(true) {
        return Json(json!({"error": {"code": 1001, "message": "not you"}})).into_response();
    }
    if data["kick"].as_bool() == Some(true) {
        return Json(json!({"disconnect": {"code": 4501, "reason": "go away"}})).into_response();
    }
    let auth = headers
        .get("x-auth")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let expire_at = if data["expiring"].as_bool() == Some(true) {
        unix_now() + 1
    } else {
        0
    };
    Json(json!({"result": {
        "expire_at": expire_at,
        "user": data["user"].as_str().unwrap_or("anonymous-by-backend"),
        "channels": ["news"],
        "info": {"from": "backend"},
        "data": {"hello": "from backend", "x_auth": auth},
    }}))
    .into_response()
}

async fn subscribe(State(seen): State<Seen>, body: axum::body::Bytes) -> Response {
    let body = parse(&body);
    seen.push("/subscribe", &body);
    if body["channel"] == json!("proxied:denied") {
        return Json(json!({"error": {"code": 1403, "message": "not in this room"}}));
    }
    let expire_at = if body["data"]["expiring"].as_bool() == Some(true) {
        unix_now() + 1
    } else {
        0
    };
    Json(json!({"result": {"info": {"role": "reader"}, "data": {"welcome": true}, "expire_at": expire_at}}))
}

async fn publish(State(seen): State<Seen>, body: axum::body::Bytes) -> Response {
    let body = parse(&body);
    seen.push("/publish", &body);
    Json(json!({"result": {"data": {"modified": body["data"]}}}))
}

/// Prolongs a connection by a second the first time, ends it the second.
async fn refresh(State(seen): State<Seen>, body: axum::body::Bytes) -> Response {
    let body = parse(&body);
    seen.push("/refresh", &body);
    if seen.of("/refresh").len() == 1 {
        Json(json!({"result": {"expire_at": unix_now() + 1}}))
    } else {
        Json(json!({"result": {"expired": true}}))
    }
}

/// Prolongs a subscription by a second the first time, ends it the second.
async fn sub_refresh(State(seen): State<Seen>, body: axum::body::Bytes) -> Response {
    let body = parse(&body);
    seen.push("/sub_refresh", &body);
    if seen.of("/sub_refresh").len() == 1 {
        Json(json!({"result": {"expire_at": unix_now() + 1}}))
    } else {
        Json(json!({"result": {"expired": true}}))
    }
}

async fn rpc(State(seen): State<Seen>, body: axum::body::Bytes) -> Response {
    let body = parse(&body);
    seen.push("/rpc", &body);
    match body["method"].as_str() {
        Some("sum") => {
            let (a, b) = (
                body["data"]["a"].as_i64().unwrap_or(0),
                body["data"]["b"].as_i64().unwrap_or(0),
            );
            Json(json!({"result": {"data": {"sum": a + b}}}))
        }
        _ => Json(json!({"error": {"code": 1404, "message": "unknown method"}})),
    }
}

/// A loopback address nothing listens on.
fn nowhere() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// The server configuration with every proxy pointed at `backend`, and
/// named RPC proxies per failure (`slow:`, `down:`, `500:`, `invalid:`,
/// `huge:` methods).
pub(super) fn proxied(backend: SocketAddr) -> String {
    let down = nowhere();
    format!(
        r#"
[client.proxy.connect]
enabled = true
endpoint = "http://{backend}/connect"
http_headers = ["X-Auth"]

[channel.proxy.subscribe]
endpoint = "http://{backend}/subscribe"
[channel.proxy.publish]
endpoint = "http://{backend}/publish"

[rpc.proxy]
endpoint = "http://{backend}/rpc"
[rpc.without_namespace]
proxy_enabled = true
[[rpc.namespaces]]
name = "slow"
proxy_enabled = true
proxy_name = "slow"
[[rpc.namespaces]]
name = "down"
proxy_enabled = true
proxy_name = "down"
[[rpc.namespaces]]
name = "500"
proxy_enabled = true
proxy_name = "status"
[[rpc.namespaces]]
name = "invalid"
proxy_enabled = true
proxy_name = "invalid"
[[rpc.namespaces]]
name = "huge"
proxy_enabled = true
proxy_name = "huge"

[[proxies]]
name = "slow"
endpoint = "http://{backend}/slow"
timeout = "200ms"
[[proxies]]
name = "down"
endpoint = "http://{down}/rpc"
[[proxies]]
name = "status"
endpoint = "http://{backend}/500"
[[proxies]]
name = "invalid"
endpoint = "http://{backend}/invalid"
[[proxies]]
name = "huge"
endpoint = "http://{backend}/huge"

[[channel.namespaces]]
name = "proxied"
subscribe_proxy_enabled = true
publish_proxy_enabled = true
presence = true
"#
    )
}

#[tokio::test]
async fn a_client_without_a_token_connects_through_the_connect_proxy() {
    let (backend, seen) = backend().await;
    let s = TestServer::start(config(&proxied(backend))).await;
    let mut request = s.ws_url().into_client_request().expect("request");
    request
        .headers_mut()
        .insert("X-Auth", "secret-cookie".parse().unwrap());
    request
        .headers_mut()
        .insert("X-Not-Forwarded", "no".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("open");
    let mut c = Client::from_stream(ws);
    let reply = c
        .request(json!({"connect": {"data": {"user": "alice"}, "name": "test", "version": "1"}}))
        .await;
    let connect = &reply["connect"];
    c.id = connect["client"].as_str().expect("a client id").to_owned();
    assert_eq!(
        connect["data"],
        json!({"hello": "from backend", "x_auth": "secret-cookie"})
    );
    assert!(
        connect["subs"]["news"].is_object(),
        "server-side channel from the backend: {reply}"
    );
    let asked = &seen.of("/connect")[0];
    assert_eq!(
        asked["client"],
        json!(c.id),
        "the backend is told the id the client gets"
    );
    assert_eq!(asked["transport"], json!("websocket"));
    assert_eq!(asked["protocol"], json!("json"));
    assert_eq!(asked["data"], json!({"user": "alice"}));
    assert_eq!(
        (asked["name"].clone(), asked["version"].clone()),
        (json!("test"), json!("1"))
    );
    // The backend's user is the connection's user.
    s.api("publish", json!({"channel": "news", "data": {"n": 1}}))
        .await;
    assert_eq!(c.next_pub().await["pub"]["data"], json!({"n": 1}));
    let (_, presence) = s.api("presence", json!({"channel": "proxied:x"})).await;
    assert!(presence["result"]["presence"].is_object(), "{presence}");
    let r = c.request(json!({"subscribe": {"channel": "proxied:x"}})).await;
    assert_eq!(r["subscribe"]["data"], json!({"welcome": true}), "{r}");
    let (_, presence) = s.api("presence", json!({"channel": "proxied:x"})).await;
    let me = &presence["result"]["presence"][&c.id];
    assert_eq!(me["user"], json!("alice"), "{presence}");
    assert_eq!(me["conn_info"], json!({"from": "backend"}));
    assert_eq!(me["chan_info"], json!({"role": "reader"}));
    // A client with a token still skips the connect proxy.
    let before = seen.of("/connect").len();
    let with_token = Client::connect(&s.ws_url(), &token("bob")).await;
    assert!(!with_token.id.is_empty());
    assert_eq!(
        seen.of("/connect").len(),
        before,
        "a token skips the connect proxy"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn the_refresh_proxy_extends_a_connection_past_its_expiry_then_ends_it() {
    let (backend, seen) = backend().await;
    let cfg = format!(
        "{}\n[client.proxy.refresh]\nenabled = true\nendpoint = \"http://{backend}/refresh\"\n",
        proxied(backend)
    );
    let s = TestServer::start(config(&cfg)).await;
    let mut c = Client::open(&s.ws_url()).await;
    let r = c
        .request(json!({"connect": {"data": {"user": "erin", "expiring": true}}}))
        .await;
    assert!(r["connect"]["client"].is_string(), "{r}");
    // The server refreshes it: the client is not told it expires.
    assert_eq!(r["connect"]["expires"], json!(null), "{r}");
    let first_expiry = unix_now() + 1;
    // The backend is asked at the expiry and prolongs it by a second...
    eventually_within("the first refresh call", Duration::from_secs(5), || {
        let seen = seen.clone();
        async move { seen.of("/refresh").len() == 1 }
    })
    .await;
    assert_eq!(seen.of("/refresh")[0]["user"], json!("erin"));
    // ...so the connection still answers after its first expiry...
    let r = c.request(json!({"ping": {}})).await;
    assert!(r["ping"].is_object(), "{r}");
    assert!(unix_now() >= first_expiry, "asked before the expiry");
    // ...until the backend says it expired: 3005.
    assert_eq!(c.closed().await.code, 3005);
    assert_eq!(seen.of("/refresh").len(), 2);
    s.shutdown().await;
}

/// The same for a unidirectional client (here HTTP streaming), which has
/// no way to refresh itself: the server asks the backend at the expiry.
#[tokio::test]
async fn the_refresh_proxy_extends_a_uni_connection_then_ends_it() {
    let (backend, seen) = backend().await;
    let cfg = format!(
        "{}\n[client.proxy.refresh]\nenabled = true\nendpoint = \"http://{backend}/refresh\"\n[uni_http_stream]\nenabled = true\n",
        proxied(backend)
    );
    let s = TestServer::start(config(&cfg)).await;
    let body = json!({"data": {"user": "uni-erin", "expiring": true}}).to_string();
    let mut st = super::uni::UniStream::request(&s, "POST", "/connection/uni_http_stream", &body).await;
    assert_eq!(st.status, 200);
    let connected = st.push().await;
    assert!(connected["connect"]["client"].is_string(), "{connected}");
    let first_expiry = unix_now() + 1;
    eventually_within("the first refresh call", Duration::from_secs(5), || {
        let seen = seen.clone();
        async move { seen.of("/refresh").len() == 1 }
    })
    .await;
    assert_eq!(seen.of("/refresh")[0]["user"], json!("uni-erin"));
    assert_eq!(seen.of("/refresh")[0]["transport"], json!("uni_http_stream"));
    // Still connected past its first expiry: a publication in the
    // backend's server-side channel arrives.
    s.api("publish", json!({"channel": "news", "data": {"still": "here"}}))
        .await;
    let p = st.push().await;
    assert_eq!(p["pub"]["data"], json!({"still": "here"}), "{p}");
    assert!(unix_now() >= first_expiry, "asked before the expiry");
    // Then the backend says it expired: the stream ends with 3005.
    let d = st.push().await;
    assert_eq!(d["disconnect"]["code"], json!(3005), "{d}");
    assert!(st.next().await.is_none());
    assert_eq!(seen.of("/refresh").len(), 2);
    s.shutdown().await;
}

#[tokio::test]
async fn the_sub_refresh_proxy_extends_a_subscription_then_ends_it_with_2501() {
    let (backend, seen) = backend().await;
    let text = format!(
        "{}\n[channel.proxy.sub_refresh]\nendpoint = \"http://{backend}/sub_refresh\"\n",
        proxied(backend)
    );
    let mut cfg = config(&text);
    let ns = cfg
        .channel
        .namespaces
        .iter_mut()
        .find(|n| n.name == "proxied")
        .expect("namespace");
    ns.options.sub_refresh_proxy_enabled = true;
    let s = TestServer::start(cfg).await;
    let mut c = Client::open(&s.ws_url()).await;
    c.request(json!({"connect": {"data": {"user": "frank"}}})).await;
    let r = c
        .request(json!({"subscribe": {"channel": "proxied:timed", "data": {"expiring": true}}}))
        .await;
    assert_eq!(r["subscribe"]["expires"], json!(true), "{r}");
    eventually_within("the first sub_refresh call", Duration::from_secs(5), || {
        let seen = seen.clone();
        async move { seen.of("/sub_refresh").len() == 1 }
    })
    .await;
    let asked = &seen.of("/sub_refresh")[0];
    assert_eq!(
        (asked["channel"].clone(), asked["user"].clone()),
        (json!("proxied:timed"), json!("frank"))
    );
    // Still subscribed past the first expiry: a publication arrives.
    s.api("publish", json!({"channel": "proxied:timed", "data": {"n": 1}}))
        .await;
    assert_eq!(c.next_pub().await["pub"]["data"], json!({"n": 1}));
    // Then the backend says it expired: an unsubscribe push, 2501.
    let push = loop {
        let m = c.next().await;
        if m["push"]["unsubscribe"].is_object() {
            break m;
        }
    };
    assert_eq!(push["push"]["unsubscribe"]["code"], json!(2501), "{push}");
    assert_eq!(push["push"]["channel"], json!("proxied:timed"));
    s.shutdown().await;
}

#[tokio::test]
async fn the_backends_errors_and_disconnects_reach_the_client_with_its_codes() {
    let (backend, _) = backend().await;
    let s = TestServer::start(config(&proxied(backend))).await;
    let mut c = Client::open(&s.ws_url()).await;
    let r = c.request(json!({"connect": {"data": {"deny": true}}})).await;
    assert_eq!(r["error"], json!({"code": 1001, "message": "not you"}), "{r}");
    let mut c = Client::open(&s.ws_url()).await;
    c.send_text(&json!({"id": 1, "connect": {"data": {"kick": true}}}).to_string())
        .await;
    let closed = c.closed().await;
    assert_eq!((closed.code, closed.reason.as_str()), (4501, "go away"));

    let mut c = Client::open(&s.ws_url()).await;
    c.request(json!({"connect": {"data": {"user": "carol"}}})).await;
    let r = c
        .request(json!({"subscribe": {"channel": "proxied:denied"}}))
        .await;
    assert_eq!(r["error"]["code"], json!(1403), "{r}");
    c.request(json!({"subscribe": {"channel": "proxied:room"}})).await;
    let r = c
        .request(json!({"publish": {"channel": "proxied:room", "data": {"text": "hi"}}}))
        .await;
    assert!(r["publish"].is_object(), "{r}");
    let p = c.next_pub().await;
    assert_eq!(
        p["pub"]["data"],
        json!({"modified": {"text": "hi"}}),
        "the backend's data: {p}"
    );
    let r = c
        .request(json!({"rpc": {"method": "sum", "data": {"a": 2, "b": 3}}}))
        .await;
    assert_eq!(r["rpc"]["data"], json!({"sum": 5}), "{r}");
    let r = c.request(json!({"rpc": {"method": "nope"}})).await;
    assert_eq!(
        r["error"],
        json!({"code": 1404, "message": "unknown method"}),
        "{r}"
    );
    s.shutdown().await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn a_failing_backend_gives_error_100_and_leaks_nothing() {
    let (backend, _) = backend().await;
    let s = TestServer::start(config(&proxied(backend))).await;
    let mut w = watcher(&s).await;
    let mut c = Client::open(&s.ws_url()).await;
    c.request(json!({"connect": {"data": {"user": "dave"}}})).await;
    let internal = json!({"code": 100, "message": "internal server error", "temporary": true});
    for method in ["slow:x", "down:x", "500:x", "invalid:x", "huge:x"] {
        let r = c.request(json!({"rpc": {"method": method}})).await;
        assert_eq!(r["error"], internal, "{method}: {r}");
        assert_still_served(&s, &mut w).await;
    }
    // 1,000 more failing calls (all but the slow kind), then the same
    // number of open files and a proxy that still answers.
    let fds = open_fds();
    for i in 0..1000 {
        let method = ["down:x", "500:x", "invalid:x", "huge:x"][i % 4];
        let r = c.request(json!({"rpc": {"method": method}})).await;
        assert_eq!(r["error"]["code"], json!(100), "{method}: {r}");
    }
    let after = open_fds();
    assert!(
        after <= fds + 8,
        "open files {fds} → {after} after 1,000 failed calls"
    );
    let r = c
        .request(json!({"rpc": {"method": "sum", "data": {"a": 1, "b": 1}}}))
        .await;
    assert_eq!(r["rpc"]["data"], json!({"sum": 2}));
    let (_, text) = s.api("info", json!({})).await;
    assert!(text["result"].is_object());
    s.shutdown().await;
}

#[tokio::test]
async fn a_connect_proxy_that_fails_refuses_with_100_and_uni_clients_with_3004() {
    let down = nowhere();
    let cfg = format!(
        "[client.proxy.connect]\nenabled = true\nendpoint = \"http://{down}/connect\"\n[uni_http_stream]\nenabled = true\n"
    );
    let s = TestServer::start(config(&cfg)).await;
    let mut c = Client::open(&s.ws_url()).await;
    let r = c.request(json!({"connect": {}})).await;
    assert_eq!(r["error"]["code"], json!(100), "{r}");
    assert_eq!(r["error"]["temporary"], json!(true), "{r}");
    let (status, body) = {
        let url = format!("http://{}/connection/uni_http_stream", s.addr);
        tokio::task::spawn_blocking(move || {
            let agent = http_agent();
            let mut resp = agent.post(&url).send("{}").expect("request");
            (
                resp.status().as_u16(),
                resp.body_mut().read_to_string().unwrap_or_default(),
            )
        })
        .await
        .expect("blocking")
    };
    assert_eq!(status, 200);
    assert!(body.contains("\"code\":3004"), "{body}");
    s.shutdown().await;
}

#[tokio::test]
async fn proxy_configuration_mistakes_are_refused_at_startup() {
    for (cfg, key) in [
        (
            "[client.proxy.connect]\nenabled = true\n",
            "client.proxy.connect.endpoint",
        ),
        (
            "[client.proxy.connect]\nenabled = true\nendpoint = \"https://x/c\"\n",
            "client.proxy.connect.endpoint",
        ),
        (
            "[channel.without_namespace]\nsubscribe_proxy_enabled = true\n",
            "channel.without_namespace.subscribe_proxy_enabled",
        ),
        (
            "[channel.without_namespace]\npublish_proxy_enabled = true\npublish_proxy_name = \"nope\"\n",
            "channel.without_namespace.publish_proxy_enabled",
        ),
        (
            "[rpc.without_namespace]\nproxy_enabled = true\n",
            "rpc.without_namespace.proxy_enabled",
        ),
        (
            "[[proxies]]\nname = \"a\"\nendpoint = \"http://x/\"\n",
            "proxies[0].name",
        ),
    ] {
        let parsed =
            crier_server::config::Config::parse_str(cfg, crier_server::config::Format::Toml, "t.toml")
                .and_then(|(c, _)| c.validate());
        let err = parsed.err().unwrap_or_else(|| panic!("{cfg} was accepted"));
        assert!(err.to_string().contains(key), "{cfg}: {err}");
    }
}

/// Hooks written in Rust instead of a backend over HTTP: `connect` admits
/// `data.user` into `news` (connect data echoing the `X-Auth` header the
/// transport kept for the proxies), refuses `data.deny` with 1001;
/// `subscribe` decides `rust:` channels (refusing `rust:denied` with
/// 1403); `publish` wraps `rust:` publications in `{"by_rust": ...}`;
/// `rpc` answers `sum`, disconnects on `kick` (4501) and refuses
/// anything else with 1404. Every question is written down.
#[derive(Default)]
struct RustHooks(std::sync::Mutex<Vec<String>>);

impl RustHooks {
    fn note(&self, caller: &crier_core::Caller<'_>, what: String) {
        self.0.lock().unwrap().push(format!(
            "{} {} {} {}: {what}",
            caller.id, caller.user, caller.transport, caller.protocol
        ));
    }

    fn asked(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn json_bytes(v: Value) -> Option<bytes::Bytes> {
    Some(bytes::Bytes::from(v.to_string()))
}

impl crier_core::Hooks for RustHooks {
    fn decides(&self, hook: crier_core::Hook<'_>) -> bool {
        use crier_core::Hook;
        match hook {
            Hook::Connect | Hook::Rpc(_) => true,
            Hook::Subscribe(channel) | Hook::Publish(channel) => channel.starts_with("rust:"),
            Hook::Refresh | Hook::SubRefresh(_) => false,
        }
    }

    fn connect<'a>(
        &'a self,
        r: crier_core::ConnectRequest<'a>,
    ) -> crier_core::Pending<'a, crier_core::Decision<crier_core::ConnectAnswer>> {
        use crier_core::{ConnectAnswer, Decision, ServerSubscription};
        Box::pin(async move {
            self.note(&r.caller, format!("connect {}", r.name));
            let data: Value = r
                .data
                .map(|d| serde_json::from_slice(d).expect("JSON"))
                .unwrap_or_default();
            if data["deny"].as_bool() == Some(true) {
                return Decision::refuse(1001, "not you");
            }
            let x_auth = r
                .caller
                .context
                .and_then(|c| c.downcast_ref::<crier_server::Forwarded>())
                .and_then(|f| f.http.get("x-auth"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            // Answered a little later, as a real lookup would be.
            tokio::task::yield_now().await;
            Decision::Allow(ConnectAnswer {
                user: data["user"].as_str().unwrap_or_default().to_owned(),
                info: json_bytes(json!({"from": "rust"})),
                data: json_bytes(json!({"hello": "from rust", "x_auth": x_auth})),
                channels: [("news".to_owned(), ServerSubscription::default())].into(),
                ..Default::default()
            })
        })
    }

    fn subscribe<'a>(
        &'a self,
        r: crier_core::SubscribeRequest<'a>,
    ) -> crier_core::Pending<'a, crier_core::Decision<crier_core::SubscribeAnswer>> {
        use crier_core::{Decision, SubscribeAnswer};
        self.note(&r.caller, format!("subscribe {}", r.channel));
        if r.channel == "rust:denied" {
            return Decision::refuse(1403, "not in this room").ready();
        }
        Decision::Allow(SubscribeAnswer {
            info: json_bytes(json!({"role": "reader"})),
            data: json_bytes(json!({"welcome": r.channel})),
            expire_at: None,
        })
        .ready()
    }

    fn publish<'a>(
        &'a self,
        r: crier_core::PublishRequest<'a>,
    ) -> crier_core::Pending<'a, crier_core::Decision<crier_core::PublishAnswer>> {
        use crier_core::{Decision, PublishAnswer};
        self.note(&r.caller, format!("publish {}", r.channel));
        let original: Value = serde_json::from_slice(r.data).expect("JSON");
        Decision::Allow(PublishAnswer {
            data: json_bytes(json!({"by_rust": original})),
            skip_history: false,
        })
        .ready()
    }

    fn rpc<'a>(
        &'a self,
        r: crier_core::RpcRequest<'a>,
    ) -> crier_core::Pending<'a, crier_core::Decision<crier_core::RpcAnswer>> {
        use crier_core::{Decision, RpcAnswer};
        self.note(&r.caller, format!("rpc {}", r.method));
        let data: Value = r
            .data
            .map(|d| serde_json::from_slice(d).expect("JSON"))
            .unwrap_or_default();
        match r.method {
            "sum" => Decision::Allow(RpcAnswer {
                data: json_bytes(
                    json!({"sum": data["a"].as_i64().unwrap_or(0) + data["b"].as_i64().unwrap_or(0)}),
                ),
            }),
            "kick" => Decision::disconnect(4501, "go away"),
            _ => Decision::refuse(1404, "unknown method"),
        }
        .ready()
    }
}

#[tokio::test]
async fn hooks_in_rust_decide_connect_subscribe_publish_and_rpc_instead_of_the_proxies() {
    let (backend, seen) = backend().await;
    // Every proxy configured: the hooks replace them all.
    let cfg = format!(
        "{}\n[[channel.namespaces]]\nname = \"rust\"\npresence = true\n",
        proxied(backend)
    );
    let hooks = std::sync::Arc::new(RustHooks::default());
    let s = TestServer::start_with_hooks(config(&cfg), hooks.clone()).await;

    // Connect without a token: the Rust hook admits, with server-side
    // channels, info, data, and the header the transport kept.
    let mut request = s.ws_url().into_client_request().expect("request");
    request
        .headers_mut()
        .insert("X-Auth", "secret-cookie".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("open");
    let mut c = Client::from_stream(ws);
    let reply = c
        .request(json!({"connect": {"data": {"user": "alice"}, "name": "rusty"}}))
        .await;
    let connect = &reply["connect"];
    c.id = connect["client"].as_str().expect("a client id").to_owned();
    assert_eq!(
        connect["data"],
        json!({"hello": "from rust", "x_auth": "secret-cookie"}),
        "{reply}"
    );
    assert!(
        connect["subs"]["news"].is_object(),
        "server-side channel: {reply}"
    );
    s.api("publish", json!({"channel": "news", "data": {"n": 1}}))
        .await;
    assert_eq!(c.next_pub().await["pub"]["data"], json!({"n": 1}));

    // Subscribe: the hook decides `rust:` channels, with info and data...
    let r = c.request(json!({"subscribe": {"channel": "rust:room"}})).await;
    assert_eq!(r["subscribe"]["data"], json!({"welcome": "rust:room"}), "{r}");
    let (_, presence) = s.api("presence", json!({"channel": "rust:room"})).await;
    let me = &presence["result"]["presence"][&c.id];
    assert_eq!(me["user"], json!("alice"), "{presence}");
    assert_eq!(me["conn_info"], json!({"from": "rust"}));
    assert_eq!(me["chan_info"], json!({"role": "reader"}));
    let r = c.request(json!({"subscribe": {"channel": "rust:denied"}})).await;
    assert_eq!(
        r["error"],
        json!({"code": 1403, "message": "not in this room"}),
        "{r}"
    );
    // ...and where it does not decide, the namespace's permissions do.
    let r = c.request(json!({"subscribe": {"channel": "closed:x"}})).await;
    assert_eq!(r["error"]["code"], json!(103), "{r}");

    // Publish: the hook's data reaches the subscribers.
    let r = c
        .request(json!({"publish": {"channel": "rust:room", "data": {"text": "hi"}}}))
        .await;
    assert!(r["publish"].is_object(), "{r}");
    assert_eq!(
        c.next_pub().await["pub"]["data"],
        json!({"by_rust": {"text": "hi"}})
    );

    // RPC: the hook's result, its refusal, its disconnect.
    let r = c
        .request(json!({"rpc": {"method": "sum", "data": {"a": 2, "b": 3}}}))
        .await;
    assert_eq!(r["rpc"]["data"], json!({"sum": 5}), "{r}");
    let r = c.request(json!({"rpc": {"method": "nope"}})).await;
    assert_eq!(
        r["error"],
        json!({"code": 1404, "message": "unknown method"}),
        "{r}"
    );
    let id = &c.id;
    let asked = hooks.asked();
    assert_eq!(
        asked,
        [
            // Asked with the id the client then got, before it had a user.
            format!("{id}  websocket json: connect rusty"),
            format!("{id} alice websocket json: subscribe rust:room"),
            format!("{id} alice websocket json: subscribe rust:denied"),
            format!("{id} alice websocket json: publish rust:room"),
            format!("{id} alice websocket json: rpc sum"),
            format!("{id} alice websocket json: rpc nope"),
        ]
    );
    c.send_text(&json!({"id": 99, "rpc": {"method": "kick"}}).to_string())
        .await;
    let closed = c.closed().await;
    assert_eq!((closed.code, closed.reason.as_str()), (4501, "go away"));

    // A refused connect reaches the client with the hook's code.
    let mut d = Client::open(&s.ws_url()).await;
    let r = d.request(json!({"connect": {"data": {"deny": true}}})).await;
    assert_eq!(r["error"], json!({"code": 1001, "message": "not you"}), "{r}");
    // A token still skips the connect hook.
    let before = hooks.asked().len();
    let with_token = Client::connect(&s.ws_url(), &token("bob")).await;
    assert!(!with_token.id.is_empty());
    assert_eq!(hooks.asked().len(), before, "a token skips the connect hook");

    // The configured HTTP proxies were never called.
    for path in ["/connect", "/subscribe", "/publish", "/rpc"] {
        assert!(seen.of(path).is_empty(), "{path} was called");
    }
    s.shutdown().await;
}
