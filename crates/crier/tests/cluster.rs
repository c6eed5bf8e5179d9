//! Several crier nodes (child processes of the `crier` binary) sharing one
//! broker (also a child, on a free loopback port): `redis-server` for the
//! Redis engine, `nats-server` with JetStream for the NATS engine. What a
//! user of a cluster would notice: publications through any node reach
//! every node's clients in one order; a client that moves to another node
//! recovers what it missed; a killed node's clients vanish from presence
//! after the TTL; the broker going away is announced to clients, never a
//! silent gap; exclusion, disconnect and server-side unsubscribe reach
//! clients on other nodes.
//!
//! Each scenario is one `async fn` taking the [`Engine`]; `on_every_engine!`
//! runs it as `redis::<scenario>` and `nats::<scenario>`, one test per
//! engine built in. Tests that look inside Redis are Redis-only.
#![cfg(any(feature = "redis", feature = "nats"))]

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

/// A path under the temp dir that no other test of this run uses.
fn scratch(what: &str, port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("crier-cluster-{what}-{}-{port}", std::process::id()))
}

/// Polls `ready` until it holds, for at most [`WAIT`]; this is waiting for
/// an outside process or a TTL, not ordering our own steps.
async fn eventually(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Repeats `attempt` while it is refused with the temporary error 100, as
/// the SDKs retry (bounded by [`WAIT`]); the first answer that is not.
async fn until_served(mut attempt: impl AsyncFnMut() -> Value) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = attempt().await;
        if r.get("error").is_none() {
            return r;
        }
        assert_eq!(r["error"]["code"], json!(100), "{r}");
        assert!(
            Instant::now() < deadline,
            "never served after the broker came back: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then waits for the process to end (bounded).
fn terminate(mut child: Child, what: &str) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -TERM {what}");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "{what} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL, if running: no goodbye to anyone.
fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Which engine the nodes run, and so which broker they share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    #[cfg(feature = "redis")]
    Redis,
    #[cfg(feature = "nats")]
    Nats,
}

impl Engine {
    /// `engine.type` in the node config, and the name of its section.
    fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "redis")]
            Engine::Redis => "redis",
            #[cfg(feature = "nats")]
            Engine::Nats => "nats",
        }
    }

    /// The broker's server program (and its Debian package).
    fn program(self) -> &'static str {
        match self {
            #[cfg(feature = "redis")]
            Engine::Redis => "redis-server",
            #[cfg(feature = "nats")]
            Engine::Nats => "nats-server",
        }
    }
}

/// How the broker goes away and what it has when it comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outage {
    /// Killed, and back with nothing: a Redis without persistence, a NATS
    /// whose JetStream store was lost.
    DataLost,
    /// Back with every stream it had: a Redis with an append-only file
    /// (killed), a NATS stopped with SIGTERM on the same store.
    DataKept,
}

/// The broker every node of a cluster talks to: a child process on a free
/// loopback port, restartable on the same port.
struct Broker {
    engine: Engine,
    port: u16,
    child: Option<Child>,
    /// What survives a restart: Redis's append-only file (fsync on every
    /// write) when persistent, none otherwise; NATS's JetStream file store,
    /// always (without one it would share a default dir with other tests).
    dir: Option<PathBuf>,
}

impl Broker {
    /// A broker that comes back from [`Broker::stop`] empty unless it
    /// keeps a store anyway (NATS's JetStream always does).
    async fn start(engine: Engine) -> Self {
        Self::launch(engine, false).await
    }

    /// A broker that comes back from [`Broker::stop`] with its data.
    async fn start_persistent(engine: Engine) -> Self {
        Self::launch(engine, true).await
    }

    async fn launch(engine: Engine, persistent: bool) -> Self {
        let port = free_port();
        #[cfg(feature = "nats")]
        let persistent = persistent || engine == Engine::Nats;
        let mut b = Broker {
            engine,
            port,
            child: None,
            dir: persistent.then(|| scratch(engine.name(), port)),
        };
        b.wipe();
        b.restart().await;
        b
    }

