//! `crier bench`: a bounded load generator for the WebSocket fan-out path.
//!
//! It opens S subscriber connections (client protocol v2, JSON or protobuf
//! by `--format`), then runs P publishers (HTTP API or WebSocket `publish`,
//! in the same format) for a fixed duration with
//! payloads that carry their send time, and reports deliveries, loss,
//! publish-to-delivery latency and, given the server's pid, the server's
//! CPU per delivery and memory per connection. With `--protocol raw` the
//! same subscribers and WebSocket publishers speak no protocol at all, to
//! measure a bare broadcast server (Bun's `server.publish`, for one) with the
//! same client.
//!
//! - [`client`] opens one client connection (small buffers, chosen source
//!   address) and runs its connect/subscribe commands;
//! - [`protobuf`] finds deliveries in protobuf frames, walking the bytes in
//!   place;
//! - [`deflate`] is the WebSocket client of `--compression` subscribers
//!   (permessage-deflate, which tokio-tungstenite lacks);
//! - [`subscriber`] keeps S of them reading and counting deliveries;
//! - [`publisher`] paces publications and reads the server's answers;
//! - `crier_loadgen` (shared with the peer load clients) keeps publishers
//!   from running ahead of deliveries, writes the timed payloads and reads
//!   `/proc`;
//! - [`stream`] reads the byte-stream transports (`uni_sse`, plain TCP
//!   lines) with the same scan;
//! - [`probe`] confirms silent TCP subscriptions with probe publications;
//! - [`report`] turns the tallies into the table or the JSON line, and
//!   [`plot`] the latencies into an SVG plot.
//!
//! The generator shares the machine with the server it measures, so it must
//! stay cheap: 4 KiB read buffers, no JSON tree or decoded message per
//! delivery (the send time is found by scanning the frame text, or by
//! walking a protobuf frame's fields in place), one histogram per subscriber task
//! merged at the end, and no lock on the delivery path. It must never talk
//! to a non-loopback address unless told to (`--allow-remote`), and every
//! run ends by itself: the duration plus at most 2 s for stragglers.

mod client;
mod deflate;
mod plot;
mod probe;
mod protobuf;
mod publisher;
mod report;
mod stream;
mod subscriber;

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::print_line;
use crate::subscribe::Format;
use crier_loadgen::flow::Flow;
use crier_loadgen::usage::{self, Pid};
use report::Report;

