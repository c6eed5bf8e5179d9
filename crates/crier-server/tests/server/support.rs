//! A test server on 127.0.0.1:0 and a minimal protocol-v2 WebSocket client.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crier_server::config::{Config, Format};
use crier_server::{Node, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-key-that-is-long-enough";
pub const API_KEY: &str = "test-api-key";
pub const WAIT: Duration = Duration::from_secs(5);

/// A config with a token secret, an API key, and a few namespaces:
/// top level (anyone authenticated subscribes/publishes, history 100),
/// `chat` (presence, join/leave, recovery), `closed` (no permissions).
pub fn config(extra: &str) -> Config {
    let text = format!(
        r#"
[client.token]
hmac_secret_key = "{SECRET}"

[http_api]
key = "{API_KEY}"

[channel.without_namespace]
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
allow_history_for_subscriber = true
allow_presence_for_subscriber = true
history_size = 100
history_ttl = "300s"
force_recovery = true

[[channel.namespaces]]
name = "chat"
presence = true
join_leave = true
force_push_join_leave = true
history_size = 100
history_ttl = "300s"
force_recovery = true
allow_subscribe_for_client = true
allow_publish_for_client = true
allow_history_for_client = true
allow_presence_for_client = true

[[channel.namespaces]]
name = "closed"

{extra}
"#
    );
    let (mut config, _warnings) =
        Config::parse_str(&text, Format::Toml, "test.toml").expect("test config parses");
    config.http_server.address = "127.0.0.1".into();
    config.http_server.port = 0;
    config
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    handle: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        Self::serve(Server::bind(config).await.expect("server binds"))
    }

    /// A server whose decisions are `hooks`' (`Server::bind_with_hooks`).
    pub async fn start_with_hooks(config: Config, hooks: Arc<dyn crier_core::Hooks>) -> Self {
        Self::serve(
            Server::bind_with_hooks(config, hooks)
                .await
                .expect("server binds"),
        )
    }

    fn serve(server: Server) -> Self {
        let addr = server.local_addr().expect("bound address");
        let node = server.node().clone();
        let handle = tokio::spawn(async move {
            server.run(std::future::pending()).await.expect("server runs");
        });
        Self { addr, node, handle }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// Triggers graceful shutdown and waits for the server to finish.
    pub async fn shutdown(self) {
        self.node.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(40), self.handle)
            .await
            .expect("server stops within its shutdown timeout")
            .expect("server task");
    }

    /// Calls the server API with the right key; returns (status, body).
    pub async fn api(&self, method: &str, body: Value) -> (u16, Value) {
        self.api_with(method, body.to_string(), Some(("X-API-Key", API_KEY.to_string())))
            .await
    }

    /// Calls the server API with any body and header.
    pub async fn api_with(
        &self,
        method: &str,
        body: String,
        header: Option<(&'static str, String)>,
    ) -> (u16, Value) {
        let url = format!("http://{}/api/{method}", self.addr);
        tokio::task::spawn_blocking(move || {
            let agent = http_agent();
            let mut req = agent.post(&url).header("Content-Type", "application/json");
            if let Some((name, value)) = header {
                req = req.header(name, &value);
            }
            let mut resp = req.send(body).expect("HTTP request");
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
        })
        .await
        .expect("blocking task")
    }
}

/// Signs a connection token for `user` valid for an hour.
pub fn token(user: &str) -> String {
    let exp = unix_now() + 3600;
    crier_server::auth::TokenBuilder::new()
        .user(user)
        .exp(exp)
        .sign_hs256(SECRET)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    next_id: u32,
    /// The client id from the connect reply.
    pub id: String,
}

/// How the server ended a connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Closed {
    /// How the connection ended, if `msg` (the next item of a client
    /// WebSocket) ends it: a close frame (1005 without a code), an error or
    /// the end of the stream (1006). `None` for any other message.
    pub fn ending(msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Option<Closed> {
        match msg {
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                Some(Closed { code, reason })
            }
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(Closed {
                code: 1006,
                reason: e.to_string(),
            }),
            None => Some(Closed {
                code: 1006,
                reason: "eof".into(),
            }),
        }
    }
}

impl Client {
    /// Opens a WebSocket without sending anything.
    pub async fn open(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket opens");
        Self::from_stream(ws)
    }