    /// Starts (again) on the same port, from what its data dir holds.
    async fn restart(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.as_ref().map(|d| d.display().to_string());
        let mut args: Vec<&str> = Vec::new();
        match self.engine {
            #[cfg(feature = "redis")]
            Engine::Redis => {
                args.extend(["--port", &port, "--bind", "127.0.0.1", "--save", ""]);
                match &dir {
                    Some(d) => args.extend(["--appendonly", "yes", "--appendfsync", "always", "--dir", d]),
                    None => args.extend(["--appendonly", "no"]),
                }
            }
            #[cfg(feature = "nats")]
            Engine::Nats => {
                let d = dir.as_deref().expect("NATS always has a store dir");
                args.extend(["-a", "127.0.0.1", "-p", &port, "-js", "-sd", d]);
            }
        }
        let program = self.engine.program();
        let child = Command::new(program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} is needed for the cluster tests: apt-get install {program} (.ci/run does): {e}")
            });
        self.child = Some(child);
        eventually(&format!("{program} to answer"), async || self.answers()).await;
    }

    /// Whether it speaks its protocol on its port: Redis answers `PING`,
    /// NATS greets every connection with `INFO {...}`.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let (hello, expect): (&[u8], &[u8]) = match self.engine {
            #[cfg(feature = "redis")]
            Engine::Redis => (b"PING\r\n", b"+PONG"),
            #[cfg(feature = "nats")]
            Engine::Nats => (b"", b"INFO "),
        };
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 8];
        s.write_all(hello).is_ok() && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(expect))
    }

    /// SIGKILL: a crash.
    fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Empties the data dir (while stopped): the next start has nothing.
    fn wipe(&self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).expect("broker data dir");
        }
    }

    /// Goes away as in `outage`.
    fn go_away(&mut self, outage: Outage) {
        match (self.engine, outage) {
            #[cfg(feature = "nats")]
            (Engine::Nats, Outage::DataKept) => {
                // A clean shutdown: JetStream flushes its store.
                terminate(self.child.take().expect("running"), "nats-server");
            }
            _ => self.stop(),
        }
    }

    /// Comes back as in `outage`.
    async fn come_back(&mut self, outage: Outage) {
        if outage == Outage::DataLost {
            self.wipe();
        }
        self.restart().await;
    }

    /// Where the broker lets us see presence expiries (Redis does), waits
    /// until `client`'s in `channel` is seen refreshed past the first.
    #[cfg_attr(not(feature = "redis"), expect(unused_variables))]
    async fn watch_presence_refresh(&self, channel: &str, client: &str) {
        match self.engine {
            #[cfg(feature = "redis")]
            Engine::Redis => redis_presence_expiry_moves_past_the_first(self.port, channel, client).await,
            #[cfg(feature = "nats")]
            Engine::Nats => {} // the node alone shows it, by keeping the client present
        }
    }

    /// The node config's `[engine]` and `[engine.<type>]` sections;
    /// `more` adds lines to the latter.
    fn config_section(&self, presence_ttl: &str, more: &str) -> String {
        let name = self.engine.name();
        let address = match self.engine {
            #[cfg(feature = "redis")]
            Engine::Redis => format!("127.0.0.1:{}", self.port),
            #[cfg(feature = "nats")]
            Engine::Nats => format!("nats://127.0.0.1:{}", self.port),
        };
        format!(
            r#"[engine]
type = "{name}"
[engine.{name}]
address = "{address}"
presence_ttl = "{presence_ttl}"
connect_timeout = "300ms"
io_timeout = "1s"
{more}
"#
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

struct Node {
    port: u16,
    child: Option<Child>,
    config: PathBuf,
    /// Its stderr (logs at `info`), shown if it exits on its own.
    log: PathBuf,
}

impl Node {
    async fn start(broker: &Broker, presence_ttl: &str) -> Self {
        Self::start_with(broker, presence_ttl, "").await
    }

    /// `engine_keys`: more lines for `[engine.<type>]`.
    async fn start_with(broker: &Broker, presence_ttl: &str, engine_keys: &str) -> Self {
        let port = free_port();
        let config = scratch("node", port).with_extension("toml");
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
{engine}"#,
                engine = broker.config_section(presence_ttl, engine_keys)
            ),
        )
        .expect("write node config");
        let log = config.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("node log file"))
            .spawn()
            .expect("start crier serve");
        let mut node = Node {
            port,
            child: Some(child),
            config,
            log,
        };
        eventually("a crier node to serve /health", async || node.healthy()).await;
        node
    }

    fn healthy(&mut self) -> bool {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("crier node on port {} exited: {status}\n{log}", self.port);
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

    /// The ids of the clients in `channel`'s presence.
    async fn presence(&self, channel: &str) -> Vec<String> {
        let v = self.api("presence", json!({"channel": channel})).await;
        v["result"]["presence"]
            .as_object()
            .unwrap_or_else(|| panic!("presence of {channel}: {v}"))
            .keys()
            .cloned()
            .collect()
    }

    /// Waits until `channel`'s presence counts `n` clients (a node writes
    /// presence after its subscribe reply; the broker expires it by TTL).
    async fn until_present(&self, channel: &str, n: u64, what: &str) {
        eventually(what, async || {
            let v = self.api("presence_stats", json!({"channel": channel})).await;
            v["result"]["num_clients"] == json!(n)
        })
        .await;
    }

    /// SIGTERM, then waits for the process to end (bounded).
    fn terminate(&mut self) {
        terminate(self.child.take().expect("running"), "crier");
    }

    /// SIGKILL: no goodbye to clients, nothing removed from the broker.
    fn kill(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // The test failed: its output (shown with the failure) gets
            // what the node logged.
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- crier node on port {} ---\n{log}", self.port);
        }
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.log);
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