/// Load-test a crier server: S subscribers, P publishers, a fixed duration.
///
/// Subscribers connect (spread over source addresses 127.0.0.1..N) and
/// subscribe to C channels (--channels) named PREFIX0, PREFIX1, ...; publishers
/// then publish {"t":<send time>,"s":<seq>,"p":"..."} padded to --size
/// bytes, at --rate publications/s in total or, with --rate 0, as fast as
/// the --window allows. At the end: publications accepted, deliveries
/// expected and received, loss, deliveries/s, publish-to-delivery latency,
/// connect times and, with --server-pid, the server's CPU per delivery and
/// memory per connection. Talks to loopback addresses only unless
/// --allow-remote is given.
///
/// --url may be given more than once, one per node of a cluster sharing an
/// engine (e.g. Redis): subscriber i connects to URL number i mod N
/// (counting from 0), and publications go through the first URL's HTTP API
/// (or --api), so the other nodes' subscribers get them only through the
/// engine.
///
/// Subscribers use WebSocket, uni_sse or a plain TCP listener
/// (--transport); WebSocket connections speak the client protocol in JSON
/// or protobuf (--format); --slow adds subscribers that never read, to show
/// what a slow consumer costs the others; --plot writes the latency
/// distribution as an SVG file; --compression has WebSocket subscribers
/// offer permessage-deflate (the server needs websocket.compression = true).
///
/// --protocol raw loads a plain WebSocket broadcast server instead (such as
/// scripts/peers/bun/server.js, where any message one socket sends goes to
/// every other socket) with the same subscriber and publisher code:
/// subscribers open the WebSocket and send nothing, and every text message
/// they receive is one delivery; publishers (--publish-via ws) send each
/// payload alone as one text message and expect no reply, so publications
/// count as accepted once written and the window is kept by deliveries
/// alone. No connect or subscribe commands, one channel.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's WebSocket endpoint; repeat it for several nodes of one
    /// cluster: subscribers go round-robin over them (subscriber i to URL
    /// number i mod N, counting from 0), publishers to the first.
    #[arg(
        long,
        value_name = "URL",
        default_value = "ws://127.0.0.1:8000/connection/websocket"
    )]
    url: Vec<String>,
    /// The server's HTTP API base URL [default: the host and port of the
    /// first --url].
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// The server API key (http_api.key), sent as X-API-Key.
    #[arg(long, value_name = "K", env = "CRIER_HTTP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Connection token for every client connection (see `crier token`);
    /// not needed when the server runs with --dev.
    #[arg(long, value_name = "T", env = "CRIER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Subscriber connections to open.
    #[arg(long, value_name = "S")]
    subscribers: usize,
    /// Channels to spread the subscribers over (subscriber i takes channel
    /// i mod C); publications go round-robin over them.
    #[arg(long, value_name = "C", default_value_t = 1)]
    channels: usize,
    /// Channel name prefix: channels are PREFIX0, PREFIX1, ...
    #[arg(long, value_name = "PREFIX", default_value = "bench")]
    channel_prefix: String,
    /// Publishers, each with its own connection.
    #[arg(long, value_name = "P", default_value_t = 1)]
    publishers: usize,
    /// Publications per second, in total; 0 = as fast as the window allows.
    #[arg(long, value_name = "R", default_value_t = 0)]
    rate: u64,
    /// Publications in flight at most, in total: sent but not yet answered
    /// by the server or not yet delivered to every subscriber.
    #[arg(long, value_name = "W", default_value_t = 64)]
    window: u64,
    /// How long to publish: 10s, 500ms, 1m.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Publication data size in bytes (JSON, padded).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    size: usize,
    /// Publish through the server HTTP API or client WebSocket connections.
    #[arg(long, value_name = "HOW", value_enum, default_value_t = Via::Api)]
    publish_via: Via,
    /// The server's process id, to report its CPU time and memory.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Print the report as one JSON line instead of a table.
    #[arg(long)]
    json: bool,
    /// Spread subscriber connections over source addresses 127.0.0.1..N
    /// (loopback IPv4 servers only).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..))]
    source_ips: u8,
    /// Connections being opened at the same time, at most.
    #[arg(long, value_name = "N", default_value_t = 128)]
    connect_concurrency: usize,
    /// Worker threads for the load generator [default: one per CPU].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Allow a server that is not on a loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// How subscribers connect: ws (client protocol v2 over
    /// --url), sse (GET /connection/uni_sse on --url's host; the server
    /// needs uni_sse.enabled, as --dev sets) or tcp (a line-framed [[tcp]]
    /// listener at --tcp-addr, whose `channels` must hold --channel-prefix;
    /// publications go to exactly that channel, so --channels must be 1).
    #[arg(long, value_name = "HOW", value_enum, default_value_t = Transport::Ws)]
    transport: Transport,
    /// The client protocol's wire format on WebSocket connections
    /// (subscribers with --transport ws, publishers with --publish-via ws):
    /// JSON text frames, or binary protobuf frames (`format=protobuf` in
    /// the URL).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = Format::Json)]
    format: Format,
    /// What WebSocket connections speak: crier's client protocol v2, or
    /// nothing at all (raw: a bare broadcast server, see above; needs
    /// --publish-via ws and --channels 1).
    #[arg(long, value_name = "PROTOCOL", value_enum, default_value_t = Protocol::Client)]
    protocol: Protocol,
    /// WebSocket subscribers offer permessage-deflate (RFC 7692) and fail
    /// unless the server agrees (it needs `websocket.compression = true`);
    /// publishers stay uncompressed. For --transport ws only.
    #[arg(long)]
    compression: bool,
    /// The [[tcp]] listener's address, for --transport tcp.
    #[arg(long, value_name = "HOST:PORT")]
    tcp_addr: Option<String>,
    /// Extra subscribers that subscribe like the others, with a 4 KiB
    /// receive buffer, and then never read until publishing is over; the
    /// report says how many the server dropped and with which code. They
    /// count in no other figure.
    #[arg(long, value_name = "N", default_value_t = 0)]
    slow: usize,
    /// Write the latency distribution as an SVG plot to FILE.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// How subscribers reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// WebSocket, client protocol v2 (JSON or protobuf, by --format).
    Ws,
    /// `GET /connection/uni_sse?cf_connect=...` (Server-Sent Events).
    Sse,
    /// A plain TCP `[[tcp]]` listener with line framing.
    Tcp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Tcp => "tcp",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Transport::Ws => "WebSocket",
            Transport::Sse => "uni_sse",
            Transport::Tcp => "plain TCP",
        }
    }
}

/// What the WebSocket connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// crier's (Centrifugo's) client protocol v2: connect, subscribe,
    /// publish commands and their replies.
    Client,
    /// No protocol: a publication is its payload, one text message each
    /// way; for comparing against a bare WebSocket broadcast server.
    Raw,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Client => "client",
            Protocol::Raw => "raw",
        }
    }
}

/// How publications reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// `POST /api/publish` over keep-alive HTTP/1.1, requests pipelined.
    Api,
    /// The client protocol's `publish` command on a WebSocket connection.
    Ws,
}

