//! `GET /metrics`: what a Prometheus scrape shows after real traffic.
//!
//! Every scrape is read by a real Prometheus text parser
//! (`prometheus-parse`), never by matching lines: a malformed exposition, a
//! family without its `# HELP`, or a histogram whose buckets are not
//! cumulative fails here.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use prometheus_parse::{HistogramCount, Scrape, Value as Prom};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::support::*;

const PROMETHEUS: &str = "[prometheus]\nenabled = true\n";

/// Every family the server exposes (as named in `# HELP`) from the start.
/// `crier_disconnects` is not here: a code is listed once it has occurred,
/// and an empty family has no `# HELP` (see `Metrics::disconnects`).
const FAMILIES: [&str; 12] = [
    "crier_connections",
    "crier_clients",
    "crier_channels",
    "crier_subscriptions",
    "crier_publications",
    "crier_deliveries",
    "crier_messages",
    "crier_dropped_clients",
    "crier_client_queue_depth",
    "crier_publish_duration_seconds",
    "crier_engine_errors",
    "process_resident_memory_bytes",
];

/// The transports, as the `transport` label of `crier_connections` has them.
const TRANSPORTS: [&str; 5] = ["websocket", "uni_websocket", "uni_sse", "uni_http_stream", "tcp"];

/// One parsed scrape.
struct Metrics {
    scrape: Scrape,
    text: String,
}

/// One histogram of a scrape, checked for consistency when read.
struct Histogram {
    /// `(le, cumulative count)`, ascending, the last `+Inf`.
    buckets: Vec<HistogramCount>,
    count: f64,
    sum: f64,
}

impl Histogram {
    /// The cumulative count of the bucket with upper bound `le`.
    fn le(&self, le: f64) -> f64 {
        self.buckets
            .iter()
            .find(|b| b.less_than == le)
            .unwrap_or_else(|| panic!("no bucket le={le} in {:?}", self.buckets))
            .count
    }
}

impl Metrics {
    fn parse(text: String) -> Self {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the scrape parses");
        let m = Self { scrape, text };
        for family in FAMILIES {
            if family.starts_with("process_") && !cfg!(target_os = "linux") {
                continue;
            }
            assert!(
                m.scrape.docs.contains_key(family),
                "# HELP {family} missing:\n{}",
                m.text
            );
        }
        m
    }

    /// The one sample named `name` whose labels are exactly `labels`.
    fn sample(&self, name: &str, labels: &[(&str, &str)]) -> &Prom {
        let found: Vec<_> = self
            .scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .collect();
        match found[..] {
            [one] => &one.value,
            _ => panic!("{} samples {name}{labels:?} in:\n{}", found.len(), self.text),
        }
    }

    /// A gauge's value: the parser must have read it as a gauge.
    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.sample(name, labels) {
            Prom::Gauge(v) => *v,
            other => panic!("{name}{labels:?} is not a gauge: {other:?}"),
        }
    }

    /// A counter's value; `name` is the family, the sample is `<name>_total`.
    /// (OpenMetrics declares `# TYPE <name> counter` and this 0.0.4 parser
    /// keys types by sample name, so it reads `_total` as untyped: either is
    /// accepted, a gauge or a histogram is not.)
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.sample(&format!("{name}_total"), labels) {
            Prom::Counter(v) | Prom::Untyped(v) => *v,
            other => panic!("{name}_total{labels:?} is not a counter: {other:?}"),
        }
    }

    fn connections(&self, transport: &str) -> f64 {
        self.gauge("crier_connections", &[("transport", transport)])
    }

    fn disconnects(&self, code: &str) -> f64 {
        assert!(
            self.scrape.docs.contains_key("crier_disconnects"),
            "{}",
            self.text
        );
        self.counter("crier_disconnects", &[("code", code)])
    }

    /// The histogram `name`, checked: bounds ascending and ending at `+Inf`,
    /// counts cumulative, `+Inf` equal to `<name>_count`, a sum that is not
    /// negative.
    fn histogram(&self, name: &str) -> Histogram {
        let Prom::Histogram(buckets) = self.sample(name, &[]) else {
            panic!("{name} is not a histogram:\n{}", self.text)
        };
        let scalar = |suffix: &str| match self.sample(&format!("{name}{suffix}"), &[]) {
            Prom::Untyped(v) | Prom::Counter(v) | Prom::Gauge(v) => *v,
            other => panic!("{name}{suffix}: {other:?}"),
        };
        let h = Histogram {
            buckets: buckets.clone(),
            count: scalar("_count"),
            sum: scalar("_sum"),
        };
        assert!(h.buckets.len() >= 2, "{name}: {:?}", h.buckets);
        for pair in h.buckets.windows(2) {
            assert!(
                pair[0].less_than < pair[1].less_than,
                "{name} bounds: {:?}",
                h.buckets
            );
            assert!(
                pair[0].count <= pair[1].count,
                "{name} not cumulative: {:?}",
                h.buckets
            );
        }
        let last = h.buckets.last().unwrap();
        assert_eq!(last.less_than, f64::INFINITY, "{name} ends at +Inf");
        assert_eq!(last.count, h.count, "{name}: +Inf bucket == _count");
        assert!(h.sum >= 0.0, "{name}_sum {}", h.sum);
        h
    }
}

