//! `crier bench` as a user runs it: a real `crier serve --dev` on port 0 and
//! the real binary loading it over loopback. Every wait is on an output
//! line or an exit, with a deadline that fails loudly; no sleeps. Both
//! processes are owned by guards that kill them on drop, so a failing
//! assertion never leaves one behind.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long any single wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// A child process, killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // Only this child, by its handle; it may have exited already.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `crier` command with a predictable environment: no `CRIER_*`
/// variables or `RUST_LOG` from the shell running the tests.
fn crier(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crier"));
    command.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("CRIER_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// Sends each line of `pipe` on a channel, then closes it.
fn lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Everything a channel of lines carries until it closes, or a failure
/// naming `what` at the deadline.
fn all_lines(rx: &Receiver<String>, deadline: Instant, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => return seen,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("timed out waiting for {what}; it printed:\n{}", seen.join("\n"))
            }
        }
    }
}

/// A running `crier serve --dev --port 0`.
struct Server {
    process: Guard,
    /// `ws://127.0.0.1:PORT/connection/websocket`
    websocket: String,
    /// Keeps the server's stdout drained.
    _stdout: Receiver<String>,
}

fn serve() -> Server {
    serve_with(&[], &[])
}

/// `crier serve --dev --port 0` with more arguments and `CRIER_*` settings.
fn serve_with(extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut args = vec!["serve", "--dev", "--port", "0"];
    args.extend_from_slice(extra);
    let mut command = crier(&args);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::piped())
        // The server's logs are not what these tests look at; a full pipe
        // must never block it.
        .stderr(Stdio::null())
        .spawn()
        .expect("start crier serve");
    let stdout = lines(child.stdout.take().expect("stdout is piped"));
    let process = Guard(child);
    let deadline = Instant::now() + DEADLINE;
    let address = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = stdout
            .recv_timeout(left)
            .expect("crier serve prints its listening line");
        if let Some(address) = line.strip_prefix("crier listening on http://") {
            break address.to_string();
        }
    };
    Server {
        process,
        websocket: format!("ws://{address}/connection/websocket"),
        _stdout: stdout,
    }
}

/// A fresh directory for one test's files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("crier-bench-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `crier bench` against `server` and returns its JSON report.
fn bench(server: &Server, extra: &[&str]) -> Value {
    bench_at(&server.websocket, server.process.0.id(), extra)
}

/// Runs `crier bench --url url --server-pid pid` and returns its JSON report.
fn bench_at(url: &str, pid: u32, extra: &[&str]) -> Value {
    let pid = pid.to_string();
    let mut args = vec!["bench", "--url", url, "--server-pid", pid.as_str(), "--json"];
    args.extend_from_slice(extra);
    let mut child = crier(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crier bench");
    let stdout = lines(child.stdout.take().expect("stdout is piped"));
    let stderr = lines(child.stderr.take().expect("stderr is piped"));
    let mut process = Guard(child);
    let deadline = Instant::now() + DEADLINE;
    let out = all_lines(&stdout, deadline, "crier bench's report");
    let err = all_lines(&stderr, deadline, "crier bench to finish");
    let status = process.0.wait().expect("wait for crier bench");
    assert!(
        status.success(),
        "crier bench failed ({status}):\n{}",
        err.join("\n")
    );
    assert_eq!(out.len(), 1, "--json prints exactly one line: {out:?}");
    serde_json::from_str(&out[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out[0]))
}

fn number(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {report}"))
}

#[test]
fn fixed_rate_over_the_api_reaches_every_subscriber() {
    let server = serve();
    let report = bench(
        &server,
        &[
            "--subscribers",
            "20",
            "--publishers",
            "1",
            "--rate",
            "200",
            "--duration",
            "2s",
        ],
    );
    assert_eq!(report["format"], "json", "JSON is the default: {report}");
    assert_eq!(report["compression"], false, "off by default: {report}");
    let sent = number(&report, "sent");
    // 200/s for 2 s; a loaded machine may fall a little behind the schedule.
    assert!(sent >= 100, "too few publications accepted: {report}");
    assert_eq!(number(&report, "loss"), 0, "{report}");
    assert_eq!(number(&report, "deliveries"), sent * 20, "{report}");
    assert_eq!(number(&report, "deliveries_expected"), sent * 20, "{report}");
    assert_eq!(number(&report, "subscribers_gone"), 0, "{report}");
    let p99 = report["latency_us"]["p99"]
        .as_u64()
        .expect("latency p99 is reported");
    assert!(p99 > 0, "{report}");
    assert!(
        report["server_cpu_seconds"].as_f64().is_some(),
        "server CPU is reported with --server-pid: {report}"
    );
    assert!(
        report["server_rss_connected_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "{report}"
    );
}

/// A bare WebSocket broadcast server, as scripts/peers/bun/server.js is,
/// on its own runtime (stopped on drop): a socket is subscribed from its TCP
/// accept, before its handshake, so no client that finished its handshake
/// can miss a message; a socket that sends is a publisher, unsubscribed, and
/// every text message it sends goes to every subscriber as it came.
struct RawBroadcast {
    url: String,
    _runtime: tokio::runtime::Runtime,
}

fn raw_broadcast() -> RawBroadcast {
    use futures_util::{SinkExt, StreamExt};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use tokio_tungstenite::tungstenite::Message;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the raw server");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the raw server");
    let addr = listener.local_addr().expect("its address");
    let subscribers: Arc<Mutex<HashMap<u64, tokio::sync::mpsc::UnboundedSender<Message>>>> = Arc::default();
    runtime.spawn(async move {
        for id in 0u64.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            subscribers.lock().unwrap().insert(id, tx);
            let subscribers = subscribers.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    let (mut sink, mut stream) = ws.split();
                    tokio::spawn(async move {
                        while let Some(message) = rx.recv().await {
                            if sink.send(message).await.is_err() {
                                break;
                            }
                        }
                    });
                    while let Some(Ok(message)) = stream.next().await {
                        if message.is_text() {
                            let mut subscribers = subscribers.lock().unwrap();
                            subscribers.remove(&id);
                            for tx in subscribers.values() {
                                let _ = tx.send(message.clone());
                            }
                        }
                    }
                }
                subscribers.lock().unwrap().remove(&id);
            });
        }
    });
    RawBroadcast {
        url: format!("ws://{addr}/"),
        _runtime: runtime,
    }
}

