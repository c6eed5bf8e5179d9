//! Lifecycle webhooks (`crier.webhooks`) against a real backend the test
//! starts: what a client's life produces, in order, with ids and sequence
//! numbers; a backend that is down for a while gets everything queued once
//! it is back; a full queue drops and counts, never blocks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::support::*;

/// The backend: every event it took, in arrival order; while `down`, it
/// answers 503 and takes nothing.
#[derive(Clone, Default)]
struct Backend {
    events: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
}

async fn hook(State(b): State<Backend>, body: axum::body::Bytes) -> StatusCode {
    if b.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let batch: Value = serde_json::from_slice(&body).expect("a JSON batch");
    let events = batch["events"].as_array().expect("an events list").clone();
    b.events.lock().unwrap().extend(events);
    StatusCode::OK
}

async fn backend() -> (SocketAddr, Backend) {
    let b = Backend::default();
    let app = Router::new().route("/hooks", post(hook)).with_state(b.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, b)
}

fn hooked(addr: SocketAddr, extra: &str) -> crier_server::config::Config {
    config(&format!(
        "[prometheus]\nenabled = true\n[crier.webhooks]\nendpoint = \"http://{addr}/hooks\"\n{extra}"
    ))
}

impl Backend {
    fn got(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let me = self.clone();
        eventually_within(&format!("{n} webhook events"), Duration::from_secs(10), || {
            let me = me.clone();
            async move { me.got().len() >= n }
        })
        .await;
        self.got()
    }
}

/// `type` and the field that says what it is about, of each event.
fn summary(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["type"].as_str().unwrap_or_default() {
            "disconnect" => format!(
                "disconnect {} {}",
                e["user"].as_str().unwrap_or_default(),
                e["code"]
            ),
            t => format!("{t} {}", e["channel"].as_str().unwrap_or_default()),
        })
        .collect()
}