async fn cluster(engine: Engine, n: usize, presence_ttl: &str) -> (Broker, Vec<Node>) {
    cluster_on(Broker::start(engine).await, n, presence_ttl).await
}

async fn cluster_on(broker: Broker, n: usize, presence_ttl: &str) -> (Broker, Vec<Node>) {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Node::start(&broker, presence_ttl).await);
    }
    (broker, nodes)
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

    /// [`Client::request`] until it is not refused with the temporary
    /// error 100; the reply.
    async fn request_until_served(&mut self, command: Value) -> Value {
        until_served(async || self.request(command.clone()).await).await
    }

    /// Skips messages until the connection closes; its close code.
    async fn close_code(&mut self) -> u16 {
        loop {
            if let Err(code) = self.next().await {
                return code;
            }
        }
    }

    /// The next message, which must be a push unsubscribing with `code`.
    async fn expect_unsubscribe(&mut self, code: u16) {
        let msg = self.next().await.expect("still connected");
        assert_eq!(msg["push"]["unsubscribe"]["code"], json!(code), "{msg}");
    }

    async fn subscribe(&mut self, channel: &str) -> Value {
        let reply = self.request(json!({"subscribe": {"channel": channel}})).await;
        assert!(reply.get("error").is_none(), "subscribe to {channel}: {reply}");
        reply["subscribe"].clone()
    }

    /// Subscribes and answers the stream's epoch.
    async fn subscribe_epoch(&mut self, channel: &str) -> String {
        let sub = self.subscribe(channel).await;
        sub["epoch"]
            .as_str()
            .unwrap_or_else(|| panic!("no epoch: {sub}"))
            .to_owned()
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

/// A subscribe command recovering `channel` from `offset` in `epoch`.
fn recover(channel: &str, offset: u64, epoch: &str) -> Value {
    json!({"subscribe": {"channel": channel, "recover": true, "offset": offset, "epoch": epoch}})
}

/// The offsets of a subscribe reply's recovered publications.
fn recovered_offsets(sub: &Value) -> Vec<u64> {
    sub["publications"]
        .as_array()
        .map(|ps| ps.iter().map(|p| p["offset"].as_u64().unwrap_or(0)).collect())
        .unwrap_or_default()
}

/// Each scenario once per engine built in: `redis::<scenario>` and
/// `nats::<scenario>`, each a test that calls `<scenario>(Engine::…)`.
macro_rules! on_every_engine {
    ($($scenario:ident),+ $(,)?) => {
        on_every_engine!(@ "redis", redis, Redis: $($scenario),+);
        on_every_engine!(@ "nats", nats, Nats: $($scenario),+);
    };
    (@ $feature:literal, $module:ident, $engine:ident: $($scenario:ident),+) => {
        #[cfg(feature = $feature)]
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Engine::$engine).await;
                }
            )+
        }
    };
}