    /// A client over a WebSocket opened elsewhere (with custom headers).
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self {
            ws,
            pending: VecDeque::new(),
            next_id: 1,
            id: String::new(),
        }
    }

    /// Opens and connects with `token` (anonymous when empty); panics unless
    /// the connect succeeds.
    pub async fn connect(url: &str, token: &str) -> Self {
        let mut c = Self::open(url).await;
        let reply = c.request(json!({"connect": {"token": token}})).await;
        let id = reply["connect"]["client"]
            .as_str()
            .unwrap_or_else(|| panic!("connect failed: {reply}"));
        c.id = id.to_owned();
        c
    }

    /// Messages received but not yet taken (pushes skipped while waiting
    /// for a reply).
    pub fn queued(&self) -> impl Iterator<Item = &Value> {
        self.pending.iter()
    }

    /// Writes `bytes` to the socket as they are, past the WebSocket layer
    /// (for frames a well-behaved client would never send).
    pub async fn send_raw_bytes(&mut self, bytes: &[u8]) {
        match self.ws.get_mut() {
            MaybeTlsStream::Plain(tcp) => tcp.write_all(bytes).await.expect("raw send"),
            _ => panic!("tests use plain TCP"),
        }
    }

    /// Sends `text` and returns the next message, or how the server closed.
    pub async fn send_and_next(&mut self, text: &str) -> Result<Value, Closed> {
        self.send_text(text).await;
        self.next_raw().await
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends a command with the next id; returns the reply with that id
    /// (pushes seen meanwhile stay queued for `next`).
    pub async fn request(&mut self, mut command: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.send_text(&command.to_string()).await;
        self.reply(id).await
    }

    /// Waits for the reply with `id`.
    pub async fn reply(&mut self, id: u32) -> Value {
        let mut skipped = VecDeque::new();
        loop {
            let msg = self
                .next_raw()
                .await
                .unwrap_or_else(|c| panic!("closed while waiting for reply {id}: {c:?}"));
            if msg["id"] == json!(id) {
                skipped.extend(self.pending.drain(..));
                self.pending = skipped;
                return msg;
            }
            skipped.push_back(msg);
        }
    }

    /// The next message, pushes and replies alike (pings are answered).
    pub async fn next(&mut self) -> Value {
        match self.pending.pop_front() {
            Some(v) => v,
            None => self.next_raw().await.unwrap_or_else(|c| panic!("closed: {c:?}")),
        }
    }

    /// The next publication push (other pushes are skipped).
    pub async fn next_pub(&mut self) -> Value {
        loop {
            let msg = self.next().await;
            if !msg["push"]["pub"].is_null() {
                return msg["push"].clone();
            }
        }
    }

    pub async fn next_raw(&mut self) -> Result<Value, Closed> {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Ok(v);
            }
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the server said nothing for 5 s");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    for line in t.as_str().split('\n').filter(|l| !l.trim().is_empty()) {
                        let v: Value = serde_json::from_str(line).expect("server sends JSON lines");
                        if v == json!({}) {
                            self.send_text("{}").await; // pong
                            continue;
                        }
                        self.pending.push_back(v);
                    }
                }
                other => {
                    if let Some(closed) = Closed::ending(other) {
                        return Err(closed);
                    }
                }
            }
        }
    }

    /// Waits until the server closes the connection; everything before the
    /// close is discarded.
    pub async fn closed(&mut self) -> Closed {
        self.pending.clear();
        loop {
            match self.next_raw().await {
                Ok(_) => self.pending.clear(),
                Err(c) => return c,
            }
        }
    }
}

impl Client {
    /// Reads one message and never answers pings: the replies, pushes and
    /// pings (`{}`) it carried, or the close.
    pub async fn next_without_pong(&mut self) -> Result<Vec<Value>, Closed> {
        let msg = tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("the server said nothing for 5 s");
        match msg {
            Some(Ok(Message::Text(t))) => Ok(t
                .as_str()
                .split('\n')
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("server sends JSON lines"))
                .collect()),
            other => match Closed::ending(other) {
                Some(closed) => Err(closed),
                None => Ok(Vec::new()),
            },
        }
    }

    /// Like `closed`, but never answers pings.
    pub async fn closed_without_pong(&mut self) -> Closed {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("server kept quiet for 5 s");
            if let Some(closed) = Closed::ending(msg) {
                return closed;
            }
        }
    }
}

impl TestServer {
    /// Like `start`, and also returns the addresses the `[[tcp]]` listeners
    /// bound, in configuration order.
    pub async fn start_with_tcp(config: Config) -> (Self, Vec<SocketAddr>) {
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addr().expect("bound address");
        let tcp = server.tcp_addrs();
        let node = server.node().clone();
        let handle = tokio::spawn(async move {
            server.run(std::future::pending()).await.expect("server runs");
        });
        (Self { addr, node, handle }, tcp)
    }
}

