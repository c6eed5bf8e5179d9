//! Prometheus metrics: what a node counts, rendered in the OpenMetrics text
//! format (`http::metrics` serves it as `GET /metrics`).
//!
//! [`Metrics`] lives in the node. The transports and the API report into
//! it with small calls: [`Metrics::connection`] (a guard per live
//! connection), [`Metrics::disconnect`] (a close with a code),
//! [`Metrics::observe_publish`] and [`Metrics::engine_error`]. Everything the
//! hub already counts (`HubStats`), the queue depths of all clients and the
//! process figures are read only when scraped, so they cost nothing between
//! scrapes.
//!
//! This module must never change an outcome: no call here fails, blocks on
//! I/O or allocates per message. Histograms are `prometheus-client`
//! histograms, a fixed set of bucket counters with no sample buffer, so
//! nothing grows between scrapes and no upkeep task is needed (unlike
//! metrics-exporter-prometheus, which keeps samples until its upkeep runs).

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crier_core::{EngineError, Hub, HubError, MemoryEngine};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of a scrape: OpenMetrics text (counters are exposed
/// as `<name>_total` under `# TYPE <name> counter`, which only this format
/// describes correctly).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of `crier_publish_duration_seconds`: 5 µs, 20 µs, … ≈1.3 s
/// (×4). A publish is an engine call plus one queue push per subscriber, so
/// microseconds matter; the default Prometheus buckets start at 5 ms.
const PUBLISH_BUCKETS: (f64, f64, u16) = (0.000_005, 4.0, 10);

/// Upper bounds of `crier_client_queue_depth` (items waiting). `0` counts
/// the clients that are keeping up.
const QUEUE_BUCKETS: [usize; 9] = [0, 1, 4, 16, 64, 256, 1024, 4096, 16384];

/// The transport of a client connection: the `transport` label of
/// `crier_connections`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `/connection/websocket`, the bidirectional protocol.
    WebSocket,
    /// `/connection/uni_websocket`.
    UniWebSocket,
    /// `/connection/uni_sse`.
    UniSse,
    /// `/connection/uni_http_stream`.
    UniHttpStream,
    /// `/connection/http_stream`, bidirectional emulation.
    HttpStream,
    /// `/connection/sse`, bidirectional emulation.
    Sse,
    /// A `[[tcp]]` listener.
    Tcp,
}

impl Transport {
    /// Every transport, in label order; each is exposed from the start (at 0).
    pub const ALL: [Transport; 7] = [
        Transport::WebSocket,
        Transport::UniWebSocket,
        Transport::UniSse,
        Transport::UniHttpStream,
        Transport::HttpStream,
        Transport::Sse,
        Transport::Tcp,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::UniWebSocket => "uni_websocket",
            Transport::UniSse => "uni_sse",
            Transport::UniHttpStream => "uni_http_stream",
            Transport::HttpStream => "http_stream",
            Transport::Sse => "sse",
            Transport::Tcp => "tcp",
        }
    }
}

/// Upper bounds of the live publish-time histogram the admin UI reads:
/// 1 µs × 2^i, i = 0..24 (1 µs to ≈8.4 s), then everything slower.
pub const LIVE_LATENCY_BUCKETS: usize = 24;

/// What the admin UI charts and Prometheus does not let a reader take
/// back out: publish times in fine buckets and disconnects by code. Kept
/// only once [`Metrics::keep_live`] is called (the admin UI is on).
#[derive(Default)]
struct Live {
    on: std::sync::atomic::AtomicBool,
    latency: [std::sync::atomic::AtomicU64; LIVE_LATENCY_BUCKETS + 1],
    delivery: [std::sync::atomic::AtomicU64; LIVE_LATENCY_BUCKETS + 1],
    disconnects: std::sync::Mutex<std::collections::BTreeMap<u32, u64>>,
}

/// A reading of the counters the admin UI charts (all since start).
#[derive(Debug, Clone, Default)]
pub struct LiveReading {
    /// Open connections by transport label.
    pub connections: Vec<(&'static str, i64)>,
    /// Clients closed by a transport, by disconnect code.
    pub disconnects: Vec<(u32, u64)>,
    /// Publishes per bucket (bounds: [`live_latency_bound`]).
    pub latency: Vec<u64>,
    /// WebSocket writes per bucket of delivery latency (from the publish
    /// to the write to the socket of the oldest event written).
    pub delivery: Vec<u64>,
    /// Engine failures.
    pub engine_errors: u64,
}

/// The live latency bucket of `took`: bucket i holds times up to 2^i µs.
fn live_bucket(took: std::time::Duration) -> usize {
    let us = took.as_micros().max(1) as u64;
    ((64 - (us - 1).leading_zeros()) as usize).min(LIVE_LATENCY_BUCKETS)
}

/// The upper bound, in seconds, of live latency bucket `i`.
pub fn live_latency_bound(i: usize) -> f64 {
    1e-6 * f64::from(1u32 << i.min(31))
}

/// Where a client connects from, for the logs: its transport, and the
/// remote address of its socket when the transport knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    pub transport: Transport,
    pub remote: Option<std::net::SocketAddr>,
}