#[tokio::test]
async fn a_clients_life_reaches_the_backend_in_order_with_ids() {
    let (addr, b) = backend().await;
    let s = TestServer::start(hooked(addr, "")).await;
    let mut c = Client::connect(&s.ws_url(), &token("hooked")).await;
    c.request(json!({"subscribe": {"channel": "news"}})).await;
    c.request(json!({"unsubscribe": {"channel": "news"}})).await;
    c.request(json!({"subscribe": {"channel": "sport"}})).await;
    drop(c);
    let events = b.wait_for(6).await;
    assert_eq!(
        summary(&events),
        [
            "occupied news",
            "unsubscribe news",
            "vacated news",
            "occupied sport",
            // The disconnect, then the channels it emptied.
            "disconnect hooked 3000",
            "vacated sport",
        ]
    );
    let unsubscribe = &events[1];
    assert_eq!(unsubscribe["user"], json!("hooked"));
    assert!(unsubscribe["client"].is_string(), "{unsubscribe}");
    let node = events[0]["node"].as_str().expect("node").to_owned();
    for (i, e) in events.iter().enumerate() {
        let seq = e["seq"].as_u64().expect("seq");
        assert_eq!(seq, i as u64 + 1, "per-node sequence: {e}");
        assert_eq!(e["id"], json!(format!("{node}-{seq}")), "{e}");
        assert!(e["time"].as_u64().is_some_and(|t| t > 1_700_000_000_000), "{e}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn a_backend_down_for_a_while_gets_everything_queued_once_back() {
    let (addr, b) = backend().await;
    b.down.store(true, Ordering::SeqCst);
    let s = TestServer::start(hooked(addr, "max_retry_delay = \"200ms\"\n")).await;
    let mut c = Client::connect(&s.ws_url(), &token("patient")).await;
    for i in 0..10 {
        c.request(json!({"subscribe": {"channel": format!("ch{i}")}}))
            .await;
    }
    // The backend refused at least one batch meanwhile.
    let server = s.addr;
    eventually_within("a failed POST", Duration::from_secs(5), move || async move {
        let (_, text) = metrics_text(server).await;
        text.contains("crier_webhook_failures_total") && !text.contains("crier_webhook_failures_total 0")
    })
    .await;
    assert!(b.got().is_empty());
    b.down.store(false, Ordering::SeqCst);
    let events = b.wait_for(10).await;
    let want: Vec<String> = (0..10).map(|i| format!("occupied ch{i}")).collect();
    assert_eq!(summary(&events), want, "in order, none lost, none twice");
    s.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_blocking_anyone() {
    let (addr, b) = backend().await;
    b.down.store(true, Ordering::SeqCst);
    let s = TestServer::start(hooked(
        addr,
        "queue_size = 3\nbatch_size = 1\nmax_retry_delay = \"100ms\"\n",
    ))
    .await;
    let mut w = watcher(&s).await;
    let mut c = Client::connect(&s.ws_url(), &token("busy")).await;
    for i in 0..20 {
        let r = c
            .request(json!({"subscribe": {"channel": format!("q{i}")}}))
            .await;
        assert!(r["subscribe"].is_object(), "the hub is not held up: {r}");
    }
    assert_still_served(&s, &mut w).await;
    let (_, text) = metrics_text(s.addr).await;
    let dropped = text
        .lines()
        .find(|l| l.starts_with("crier_webhook_events_total{result=\"dropped\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("a dropped count");
    assert!(
        dropped >= 16,
        "dropped {dropped} of 20 events with room for 3 + 1 in flight"
    );
    b.down.store(false, Ordering::SeqCst);
    let events = b.wait_for(20 - dropped as usize).await;
    assert!(
        events.len() as u64 <= 20 - dropped + 1,
        "{} delivered",
        events.len()
    );
    s.shutdown().await;
}

async fn metrics_text(server: SocketAddr) -> (u16, String) {
    let url = format!("http://{server}/metrics");
    tokio::task::spawn_blocking(move || {
        let agent = http_agent();
        let mut resp = agent.get(&url).call().expect("metrics");
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap_or_default(),
        )
    })
    .await
    .expect("blocking")
}

/// Three nodes on one cluster engine: occupied and vacated are the
/// cluster's, once per transition, whichever nodes hold the channel.
#[cfg(any(feature = "redis", feature = "nats"))]
mod cluster {
    use super::*;

    /// The engine's server, running for the test.
    enum Engine {
        #[cfg(feature = "redis")]
        Redis(super::super::redis::RedisServer),
        #[cfg(feature = "nats")]
        Nats(super::super::nats::NatsServer),
    }

    impl Engine {
        fn section(&self) -> String {
            let (name, url) = match self {
                #[cfg(feature = "redis")]
                Engine::Redis(r) => ("redis", r.url()),
                #[cfg(feature = "nats")]
                Engine::Nats(n) => ("nats", n.url()),
            };
            format!(
                "[engine]\ntype = \"{name}\"\n[engine.{name}]\naddress = \"{url}\"\nconnect_timeout = \"300ms\"\nio_timeout = \"2s\"\n"
            )
        }
    }

    async fn three_nodes(engine: &Engine, addr: SocketAddr) -> Vec<TestServer> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let mut c = config(&format!(
                "[crier.webhooks]\nendpoint = \"http://{addr}/hooks\"\nnode_ttl = \"1s\"\n{}",
                engine.section()
            ));
            c.crier.webhooks.max_retry_delay = Duration::from_millis(200);
            let node = TestServer::start(c).await;
            // The node connects to the engine in the background.
            let url = format!("http://{}/health/ready", node.addr);
            eventually_within("the node ready on its engine", Duration::from_secs(10), || {
                let url = url.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        http_agent().get(&url).call().map(|r| r.status().as_u16())
                    })
                    .await
                    .ok()
                    .and_then(Result::ok)
                        == Some(200)
                }
            })
            .await;
            nodes.push(node);
        }
        nodes
    }

    /// How many events of `kind` about `channel` the backend has.
    fn count(events: &[Value], kind: &str, channel: &str) -> usize {
        events
            .iter()
            .filter(|e| e["type"] == json!(kind) && e["channel"] == json!(channel))
            .count()
    }

    impl Backend {
        /// Waits until the backend holds an `unsubscribe` of `channel`: a
        /// node's events arrive in its order, so everything its clients
        /// did before that unsubscribe has been resolved and sent.
        async fn until_unsubscribed(&self, channel: &str) {
            let me = self.clone();
            let channel = channel.to_owned();
            eventually_within(
                &format!("the unsubscribe of {channel}"),
                Duration::from_secs(10),
                || {
                    let (me, channel) = (me.clone(), channel.clone());
                    async move { count(&me.got(), "unsubscribe", &channel) > 0 }
                },
            )
            .await;
        }
    }

    /// Subscribes and unsubscribes `marker` on `c`: its unsubscribe event
    /// says the node got that far.
    async fn mark(c: &mut Client, marker: &str) {
        c.request(json!({"subscribe": {"channel": marker}})).await;
        c.request(json!({"unsubscribe": {"channel": marker}})).await;
    }

    async fn once_per_transition_across_three_nodes(engine: Engine) {
        let (addr, b) = backend().await;
        let nodes = three_nodes(&engine, addr).await;
        let mut clients = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let mut c = Client::connect(&n.ws_url(), &token(&format!("u{i}"))).await;
            let r = c.request(json!({"subscribe": {"channel": "room"}})).await;
            assert!(r["subscribe"].is_object(), "{r}");
            mark(&mut c, &format!("in{i}")).await;
            clients.push(c);
        }
        for i in 0..3 {
            b.until_unsubscribed(&format!("in{i}")).await;
        }
        let events = b.got();
        assert_eq!(count(&events, "occupied", "room"), 1, "{events:#?}");
        let first = events.iter().find(|e| e["type"] == json!("occupied")).unwrap();
        assert_eq!(
            first["node"],
            json!(nodes[0].node.id),
            "the first node to hold it"
        );
        assert_eq!(count(&events, "vacated", "room"), 0);
        // Leaving one by one: vacated once, from the last.
        for (i, c) in clients.iter_mut().enumerate() {
            c.request(json!({"unsubscribe": {"channel": "room"}})).await;
            mark(c, &format!("out{i}")).await;
        }
        for i in 0..3 {
            b.until_unsubscribed(&format!("out{i}")).await;
        }
        let events = b.got();
        assert_eq!(count(&events, "occupied", "room"), 1, "{events:#?}");
        assert_eq!(count(&events, "vacated", "room"), 1, "{events:#?}");
        let last = events
            .iter()
            .find(|e| e["type"] == json!("vacated") && e["channel"] == json!("room"))
            .unwrap();
        assert_eq!(last["node"], json!(nodes[2].node.id), "the last node to let go");
        // Every node's own seq still counts 1, 2, 3… in arrival order.
        for n in &nodes {
            let seqs: Vec<u64> = events
                .iter()
                .filter(|e| e["node"] == json!(n.node.id))
                .map(|e| e["seq"].as_u64().unwrap())
                .collect();
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{events:#?}");
        }
        for n in nodes {
            n.shutdown().await;
        }
    }

    /// Every client sends `verb` for channels `race0..` in one frame, all
    /// clients at once; then marks (see [`mark`]) with `<verb><i>`.
    async fn every_client(clients: &mut [Client], verb: &'static str, channels: usize) {
        futures_util::future::join_all(clients.iter_mut().enumerate().map(|(i, c)| async move {
            let commands: Vec<String> = (0..channels)
                .map(|k| json!({"id": 1000 + k, verb: {"channel": format!("race{k}")}}).to_string())
                .collect();
            // One frame per client: the node handles them back to back.
            c.send_text(&commands.join("\n")).await;
            for k in 0..channels {
                let r = c.reply(1000 + k as u32).await;
                assert!(r.get("error").is_none(), "{r}");
            }
            mark(c, &format!("{verb}{i}")).await;
        }))
        .await;
    }

    /// Three nodes take their first subscriber of the same channels at
    /// once (and let go at once): still one occupied and one vacated each.
    async fn racing_nodes_still_transition_once(engine: Engine) {
        const CHANNELS: usize = 30;
        let (addr, b) = backend().await;
        let nodes = three_nodes(&engine, addr).await;
        let mut clients = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            clients.push(Client::connect(&n.ws_url(), &token(&format!("r{i}"))).await);
        }
        every_client(&mut clients, "subscribe", CHANNELS).await;
        for i in 0..3 {
            b.until_unsubscribed(&format!("subscribe{i}")).await;
        }
        every_client(&mut clients, "unsubscribe", CHANNELS).await;
        for i in 0..3 {
            b.until_unsubscribed(&format!("unsubscribe{i}")).await;
        }
        let events = b.got();
        for k in 0..CHANNELS {
            let channel = format!("race{k}");
            assert_eq!(count(&events, "occupied", &channel), 1, "{channel}: {events:#?}");
            assert_eq!(count(&events, "vacated", &channel), 1, "{channel}: {events:#?}");
        }
        for n in nodes {
            n.shutdown().await;
        }
    }

    #[cfg(feature = "redis")]
    mod redis {
        use super::*;

        fn engine() -> Engine {
            Engine::Redis(super::super::super::redis::RedisServer::start())
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn occupied_and_vacated_fire_once_per_transition_across_three_nodes() {
            once_per_transition_across_three_nodes(engine()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn racing_nodes_occupy_and_vacate_each_channel_once() {
            racing_nodes_still_transition_once(engine()).await;
        }
    }

    #[cfg(feature = "nats")]
    mod nats {
        use super::*;

        fn engine() -> Engine {
            Engine::Nats(super::super::super::nats::NatsServer::start())
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn occupied_and_vacated_fire_once_per_transition_across_three_nodes() {
            once_per_transition_across_three_nodes(engine()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn racing_nodes_occupy_and_vacate_each_channel_once() {
            racing_nodes_still_transition_once(engine()).await;
        }
    }
}
