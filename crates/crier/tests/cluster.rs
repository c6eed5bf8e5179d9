//! Three crier nodes (child processes of the `crier` binary) sharing one
//! `redis-server` (also a child, on a free loopback port): what a user of
//! a cluster would notice. Publications through any node reach every node's
//! clients in one order; a client that moves to another node recovers what
//! it missed; a killed node's clients vanish from presence after the TTL;
//! Redis going away is announced to clients, never a silent gap; exclusion,
//! disconnect and server-side unsubscribe reach clients on other nodes.
#![cfg(feature = "redis")]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Bound on any one wait (for a message, a process, an expiry).
const WAIT: Duration = Duration::from_secs(15);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free loopback port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Polls `ready` until it holds, for at most [`WAIT`]; this is waiting for
/// an outside process or a TTL, not ordering our own steps.
async fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Redis {
    port: u16,
    child: Option<Child>,
    /// With an append-only file here (fsync on every write), a restart
    /// keeps every channel's stream; without, it loses everything.
    dir: Option<PathBuf>,
}

impl Redis {
    async fn start() -> Self {
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir: None,
        };
        r.restart().await;
        r
    }

    async fn start_persistent() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("crier-cluster-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis data dir");
        let mut r = Redis {
            port,
            child: None,
            dir: Some(dir),
        };
        r.restart().await;
        r
    }

    /// Starts (again) on the same port: with no data, as a Redis without
    /// persistence comes back, or from its append-only file.
    async fn restart(&mut self) {
        let port = self.port.to_string();
        let mut args = vec!["--port", &port, "--bind", "127.0.0.1", "--save", ""];
        let dir = self.dir.as_ref().map(|d| d.display().to_string());
        match &dir {
            Some(d) => args.extend(["--appendonly", "yes", "--appendfsync", "always", "--dir", d]),
            None => args.extend(["--appendonly", "no"]),
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server is needed for the cluster tests: apt-get install redis-server (.ci/run does): {e}")
            });
        self.child = Some(child);
        let port = self.port;
        eventually("redis-server to answer", || ping(port)).await;
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 8];
    s.write_all(b"PING\r\n").is_ok() && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

struct Node {
    port: u16,
    child: Option<Child>,
    _config: PathBuf,
}

impl Node {
    async fn start(redis: &Redis, presence_ttl: &str) -> Self {
        Self::start_with(redis, presence_ttl, "").await
    }

    /// `redis_keys`: more lines for `[engine.redis]`.
    async fn start_with(redis: &Redis, presence_ttl: &str, redis_keys: &str) -> Self {
        let port = free_port();
        let config = std::env::temp_dir().join(format!("crier-cluster-{}-{port}.toml", std::process::id()));
        std::fs::write(
            &config,
            format!(
                r#"
[http_server]
address = "127.0.0.1"
port = {port}
[client]
allow_anonymous_connect_without_token = true
[http_api]
insecure = true
[channel.without_namespace]
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
allow_presence_for_client = true
allow_presence_for_anonymous = true
presence = true
history_size = 100
history_ttl = "300s"
force_recovery = true
[engine]
type = "redis"
[engine.redis]
address = "127.0.0.1:{redis}"
presence_ttl = "{presence_ttl}"
connect_timeout = "300ms"
io_timeout = "1s"
{redis_keys}
"#,
                redis = redis.port
            ),
        )
        .expect("write node config");
        let child = Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start crier serve");
        let mut node = Node {
            port,
            child: Some(child),
            _config: config,
        };
        eventually("a crier node to serve /health", || node.healthy()).await;
        node
    }

    fn healthy(&mut self) -> bool {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!("crier node on port {} exited: {status}", self.port);
        }
        ureq::get(format!("http://127.0.0.1:{}/health", self.port))
            .call()
            .is_ok()
    }

    fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/connection/websocket", self.port)
    }

    /// `POST /api/<method>`; the JSON answer.
    async fn api(&self, method: &str, body: Value) -> Value {
        let url = format!("http://127.0.0.1:{}/api/{method}", self.port);
        tokio::task::spawn_blocking(move || post(&url, &body))
            .await
            .expect("api task")
    }

    async fn publish(&self, channel: &str, data: Value) -> Value {
        self.api("publish", json!({"channel": channel, "data": data}))
            .await
    }

    /// SIGTERM, then waits for the process to end (bounded).
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM");
        let deadline = Instant::now() + WAIT;
        while child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "crier did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye to clients, nothing removed from Redis.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self._config);
    }
}