impl Peer {
    /// The `remote` field of a log line: the address, or empty when not
    /// known. Formatted only for a line that is written.
    pub fn remote_field(&self) -> String {
        self.remote.map(|a| a.to_string()).unwrap_or_default()
    }
}

type TransportLabel = [(&'static str, &'static str); 1];
type CodeLabel = [(&'static str, u32); 1];
type LimitLabel = [(&'static str, &'static str); 1];
type ProxyLabel = [(&'static str, String); 2];

/// `crier_webhook_events_total{result}` and `crier_webhook_failures_total`:
/// shared counters, cheap to clone into the webhook task.
#[derive(Clone, Debug)]
pub(crate) struct WebhookCounters {
    /// Events the backend took.
    pub delivered: Counter,
    /// Events dropped because the queue was full.
    pub dropped: Counter,
    /// POSTs that failed and were retried.
    pub failures: Counter,
}

/// One live connection counted in `crier_connections`: counts from
/// [`Metrics::connection`] until dropped.
#[must_use = "the connection is counted only while this guard lives"]
#[derive(Debug)]
pub struct ConnectionGauge(Gauge);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Client-problem log lines per second, at most (a burst of as many).
pub const CLIENT_PROBLEM_LINES: u32 = 20;

/// How often an engine error is logged at most.
pub const ENGINE_ERROR_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The metrics of one node.
///
/// How a transport reports (this is what `ws.rs` and `uni.rs` do, and what
/// `tcp.rs` should do):
///
/// ```ignore
/// // once the hub has registered the client (connect succeeded):
/// let _connection = node.metrics.connection(Transport::Tcp);
/// // ... serve; the guard decrements `crier_connections` when dropped.
/// // where the transport closes the client with a code:
/// node.metrics.disconnect(d.code);
/// ```
pub struct Metrics {
    // Everything exposed; encoded on each scrape.
    registry: Registry,
    // `crier_connections`, one gauge per `Transport` in `Transport::ALL`
    // order: the family's own gauges (shared counters), looked up once here
    // so a connection never takes the family's lock.
    connections: [Gauge; Transport::ALL.len()],
    // `crier_disconnects_total` by code.
    disconnects: Family<CodeLabel, Counter>,
    // `crier_limit_refusals_total` by limit.
    refusals: Family<LimitLabel, Counter>,
    // `crier_publish_duration_seconds`.
    publish_duration: Histogram,
    // `crier_engine_errors_total`.
    engine_errors: Counter,
    // `crier_proxy_requests_total` by proxy and result.
    proxy_requests: Family<ProxyLabel, Counter>,
    // `crier_webhook_events_total` by result, and failed POSTs.
    webhooks: WebhookCounters,
    // `crier_proxy_duration_seconds` by proxy.
    proxy_duration: Family<[(&'static str, String); 1], Histogram>,
    // When an engine error was last logged (ms since `created`), so a
    // broker outage logs its reason every few seconds, not per request.
    engine_error_logged: std::sync::atomic::AtomicU64,
    created: Instant,
    // `prometheus.enabled`: when off, publishes are not timed (two clock
    // reads and a histogram lock saved per publish, as nobody would see it).
    enabled: bool,
    // Client-problem log lines allowed (a flood of bad clients must not
    // fill the disk), and how many were left out since the last one.
    problem_lines: std::sync::Mutex<(crate::clock::TokenBucket, u64)>,
    // What the admin UI charts.
    live: Live,
}

impl Metrics {
    /// Metrics for a node serving `hub` (whose memory engine, if it has
    /// one, is `history`); `enabled` is `prometheus.enabled`.
    pub fn new(hub: Hub, history: Option<Arc<MemoryEngine>>, enabled: bool) -> Self {
        let mut registry = Registry::default();
        // Help texts end without a full stop: `register` appends one.

        let by_transport = Family::<TransportLabel, Gauge>::default();
        let connections =
            Transport::ALL.map(|t| by_transport.get_or_create_owned(&[("transport", t.label())]));
        registry.register(
            "crier_connections",
            "Open client connections by transport (connected clients only)",
            by_transport,
        );

        let disconnects = Family::<CodeLabel, Counter>::default();
        registry.register(
            "crier_disconnects",
            "Clients a transport closed, by protocol disconnect code",
            disconnects.clone(),
        );

        let refusals = Family::<LimitLabel, Counter>::default();
        registry.register(
            "crier_limit_refusals",
            "Requests, connections, commands and frames refused by a configured limit, by limit key",
            refusals.clone(),
        );

        let (start, factor, count) = PUBLISH_BUCKETS;
        let publish_duration = Histogram::new(exponential_buckets(start, factor, count));
        registry.register_with_unit(
            "crier_publish_duration",
            "Time of a hub publish (engine, then enqueue to every subscriber) from the API or a client",
            Unit::Seconds,
            publish_duration.clone(),
        );

        let engine_errors = Counter::default();
        registry.register(
            "crier_engine_errors",
            "Engine failures on publish or history (a client's bad position not included)",
            engine_errors.clone(),
        );

        let proxy_requests = Family::<ProxyLabel, Counter>::default();
        registry.register(
            "crier_proxy_requests",
            "Calls to the backend's proxies, by proxy and result (ok, error, disconnect, timeout, unavailable, status, invalid, busy)",
            proxy_requests.clone(),
        );
        let proxy_duration = Family::<[(&'static str, String); 1], Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_1, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register_with_unit(
            "crier_proxy_duration",
            "Time of a call to a backend proxy, by proxy",
            Unit::Seconds,
            proxy_duration.clone(),
        );

        let webhook_events = Family::<LimitLabel, Counter>::default();
        registry.register(
            "crier_webhook_events",
            "Lifecycle webhook events, by result (delivered: the backend took them; dropped: the queue was full)",
            webhook_events.clone(),
        );
        let webhook_failures = Counter::default();
        registry.register(
            "crier_webhook_failures",
            "Webhook POSTs that failed (timeout, unreachable, a status other than 2xx) and were retried",
            webhook_failures.clone(),
        );
        // One at a time: a family's guard holds its lock until dropped.
        let delivered = webhook_events.get_or_create_owned(&[("result", "delivered")]);
        let dropped = webhook_events.get_or_create_owned(&[("result", "dropped")]);
        let webhooks = WebhookCounters {
            delivered,
            dropped,
            failures: webhook_failures,
        };

        registry.register_collector(Box::new(HubCollector { hub, history }));
        registry.register_collector(Box::new(ProcessCollector));

        Self {
            registry,
            connections,
            disconnects,
            refusals,
            publish_duration,
            engine_errors,
            proxy_requests,
            proxy_duration,
            webhooks,
            engine_error_logged: std::sync::atomic::AtomicU64::new(u64::MAX),
            created: Instant::now(),
            enabled,
            problem_lines: std::sync::Mutex::new((crate::clock::TokenBucket::new(CLIENT_PROBLEM_LINES), 0)),
            live: Live::default(),
        }
    }

    /// Counts one open connection of `transport` until the guard is dropped.
    /// Take it once the client is registered with the hub.
    pub fn connection(&self, transport: Transport) -> ConnectionGauge {
        let gauge = self.connections[transport as usize].clone();
        gauge.inc();
        ConnectionGauge(gauge)
    }

    /// Whether a client-problem line may be logged now (at most
    /// [`CLIENT_PROBLEM_LINES`] a second): `Some(n)` with the number of
    /// lines left out since the last one logged, or `None` to leave this
    /// one out. Needs a tokio runtime (its clock).
    pub fn client_problem_line(&self) -> Option<u64> {
        // Nothing panics while holding it; a poisoned bucket still counts.
        let mut g = self.problem_lines.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.take() {
            Some(std::mem::take(&mut g.1))
        } else {
            g.1 += 1;
            None
        }
    }

    /// Counts something refused by the limit `limit` (its config key's last
    /// part: `connection_limit`, `command_rate_limit`, ...).
    pub fn refused(&self, limit: &'static str) {
        self.refusals.get_or_create(&[("limit", limit)]).inc();
    }

    /// Counts one call to proxy `proxy` that ended with `result`, and how
    /// long it took.
    pub fn proxy_call(&self, proxy: &str, result: &'static str, took: std::time::Duration) {
        self.proxy_requests
            .get_or_create(&[("proxy", proxy.to_owned()), ("result", result.to_owned())])
            .inc();
        self.proxy_duration
            .get_or_create(&[("proxy", proxy.to_owned())])
            .observe(took.as_secs_f64());
    }

    /// The webhook counters, for the webhook sender's task.
    pub(crate) fn webhook_counters(&self) -> WebhookCounters {
        self.webhooks.clone()
    }

    /// Counts a client closed by its transport with disconnect `code`.
    pub fn disconnect(&self, code: u32) {
        self.disconnects.get_or_create(&[("code", code)]).inc();
        if self.live.on.load(std::sync::atomic::Ordering::Relaxed) {
            let mut d = self.live.disconnects.lock().unwrap_or_else(|e| e.into_inner());
            *d.entry(code).or_default() += 1;
        }
    }

    /// Starts keeping what [`Metrics::live`] reads (publish times in fine
    /// buckets, disconnects by code), for the admin UI.
    pub fn keep_live(&self) {
        self.live.on.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the admin UI's figures are kept ([`Metrics::keep_live`]):
    /// a writer asks before reading the clock for [`Metrics::delivered`].
    pub fn live_on(&self) -> bool {
        self.live.on.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one write whose oldest event was published `took` ago.
    pub fn delivered(&self, took: std::time::Duration) {
        self.live.delivery[live_bucket(took)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The counters the admin UI charts, now.
    pub fn live(&self) -> LiveReading {
        use std::sync::atomic::Ordering::Relaxed;
        let disconnects = self.live.disconnects.lock().unwrap_or_else(|e| e.into_inner());
        LiveReading {
            connections: Transport::ALL
                .iter()
                .map(|t| (t.label(), self.connections[*t as usize].get()))
                .collect(),
            disconnects: disconnects.iter().map(|(c, n)| (*c, *n)).collect(),
            latency: self.live.latency.iter().map(|b| b.load(Relaxed)).collect(),
            delivery: self.live.delivery.iter().map(|b| b.load(Relaxed)).collect(),
            engine_errors: self.engine_errors.get(),
        }
    }

    /// Runs `publish` (a call to `Hub::publish`), timing it into
    /// `crier_publish_duration_seconds` (failed calls included) and counting
    /// an engine failure. The node times its (async) publishes with
    /// [`Metrics::observe_publish`]; this is the synchronous form the tests
    /// use.
    #[cfg(test)]
    pub fn timed_publish<T>(&self, publish: impl FnOnce() -> Result<T, HubError>) -> Result<T, HubError> {
        let started = Instant::now();
        let result = publish();
        self.observe_publish(started, &result);
        result
    }

    /// Records a publish that started at `started` and ended with `result`:
    /// its duration, and an engine failure if it was one.
    pub fn observe_publish<T>(&self, started: Instant, result: &Result<T, HubError>) {
        let live = self.live.on.load(std::sync::atomic::Ordering::Relaxed);
        if self.enabled || live {
            let took = started.elapsed();
            if self.enabled {
                self.publish_duration.observe(took.as_secs_f64());
            }
            if live {
                self.live.latency[live_bucket(took)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if let Err(e) = result {
            self.engine_error(e);
        }
    }

    /// Counts `e` in `crier_engine_errors_total` if the engine failed.
    /// `UnrecoverablePosition` is the client's stale position, not a failure.
    /// Also logs the reason (clients only see code 100), at most once per
    /// [`ENGINE_ERROR_LOG_EVERY`].
    pub fn engine_error(&self, e: &HubError) {
        use std::sync::atomic::Ordering;
        let HubError::Engine(err) = e else { return };
        if matches!(err, EngineError::UnrecoverablePosition) {
            return;
        }
        self.engine_errors.inc();
        let now = self.created.elapsed().as_millis() as u64;
        let every = ENGINE_ERROR_LOG_EVERY.as_millis() as u64;
        let last = self.engine_error_logged.load(Ordering::Relaxed);
        if (last == u64::MAX || now.saturating_sub(last) >= every)
            && self
                .engine_error_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %err, "engine error: clients get code 100 (logged at most every 5 s; crier_engine_errors_total counts all)");
        }
    }

    /// Everything, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail, and no collector here fails.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

// ----- read at scrape time ---------------------------------------------------

/// The hub's own counters and every client's queue depth.
struct HubCollector {
    hub: Hub,
    // The memory engine, whose history budget is shown.
    history: Option<Arc<MemoryEngine>>,
}

impl fmt::Debug for HubCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubCollector").finish_non_exhaustive()
    }
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

// `name` without `_total`: the encoder appends it to the sample.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

impl Collector for HubCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = self.hub.stats();
        if let Some(engine) = &self.history {
            let usage = engine.history_usage();
            gauge(
                &mut enc,
                "crier_history_bytes",
                "Bytes held by channel history on this node (memory engine), counted against engine.memory.history_max_bytes.",
                usage.bytes as u64,
            )?;
            counter(
                &mut enc,
                "crier_history_evicted_streams",
                "Channels whose history was dropped to stay within engine.memory.history_max_bytes.",
                usage.evicted_streams,
            )?;
        }
        gauge(
            &mut enc,
            "crier_clients",
            "Clients registered with the hub.",
            s.clients,
        )?;
        gauge(
            &mut enc,
            "crier_channels",
            "Channels with at least one local subscriber.",
            s.channels,
        )?;
        gauge(
            &mut enc,
            "crier_subscriptions",
            "Client subscriptions.",
            s.subscriptions,
        )?;
        counter(
            &mut enc,
            "crier_publications",
            "Publications accepted.",
            s.publications,
        )?;
        counter(
            &mut enc,
            "crier_deliveries",
            "Channel events (publications, joins, leaves) enqueued to clients.",
            s.deliveries,
        )?;
        counter(
            &mut enc,
            "crier_messages",
            "Direct messages enqueued to clients.",
            s.messages,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "crier_dropped_clients",
                "Clients the hub dropped: slow = queue overflow (3008), closed = receiver gone.",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in [("slow", s.dropped_slow), ("closed", s.dropped_closed)] {
                ConstCounter::new(n).encode(m.encode_family(&[("reason", reason)])?)?;
            }
        }

        // Per-bucket (not cumulative) counts; the last is +Inf.
        let mut buckets = [0u64; QUEUE_BUCKETS.len() + 1];
        let (mut sum, mut count) = (0u64, 0u64);
        self.hub.queue_depths(|depth| {
            buckets[QUEUE_BUCKETS.partition_point(|&bound| bound < depth)] += 1;
            sum += depth as u64;
            count += 1;
        });
        let bounds = QUEUE_BUCKETS.iter().map(|&b| b as f64).chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(buckets).collect();
        let mut m = enc.encode_descriptor(
            "crier_client_queue_depth",
            "Items waiting in each client's outbound queue, at scrape time.",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(sum as f64, count, &buckets, None)
    }
}

/// Resident memory and CPU time of this process, from `/proc` (Linux only;
/// elsewhere nothing is exposed), and the tasks alive in the runtime that
/// scrapes (the node's).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        // Tasks that were spawned and have not finished: each connection,
        // subscription pump and background loop holds some, so a count that
        // does not come back after its load ends is a task leak (the soak,
        // scripts/soak.sh, checks it). Outside a runtime there is no count.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            gauge(
                &mut enc,
                "crier_tasks",
                "Tokio tasks alive in the node's runtime.",
                runtime.metrics().num_alive_tasks() as u64,
            )?;
        }
        if let Some(bytes) = process::resident_memory_bytes() {
            let unit = Unit::Bytes;
            let m = enc.encode_descriptor(
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(&unit),
                MetricType::Gauge,
            )?;
            ConstGauge::new(bytes).encode(m)?;
        }
        if let Some(seconds) = process::cpu_seconds() {
            let unit = Unit::Seconds;
            let m = enc.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&unit),
                MetricType::Counter,
            )?;
            ConstCounter::new(seconds).encode(m)?;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod process {
    /// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`):
    /// 100 on every Linux architecture crier builds for.
    const CLK_TCK: f64 = 100.0;

    /// `VmRSS` of `/proc/self/status`. It is statm's resident page count
    /// already multiplied by the page size, which std cannot tell us.
    pub(super) fn resident_memory_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_vm_rss(&status)
    }

    fn parse_vm_rss(status: &str) -> Option<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
        let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    }

    /// `utime + stime` of `/proc/self/stat`, in seconds.
    pub(super) fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        parse_cpu_seconds(&stat)
    }

    fn parse_cpu_seconds(stat: &str) -> Option<f64> {
        // The command name (field 2) is in parentheses and may hold spaces
        // or parentheses: count fields from the last ')'. The rest starts at
        // field 3; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace();
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some((utime + stime) as f64 / CLK_TCK)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_proc_formats() {
            let stat = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 99 0 0";
            assert_eq!(parse_cpu_seconds(stat), Some(3.0));
            assert_eq!(
                parse_vm_rss("Name:\tx\nVmRSS:\t   2048 kB\nVmData: 1 kB\n"),
                Some(2 * 1024 * 1024)
            );
            assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        }

        #[test]
        fn reads_this_process() {
            assert!(resident_memory_bytes().is_some_and(|b| b > 0));
            assert!(cpu_seconds().is_some());
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod process {
    pub(super) fn resident_memory_bytes() -> Option<u64> {
        None
    }

    pub(super) fn cpu_seconds() -> Option<f64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_parse::{Scrape, Value};

    fn parse(text: &str) -> Scrape {
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the exposition parses")
    }

    /// The value of the scalar sample `name` with exactly `labels`.
    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let scrape = parse(text);
        let found = scrape.samples.iter().find(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        });
        match found.map(|s| &s.value) {
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
            other => panic!("{name}{labels:?}: {other:?} in:\n{text}"),
        }
    }

    #[test]
    fn engine_failures_count_but_a_stale_position_does_not() {
        let m = Metrics::new(Hub::default(), None, true);
        let down = HubError::Engine(EngineError::Unavailable("backend down".into()));
        assert!(m.timed_publish(|| Err::<(), _>(down.clone())).is_err());
        m.engine_error(&HubError::Engine(EngineError::UnrecoverablePosition));
        m.engine_error(&HubError::UnknownChannel("x".into()));
        m.engine_error(&down);
        let text = m.render();
        assert_eq!(sample(&text, "crier_engine_errors_total", &[]), 2.0);
        assert_eq!(sample(&text, "crier_publish_duration_seconds_count", &[]), 1.0);
    }

    #[test]
    fn alive_tasks_are_counted_in_a_runtime_only() {
        let m = Metrics::new(Hub::default(), None, true);
        assert!(!m.render().contains("crier_tasks"), "no runtime, no count");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let before = sample(&m.render(), "crier_tasks", &[]);
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let _ = rx.await;
            });
            assert_eq!(sample(&m.render(), "crier_tasks", &[]), before + 1.0);
            tx.send(()).expect("the task waits");
            task.await.expect("the task ends");
            assert_eq!(sample(&m.render(), "crier_tasks", &[]), before);
        });
    }

    #[test]
    fn disabled_metrics_do_not_time_publishes() {
        let m = Metrics::new(Hub::default(), None, false);
        assert!(m.timed_publish(|| Ok::<_, HubError>(())).is_ok());
        assert_eq!(
            sample(&m.render(), "crier_publish_duration_seconds_count", &[]),
            0.0
        );
    }

    #[test]
    fn a_connection_counts_while_its_guard_lives() {
        let m = Metrics::new(Hub::default(), None, true);
        let tcp = [("transport", "tcp")];
        let a = m.connection(Transport::Tcp);
        let b = m.connection(Transport::Tcp);
        assert_eq!(sample(&m.render(), "crier_connections", &tcp), 2.0);
        drop(a);
        assert_eq!(sample(&m.render(), "crier_connections", &tcp), 1.0);
        drop(b);
        assert_eq!(sample(&m.render(), "crier_connections", &tcp), 0.0);
    }

    /// Memory stays flat: traffic and scrapes add no series. Series exist
    /// per transport, per drop reason and per disconnect code seen, never
    /// per client, channel or scrape.
    #[test]
    fn traffic_and_scrapes_add_no_series() {
        let hub = Hub::default();
        let m = Metrics::new(hub.clone(), None, true);
        m.disconnect(3008);
        let series = |text: &str| parse(text).samples.len();
        let before = series(&m.render());
        for i in 0..200 {
            let (id, _rx) = hub.connect("u", None);
            let channel = format!("ch{i}");
            hub.subscribe(id, &channel, Default::default()).unwrap();
            let _c = m.connection(Transport::ALL[i % Transport::ALL.len()]);
            m.timed_publish(|| hub.publish(&channel, "1", Default::default()))
                .unwrap();
            m.disconnect(3008);
            hub.disconnect(id, crier_core::DisconnectReason::Slow);
            assert_eq!(series(&m.render()), before, "after {i} clients and scrapes");
        }
        let text = m.render();
        assert_eq!(sample(&text, "crier_publications_total", &[]), 200.0);
        assert_eq!(
            sample(&text, "crier_disconnects_total", &[("code", "3008")]),
            201.0
        );
    }
}