impl TestServer {
    /// Like `start`, and also returns the address of the separate metrics
    /// listener (the config must set `prometheus.listen`).
    pub async fn start_with_metrics(config: Config) -> (Self, SocketAddr) {
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addr().expect("bound address");
        let metrics = server.metrics_addr().expect("a separate metrics listener");
        let node = server.node().clone();
        let handle = tokio::spawn(async move {
            server.run(std::future::pending()).await.expect("server runs");
        });
        (Self { addr, node, handle }, metrics)
    }
}

// Plain TCP peers, for `[[tcp]]` listeners.

/// A raw TCP client that checks exact bytes.
pub struct Peer {
    stream: TcpStream,
}

impl Peer {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("tcp connects");
        Self { stream }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("tcp send");
    }

    /// Reads exactly `expected.len()` bytes and compares them.
    pub async fn expect(&mut self, expected: &[u8]) {
        let mut got = vec![0u8; expected.len()];
        let read = tokio::time::timeout(WAIT, self.stream.read_exact(&mut got)).await;
        match read {
            Ok(Ok(_)) => assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected),
                "raw: {got:?}"
            ),
            Ok(Err(e)) => panic!(
                "connection ended waiting for {:?}: {e}",
                String::from_utf8_lossy(expected)
            ),
            Err(_) => panic!(
                "nothing for 5 s while waiting for {:?}",
                String::from_utf8_lossy(expected)
            ),
        }
    }

    /// Reads until `n` frames, each ending with `end`, have arrived (5 s in
    /// all) and returns their text without `end`. Bytes past the n-th frame
    /// fail the test: the peer got more than expected.
    pub async fn frames(&mut self, end: u8, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut all = Vec::new();
        let mut ended = 0;
        let mut buf = [0u8; 4096];
        while ended < n {
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => panic!("connection ended after {ended} of {n} frames"),
                Ok(Ok(got)) => {
                    ended += buf[..got].iter().filter(|b| **b == end).count();
                    all.extend_from_slice(&buf[..got]);
                }
                Err(_) => panic!("only {ended} of {n} frames within 5 s"),
            }
        }
        assert_eq!(ended, n, "more than {n} frames arrived");
        all.pop();
        let text = String::from_utf8(all).expect("utf-8 frames");
        text.split(end as char).map(str::to_owned).collect()
    }

    /// Waits until the server closes the connection; returns what it wrote
    /// before closing.
    pub async fn closed(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(WAIT, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return all,
                Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
                Err(_) => panic!(
                    "the server kept the connection open for 5 s (got {:?})",
                    String::from_utf8_lossy(&all)
                ),
            }
        }
    }
}

/// Waits until `channel` has `n` local subscribers.
pub async fn subscribers(s: &TestServer, channel: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.node.hub.subscriber_count(channel) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} has {} subscribers, expected {n}",
            s.node.hub.subscriber_count(channel)
        );
        tokio::task::yield_now().await;
    }
}

/// Connects `n` peers and waits until all are subscribed to `channel`.
pub async fn peers(s: &TestServer, addr: SocketAddr, channel: &str, n: usize) -> Vec<Peer> {
    let before = s.node.hub.subscriber_count(channel);
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(Peer::connect(addr).await);
    }
    subscribers(s, channel, before + n).await;
    all
}

/// A client of user `watcher` subscribed to `news`, to check with
/// [`assert_still_served`] that a failure elsewhere left it alone.
pub async fn watcher(s: &TestServer) -> Client {
    let mut w = Client::connect(&s.ws_url(), &token("watcher")).await;
    let r = w.request(json!({"subscribe": {"channel": "news"}})).await;
    assert!(r["subscribe"].is_object(), "watcher subscribes: {r}");
    w
}

/// Publishes a fresh marker to `news` through the API and waits until
/// `watcher` receives it: the server kept serving the other clients.
pub async fn assert_still_served(s: &TestServer, watcher: &mut Client) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let marker = json!({"still_served": NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)});
    let (status, body) = s.api("publish", json!({"channel": "news", "data": marker})).await;
    assert_eq!(status, 200, "{body}");
    while watcher.next_pub().await["pub"]["data"] != marker {}
}

/// A port on 127.0.0.1 that was free a moment ago, for a child server.
#[cfg(any(feature = "redis", feature = "nats"))]
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("local addr").port()
}

/// Polls `check` until true, for at most `within`: for what only time or
/// another process makes happen (a TTL, a connection), never to order the
/// test's own steps.
pub async fn eventually_within<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One masked client frame, as a client would write it.
pub fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A blocking HTTP client that returns every status as a response (tests
/// check statuses, not errors).
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}