#[test]
fn raw_protocol_counts_every_message_of_a_bare_broadcast_server() {
    let server = raw_broadcast();
    // The server runs in this process: its CPU and memory are ours.
    let report = bench_at(
        &server.url,
        std::process::id(),
        &[
            "--protocol",
            "raw",
            "--publish-via",
            "ws",
            "--subscribers",
            "8",
            "--publishers",
            "2",
            "--rate",
            "0",
            "--window",
            "8",
            "--duration",
            "1s",
        ],
    );
    assert_eq!(report["protocol"], "raw", "{report}");
    let sent = number(&report, "sent");
    assert!(sent > 0, "{report}");
    assert_eq!(number(&report, "unanswered"), 0, "{report}");
    assert_eq!(number(&report, "loss"), 0, "{report}");
    assert_eq!(number(&report, "deliveries"), sent * 8, "{report}");
    assert_eq!(
        report["messages_per_frame"].as_f64(),
        Some(1.0),
        "a raw message is one payload: {report}"
    );
    assert!(report["latency_us"]["p99"].as_u64().is_some(), "{report}");
    assert!(report["server_cpu_seconds"].as_f64().is_some(), "{report}");
}

#[test]
fn as_fast_as_possible_over_websocket_publishers_loses_nothing() {
    let server = serve();
    let report = bench(
        &server,
        &[
            "--subscribers",
            "10",
            "--channels",
            "2",
            "--publishers",
            "2",
            "--publish-via",
            "ws",
            "--rate",
            "0",
            "--window",
            "8",
            "--duration",
            "1s",
        ],
    );
    let sent = number(&report, "sent");
    assert!(sent > 0, "{report}");
    assert_eq!(number(&report, "refused"), 0, "{report}");
    assert_eq!(number(&report, "loss"), 0, "{report}");
    // Publications alternate between the two channels of 5 subscribers.
    assert_eq!(number(&report, "deliveries"), sent * 5, "{report}");
}

#[test]
fn protobuf_subscribers_and_publishers_lose_nothing() {
    let server = serve();
    let report = bench(
        &server,
        &[
            "--format",
            "protobuf",
            "--subscribers",
            "6",
            "--channels",
            "2",
            "--publish-via",
            "ws",
            "--rate",
            "200",
            "--duration",
            "1s",
        ],
    );
    assert_eq!(report["format"], "protobuf", "{report}");
    let sent = number(&report, "sent");
    assert!(sent >= 50, "too few publications accepted: {report}");
    assert_eq!(number(&report, "refused"), 0, "{report}");
    assert_eq!(number(&report, "loss"), 0, "{report}");
    // Publications alternate between the two channels of 3 subscribers.
    assert_eq!(number(&report, "deliveries"), sent * 3, "{report}");
    assert_eq!(number(&report, "subscribers_gone"), 0, "{report}");
    assert!(
        report["latency_us"]["p99"].as_u64().is_some(),
        "latencies are read from protobuf frames: {report}"
    );
}