/// `GET http://addr/metrics`: (status, content type, body).
async fn scrape_at(addr: SocketAddr) -> (u16, String, String) {
    let url = format!("http://{addr}/metrics");
    tokio::task::spawn_blocking(move || {
        let agent = http_agent();
        let mut resp = agent.get(&url).call().expect("HTTP request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        (status, content_type, body)
    })
    .await
    .expect("blocking task")
}

/// Scrapes `addr` over HTTP and parses it; panics unless it answers 200 in
/// OpenMetrics with a complete exposition.
async fn scrape_addr(addr: SocketAddr) -> Metrics {
    let (status, content_type, body) = scrape_at(addr).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "complete exposition:\n{body}");
    Metrics::parse(body)
}

/// Scrapes the main listener.
async fn scrape(s: &TestServer) -> Metrics {
    scrape_addr(s.addr).await
}

/// Waits until `ok` holds for the node's metrics: for a gauge the server
/// updates after the event the test can see (a connection's guard drops
/// when its task ends, after the client saw the close). Reads the registry
/// in-process, yielding to the server's tasks between reads; fails after
/// `WAIT`.
async fn until(s: &TestServer, what: &str, ok: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = Metrics::parse(s.node.metrics.render());
        if ok(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}:\n{}",
            m.text
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn scrape_counts_connections_subscriptions_publications_and_deliveries() {
    const N: u32 = 5;
    let s = TestServer::start(config(PROMETHEUS)).await;

    // Before any traffic: everything exposed, at zero.
    let m = scrape(&s).await;
    for t in TRANSPORTS {
        assert_eq!(m.connections(t), 0.0, "{t} is exposed, at 0");
    }
    assert_eq!(m.gauge("crier_clients", &[]), 0.0);
    assert_eq!(m.counter("crier_publications", &[]), 0.0);
    assert_eq!(m.histogram("crier_publish_duration_seconds").count, 0.0);
    assert_eq!(m.histogram("crier_client_queue_depth").count, 0.0);

    // Three WebSocket clients in one channel. A subscribe reply is handled
    // after the connection is counted, so no wait is needed.
    let mut clients = Vec::new();
    for user in ["a", "b", "c"] {
        let mut c = Client::connect(&s.ws_url(), &token(user)).await;
        let r = c.request(json!({"subscribe": {"channel": "news"}})).await;
        assert!(r["subscribe"].is_object(), "{r}");
        clients.push(c);
    }
    for i in 0..N {
        let (status, r) = s
            .api("publish", json!({"channel": "news", "data": {"n": i}}))
            .await;
        assert_eq!(status, 200, "{r}");
    }
    for c in &mut clients {
        for i in 0..N {
            assert_eq!(c.next_pub().await["pub"]["data"]["n"], i);
        }
    }

    let m = scrape(&s).await;
    assert_eq!(m.connections("websocket"), 3.0);
    for t in &TRANSPORTS[1..] {
        assert_eq!(m.connections(t), 0.0, "{t}");
    }
    assert_eq!(m.gauge("crier_clients", &[]), 3.0);
    assert_eq!(m.gauge("crier_subscriptions", &[]), 3.0);
    assert_eq!(m.gauge("crier_channels", &[]), 1.0);
    assert_eq!(m.counter("crier_publications", &[]), f64::from(N));
    assert_eq!(m.counter("crier_deliveries", &[]), f64::from(3 * N));
    assert_eq!(m.counter("crier_messages", &[]), 0.0);
    assert_eq!(m.counter("crier_dropped_clients", &[("reason", "slow")]), 0.0);
    assert_eq!(m.counter("crier_dropped_clients", &[("reason", "closed")]), 0.0);
    assert_eq!(m.counter("crier_engine_errors", &[]), 0.0);
    // Every API publish timed once.
    let publish = m.histogram("crier_publish_duration_seconds");
    assert_eq!(publish.count, f64::from(N));
    assert!(publish.sum > 0.0, "publishes take time: {}", publish.sum);
    assert_eq!(
        publish.buckets.len(),
        11,
        "10 bounds and +Inf: {:?}",
        publish.buckets
    );
    assert_eq!(publish.buckets[0].less_than, 0.000_005);
    // Every client read everything: three queues, all empty.
    let depth = m.histogram("crier_client_queue_depth");
    assert_eq!(depth.count, 3.0);
    assert_eq!(depth.le(0.0), 3.0);
    assert_eq!(depth.sum, 0.0);
    if cfg!(target_os = "linux") {
        assert!(m.gauge("process_resident_memory_bytes", &[]) > 1_000_000.0);
        assert!(m.counter("process_cpu_seconds", &[]) >= 0.0);
    }

    // A client's own publish is timed and delivered to all three.
    let r = clients[0]
        .request(json!({"publish": {"channel": "news", "data": "mine"}}))
        .await;
    assert!(r["error"].is_null(), "{r}");
    for c in &mut clients {
        assert_eq!(c.next_pub().await["pub"]["data"], "mine");
    }
    let m = scrape(&s).await;
    assert_eq!(m.counter("crier_publications", &[]), f64::from(N + 1));
    assert_eq!(m.counter("crier_deliveries", &[]), f64::from(3 * (N + 1)));
    assert_eq!(
        m.histogram("crier_publish_duration_seconds").count,
        f64::from(N + 1)
    );

    // The API disconnects `c`: counted by code before the close is sent;
    // the connection gauge drops once its task has ended.
    let mut c = clients.pop().unwrap();
    let (status, r) = s.api("disconnect", json!({"user": "c"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(c.closed().await.code, 3503);
    until(&s, "websocket connections down to 2", |m| {
        m.connections("websocket") == 2.0
    })
    .await;
    let m = scrape(&s).await;
    assert_eq!(m.connections("websocket"), 2.0);
    assert_eq!(m.disconnects("3503"), 1.0);
    assert_eq!(m.gauge("crier_clients", &[]), 2.0);
    assert_eq!(m.gauge("crier_subscriptions", &[]), 2.0);
    assert_eq!(m.gauge("crier_channels", &[]), 1.0);
    assert_eq!(m.histogram("crier_client_queue_depth").count, 2.0);

    // Shutdown waits for every connection: each guard is gone, and each
    // client was closed with 3001.
    let node = s.node.clone();
    s.shutdown().await;
    let m = Metrics::parse(node.metrics.render());
    assert_eq!(m.connections("websocket"), 0.0);
    assert_eq!(m.disconnects("3001"), 2.0);
    assert_eq!(m.disconnects("3503"), 1.0);
    assert_eq!(m.gauge("crier_clients", &[]), 0.0);
}

#[tokio::test]
async fn slow_client_backs_up_its_queue_and_is_dropped_with_3008() {
    let s = TestServer::start(config(&format!("[client]\nqueue_max_size = 65536\n{PROMETHEUS}"))).await;
    let mut slow = Client::connect(&s.ws_url(), &token("slow")).await;
    slow.request(json!({"subscribe": {"channel": "news"}})).await;
    let mut fast = Client::connect(&s.ws_url(), &token("fast")).await;
    fast.request(json!({"subscribe": {"channel": "news"}})).await;
    // `slow` stops reading while `fast` keeps up (as in ws.rs). Once the
    // socket buffers are full, `slow`'s queue grows until it overflows.
    let payload = format!("\"{}\"", "y".repeat(16 * 1024));
    let hub = s.node.hub.clone();
    let mut before_drop = None;
    let mut published = 0u32;
    for _ in 0..2000 {
        hub.publish("news", payload.clone(), Default::default()).unwrap();
        published += 1;
        fast.next_pub().await;
        if hub.stats().dropped_slow > 0 {
            break;
        }
        before_drop = Some(s.node.metrics.render());
    }
    assert_eq!(slow.closed().await.code, 3008);

    // The last reading before the overflowing publish: `fast` had read
    // everything (depth 0), `slow` had items waiting, fewer than 16 (the
    // 64 KiB limit holds at most four 16 KiB publications).
    let m = Metrics::parse(before_drop.expect("a publish before the drop"));
    let depth = m.histogram("crier_client_queue_depth");
    assert_eq!(depth.count, 2.0);
    assert_eq!(depth.le(0.0), 1.0, "only `fast` is empty: {:?}", depth.buckets);
    assert!(depth.sum >= 1.0, "`slow` has items waiting: {}", depth.sum);
    assert_eq!(depth.le(16.0), 2.0, "{:?}", depth.buckets);
    assert_eq!(m.counter("crier_dropped_clients", &[("reason", "slow")]), 0.0);

    until(&s, "the slow connection ends", |m| {
        m.connections("websocket") == 1.0
    })
    .await;
    let m = scrape(&s).await;
    assert_eq!(m.counter("crier_dropped_clients", &[("reason", "slow")]), 1.0);
    assert_eq!(m.counter("crier_dropped_clients", &[("reason", "closed")]), 0.0);
    assert_eq!(m.disconnects("3008"), 1.0);
    assert_eq!(m.connections("websocket"), 1.0);
    assert_eq!(m.gauge("crier_clients", &[]), 1.0, "only `fast` is left");
    assert_eq!(m.gauge("crier_subscriptions", &[]), 1.0);
    assert_eq!(m.counter("crier_publications", &[]), f64::from(published));
    let depth = m.histogram("crier_client_queue_depth");
    assert_eq!((depth.count, depth.le(0.0)), (1.0, 1.0));
    // Publishing through the hub directly is not an API publish: untimed.
    assert_eq!(m.histogram("crier_publish_duration_seconds").count, 0.0);
    s.shutdown().await;
}

#[tokio::test]
async fn uni_connections_and_their_disconnects_are_counted() {
    let uni = "[uni_http_stream]\nenabled = true\n[uni_websocket]\nenabled = true\n";
    let s = TestServer::start(config(&format!("{uni}{PROMETHEUS}"))).await;

    // An HTTP stream, read line by line until its connect push.
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    let body = json!({"token": token("streamer"), "subs": {"news": {}}}).to_string();
    let head = format!(
        "POST /connection/uni_http_stream HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        s.addr,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write request");
    let mut stream = BufReader::new(tcp).lines();
    let mut next_message = async || -> Option<Value> {
        loop {
            let line = tokio::time::timeout(WAIT, stream.next_line())
                .await
                .expect("stream silent for 5 s")
                .ok()??;
            if line == "0" {
                return None; // last chunk: the body ended
            }
            if line.starts_with('{') && line != "{}" {
                return Some(serde_json::from_str(&line).expect("JSON line"));
            }
        }
    };
    let connect = next_message().await.expect("connect push");
    assert!(connect["connect"]["client"].is_string(), "{connect}");

    // A uni WebSocket.
    let url = format!("ws://{}/connection/uni_websocket", s.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("opens");
    let req = json!({"token": token("listener")});
    ws.send(Message::text(req.to_string())).await.unwrap();
    let first = tokio::time::timeout(WAIT, ws.next()).await.expect("connect push");
    assert!(matches!(first, Some(Ok(Message::Text(_)))), "{first:?}");

    let m = scrape(&s).await;
    assert_eq!(m.connections("uni_http_stream"), 1.0);
    assert_eq!(m.connections("uni_websocket"), 1.0);
    assert_eq!(m.connections("websocket"), 0.0);
    assert_eq!(m.gauge("crier_clients", &[]), 2.0);
    assert_eq!(m.gauge("crier_subscriptions", &[]), 1.0, "the stream's `news`");

    // The API ends the stream: it is told 3503, then its body ends.
    s.api("disconnect", json!({"user": "streamer"})).await;
    let d = next_message().await.expect("disconnect push");
    assert_eq!(d["disconnect"]["code"], 3503, "{d}");
    assert!(next_message().await.is_none(), "stream ends");
    until(&s, "the stream's connection ends", |m| {
        m.connections("uni_http_stream") == 0.0
    })
    .await;
    let m = scrape(&s).await;
    assert_eq!(m.connections("uni_http_stream"), 0.0);
    assert_eq!(m.connections("uni_websocket"), 1.0);
    assert_eq!(m.disconnects("3503"), 1.0);

    let node = s.node.clone();
    s.shutdown().await;
    let m = Metrics::parse(node.metrics.render());
    assert_eq!(m.connections("uni_websocket"), 0.0);
    assert_eq!(m.disconnects("3001"), 1.0);
}

#[tokio::test]
async fn separate_listener_serves_metrics_instead_of_the_main_router() {
    let extra = format!("{PROMETHEUS}listen = \"127.0.0.1:0\"\n");
    let (s, metrics) = TestServer::start_with_metrics(config(&extra)).await;
    assert_ne!(metrics, s.addr);
    let mut c = Client::connect(&s.ws_url(), &token("watched")).await;
    c.request(json!({"subscribe": {"channel": "news"}})).await;

    let m = scrape_addr(metrics).await;
    assert_eq!(m.connections("websocket"), 1.0);
    assert_eq!(m.gauge("crier_subscriptions", &[]), 1.0);

    let (status, _, _) = scrape_at(s.addr).await;
    assert_eq!(status, 404, "not on the main listener when a separate one is set");
    s.shutdown().await;
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    let s = TestServer::start(config("")).await;
    let (status, _, _) = scrape_at(s.addr).await;
    assert_eq!(status, 404);
    s.shutdown().await;
}