impl Via {
    fn describe(self) -> &'static str {
        match self {
            Via::Api => "HTTP API",
            Via::Ws => "WebSocket",
        }
    }
}

/// Open files the generator needs beyond one per connection: the runtime,
/// stdio, the publishers' connections and some slack.
const SPARE_FILES: u64 = 64;

/// How long publishers' answers and deliveries may trail the duration.
const STRAGGLERS: Duration = Duration::from_secs(2);

pub fn run(args: Args) -> anyhow::Result<()> {
    let json = args.json;
    let threads = args.threads;
    let plot = args.plot.clone();
    let plan = Arc::new(Plan::new(args)?);
    ensure_open_files(&plan)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let visible = !json && std::io::stderr().is_terminal();
    let report = runtime.block_on(bench(plan, visible))?;
    // Subscriber tasks have finished; nothing left to wait for.
    runtime.shutdown_background();
    let plotted = plot
        .as_ref()
        .map(|path| plot::write(path, &report.latency(), &report.plot_title()));
    if json {
        print_line(&report.to_json().to_string())?;
    } else {
        for line in report.table() {
            print_line(&line)?;
        }
    }
    if report.accepted() == 0 {
        bail!(
            "the server accepted no publication{}",
            report
                .first_refusal()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    if let Some(plotted) = plotted {
        plotted?;
    }
    Ok(())
}

/// What one run does, checked and resolved before any socket opens.
pub(crate) struct Plan {
    /// One per --url, in order: subscriber i connects to `nodes[i % N]`,
    /// WebSocket publishers (and probes) to `nodes[0]`.
    nodes: Vec<Node>,
    /// How subscribers connect.
    transport: Transport,
    /// The client protocol's format on WebSocket connections.
    format: Format,
    /// Client protocol v2, or raw payloads (`--protocol raw`).
    protocol: Protocol,
    /// Subscribers offer permessage-deflate (`--compression`).
    compression: bool,
    /// The `[[tcp]]` listener, for --transport tcp.
    tcp_addr: Option<SocketAddr>,
    /// Subscribers that never read (not in `subscribers`).
    slow: usize,
    /// Where the HTTP API's host resolved to.
    api_addr: SocketAddr,
    /// The HTTP API's `Host` header.
    api_host: String,
    /// The publish method's request path (`/api/publish` by default).
    api_path: String,
    /// Sent as `X-API-Key` when set.
    api_key: Option<String>,
    /// Sent in every connect command when set.
    token: Option<String>,
    subscribers: usize,
    /// Channel names, already JSON-quoted: they are only ever written into
    /// JSON commands and request bodies.
    channels: Vec<String>,
    /// The same names, plain, for protobuf commands.
    channel_names: Vec<String>,
    /// Subscribers per channel: what one publication to it is worth in
    /// deliveries.
    fanout: Vec<u64>,
    publishers: usize,
    /// Publications per second in total; 0 = as fast as the window allows.
    rate: u64,
    window: u64,
    duration: Duration,
    size: usize,
    via: Via,
    /// Source addresses for subscriber connections; empty = the OS picks.
    sources: Vec<Ipv4Addr>,
    connect_concurrency: usize,
    server_pid: Option<u32>,
}

impl Plan {
    fn new(args: Args) -> anyhow::Result<Plan> {
        if args.subscribers == 0 {
            bail!("--subscribers must be at least 1");
        }
        if args.publishers == 0 {
            bail!("--publishers must be at least 1");
        }
        if args.channels == 0 {
            bail!("--channels must be at least 1");
        }
        if args.window == 0 {
            bail!("--window must be at least 1");
        }
        if args.duration.is_zero() {
            bail!("--duration must be longer than 0");
        }
        let tcp_addr = match (args.transport, &args.tcp_addr) {
            (Transport::Tcp, Some(addr)) => Some(resolve(addr, args.allow_remote)?),
            (Transport::Tcp, None) => bail!(
                "--transport tcp needs --tcp-addr HOST:PORT, the address of a [[tcp]] listener with \
                 framing = \"line\" whose `channels` hold the --channel-prefix channel"
            ),
            (_, Some(_)) => bail!("--tcp-addr is for --transport tcp only"),
            (_, None) => None,
        };
        if args.transport == Transport::Tcp && args.channels != 1 {
            bail!(
                "--transport tcp reads one channel, the one its [[tcp]] listener's `channels` names: \
                 give --channels 1 and that channel's name as --channel-prefix (crier bench then \
                 publishes to exactly that name, without a number; it is {:?} now)",
                args.channel_prefix
            );
        }
        if args.format == Format::Protobuf && args.transport != Transport::Ws && args.publish_via != Via::Ws {
            bail!(
                "--format protobuf is the format of WebSocket client connections: give --transport ws \
                 or --publish-via ws (uni_sse, [[tcp]] and the HTTP API have no protobuf variant here)"
            );
        }
        if args.compression && args.transport != Transport::Ws {
            bail!(
                "--compression is permessage-deflate on WebSocket subscribers: give --transport ws \
                 ({} has no compression here)",
                args.transport.describe()
            );
        }
        if args.protocol == Protocol::Raw {
            let refused = [
                (
                    args.publish_via != Via::Ws,
                    "--publish-via ws (a raw server has no HTTP API)",
                ),
                (args.transport != Transport::Ws, "--transport ws"),
                (
                    args.format != Format::Json,
                    "--format json (payloads go as text messages)",
                ),
                (args.compression, "no --compression"),
                (
                    args.channels != 1,
                    "--channels 1 (a raw server broadcasts to every socket)",
                ),
            ];
            if let Some((_, what)) = refused.iter().find(|(bad, _)| *bad) {
                bail!("--protocol raw needs {what}");
            }
        }
        let nodes = args
            .url
            .iter()
            .map(|url| Node::new(url, args.allow_remote))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let Some(first) = nodes.first() else {
            bail!("--url: give at least one WebSocket URL");
        };
        if args.transport == Transport::Tcp && nodes.len() > 1 {
            bail!("--transport tcp reads one [[tcp]] listener (--tcp-addr): give one --url");
        }
        let api = match &args.api {
            Some(api) => ApiEndpoint::parse(api)?,
            None => ApiEndpoint {
                authority: first.ws_host.clone(),
                path: "/api/publish".into(),
            },
        };
        let api_addr = if args.publish_via == Via::Api || args.api.is_some() {
            resolve(&api.authority, args.allow_remote)?
        } else {
            first.ws_addr
        };
        // Sources are spread over 127.0.0.x only when every connection that
        // takes one (subscribers, WebSocket publishers) goes to loopback IPv4.
        let v4_loopback = |a: SocketAddr| matches!(a.ip(), IpAddr::V4(ip) if ip.is_loopback());
        let spread = nodes.iter().all(|n| v4_loopback(n.ws_addr)) && tcp_addr.is_none_or(v4_loopback);
        let sources = if spread {
            (1..=args.source_ips)
                .map(|n| Ipv4Addr::new(127, 0, 0, n))
                .collect()
        } else {
            Vec::new()
        };
        let channel_name = |k: usize| match args.transport {
            Transport::Tcp => args.channel_prefix.clone(),
            _ => format!("{}{k}", args.channel_prefix),
        };
        let channel_names: Vec<String> = (0..args.channels).map(channel_name).collect();
        let channels = channel_names
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .context("cannot encode the channel names")?;
        let fanout = (0..args.channels)
            .map(|k| {
                (args.subscribers / args.channels + usize::from(k < args.subscribers % args.channels)) as u64
            })
            .collect();
        Ok(Plan {
            nodes,
            transport: args.transport,
            format: args.format,
            protocol: args.protocol,
            compression: args.compression,
            tcp_addr,
            slow: args.slow,
            api_addr,
            api_host: api.authority,
            api_path: api.path,
            api_key: args.api_key.filter(|k| !k.is_empty()),
            token: args.token.filter(|t| !t.is_empty()),
            subscribers: args.subscribers,
            channels,
            channel_names,
            fanout,
            publishers: args.publishers,
            rate: args.rate,
            window: args.window,
            duration: args.duration,
            size: args.size,
            via: args.publish_via,
            sources,
            connect_concurrency: args.connect_concurrency.max(1),
            server_pid: args.server_pid,
        })
    }

    /// The node subscriber `i` (slow ones included) connects to.
    fn node_of_subscriber(&self, i: usize) -> &Node {
        &self.nodes[i % self.nodes.len()]
    }

    /// The node WebSocket publishers and probes connect to: the first --url.
    fn first_node(&self) -> &Node {
        &self.nodes[0]
    }

    /// The channel subscriber `i` subscribes to.
    fn channel_of_subscriber(&self, i: usize) -> usize {
        i % self.channels.len()
    }

    /// The channel publication `seq` goes to.
    fn channel_of_publication(&self, seq: u64) -> usize {
        (seq % self.channels.len() as u64) as usize
    }

    /// The source address for client connection `i`, if the plan spreads them.
    fn source(&self, i: usize) -> Option<Ipv4Addr> {
        (!self.sources.is_empty()).then(|| self.sources[i % self.sources.len()])
    }

    /// How subscribers connect, in words (WebSocket with its format, and
    /// compression if on).
    fn describe_transport(&self) -> String {
        let described = self.with_format(self.transport == Transport::Ws, self.transport.describe());
        match described.strip_suffix(')') {
            Some(open) if self.compression => format!("{open}, permessage-deflate)"),
            _ => described,
        }
    }

    /// How publications reach the server, in words (WebSocket with its
    /// format).
    fn describe_via(&self) -> String {
        self.with_format(self.via == Via::Ws, self.via.describe())
    }

    /// `what`, followed by the format when it is a client protocol
    /// WebSocket connection.
    fn with_format(&self, websocket: bool, what: &str) -> String {
        match (websocket, self.protocol, self.format) {
            (false, _, _) => what.to_string(),
            (true, Protocol::Raw, _) => format!("{what} (raw)"),
            (true, Protocol::Client, Format::Json) => format!("{what} (JSON)"),
            (true, Protocol::Client, Format::Protobuf) => format!("{what} (protobuf)"),
        }
    }

    /// The most deliveries one publication can be worth.
    fn max_fanout(&self) -> u64 {
        self.fanout.iter().copied().max().unwrap_or(0)
    }

    /// File descriptors the run needs: one per connection plus spare.
    fn open_files_needed(&self) -> u64 {
        (self.subscribers + self.slow + self.publishers) as u64 + SPARE_FILES
    }
}

/// One server (cluster node) subscribers connect to: one --url, resolved.
pub(crate) struct Node {
    /// The WebSocket URL for the handshake (`ws://host:port/path`).
    ws_url: String,
    /// `host:port` of the URL, as typed: the `Host` header of uni_sse requests.
    ws_host: String,
    /// The uni_sse endpoint's path on that host.
    sse_path: String,
    /// Where the URL's host resolved to.
    ws_addr: SocketAddr,
}

impl Node {
    fn new(url: &str, allow_remote: bool) -> anyhow::Result<Node> {
        let ws = WsEndpoint::parse(url)?;
        let ws_addr = resolve(&ws.authority, allow_remote)?;
        let sse_path = match ws.path.strip_suffix("/connection/websocket") {
            Some(prefix) => format!("{prefix}/connection/uni_sse"),
            None => "/connection/uni_sse".to_string(),
        };
        Ok(Node {
            ws_url: ws.url(),
            ws_host: ws.authority,
            sse_path,
            ws_addr,
        })
    }
}

/// `ws://HOST:PORT/PATH` as typed (also `http://`, or `HOST:PORT` alone).
struct WsEndpoint {
    authority: String,
    path: String,
}

impl WsEndpoint {
    fn parse(url: &str) -> anyhow::Result<WsEndpoint> {
        let url = url.trim();
        let rest = if let Some(rest) = url.strip_prefix("ws://").or_else(|| url.strip_prefix("http://")) {
            rest
        } else if url.starts_with("wss://") || url.starts_with("https://") {
            bail!("{url}: crier bench speaks plain ws:// only");
        } else if url.contains("://") {
            bail!("{url}: write the URL as ws://HOST:PORT/connection/websocket");
        } else {
            url
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) if !path.is_empty() => (authority, format!("/{path}")),
            Some((authority, _)) => (authority, "/connection/websocket".to_string()),
            None => (rest, "/connection/websocket".to_string()),
        };
        if authority.is_empty() {
            bail!("{url}: no host in the URL");
        }
        Ok(WsEndpoint {
            authority: authority.to_string(),
            path,
        })
    }

    fn url(&self) -> String {
        format!("ws://{}{}", self.authority, self.path)
    }
}

/// `http://HOST:PORT[/PREFIX]` as typed; the method path is PREFIX/api/publish,
/// as for `crier publish`.
struct ApiEndpoint {
    authority: String,
    path: String,
}

impl ApiEndpoint {
    fn parse(url: &str) -> anyhow::Result<ApiEndpoint> {
        let url = url.trim().trim_end_matches('/');
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.contains("://") {
            bail!("{url}: write the API URL as http://HOST:PORT (plain http only)");
        } else {
            url
        };
        let (authority, prefix) = match rest.split_once('/') {
            Some((authority, prefix)) => (authority, format!("/{prefix}")),
            None => (rest, String::new()),
        };
        if authority.is_empty() {
            bail!("{url}: no host in the URL");
        }
        Ok(ApiEndpoint {
            authority: authority.to_string(),
            path: format!("{prefix}/api/publish"),
        })
    }
}

/// Resolves `host:port` (port 80 when missing) and refuses anything but
/// loopback unless `allow_remote`.
fn resolve(authority: &str, allow_remote: bool) -> anyhow::Result<SocketAddr> {
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_string()
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?
        .collect();
    let Some(first) = addrs.first().copied() else {
        bail!("{authority} resolves to no address");
    };
    if !allow_remote {
        if let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            bail!(
                "{authority} resolves to {}, which is not a loopback address; crier bench loads \
                 the local machine only unless given --allow-remote (make sure you may load that server)",
                remote.ip()
            );
        }
    }
    Ok(first)
}