#[test]
fn a_remote_server_is_refused_without_allow_remote() {
    let output = crier(&[
        "bench",
        "--url",
        "ws://192.0.2.1:8000/connection/websocket",
        "--subscribers",
        "1",
    ])
    .output()
    .expect("run crier bench");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("loopback") && stderr.contains("--allow-remote"),
        "{stderr}"
    );
}

#[test]
fn a_never_reading_subscriber_is_dropped_with_3008_and_the_others_lose_nothing() {
    // A 512 KiB queue; the slow subscriber's share of the run (750
    // publications of 16 KiB, 12 MiB) is far beyond it plus what the
    // kernel buffers on the way.
    let server = serve_with(&[], &[("CRIER_CLIENT_QUEUE_MAX_SIZE", "524288")]);
    let report = bench(
        &server,
        &[
            "--subscribers",
            "5",
            "--slow",
            "1",
            "--rate",
            "250",
            "--size",
            "16384",
            "--duration",
            "3s",
        ],
    );
    let sent = number(&report, "sent");
    assert!(sent >= 100, "too few publications accepted: {report}");
    assert_eq!(number(&report, "loss"), 0, "{report}");
    assert_eq!(number(&report, "deliveries"), sent * 5, "{report}");
    assert_eq!(number(&report, "subscribers_gone"), 0, "{report}");
    assert_eq!(number(&report, "slow"), 1, "{report}");
    assert_eq!(number(&report, "slow_dropped"), 1, "{report}");
    assert_eq!(
        report["slow_close_codes"],
        serde_json::json!({ "3008": 1 }),
        "{report}"
    );
}

#[test]
fn sse_subscribers_get_everything() {
    let server = serve();
    let report = bench(
        &server,
        &[
            "--transport",
            "sse",
            "--subscribers",
            "10",
            "--rate",
            "200",
            "--duration",
            "1s",
        ],
    );
    assert_eq!(report["transport"], "sse", "{report}");
    let sent = number(&report, "sent");
    assert!(sent >= 50, "too few publications accepted: {report}");
    assert_eq!(number(&report, "loss"), 0, "{report}");
    assert_eq!(number(&report, "deliveries"), sent * 10, "{report}");
    assert!(report["latency_us"]["p99"].as_u64().is_some(), "{report}");
}

#[test]
fn tcp_subscribers_get_everything_from_a_line_listener() {
    // A port that was free a moment ago: the listener's configuration has
    // to name it, and nothing prints the port a `listen = ":0"` bound.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port();
    let dir = TempDir::new("tcp");
    let config = dir.0.join("crier.toml");
    std::fs::write(
        &config,
        format!("[[tcp]]\nlisten = \"127.0.0.1:{port}\"\nframing = \"line\"\nchannels = [\"ticks\"]\n"),
    )
    .expect("write the configuration");
    let server = serve_with(&["--config", config.to_str().expect("UTF-8 path")], &[]);
    let tcp_addr = format!("127.0.0.1:{port}");
    let report = bench(
        &server,
        &[
            "--transport",
            "tcp",
            "--tcp-addr",
            tcp_addr.as_str(),
            "--channel-prefix",
            "ticks",
            "--subscribers",
            "10",
            "--rate",
            "200",
            "--duration",
            "1s",
        ],
    );
    assert_eq!(report["transport"], "tcp", "{report}");
    let sent = number(&report, "sent");
    assert!(sent >= 50, "too few publications accepted: {report}");
    assert_eq!(number(&report, "loss"), 0, "{report}");
    assert_eq!(number(&report, "deliveries"), sent * 10, "{report}");
}

#[test]
fn tcp_with_several_channels_is_refused_plainly() {
    let output = crier(&[
        "bench",
        "--transport",
        "tcp",
        "--tcp-addr",
        "127.0.0.1:9",
        "--channels",
        "2",
        "--subscribers",
        "1",
    ])
    .output()
    .expect("run crier bench");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--channels 1"), "{stderr}");
}