/// A blocking `POST` of JSON; the JSON answer.
fn post(url: &str, body: &Value) -> Value {
    let mut resp = ureq::post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("api call");
    let text = resp.body_mut().read_to_string().expect("api body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("api answered {text:?}: {e}"))
}

async fn cluster(n: usize, presence_ttl: &str) -> (Redis, Vec<Node>) {
    cluster_on(Redis::start().await, n, presence_ttl).await
}

async fn cluster_on(redis: Redis, n: usize, presence_ttl: &str) -> (Redis, Vec<Node>) {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Node::start(&redis, presence_ttl).await);
    }
    (redis, nodes)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A client speaking the JSON protocol.
struct Client {
    ws: Ws,
    next_id: u32,
    id: String,
    pending: Vec<Value>,
}

impl Client {
    async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket opens");
        let mut c = Client {
            ws,
            next_id: 1,
            id: String::new(),
            pending: Vec::new(),
        };
        let reply = c.request(json!({"connect": {}})).await;
        c.id = reply["connect"]["client"]
            .as_str()
            .unwrap_or_else(|| panic!("connect failed: {reply}"))
            .to_owned();
        c
    }

    /// The next message; `Err(code)` when the connection closed.
    async fn recv(&mut self) -> Result<Value, u16> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message within the wait");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    for line in t.lines() {
                        let v: Value = serde_json::from_str(line).expect("JSON frame");
                        if v == json!({}) {
                            let _ = self.ws.send(Message::text("{}")).await; // ping
                        } else {
                            self.pending.push(v);
                        }
                    }
                    if !self.pending.is_empty() {
                        return Ok(self.pending.remove(0));
                    }
                }
                Some(Ok(Message::Close(frame))) => return Err(frame.map_or(0, |f| u16::from(f.code))),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(0),
            }
        }
    }

    async fn next(&mut self) -> Result<Value, u16> {
        if !self.pending.is_empty() {
            return Ok(self.pending.remove(0));
        }
        self.recv().await
    }

    async fn request(&mut self, mut command: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .expect("send");
        let mut skipped = Vec::new();
        loop {
            let msg = self
                .recv()
                .await
                .unwrap_or_else(|c| panic!("closed ({c}) before reply {id}"));
            if msg["id"] == json!(id) {
                skipped.append(&mut self.pending);
                self.pending = skipped;
                return msg;
            }
            skipped.push(msg);
        }
    }

    /// Sends `command` until it is not refused with the temporary error
    /// 100, as the SDKs retry (bounded by [`WAIT`]); the reply.
    async fn request_until_served(&mut self, command: Value) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = self.request(command.clone()).await;
            if r.get("error").is_none() {
                return r;
            }
            assert_eq!(r["error"]["code"], json!(100), "{r}");
            assert!(
                Instant::now() < deadline,
                "never served after Redis came back: {r}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Skips messages until the connection closes; its close code.
    async fn close_code(&mut self) -> u16 {
        loop {
            if let Err(code) = self.next().await {
                return code;
            }
        }
    }

    async fn subscribe(&mut self, channel: &str) -> Value {
        let reply = self.request(json!({"subscribe": {"channel": channel}})).await;
        assert!(reply.get("error").is_none(), "subscribe to {channel}: {reply}");
        reply["subscribe"].clone()
    }

    /// The next publication push: `(offset, data)`.
    async fn next_pub(&mut self) -> (u64, Value) {
        loop {
            let msg = self
                .next()
                .await
                .unwrap_or_else(|c| panic!("closed ({c}) waiting for a publication"));
            let p = &msg["push"]["pub"];
            if !p.is_null() {
                return (p["offset"].as_u64().unwrap_or(0), p["data"].clone());
            }
        }
    }

    async fn pubs(&mut self, n: usize) -> Vec<(u64, Value)> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_pub().await);
        }
        out
    }
}