/// Parses `10s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit_secs = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3_600.0,
        _ => return Err(format!("invalid duration {s:?}: write e.g. 10s, 500ms or 2m")),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: write e.g. 10s, 500ms or 2m"))?;
    Duration::try_from_secs_f64(n * unit_secs).map_err(|_| format!("duration {s:?} is out of range"))
}

/// Raises the soft open-file limit to the hard one when the run needs more,
/// and says plainly when even that is not enough. Also warns when the
/// server's own limit looks too low for S connections.
fn ensure_open_files(plan: &Plan) -> anyhow::Result<()> {
    let needed = plan.open_files_needed();
    let (soft, hard) =
        rlimit::getrlimit(rlimit::Resource::NOFILE).context("cannot read the open-file limit")?;
    if soft < needed {
        let raised = rlimit::increase_nofile_limit(hard).context("cannot raise the open-file limit")?;
        if raised < needed {
            bail!(
                "{} subscribers and {} publisher{} need about {needed} open files, but this process may \
                 open only {raised} (soft limit {soft}, hard limit {hard}, and the hard limit cannot be \
                 raised from here); use at most {} subscribers, or raise the hard limit \
                 (`ulimit -Hn` as root, LimitNOFILE= in systemd)",
                plan.subscribers,
                plan.publishers,
                if plan.publishers == 1 { "" } else { "s" },
                raised.saturating_sub(plan.publishers as u64 + SPARE_FILES)
            );
        }
    }
    if let Some(pid) = plan.server_pid {
        if let Some(server_soft) = usage::open_file_limit(Pid::Other(pid)) {
            if server_soft < plan.subscribers as u64 + plan.publishers as u64 + 16 {
                eprintln!(
                    "warning: the server (pid {pid}) may open only {server_soft} files, fewer than \
                     {} subscribers need; expect refused connections",
                    plan.subscribers
                );
            }
        }
    }
    Ok(())
}