on_every_engine!(
    publications_through_any_node_reach_every_client_in_one_order,
    a_client_moving_to_another_node_recovers_exactly_what_it_missed,
    a_killed_node_leaves_presence_after_the_ttl_and_its_clients_recover_elsewhere,
    a_broker_that_lost_its_data_is_announced_and_streams_start_anew,
    a_broker_that_kept_its_data_is_announced_and_recovered_exactly,
    exclusion_disconnect_and_unsubscribe_reach_clients_on_other_nodes,
    a_node_stopped_gracefully_takes_its_clients_out_of_presence_at_once,
    a_node_started_while_the_broker_is_down_joins_when_it_comes_up,
    a_live_node_keeps_its_clients_in_presence_past_the_ttl,
    control_requests_through_one_node_apply_in_order_on_the_others,
    a_killed_nodes_channels_are_vacated_by_a_survivor_and_its_disconnects_are_not_reported,
);

/// The `(channel, kind)` of a subscribe or unsubscribe push, if `msg` is one.
fn subscription_push(msg: &Value) -> Option<(String, &'static str)> {
    let push = msg.get("push")?;
    let channel = push["channel"].as_str()?.to_owned();
    if push.get("subscribe").is_some() {
        Some((channel, "subscribe"))
    } else if push.get("unsubscribe").is_some() {
        Some((channel, "unsubscribe"))
    } else {
        None
    }
}

async fn control_requests_through_one_node_apply_in_order_on_the_others(engine: Engine) {
    const ROUNDS: usize = 25;
    let (_broker, nodes) = cluster(engine, 3, "60s").await;
    let mut b = Client::connect(&nodes[1].ws()).await;
    let mut c = Client::connect(&nodes[2].ws()).await;
    let ids = [b.id.clone(), c.id.clone()];
    for _ in 0..ROUNDS {
        for id in &ids {
            for method in ["subscribe", "unsubscribe"] {
                let r = nodes[0]
                    .api(method, json!({"channel": "ops", "client": id}))
                    .await;
                assert!(r.get("error").is_none(), "{method}: {r}");
            }
        }
    }
    // Applied after everything before it, so its push ends the sequence.
    for id in &ids {
        let r = nodes[0]
            .api("subscribe", json!({"channel": "done", "client": id}))
            .await;
        assert!(r.get("error").is_none(), "{r}");
    }
    for (name, client) in [("B", &mut b), ("C", &mut c)] {
        let mut seen = Vec::new();
        loop {
            let msg = client
                .next()
                .await
                .unwrap_or_else(|code| panic!("{name} closed ({code})"));
            match subscription_push(&msg) {
                Some((channel, _)) if channel == "done" => break,
                Some((_, kind)) => seen.push(kind),
                None => {}
            }
        }
        let want: Vec<&str> = ["subscribe", "unsubscribe"].repeat(ROUNDS);
        assert_eq!(seen, want, "node {name} applied the pairs out of order");
    }
}

