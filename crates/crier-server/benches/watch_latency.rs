//! File source latency: one JSON line appended to a tailed file (one
//! `write(2)`) until a subscriber has it as a publication.
//!
//! Two subscribers, each on its own file and channel:
//! - `hub`: an in-process hub subscriber (`ClientReceiver::drain_blocking`):
//!   inotify → notify's thread → the worker's read → `Hub::publish`.
//! - `websocket`: a WebSocket client over loopback, the whole path a user
//!   sees (plus the server's writer task and the client's read).
//!
//! First a fixed run of `LINES` lines per subscriber prints p50/p99/max
//! (the figures in docs/benchmarks.md), then criterion times the same
//! round trip.
//!
//! ```sh
//! cargo bench -p crier-server --bench watch_latency
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crier_core::{ClientReceiver, EventKind, Outbound, SubscribeOptions};
use crier_server::config::{Config, Format};
use crier_server::Server;
use criterion::Criterion;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Lines per subscriber in the percentile run.
const LINES: usize = 1000;
const WAIT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Rig {
    rt: Runtime,
    dir: PathBuf,
    hub_file: File,
    hub_sub: ClientReceiver,
    ws_file: File,
    ws: Ws,
    next: u64,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("crier-watch-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let open = |name: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .expect("bench file")
        };
        let (hub_file, ws_file) = (open("hub.jsonl"), open("ws.jsonl"));
        let text = format!(
            r#"
[http_server]
port = 0

[client]
insecure = true

[[channel.namespaces]]
name = "conversation"

[[watch]]
path = '{}'
glob = "*.jsonl"
tail = true
tail_channel = "conversation:{{stem}}"
"#,
            dir.display()
        );
        let (config, _) = Config::parse_str(&text, Format::Toml, "bench.toml").expect("bench config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (node, addr) = rt.block_on(async {
            let server = Server::bind(config).await.expect("server binds");
            let addr = server.local_addr().expect("address");
            let node = server.node().clone();
            tokio::spawn(server.run(std::future::pending()));
            (node, addr)
        });
        let (id, hub_sub) = node.hub.connect("bench", None);
        node.hub
            .subscribe(id, "conversation:hub", SubscribeOptions::default())
            .expect("hub subscribe");
        let ws = rt.block_on(async {
            let url = format!("ws://{addr}/connection/websocket");
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
            ws.send(Message::text(r#"{"id":1,"connect":{}}"#))
                .await
                .expect("send");
            ws.send(Message::text(
                r#"{"id":2,"subscribe":{"channel":"conversation:ws"}}"#,
            ))
            .await
            .expect("send");
            loop {
                let text = next_text(&mut ws).await;
                if text.lines().any(|l| l.starts_with(r#"{"id":2,"#)) {
                    assert!(text.contains(r#""subscribe""#), "subscribe failed: {text}");
                    break;
                }
            }
            ws
        });
        Self {
            rt,
            dir,
            hub_file,
            hub_sub,
            ws_file,
            ws,
            next: 0,
        }
    }

    /// Appends one line to hub.jsonl; returns the time until the hub
    /// subscriber has it.
    fn hub_round_trip(&mut self) -> Duration {
        self.next += 1;
        let line = format!("{{\"i\":{}}}\n", self.next);
        let expected = format!("{{\"i\":{}}}", self.next);
        let start = Instant::now();
        self.hub_file.write_all(line.as_bytes()).expect("append");
        let mut out = Vec::new();
        loop {
            out.clear();
            let n = self
                .hub_sub
                .drain_blocking(&mut out, WAIT)
                .expect("subscriber alive");
            assert!(n > 0, "line {} not delivered within {WAIT:?}", self.next);
            let got = out.iter().any(|item| match item {
                Outbound::Event(ev) => {
                    matches!(&ev.kind, EventKind::Publication(p) if p.data.as_ref() == expected.as_bytes())
                }
                Outbound::Raw(_) => false,
            });
            if got {
                return start.elapsed();
            }
        }
    }

    /// Appends one line to ws.jsonl; returns the time until the WebSocket
    /// client has read the push.
    fn ws_round_trip(&mut self) -> Duration {
        self.next += 1;
        let line = format!("{{\"i\":{}}}\n", self.next);
        let expected = format!("\"data\":{{\"i\":{}}}", self.next);
        let Self { rt, ws, ws_file, .. } = self;
        let start = Instant::now();
        ws_file.write_all(line.as_bytes()).expect("append");
        rt.block_on(async {
            loop {
                let text = next_text(ws).await;
                if text.contains(&expected) {
                    return start.elapsed();
                }
            }
        })
    }
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the server said nothing for 5 s")
            .expect("websocket open")
            .expect("websocket read");
        if let Message::Text(t) = msg {
            if t.as_str() == "{}" {
                ws.send(Message::text("{}")).await.expect("pong");
                continue;
            }
            return t.as_str().to_owned();
        }
    }
}

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "watch_latency/{name}: {} lines: p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        samples.len(),
        us(at(0.50)),
        us(at(0.90)),
        us(at(0.99)),
        us(samples[samples.len() - 1]),
    );
}

fn main() {
    let mut rig = Rig::start();
    // Warm up both paths (first reads, allocations, TCP slow start).
    for _ in 0..50 {
        rig.hub_round_trip();
        rig.ws_round_trip();
    }
    let hub: Vec<Duration> = (0..LINES).map(|_| rig.hub_round_trip()).collect();
    let ws: Vec<Duration> = (0..LINES).map(|_| rig.ws_round_trip()).collect();
    percentiles("hub", hub);
    percentiles("websocket", ws);

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("watch_latency");
    group.bench_function("hub", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rig.hub_round_trip()).sum())
    });
    group.bench_function("websocket", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rig.ws_round_trip()).sum())
    });
    group.finish();
    c.final_summary();
}