/// One run: connect, publish for the duration, collect, measure.
async fn bench(plan: Arc<Plan>, visible: bool) -> anyhow::Result<Report> {
    let server = plan.server_pid.map(Pid::Other);
    let server_before = match server {
        Some(pid) => {
            Some(usage::memory(pid).with_context(|| format!("cannot read the server's memory ({pid})"))?)
        }
        None => None,
    };
    let flow = Arc::new(Flow::new(plan.window.saturating_mul(plan.max_fanout().max(1))));
    let progress = progress_bar(visible);

    progress.set_length(plan.subscribers as u64);
    progress.set_style(style("connecting {pos}/{len} {wide_bar} {elapsed}"));
    let opened = subscriber::open_all(&plan, &flow, &progress).await?;
    let server_connected = match server {
        Some(pid) => Some(usage::memory(pid)?),
        None => None,
    };

    progress.set_length(plan.duration.as_millis() as u64);
    progress.set_position(0);
    progress.set_style(style("publishing {wide_bar} {msg}"));
    let server_cpu_before = server.map(usage::cpu_time).transpose()?;
    let client_cpu_before = usage::cpu_time(Pid::This).ok();
    let start = Instant::now();
    let end = start + plan.duration;
    let publishers: Vec<_> = (0..plan.publishers)
        .map(|p| publisher::spawn(plan.clone(), flow.clone(), p, start, end + STRAGGLERS))
        .collect();

    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while Instant::now() < end {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(end) => {}
        }
        let elapsed = start.elapsed().min(plan.duration);
        progress.set_position(elapsed.as_millis() as u64);
        progress.set_message(format!(
            "sent {}, delivered {}",
            flow.sent(),
            flow.delivered_so_far()
        ));
    }
    progress.set_style(style("waiting for stragglers {spinner} {msg}"));
    let mut outcomes = Vec::with_capacity(publishers.len());
    for handle in publishers {
        outcomes.push(handle.await.context("a publisher task failed")?);
    }
    let accepted = publisher::accepted_per_channel(&outcomes, plan.channels.len());
    let expected: u64 = accepted.iter().zip(&plan.fanout).map(|(a, f)| a * f).sum();
    // Deliveries are owed for accepted publications only now.
    flow.owe_exactly(expected);
    flow.wait_outstanding(0, end + STRAGGLERS).await;
    let stopped = Instant::now();
    let server_cpu_after = server.map(usage::cpu_time).transpose()?;
    let client_cpu_after = usage::cpu_time(Pid::This).ok();
    let server_after = match server {
        Some(pid) => Some(usage::memory(pid)?),
        None => None,
    };
    progress.finish_and_clear();

    let tallies = subscriber::stop_all(opened.subscribers).await;
    let slow = subscriber::stop_slow(opened.slow).await;
    Ok(Report {
        slow,
        plan: plan.clone(),
        connect_times: opened.connect_times,
        connect_took: opened.took,
        outcomes,
        accepted,
        tallies,
        start,
        window: stopped - start,
        server: match (server, server_before, server_connected, server_after) {
            (Some(Pid::Other(pid)), Some(before), Some(connected), Some(after)) => {
                Some(report::ServerUsage {
                    pid,
                    cpu: server_cpu_after
                        .unwrap_or_default()
                        .saturating_sub(server_cpu_before.unwrap_or_default()),
                    before,
                    connected,
                    after,
                })
            }
            _ => None,
        },
        client_cpu: match (client_cpu_before, client_cpu_after) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        },
    })
}