async fn publications_through_any_node_reach_every_client_in_one_order(engine: Engine) {
    let (_broker, nodes) = cluster(engine, 3, "60s").await;
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

async fn a_client_moving_to_another_node_recovers_exactly_what_it_missed(engine: Engine) {
    let (_broker, nodes) = cluster(engine, 3, "60s").await;
    let mut a = Client::connect(&nodes[0].ws()).await;
    let epoch = a.subscribe_epoch("room").await;
    for k in 1..=3 {
        nodes[2].publish("room", json!({"k": k})).await;
    }
    assert_eq!(offsets(&a.pubs(3).await), vec![1, 2, 3]);
    drop(a);
    for k in 4..=8 {
        nodes[1].publish("room", json!({"k": k})).await;
    }
    let mut c = Client::connect(&nodes[2].ws()).await;
    let reply = c.request(recover("room", 3, &epoch)).await;
    let sub = &reply["subscribe"];
    assert_eq!(sub["recovered"], json!(true), "{reply}");
    assert_eq!(recovered_offsets(sub), vec![4, 5, 6, 7, 8], "{reply}");
    nodes[0].publish("room", json!({"k": 9})).await;
    assert_eq!(c.next_pub().await.0, 9, "then live, with nothing repeated");
}

async fn a_killed_node_leaves_presence_after_the_ttl_and_its_clients_recover_elsewhere(engine: Engine) {
    let (_broker, mut nodes) = cluster(engine, 3, "2s").await;
    let mut a = Client::connect(&nodes[0].ws()).await;
    let epoch = a.subscribe_epoch("lobby").await;
    let mut b = Client::connect(&nodes[1].ws()).await;
    b.subscribe("lobby").await;
    nodes[2]
        .until_present("lobby", 2, "both clients in presence")
        .await;
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
    let reply = a2.request(recover("lobby", 1, &epoch)).await;
    assert_eq!(reply["subscribe"]["recovered"], json!(true), "{reply}");
    assert_eq!(recovered_offsets(&reply["subscribe"]), vec![2], "{reply}");
    // The dead node never removed its client: the TTL does. (Until a2's
    // entry is written and a's expires, the count alone could mislead.)
    let mut stay = vec![b.id.clone(), a2.id.clone()];
    stay.sort();
    eventually(
        "presence to be b and a2, the dead node's client gone",
        async || {
            let mut ids = nodes[2].presence("lobby").await;
            ids.sort();
            ids == stay
        },
    )
    .await;
}

async fn a_broker_that_lost_its_data_is_announced_and_streams_start_anew(engine: Engine) {
    the_broker_going_away_is_announced_and_nodes_recover(engine, Outage::DataLost).await;
}

async fn a_broker_that_kept_its_data_is_announced_and_recovered_exactly(engine: Engine) {
    the_broker_going_away_is_announced_and_nodes_recover(engine, Outage::DataKept).await;
}

/// The broker goes away: every subscriber is told its stream may have a
/// gap (2500) and stays connected, and the nodes refuse with the temporary
/// error 100 until it is back. Then the resubscribes (retried, as the SDKs
/// do) recover exactly what was missed when the broker kept its data, or
/// say that they could not, on a new stream, when it lost it.
async fn the_broker_going_away_is_announced_and_nodes_recover(engine: Engine, outage: Outage) {
    let broker = match outage {
        Outage::DataLost => Broker::start(engine).await,
        Outage::DataKept => Broker::start_persistent(engine).await,
    };
    let (mut broker, nodes) = cluster_on(broker, 3, "60s").await;
    let mut clients = Vec::new();
    let mut epoch = String::new();
    for node in &nodes {
        let mut c = Client::connect(&node.ws()).await;
        epoch = c.subscribe_epoch("feed").await;
        clients.push(c);
    }
    nodes[0].publish("feed", json!(1)).await;
    for c in &mut clients {
        assert_eq!(c.next_pub().await, (1, json!(1)));
    }

    broker.go_away(outage);
    for c in &mut clients {
        c.expect_unsubscribe(2500).await;
    }
    let failed = nodes[1].publish("feed", json!("lost")).await;
    assert_eq!(failed["error"]["code"], json!(100), "{failed}");
    let refused = clients[0].request(recover("feed", 1, &epoch)).await;
    assert_eq!(refused["error"]["code"], json!(100), "{refused}");
    assert_eq!(refused["error"]["temporary"], json!(true), "{refused}");

    broker.come_back(outage).await;
    match outage {
        Outage::DataLost => {
            let mut renewed = None;
            for c in &mut clients {
                let r = c.request_until_served(recover("feed", 1, &epoch)).await;
                let sub = &r["subscribe"];
                // `recovered` is omitted when false, as in Centrifugo.
                assert_eq!(sub["was_recovering"], json!(true), "{r}");
                assert!(
                    sub.get("recovered").is_none_or(|r| r == false),
                    "a gap is reported, not hidden: {r}"
                );
                assert_ne!(sub["epoch"].as_str(), Some(epoch.as_str()), "a new stream: {r}");
                let renewed = renewed.get_or_insert_with(|| sub["epoch"].clone());
                assert_eq!(&sub["epoch"], renewed, "one new stream for everyone: {r}");
            }
            let ok = nodes[2].publish("feed", json!("after")).await;
            assert_eq!(ok["result"]["offset"], json!(1), "{ok}");
            for c in &mut clients {
                assert_eq!(c.next_pub().await, (1, json!("after")));
            }
        }
        Outage::DataKept => {
            // The first back has missed nothing.
            let r = clients[0].request_until_served(recover("feed", 1, &epoch)).await;
            assert_eq!(r["subscribe"]["recovered"], json!(true), "{r}");
            assert_eq!(r["subscribe"]["epoch"], json!(epoch), "the same stream: {r}");
            assert_eq!(recovered_offsets(&r["subscribe"]), Vec::<u64>::new(), "{r}");
            // Published through another node, maybe still reconnecting,
            // while the others have not resubscribed yet.
            let ok = until_served(async || nodes[1].publish("feed", json!(2)).await).await;
            assert_eq!(ok["result"]["offset"], json!(2), "{ok}");
            assert_eq!(clients[0].next_pub().await, (2, json!(2)), "live");
            for c in &mut clients[1..] {
                let r = c.request_until_served(recover("feed", 1, &epoch)).await;
                assert_eq!(r["subscribe"]["recovered"], json!(true), "{r}");
                assert_eq!(r["subscribe"]["epoch"], json!(epoch), "the same stream: {r}");
                assert_eq!(
                    recovered_offsets(&r["subscribe"]),
                    vec![2],
                    "exactly the missed: {r}"
                );
            }
            nodes[2].publish("feed", json!(3)).await;
            for c in &mut clients {
                assert_eq!(c.next_pub().await, (3, json!(3)), "then live");
            }
        }
    }
}

async fn exclusion_disconnect_and_unsubscribe_reach_clients_on_other_nodes(engine: Engine) {
    let (_broker, nodes) = cluster(engine, 3, "60s").await;
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
    y.expect_unsubscribe(2000).await;

    // Disconnect through node C reaches x on node B.
    let r = nodes[2].api("disconnect", json!({"client": x.id})).await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(x.close_code().await, 3503, "force disconnect");
    // y, unsubscribed, is still connected and can subscribe again.
    y.subscribe("ops").await;
    nodes[1].publish("ops", json!("still served")).await;
    assert_eq!(y.next_pub().await, (3, json!("still served")));
}

async fn a_node_stopped_gracefully_takes_its_clients_out_of_presence_at_once(engine: Engine) {
    // A TTL far longer than the test: only the node itself can remove them.
    let (_broker, mut nodes) = cluster(engine, 2, "600s").await;
    let mut a = Client::connect(&nodes[0].ws()).await;
    a.subscribe("hall").await;
    let mut b = Client::connect(&nodes[1].ws()).await;
    b.subscribe("hall").await;
    nodes[1]
        .until_present("hall", 2, "both clients in presence")
        .await;
    nodes[0].terminate();
    assert_eq!(nodes[1].presence("hall").await, vec![b.id.clone()]);
}

async fn a_node_started_while_the_broker_is_down_joins_when_it_comes_up(engine: Engine) {
    let mut broker = Broker::start(engine).await;
    let up = Node::start(&broker, "60s").await;
    broker.stop();
    let late = Node::start(&broker, "60s").await;
    let mut c = Client::connect(&late.ws()).await;
    let r = c.request(json!({"subscribe": {"channel": "news"}})).await;
    assert_eq!(
        r["error"]["code"],
        json!(100),
        "no broker, a temporary error: {r}"
    );
    broker.restart().await;
    c.request_until_served(json!({"subscribe": {"channel": "news"}}))
        .await;
    up.publish("news", json!("hello")).await;
    assert_eq!(c.next_pub().await, (1, json!("hello")));
    // Control commands reach it too (its control subscription came late).
    let r = up.api("disconnect", json!({"client": c.id})).await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(c.close_code().await, 3503);
}

/// A live node keeps its clients in presence past the TTL by refreshing
/// their entries: three TTLs of wall time later the client is still there
/// (and, in Redis, the expiry it holds is seen moving forward).
async fn a_live_node_keeps_its_clients_in_presence_past_the_ttl(engine: Engine) {
    const TTL: Duration = Duration::from_secs(2);
    let (broker, nodes) = cluster(engine, 1, "2s").await;
    let mut c = Client::connect(&nodes[0].ws()).await;
    c.subscribe("stay").await;
    nodes[0].until_present("stay", 1, "the client in presence").await;
    let since = Instant::now();
    broker.watch_presence_refresh("stay", &c.id).await;
    eventually("three TTLs of wall time with the client present", async || {
        let ids = nodes[0].presence("stay").await;
        assert!(ids.contains(&c.id), "refreshed client {} gone: {ids:?}", c.id);
        since.elapsed() >= 3 * TTL
    })
    .await;
}

/// The expiry Redis holds for `client`'s presence in `channel` moves
/// forward (a refresh), and Redis's clock passes the first one.
#[cfg(feature = "redis")]
async fn redis_presence_expiry_moves_past_the_first(port: u16, channel: &str, client: &str) {
    let key = format!("crier:{{{channel}}}:pz");
    let expiry = || redis_cli(port, &["zscore", &key, client]).parse::<u64>().ok();
    let mut first = None;
    eventually("the presence entry to be written", async || {
        first = expiry();
        first.is_some()
    })
    .await;
    let first = first.expect("written");
    eventually("the expiry to move forward (a refresh)", async || {
        expiry().is_some_and(|e| e > first)
    })
    .await;
    // Redis's clock past the first expiry: without refreshes it would be gone.
    eventually("Redis's clock to pass the first expiry", async || {
        let now = redis_cli(port, &["time"]);
        let secs: u64 = now.lines().next().and_then(|s| s.parse().ok()).unwrap_or(0);
        secs * 1000 > first + 100
    })
    .await;
}

#[cfg(feature = "redis")]
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A channel whose offset and epoch expired in Redis (`history_meta_ttl`)
/// while its subscribers waited and nobody published: the next subscriber
/// joins the new stream at once, and the old subscribers are told 2500
/// rather than being left on a stream that no longer exists.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_stream_that_expired_while_idle_is_renewed_for_everyone() {
    let redis = Broker::start(Engine::Redis).await;
    let node = Node::start_with(&redis, "60s", "history_meta_ttl = \"1s\"").await;
    let mut a = Client::connect(&node.ws()).await;
    let old = a.subscribe_epoch("quiet").await;
    // Waiting for Redis to expire the meta key (a TTL, not our own step).
    let port = redis.port;
    eventually("the channel's meta key to expire", async || {
        redis_cli(port, &["exists", "crier:{quiet}:m"]) == "0"
    })
    .await;
    let mut b = Client::connect(&node.ws()).await;
    let sub = b.subscribe("quiet").await;
    assert_ne!(sub["epoch"].as_str(), Some(old.as_str()), "{sub}");
    a.expect_unsubscribe(2500).await;
    node.publish("quiet", json!("new")).await;
    assert_eq!(b.next_pub().await, (1, json!("new")));
}