#[test]
fn plot_writes_an_svg_latency_distribution() {
    let server = serve();
    let dir = TempDir::new("plot");
    let plot = dir.0.join("latency.svg");
    let report = bench(
        &server,
        &[
            "--subscribers",
            "2",
            "--rate",
            "100",
            "--duration",
            "500ms",
            "--plot",
            plot.to_str().expect("UTF-8 path"),
        ],
    );
    assert!(number(&report, "deliveries") > 0, "{report}");
    let svg = std::fs::read_to_string(&plot).expect("the plot file is written");
    assert!(svg.contains("<svg"), "{svg}");
    assert!(svg.contains("percentile"), "the x axis is labelled: {svg}");
}

#[test]
fn large_publications_over_a_websocket_publisher_stay_under_the_frame_limit() {
    // 16 KB payloads, up to 8 in flight: joined into one frame they would
    // pass the server's 64 KiB message limit and the publisher would be
    // disconnected; the bench splits its frames instead.
    let server = serve();
    let report = bench(
        &server,
        &[
            "--subscribers",
            "3",
            "--publish-via",
            "ws",
            "--rate",
            "0",
            "--window",
            "8",
            "--size",
            "16000",
            "--duration",
            "1s",
        ],
    );
    let sent = number(&report, "sent");
    assert!(sent >= 8, "{report}");
    assert!(report["publisher_failure"].is_null(), "{report}");
    assert_eq!(number(&report, "refused"), 0, "{report}");
    assert_eq!(number(&report, "loss"), 0, "{report}");
    assert_eq!(number(&report, "deliveries"), sent * 3, "{report}");
}

/// Runs `crier bench` against `server`, expecting it to fail; returns what
/// it printed on stderr.
fn bench_fails(server: &Server, extra: &[&str]) -> String {
    let mut args = vec!["bench", "--url", server.websocket.as_str(), "--json"];
    args.extend_from_slice(extra);
    let mut child = crier(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crier bench");
    let stdout = lines(child.stdout.take().expect("stdout is piped"));
    let stderr = lines(child.stderr.take().expect("stderr is piped"));
    let mut process = Guard(child);
    let deadline = Instant::now() + DEADLINE;
    let out = all_lines(&stdout, deadline, "crier bench's stdout");
    let err = all_lines(&stderr, deadline, "crier bench to finish").join("\n");
    let status = process.0.wait().expect("wait for crier bench");
    assert_eq!(status.code(), Some(1), "stdout: {out:?}\nstderr: {err}");
    err
}

#[test]
fn compressed_subscribers_lose_nothing_in_json_and_protobuf() {
    let server = serve_with(&[], &[("CRIER_WEBSOCKET_COMPRESSION", "true")]);
    for format in ["json", "protobuf"] {
        // Fresh channels per run: nothing of the last run reaches this one.
        let prefix = format!("deflate-{format}-");
        let report = bench(
            &server,
            &[
                "--compression",
                "--format",
                format,
                "--channel-prefix",
                prefix.as_str(),
                "--subscribers",
                "6",
                "--channels",
                "2",
                "--rate",
                "200",
                "--size",
                "300",
                "--duration",
                "1s",
            ],
        );
        assert_eq!(report["compression"], true, "{report}");
        assert_eq!(report["format"], format, "{report}");
        let sent = number(&report, "sent");
        assert!(sent >= 50, "too few publications accepted: {report}");
        assert_eq!(number(&report, "refused"), 0, "{report}");
        assert_eq!(number(&report, "loss"), 0, "{report}");
        // Publications alternate between the two channels of 3 subscribers.
        assert_eq!(number(&report, "deliveries"), sent * 3, "{report}");
        assert_eq!(number(&report, "deliveries_expected"), sent * 3, "{report}");
        assert_eq!(number(&report, "subscribers_gone"), 0, "{report}");
        assert!(
            report["latency_us"]["p99"].as_u64().is_some(),
            "latencies are read from inflated messages: {report}"
        );
    }
}

#[test]
fn compression_against_a_server_without_it_names_the_setting() {
    let server = serve();
    let stderr = bench_fails(
        &server,
        &["--compression", "--subscribers", "2", "--duration", "1s"],
    );
    assert!(
        stderr.contains("permessage-deflate") && stderr.contains("websocket.compression = true"),
        "{stderr}"
    );
}

#[test]
fn compression_is_refused_for_sse_and_tcp() {
    for transport in [&["sse"][..], &["tcp", "--tcp-addr", "127.0.0.1:9"]] {
        let mut args = vec!["bench", "--compression", "--subscribers", "1", "--transport"];
        args.extend_from_slice(transport);
        let output = crier(&args).output().expect("run crier bench");
        assert_eq!(output.status.code(), Some(1), "{transport:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--compression") && stderr.contains("--transport ws"),
            "{transport:?}: {stderr}"
        );
    }
}