fn progress_bar(visible: bool) -> ProgressBar {
    if visible {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls() {
        for (typed, authority, path) in [
            (
                "ws://127.0.0.1:8000/connection/websocket",
                "127.0.0.1:8000",
                "/connection/websocket",
            ),
            ("127.0.0.1:9", "127.0.0.1:9", "/connection/websocket"),
            ("http://[::1]:9/", "[::1]:9", "/connection/websocket"),
            ("ws://h:1/other", "h:1", "/other"),
        ] {
            let ws = WsEndpoint::parse(typed).unwrap();
            assert_eq!(
                (ws.authority.as_str(), ws.path.as_str()),
                (authority, path),
                "{typed}"
            );
        }
        assert!(WsEndpoint::parse("wss://h/connection/websocket").is_err());
    }

    #[test]
    fn api_urls() {
        let api = ApiEndpoint::parse("http://127.0.0.1:8000/").unwrap();
        assert_eq!(
            (api.authority.as_str(), api.path.as_str()),
            ("127.0.0.1:8000", "/api/publish")
        );
        let api = ApiEndpoint::parse("localhost:1/prefix").unwrap();
        assert_eq!(
            (api.authority.as_str(), api.path.as_str()),
            ("localhost:1", "/prefix/api/publish")
        );
        assert!(ApiEndpoint::parse("https://h").is_err());
    }

    #[test]
    fn only_loopback_without_allow_remote() {
        assert!(resolve("127.0.0.1:8000", false).unwrap().ip().is_loopback());
        assert!(resolve("[::1]:8000", false).is_ok());
        let e = resolve("192.0.2.1:8000", false).unwrap_err();
        assert!(e.to_string().contains("--allow-remote"), "{e}");
        assert!(resolve("192.0.2.1:8000", true).is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn subscribers_spread_evenly_over_channels() {
        let args = |subscribers, channels| Args {
            url: vec!["127.0.0.1:1".into()],
            api: None,
            api_key: None,
            token: None,
            subscribers,
            channels,
            channel_prefix: "bench".into(),
            publishers: 1,
            rate: 0,
            window: 64,
            duration: Duration::from_secs(1),
            size: 64,
            publish_via: Via::Api,
            server_pid: None,
            json: false,
            source_ips: 8,
            connect_concurrency: 1,
            threads: None,
            allow_remote: false,
            transport: Transport::Ws,
            format: Format::Json,
            protocol: Protocol::Client,
            compression: false,
            tcp_addr: None,
            slow: 0,
            plot: None,
        };
        let plan = Plan::new(args(10, 3)).unwrap();
        assert_eq!(plan.fanout, [4, 3, 3]);
        assert_eq!(plan.channels, ["\"bench0\"", "\"bench1\"", "\"bench2\""]);
        assert_eq!(plan.channel_of_subscriber(4), 1);
        assert_eq!(plan.source(9), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(plan.api_path, "/api/publish");
        assert_eq!(plan.nodes.len(), 1);
        assert_eq!(
            plan.node_of_subscriber(7).ws_url,
            "ws://127.0.0.1:1/connection/websocket"
        );
        assert!(Plan::new(args(0, 1)).is_err());
        assert_eq!(plan.first_node().sse_path, "/connection/uni_sse");

        // Several --url: subscribers round-robin, publishers and the API on the first.
        let plan = Plan::new(Args {
            url: vec![
                "ws://127.0.0.1:1/connection/websocket".into(),
                "127.0.0.1:2".into(),
                "ws://127.0.0.1:3/prefix/connection/websocket".into(),
            ],
            ..args(10, 1)
        })
        .unwrap();
        let ports: Vec<u16> = (0..6)
            .map(|i| plan.node_of_subscriber(i).ws_addr.port())
            .collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
        assert_eq!(plan.first_node().ws_addr.port(), 1);
        assert_eq!(plan.api_addr.port(), 1);
        assert_eq!(plan.api_host, "127.0.0.1:1");
        assert_eq!(plan.nodes[2].sse_path, "/prefix/connection/uni_sse");
        assert!(Plan::new(Args {
            url: Vec::new(),
            ..args(1, 1)
        })
        .is_err());

        let tcp = |channels| Args {
            transport: Transport::Tcp,
            tcp_addr: Some("127.0.0.1:2".into()),
            ..args(4, channels)
        };
        let plan = Plan::new(tcp(1)).unwrap();
        assert_eq!(plan.channels, ["\"bench\""]);
        assert_eq!(plan.tcp_addr, Some(SocketAddr::from(([127, 0, 0, 1], 2))));
        let e = Plan::new(tcp(2)).err().unwrap().to_string();
        assert!(e.contains("--channels 1"), "{e}");
        let e = Plan::new(Args {
            tcp_addr: None,
            ..tcp(1)
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("--tcp-addr"), "{e}");
    }

    #[test]
    fn raw_is_websocket_publishers_and_one_channel() {
        let args = |publish_via, channels| Args {
            url: vec!["ws://127.0.0.1:1/".into()],
            api: None,
            api_key: None,
            token: None,
            subscribers: 2,
            channels,
            channel_prefix: "b".into(),
            publishers: 1,
            rate: 0,
            window: 64,
            duration: Duration::from_secs(1),
            size: 64,
            publish_via,
            server_pid: None,
            json: false,
            source_ips: 8,
            connect_concurrency: 1,
            threads: None,
            allow_remote: false,
            transport: Transport::Ws,
            format: Format::Json,
            protocol: Protocol::Raw,
            compression: false,
            tcp_addr: None,
            slow: 0,
            plot: None,
        };
        let plan = Plan::new(args(Via::Ws, 1)).unwrap();
        assert_eq!(plan.describe_transport(), "WebSocket (raw)");
        assert_eq!(plan.describe_via(), "WebSocket (raw)");
        assert_eq!(plan.first_node().ws_url, "ws://127.0.0.1:1/connection/websocket");
        for (args, needs) in [
            (args(Via::Api, 1), "--publish-via ws"),
            (args(Via::Ws, 2), "--channels 1"),
            (
                Args {
                    format: Format::Protobuf,
                    ..args(Via::Ws, 1)
                },
                "--format json",
            ),
            (
                Args {
                    compression: true,
                    ..args(Via::Ws, 1)
                },
                "no --compression",
            ),
        ] {
            let e = Plan::new(args).err().unwrap().to_string();
            assert!(e.contains("--protocol raw needs") && e.contains(needs), "{e}");
        }
    }

    #[test]
    fn protobuf_is_for_websocket_connections() {
        let args = |transport, publish_via| Args {
            url: vec!["127.0.0.1:1".into()],
            api: None,
            api_key: None,
            token: None,
            subscribers: 2,
            channels: 2,
            channel_prefix: "b".into(),
            publishers: 1,
            rate: 0,
            window: 64,
            duration: Duration::from_secs(1),
            size: 64,
            publish_via,
            server_pid: None,
            json: false,
            source_ips: 8,
            connect_concurrency: 1,
            threads: None,
            allow_remote: false,
            transport,
            format: Format::Protobuf,
            protocol: Protocol::Client,
            compression: false,
            tcp_addr: None,
            slow: 0,
            plot: None,
        };
        let plan = Plan::new(args(Transport::Ws, Via::Api)).unwrap();
        assert_eq!(plan.channel_names, ["b0", "b1"]);
        assert_eq!(plan.describe_transport(), "WebSocket (protobuf)");
        assert_eq!(plan.describe_via(), "HTTP API");
        let plan = Plan::new(args(Transport::Sse, Via::Ws)).unwrap();
        assert_eq!(plan.describe_transport(), "uni_sse");
        assert_eq!(plan.describe_via(), "WebSocket (protobuf)");
        let e = Plan::new(args(Transport::Sse, Via::Api))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--format protobuf"), "{e}");

        let plan = Plan::new(Args {
            compression: true,
            ..args(Transport::Ws, Via::Api)
        })
        .unwrap();
        assert_eq!(
            plan.describe_transport(),
            "WebSocket (protobuf, permessage-deflate)"
        );
        assert_eq!(plan.describe_via(), "HTTP API");
        for transport in [Transport::Sse, Transport::Tcp] {
            let e = Plan::new(Args {
                compression: true,
                format: Format::Json,
                tcp_addr: (transport == Transport::Tcp).then(|| "127.0.0.1:2".into()),
                channels: 1,
                ..args(transport, Via::Api)
            })
            .err()
            .unwrap()
            .to_string();
            assert!(e.contains("--compression") && e.contains("--transport ws"), "{e}");
        }
    }
}