fn offsets(pubs: &[(u64, Value)]) -> Vec<u64> {
    pubs.iter().map(|p| p.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_through_any_node_reach_every_client_in_one_order() {
    let (_redis, nodes) = cluster(3, "60s").await;
    let mut clients = Vec::new();
    for node in &nodes {
        let mut c = Client::connect(&node.ws()).await;
        c.subscribe("chat").await;
        clients.push(c);
    }
    // Three publishers at once, each through its own node.
    let mut publishers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let url = format!("http://127.0.0.1:{}/api/publish", node.port);
        publishers.push(tokio::task::spawn_blocking(move || {
            for k in 0..10 {
                let v = post(&url, &json!({"channel": "chat", "data": {"node": i, "k": k}}));
                assert!(v["result"]["offset"].as_u64().is_some(), "{v}");
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    let first = clients[0].pubs(30).await;
    assert_eq!(offsets(&first), (1..=30).collect::<Vec<_>>());
    for c in &mut clients[1..] {
        assert_eq!(c.pubs(30).await, first, "every node delivers the same sequence");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moving_to_another_node_recovers_exactly_what_it_missed() {
    let (_redis, nodes) = cluster(3, "60s").await;
    let mut a = Client::connect(&nodes[0].ws()).await;
    let sub = a.subscribe("room").await;
    let epoch = sub["epoch"].as_str().expect("epoch").to_owned();
    for k in 1..=3 {
        nodes[2].publish("room", json!({"k": k})).await;
    }
    assert_eq!(offsets(&a.pubs(3).await), vec![1, 2, 3]);
    drop(a);
    for k in 4..=8 {
        nodes[1].publish("room", json!({"k": k})).await;
    }
    let mut c = Client::connect(&nodes[2].ws()).await;
    let reply = c
        .request(json!({"subscribe": {"channel": "room", "recover": true, "offset": 3, "epoch": epoch}}))
        .await;
    let sub = &reply["subscribe"];
    assert_eq!(sub["recovered"], json!(true), "{reply}");
    let recovered: Vec<u64> = sub["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(recovered, vec![4, 5, 6, 7, 8]);
    nodes[0].publish("room", json!({"k": 9})).await;
    assert_eq!(c.next_pub().await.0, 9, "then live, with nothing repeated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_presence_after_the_ttl_and_its_clients_recover_elsewhere() {
    let (_redis, mut nodes) = cluster(3, "2s").await;
    let mut a = Client::connect(&nodes[0].ws()).await;
    let epoch = a.subscribe("lobby").await["epoch"].as_str().unwrap().to_owned();
    let mut b = Client::connect(&nodes[1].ws()).await;
    b.subscribe("lobby").await;
    let present = nodes[2].api("presence_stats", json!({"channel": "lobby"})).await;
    assert_eq!(present["result"]["num_clients"], json!(2), "{present}");
    nodes[2].publish("lobby", json!("before")).await;
    assert_eq!(a.next_pub().await.0, 1);

    nodes[0].kill();
    assert!(
        a.next().await.is_err(),
        "the killed node's client loses its connection"
    );
    nodes[2].publish("lobby", json!("while moving")).await;
    // It reconnects to another node and recovers from where it was.
    let mut a2 = Client::connect(&nodes[1].ws()).await;
    let reply = a2
        .request(json!({"subscribe": {"channel": "lobby", "recover": true, "offset": 1, "epoch": epoch}}))
        .await;
    assert_eq!(reply["subscribe"]["recovered"], json!(true), "{reply}");
    assert_eq!(reply["subscribe"]["publications"][0]["offset"], json!(2));
    // The dead node never removed its client: the TTL does.
    let deadline = Instant::now() + WAIT;
    loop {
        let v = nodes[2].api("presence_stats", json!({"channel": "lobby"})).await;
        if v["result"]["num_clients"] == json!(2) {
            break; // b and a2; the dead node's entry is gone
        }
        assert!(
            Instant::now() < deadline,
            "presence still holds the dead node's client: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = nodes[1].api("presence", json!({"channel": "lobby"})).await;
    let ids: Vec<&String> = v["result"]["presence"]
        .as_object()
        .expect("presence")
        .keys()
        .collect();
    assert!(!ids.contains(&&a.id), "dead client {} still present: {v}", a.id);
    assert!(ids.contains(&&b.id) && ids.contains(&&a2.id), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_is_announced_and_nodes_recover_when_it_returns() {
    let (mut redis, nodes) = cluster(3, "60s").await;
    let mut clients = Vec::new();
    let mut epoch = String::new();
    for node in &nodes {
        let mut c = Client::connect(&node.ws()).await;
        epoch = c.subscribe("feed").await["epoch"].as_str().unwrap().to_owned();
        clients.push(c);
    }
    nodes[0].publish("feed", json!(1)).await;
    for c in &mut clients {
        assert_eq!(c.next_pub().await.0, 1);
    }

    redis.stop();
    // Every subscriber is told its stream may have a gap (2500) and stays
    // connected; publishing fails with the temporary error 100.
    for c in &mut clients {
        let msg = c.next().await.expect("still connected");
        assert_eq!(msg["push"]["unsubscribe"]["code"], json!(2500), "{msg}");
    }
    let failed = nodes[1].publish("feed", json!(2)).await;
    assert_eq!(failed["error"]["code"], json!(100), "{failed}");
    let refused = clients[0]
        .request(json!({"subscribe": {"channel": "feed", "recover": true, "offset": 1, "epoch": epoch}}))
        .await;
    assert_eq!(refused["error"]["code"], json!(100), "{refused}");
    assert_eq!(refused["error"]["temporary"], json!(true), "{refused}");

    redis.restart().await;
    // The SDKs retry the resubscribe with backoff; so do we. Redis lost its
    // data, so recovery cannot be complete, and the reply says so.
    for c in &mut clients {
        let r = c
            .request_until_served(
                json!({"subscribe": {"channel": "feed", "recover": true, "offset": 1, "epoch": epoch}}),
            )
            .await;
        let sub = r["subscribe"].clone();
        // `recovered` is omitted when false, as in Centrifugo.
        assert_eq!(sub["was_recovering"], json!(true), "{sub}");
        assert!(
            sub.get("recovered").is_none_or(|r| r == false),
            "a gap is reported, not hidden: {sub}"
        );
        assert_ne!(sub["epoch"].as_str(), Some(epoch.as_str()), "a new stream: {sub}");
    }
    let ok = nodes[2].publish("feed", json!("after")).await;
    assert_eq!(ok["result"]["offset"], json!(1), "{ok}");
    for c in &mut clients {
        assert_eq!(c.next_pub().await, (1, json!("after")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_disconnect_and_unsubscribe_reach_clients_on_other_nodes() {
    let (_redis, nodes) = cluster(3, "60s").await;
    let mut x = Client::connect(&nodes[1].ws()).await;
    x.subscribe("ops").await;
    let mut y = Client::connect(&nodes[2].ws()).await;
    y.subscribe("ops").await;

    let r = nodes[0]
        .api(
            "publish",
            json!({"channel": "ops", "data": "not for x", "exclude_clients": [x.id]}),
        )
        .await;
    assert_eq!(r["result"]["offset"], json!(1), "{r}");
    nodes[0].publish("ops", json!("for all")).await;
    assert_eq!(x.next_pub().await, (2, json!("for all")), "x never got offset 1");
    assert_eq!(
        y.pubs(2).await,
        vec![(1, json!("not for x")), (2, json!("for all"))]
    );

    // Server-side unsubscribe through node A reaches y on node C.
    let r = nodes[0]
        .api("unsubscribe", json!({"channel": "ops", "client": y.id}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let msg = y.next().await.expect("y stays connected");
    assert_eq!(msg["push"]["unsubscribe"]["code"], json!(2000), "{msg}");

    // Disconnect through node C reaches x on node B.
    let r = nodes[2].api("disconnect", json!({"client": x.id})).await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(x.close_code().await, 3503, "force disconnect");
    // y, unsubscribed, is still connected and can subscribe again.
    y.subscribe("ops").await;
    nodes[1].publish("ops", json!("still served")).await;
    assert_eq!(y.next_pub().await, (3, json!("still served")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_gracefully_takes_its_clients_out_of_presence_at_once() {
    // A TTL far longer than the test: only the node itself can remove them.
    let (_redis, mut nodes) = cluster(2, "600s").await;
    let mut a = Client::connect(&nodes[0].ws()).await;
    a.subscribe("hall").await;
    let mut b = Client::connect(&nodes[1].ws()).await;
    b.subscribe("hall").await;
    let v = nodes[1].api("presence_stats", json!({"channel": "hall"})).await;
    assert_eq!(v["result"]["num_clients"], json!(2), "{v}");
    nodes[0].terminate();
    let v = nodes[1].api("presence", json!({"channel": "hall"})).await;
    let ids: Vec<&String> = v["result"]["presence"]
        .as_object()
        .expect("presence")
        .keys()
        .collect();
    assert_eq!(ids, vec![&b.id], "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_redis_is_down_joins_when_it_comes_up() {
    let mut redis = Redis::start().await;
    let up = Node::start(&redis, "60s").await;
    redis.stop();
    let late = Node::start(&redis, "60s").await;
    let mut c = Client::connect(&late.ws()).await;
    let r = c.request(json!({"subscribe": {"channel": "news"}})).await;
    assert_eq!(r["error"]["code"], json!(100), "no Redis, a temporary error: {r}");
    redis.restart().await;
    c.request_until_served(json!({"subscribe": {"channel": "news"}}))
        .await;
    up.publish("news", json!("hello")).await;
    assert_eq!(c.next_pub().await, (1, json!("hello")));
    // Control commands reach it too (its control subscription came late).
    let r = up.api("disconnect", json!({"client": c.id})).await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(c.close_code().await, 3503);
}

/// With a Redis that keeps its data (append-only file), a Redis crash and
/// restart costs nothing: subscribers are told 2500, resubscribe with their
/// last offset and recover exactly what was published meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_redis_restart_is_recovered_exactly() {
    let (mut redis, nodes) = cluster_on(Redis::start_persistent().await, 2, "60s").await;
    let mut c = Client::connect(&nodes[0].ws()).await;
    let epoch = c.subscribe("log").await["epoch"].as_str().unwrap().to_owned();
    for k in 1..=3 {
        nodes[1].publish("log", json!(k)).await;
    }
    assert_eq!(offsets(&c.pubs(3).await), vec![1, 2, 3]);

    redis.stop(); // SIGKILL: a crash, not a clean shutdown
    let msg = c.next().await.expect("still connected");
    assert_eq!(msg["push"]["unsubscribe"]["code"], json!(2500), "{msg}");
    redis.restart().await;
    // Published on the other node after Redis came back, before the client
    // resubscribes: it must come back through recovery.
    let deadline = Instant::now() + WAIT;
    loop {
        let r = nodes[1].publish("log", json!(4)).await;
        if r["result"]["offset"] == json!(4) {
            break;
        }
        assert_eq!(r["error"]["code"], json!(100), "{r}");
        assert!(Instant::now() < deadline, "publishing never worked again: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // As the SDKs do: retry while this node's pub/sub is still reconnecting.
    let r = c
        .request_until_served(
            json!({"subscribe": {"channel": "log", "recover": true, "offset": 3, "epoch": epoch}}),
        )
        .await;
    let sub = &r["subscribe"];
    assert_eq!(sub["recovered"], json!(true), "{r}");
    assert_eq!(sub["epoch"], json!(epoch), "the same stream: {r}");
    assert_eq!(sub["publications"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(sub["publications"][0]["offset"], json!(4), "{r}");
    nodes[0].publish("log", json!(5)).await;
    assert_eq!(c.next_pub().await, (5, json!(5)), "then live");
}

/// A channel whose offset and epoch expired in Redis (`history_meta_ttl`)
/// while its subscribers waited and nobody published: the next subscriber
/// joins the new stream at once, and the old subscribers are told 2500
/// rather than being left on a stream that no longer exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_expired_while_idle_is_renewed_for_everyone() {
    let redis = Redis::start().await;
    let node = Node::start_with(&redis, "60s", "history_meta_ttl = \"1s\"").await;
    let mut a = Client::connect(&node.ws()).await;
    let old = a.subscribe("quiet").await["epoch"].as_str().unwrap().to_owned();
    // Waiting for Redis to expire the meta key (a TTL, not our own step).
    let port = redis.port;
    eventually("the channel's meta key to expire", || {
        redis_cli(port, &["exists", "crier:{quiet}:m"]) == "0"
    })
    .await;
    let mut b = Client::connect(&node.ws()).await;
    let sub = b.subscribe("quiet").await;
    assert_ne!(sub["epoch"].as_str(), Some(old.as_str()), "{sub}");
    let msg = a.next().await.expect("a stays connected");
    assert_eq!(msg["push"]["unsubscribe"]["code"], json!(2500), "{msg}");
    node.publish("quiet", json!("new")).await;
    assert_eq!(b.next_pub().await, (1, json!("new")));
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A live node keeps its clients in presence past the TTL by refreshing
/// their entries: the expiry Redis holds moves forward, and once the first
/// expiry has passed the client is still present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_refreshes_its_clients_presence_before_the_ttl() {
    let (redis, nodes) = cluster(1, "1s").await;
    let mut c = Client::connect(&nodes[0].ws()).await;
    c.subscribe("stay").await;
    let port = redis.port;
    let key = "crier:{stay}:pz";
    let expiry = |port| redis_cli(port, &["zscore", key, &c.id]).parse::<u64>().ok();
    let mut first = None;
    eventually("the presence entry to be written", || {
        first = expiry(port);
        first.is_some()
    })
    .await;
    let first = first.unwrap();
    eventually("the expiry to move forward (a refresh)", || {
        expiry(port).is_some_and(|e| e > first)
    })
    .await;
    // Redis's clock past the first expiry: without refreshes it would be gone.
    eventually("Redis's clock to pass the first expiry", || {
        let now = redis_cli(port, &["time"]);
        let secs: u64 = now.lines().next().and_then(|s| s.parse().ok()).unwrap_or(0);
        secs * 1000 > first + 100
    })
    .await;
    let v = nodes[0].api("presence", json!({"channel": "stay"})).await;
    assert!(
        v["result"]["presence"].get(&c.id).is_some(),
        "refreshed client gone: {v}"
    );
}