/// A webhook backend on a free loopback port: a minimal HTTP/1.1 server
/// (threads, keep-alive) that answers 200 to every POST and keeps the
/// events of every `{"events": [...]}` batch, in arrival order.
struct Hooks {
    addr: std::net::SocketAddr,
    events: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Hooks {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook backend");
        let addr = listener.local_addr().expect("local addr");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = events.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let keep = keep.clone();
                std::thread::spawn(move || Self::serve(conn, &keep));
            }
        });
        Hooks { addr, events }
    }

    /// One connection's requests, one after another.
    fn serve(conn: std::net::TcpStream, events: &std::sync::Mutex<Vec<Value>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut writer = conn.try_clone().expect("clone the connection");
        let mut reader = BufReader::new(conn);
        loop {
            let mut length = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return; // closed
                }
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(n) = l.strip_prefix("content-length:") {
                    length = n.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let batch: Value = serde_json::from_slice(&body).expect("a JSON batch");
            let got = batch["events"].as_array().cloned().unwrap_or_default();
            events.lock().expect("events").extend(got);
            if writer
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .is_err()
            {
                return;
            }
        }
    }

    fn got(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }

    /// The events of `kind` about `channel`.
    fn of(&self, kind: &str, channel: &str) -> Vec<Value> {
        self.got()
            .into_iter()
            .filter(|e| e["type"] == json!(kind) && e["channel"] == json!(channel))
            .collect()
    }

    /// Waits for the first event of `kind` about `channel`.
    async fn until(&self, kind: &str, channel: &str) -> Value {
        eventually(&format!("{kind} {channel}"), async || {
            !self.of(kind, channel).is_empty()
        })
        .await;
        self.of(kind, channel).remove(0)
    }

    /// `[crier.webhooks]` for a node config (after the engine's section).
    fn config(&self, node_ttl: &str) -> String {
        format!(
            "[crier.webhooks]\nendpoint = \"http://{}/hooks\"\nnode_ttl = \"{node_ttl}\"\n",
            self.addr
        )
    }
}

/// What docs/proxies.md promises of a killed node: within about
/// `node_ttl` (at most 4/3 of it, plus a heartbeat) a surviving node
/// vacates the channels only the dead node held — once, naming it in
/// `lost_node` — and leaves alone those other nodes still hold; the dead
/// node's clients' disconnects are reported by nobody.
async fn a_killed_nodes_channels_are_vacated_by_a_survivor_and_its_disconnects_are_not_reported(
    engine: Engine,
) {
    let hooks = Hooks::start();
    let broker = Broker::start(engine).await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Node::start_with(&broker, "60s", &hooks.config("1s")).await);
    }
    let mut a = Client::connect(&nodes[0].ws()).await;
    a.subscribe("shared").await;
    let mut b = Client::connect(&nodes[1].ws()).await;
    b.subscribe("shared").await;
    b.subscribe("alone").await;
    let dead = hooks.until("occupied", "alone").await["node"].clone();
    let first = hooks.until("occupied", "shared").await;
    assert_ne!(first["node"], dead, "node 0 held it first");

    nodes[1].kill();
    let killed = Instant::now();
    let vacated = hooks.until("vacated", "alone").await;
    let took = killed.elapsed();
    assert_ne!(vacated["node"], dead, "a survivor says it: {vacated}");
    assert_eq!(vacated["lost_node"], dead, "{vacated}");
    assert!(
        took < Duration::from_secs(3),
        "vacated {took:?} after the kill, node_ttl 1s"
    );

    // The other client leaves: the shared channel is vacated then, once,
    // by the node that held it last.
    a.request(json!({"unsubscribe": {"channel": "shared"}})).await;
    let last = hooks.until("vacated", "shared").await;
    assert_eq!(last["node"], first["node"], "{last}");
    assert_eq!(hooks.of("vacated", "shared").len(), 1, "{:#?}", hooks.got());
    assert_eq!(hooks.of("vacated", "alone").len(), 1, "{:#?}", hooks.got());
    let reported: Vec<Value> = hooks
        .got()
        .into_iter()
        .filter(|e| e["type"] == json!("disconnect") && e["client"] == json!(b.id))
        .collect();
    assert!(
        reported.is_empty(),
        "nobody reports the killed node's client: {reported:?}"
    );
}
