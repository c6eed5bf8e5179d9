//! Plain TCP listeners (`[[tcp]]`): line or start/end-delimited frames for
//! legacy devices, telnet and netcat, on the same channels as every other
//! transport.
//!
//! Each connection is a hub client like any other: subscribed to the
//! listener's `channels`, every frame it sends published to `publish_to` as
//! a JSON string, and everything the hub queues for it written back in the
//! same framing. This module owns the byte stream (cutting frames, text
//! encodings, size limits, the allowlist and the optional token frame); it
//! never speaks the JSON client protocol and never decides who gets what.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use crate::net::halves::{ReadHalf, WriteHalf};
use bytes::Bytes;
use crier_core::{
    ClientId, ClientInfo, ClientReceiver, DisconnectReason, Event, EventKind, Exclusion, Format, Outbound,
    PublishOptions, SubscribeOptions,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::{self, Admitted, Credentials, Identity, Refused};
use crate::config::{Config, ConfigError, TcpEncoding, TcpFraming, TcpListenerConfig, TcpUnsafeData};
use crate::error::ServerError;
use crate::node::Node;
use crier_proto::codes::{Disconnect, ErrorCode};

/// Encoding-cache slots for TCP wires. Slots 0 and 1 belong to the JSON
/// formats in [`crate::frames`]. Each distinct wire (markers + encoding)
/// among the configured listeners takes the next free slot here; wires
/// beyond these encode each event per client instead of sharing.
const TCP_FORMATS: [Format; 2] = [Format::new(2), Format::new(3)];

/// Most bytes taken from the socket by one read: a connection's read buffer
/// never needs more than this plus one unfinished frame.
const READ_CHUNK: usize = 4096;

/// A write buffer that grew beyond this for a burst is freed afterwards, so
/// idle connections stay small.
const BATCH_KEEP: usize = 16 * 1024;

/// The bound TCP listeners of a node.
pub struct TcpListeners {
    node: Arc<Node>,
    // One socket per `[[tcp]]` entry, in configuration order.
    bound: Vec<(TcpListener, Arc<Endpoint>)>,
}

/// Checks every `[[tcp]]` entry exactly as [`bind`] does, without binding
/// (what `crier check-config` reports).
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    for (i, cfg) in config.tcp.iter().enumerate() {
        Endpoint::from_config(config, &format!("tcp[{i}]"), cfg)?;
    }
    Ok(())
}

/// Binds every configured `[[tcp]]` listener, after checking its settings.
pub async fn bind(node: &Arc<Node>) -> Result<TcpListeners, ServerError> {
    let mut wires: Vec<Wire> = Vec::new();
    let mut bound = Vec::new();
    for (i, cfg) in node.config.tcp.iter().enumerate() {
        let key = format!("tcp[{i}]");
        let mut endpoint = Endpoint::from_config(&node.config, &key, cfg)?;
        // Listeners that write the same bytes share a cache slot.
        let known = wires.iter().position(|w| *w == endpoint.wire);
        let index = known.unwrap_or_else(|| {
            wires.push(endpoint.wire.clone());
            wires.len() - 1
        });
        endpoint.slot = TCP_FORMATS.get(index).copied();
        let listener = TcpListener::bind(endpoint.addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cfg.listen.clone(),
                source,
            })?;
        endpoint.addr = listener.local_addr()?;
        if let Some(tls) = &endpoint.tls {
            // SIGHUP reloads it through the node.
            node.tcp_tls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((i, tls.clone()));
        }
        tracing::info!(listener = %key, addr = %endpoint.addr, "tcp listener bound");
        bound.push((listener, Arc::new(endpoint)));
    }
    Ok(TcpListeners {
        node: node.clone(),
        bound,
    })
}

impl TcpListeners {
    /// The addresses actually bound, in configuration order (useful with
    /// port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.bound.iter().map(|(_, e)| e.addr).collect()
    }

    /// Accepts connections until `shutdown` is cancelled. Connections
    /// themselves end when the hub closes their queues (shutdown: 3001).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut accepting = JoinSet::new();
        for (listener, endpoint) in self.bound {
            accepting.spawn(accept(self.node.clone(), listener, endpoint, shutdown.clone()));
        }
        while accepting.join_next().await.is_some() {}
    }
}

/// One listener's settings, checked and ready for the hot path.
pub(crate) struct Endpoint {
    /// `tcp[i]`, for logs.
    key: String,
    /// Where it listens (the bound address once bound).
    addr: SocketAddr,
    /// How bytes become frames and text, both ways.
    wire: Wire,
    /// Its slot in the events' encoding cache, if one was free.
    slot: Option<Format>,
    /// Channels each connection is subscribed to.
    channels: Vec<String>,
    /// Where received frames go; `None` = read-only listener.
    publish_to: Option<String>,
    /// Whether the sender gets its own frames back.
    echo: bool,
    /// Largest frame payload, in bytes.
    max_frame_size: usize,
    /// Peer IPs allowed in (canonical form); empty = any.
    allow: Vec<IpAddr>,
    /// Whether the first frame must be a connection token.
    token: bool,
    /// TLS, when the listener's `tls.enabled` (reloaded on SIGHUP).
    tls: Option<Arc<crate::net::tls::Tls>>,
}

fn invalid(key: String, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl Endpoint {
    pub(crate) fn from_config(
        config: &Config,
        key: &str,
        cfg: &TcpListenerConfig,
    ) -> Result<Self, ConfigError> {
        let listen = cfg.listen.trim();
        if listen.is_empty() {
            return Err(invalid(
                format!("{key}.listen"),
                "must be set, e.g. \"127.0.0.1:10001\"",
            ));
        }
        let full = crate::config::listen_addr(listen);
        let addr: SocketAddr = full.parse().map_err(|_| {
            invalid(
                format!("{key}.listen"),
                format!("{listen:?} is not IP:PORT (e.g. \"127.0.0.1:10001\" or \"[::1]:10001\")"),
            )
        })?;

        let markers = match cfg.framing {
            TcpFraming::Line => {
                for (name, value) in [("start", &cfg.start), ("end", &cfg.end)] {
                    if !value.is_empty() {
                        return Err(invalid(
                            format!("{key}.{name}"),
                            "markers only apply to framing = \"delimited\"; set it or remove the marker",
                        ));
                    }
                }
                None
            }
            TcpFraming::Delimited => {
                let start = marker_bytes(key, "start", &cfg.start, cfg.encoding)?;
                let end = marker_bytes(key, "end", &cfg.end, cfg.encoding)?;
                Some((start, end))
            }
        };
        if cfg.max_frame_size == 0 {
            return Err(invalid(format!("{key}.max_frame_size"), "must be greater than 0"));
        }

        for (j, channel) in cfg.channels.iter().enumerate() {
            check_channel(config, format!("{key}.channels[{j}]"), channel)?;
        }
        let publish_to = match cfg.publish_to.as_str() {
            "" => None,
            channel => {
                check_channel(config, format!("{key}.publish_to"), channel)?;
                Some(channel.to_owned())
            }
        };

        let allow = cfg
            .allow
            .iter()
            .enumerate()
            .map(|(j, ip)| {
                ip.trim()
                    .parse::<IpAddr>()
                    .map(|ip| ip.to_canonical())
                    .map_err(|_| {
                        invalid(
                            format!("{key}.allow[{j}]"),
                            format!("{ip:?} is not an IP address"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if cfg.token && !config.client.token.has_keys() {
            return Err(invalid(
                format!("{key}.token"),
                "needs a key in client.token (hmac_secret_key, rsa_public_key or ecdsa_public_key)",
            ));
        }

        Ok(Self {
            key: key.to_owned(),
            addr,
            wire: Wire {
                markers,
                encoding: cfg.encoding,
                unsafe_data: cfg.unsafe_data,
            },
            slot: None,
            channels: cfg.channels.clone(),
            publish_to,
            echo: cfg.echo,
            max_frame_size: cfg.max_frame_size,
            allow,
            token: cfg.token,
            tls: match cfg.tls.enabled {
                true => Some(Arc::new(crate::net::tls::Tls::new(crate::node::tls_config(
                    &cfg.tls,
                    &format!("{key}.tls"),
                )?))),
                false => None,
            },
        })
    }

    fn allows(&self, peer: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.contains(&peer.to_canonical())
    }

    /// `ev` as this listener writes it, through the shared cache when the
    /// listener has a slot.
    pub(crate) fn encode(&self, ev: &Event) -> Bytes {
        match self.slot {
            Some(format) => ev.encoded(format, |ev| self.wire.encode_event(ev)).clone(),
            None => self.wire.encode_event(ev),
        }
    }
}

fn marker_bytes(key: &str, name: &str, marker: &str, encoding: TcpEncoding) -> Result<Vec<u8>, ConfigError> {
    if marker.is_empty() {
        return Err(invalid(
            format!("{key}.{name}"),
            "delimited framing needs non-empty start and end markers",
        ));
    }
    match encoding {
        TcpEncoding::Utf8 => Ok(marker.as_bytes().to_vec()),
        TcpEncoding::Latin1 => marker
            .chars()
            .map(|c| u8::try_from(u32::from(c)))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| {
                invalid(
                    format!("{key}.{name}"),
                    format!("{marker:?} has characters above U+00FF, which latin-1 cannot encode"),
                )
            }),
    }
}

fn check_channel(config: &Config, key: String, channel: &str) -> Result<(), ConfigError> {
    if channel.is_empty() || channel.len() > config.channel.max_length {
        return Err(invalid(
            key,
            format!(
                "{channel:?} is not a valid channel name (1 to {} bytes)",
                config.channel.max_length
            ),
        ));
    }
    if config.channel.options_for(channel).is_none() {
        let ns = config.channel.namespace_of(channel).unwrap_or_default();
        return Err(invalid(
            key,
            format!("{channel:?} is in namespace {ns:?}, which is not configured in channel.namespaces"),
        ));
    }
    Ok(())
}

/// How frames look on one listener's wire, both directions.
#[derive(Clone, PartialEq, Eq)]
struct Wire {
    /// Start and end markers in wire bytes; `None` = line framing.
    markers: Option<(Vec<u8>, Vec<u8>)>,
    /// How text maps to bytes.
    encoding: TcpEncoding,
    /// What happens to a text that contains the framing.
    unsafe_data: TcpUnsafeData,
}

impl Wire {
    /// The bytes one event becomes: its data's text, framed. Join and leave
    /// events become nothing (TCP clients only get data).
    fn encode_event(&self, ev: &Event) -> Bytes {
        let data = match &ev.kind {
            EventKind::Publication(p) => &p.data,
            EventKind::Message(data) => data,
            EventKind::Join(_) | EventKind::Leave(_) => return Bytes::new(),
        };
        let mut out = Vec::new();
        self.frame(&data_text(data), &mut out);
        let (head, tail) = match &self.markers {
            Some((start, end)) => (start.len(), end.len()),
            None => (0, 1),
        };
        let body = head..out.len() - tail;
        if !self.has_framing(&out[body.clone()]) && self.ends_where_written(&out[head..], body.len()) {
            return Bytes::from(out);
        }
        match self.unsafe_data {
            // A telegram split in two would reach devices that trust it.
            TcpUnsafeData::Drop => {
                tracing::debug!(
                    "publication with framing bytes not sent to a tcp listener (unsafe_data = drop)"
                );
                Bytes::new()
            }
            TcpUnsafeData::Replace => {
                let replaced = self.replace_framing(&out[body]);
                let mut framed = Vec::with_capacity(out.len());
                framed.extend_from_slice(&out[..head]);
                framed.extend_from_slice(&replaced);
                framed.extend_from_slice(&out[out.len() - tail..]);
                Bytes::from(framed)
            }
        }
    }

    /// The framing sequences a payload must not contain.
    fn framing(&self) -> Vec<&[u8]> {
        match &self.markers {
            Some((start, end)) => vec![start, end],
            None => vec![b"\n", b"\r"],
        }
    }

    fn has_framing(&self, body: &[u8]) -> bool {
        self.framing().iter().any(|m| find(body, m).is_some())
    }

    /// Whether a reader of `after_start` (a body of `len` bytes, then the
    /// end marker) finds the end marker where it was written, and not
    /// earlier: a body ending in the end marker's first bytes (`a\0` with
    /// `\0\0` as the end marker) would otherwise end the frame too soon.
    fn ends_where_written(&self, after_start: &[u8], len: usize) -> bool {
        match &self.markers {
            Some((_, end)) => find(after_start, end) == Some(len),
            None => true,
        }
    }

    /// `body` with every byte that is part of a framing sequence replaced
    /// by `?` (so no sequence can form, even across the frame's edges).
    fn replace_framing(&self, body: &[u8]) -> Vec<u8> {
        let framing = self.framing();
        body.iter()
            .map(|b| {
                if framing.iter().any(|m| m.contains(b)) {
                    b'?'
                } else {
                    *b
                }
            })
            .collect()
    }

    /// Appends `text` framed: `start text end`, or `text\n`.
    fn frame(&self, text: &str, out: &mut Vec<u8>) {
        match &self.markers {
            Some((start, end)) => {
                out.reserve(start.len() + text.len() + end.len());
                out.extend_from_slice(start);
                self.encode_text(text, out);
                out.extend_from_slice(end);
            }
            None => {
                out.reserve(text.len() + 1);
                self.encode_text(text, out);
                out.push(b'\n');
            }
        }
    }

    fn encode_text(&self, text: &str, out: &mut Vec<u8>) {
        match self.encoding {
            TcpEncoding::Utf8 => out.extend_from_slice(text.as_bytes()),
            // One byte per character; what latin-1 cannot say becomes '?'.
            TcpEncoding::Latin1 => {
                out.extend(text.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')))
            }
        }
    }

    /// The text of a received frame; `None` when it is not valid in the
    /// listener's encoding.
    fn decode<'a>(&self, bytes: &'a [u8]) -> Option<Cow<'a, str>> {
        match self.encoding {
            TcpEncoding::Utf8 => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
            TcpEncoding::Latin1 => Some(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())),
        }
    }

    /// The bytes by which a complete frame exceeds its payload, at most.
    fn overhead(&self) -> usize {
        match &self.markers {
            Some((start, end)) => start.len() + end.len(),
            // `\r\n`
            None => 2,
        }
    }
}

/// What a publication's data says as text: the string itself when the data
/// is a JSON string, otherwise the JSON text as stored.
fn data_text(data: &[u8]) -> Cow<'_, str> {
    match serde_json::from_slice::<String>(data) {
        Ok(s) => Cow::Owned(s),
        Err(_) => String::from_utf8_lossy(data),
    }
}

/// Why a connection's input ended.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The peer closed the connection or the socket failed.
    Gone,
    /// A frame, or the unterminated rest of the input, exceeded
    /// `max_frame_size`.
    TooLong,
}

/// Cuts one connection's byte stream into frames. Holds at most one
/// unfinished frame plus one read; holds no memory between frames.
pub(crate) struct Deframer {
    // Bytes read and not yet consumed start at `cursor`.
    pending: Vec<u8>,
    cursor: usize,
}

impl Deframer {
    pub(crate) fn new() -> Self {
        Self {
            pending: Vec::new(),
            cursor: 0,
        }
    }

    /// The next complete frame's payload (a range of [`Deframer::bytes`]),
    /// reading from `socket` as needed. Cancel-safe: bytes read are kept.
    async fn next(&mut self, socket: &mut ReadHalf, ep: &Endpoint) -> Result<Range<usize>, Stop> {
        loop {
            if let Some(frame) = self.cut(ep)? {
                return Ok(frame);
            }
            self.compact();
            // Never hold more than a frame could need: a longer input is
            // refused as soon as it is seen.
            let room = ep
                .max_frame_size
                .saturating_add(ep.wire.overhead())
                .saturating_sub(self.pending.len());
            let socket = match socket {
                ReadHalf::Tcp(half) => half.tcp(),
                ReadHalf::Stream(stream) => {
                    // TLS: read what the record holds, up to `room`.
                    match Box::pin(self.read_stream(stream, room)).await {
                        Ok(0) | Err(_) => return Err(Stop::Gone),
                        Ok(_) => continue,
                    }
                }
            };
            socket.readable().await.map_err(|_| Stop::Gone)?;
            match self.read_now(socket, room) {
                Ok(0) => return Err(Stop::Gone),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Err(Stop::Gone),
            }
        }
    }

    // A sync function, so the stack chunk is never part of the connection's
    // future: an idle connection holds no read buffer at all. A read that
    // drained the socket clears its readiness (`read_draining`): one
    // `recv` per burst.
    fn read_now(&mut self, socket: &tokio::net::TcpStream, room: usize) -> std::io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK];
        let room = room.clamp(1, READ_CHUNK);
        let n = crate::net::halves::read_draining(socket, room, || socket.try_read(&mut chunk[..room]))?;
        self.pending.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads at most `room` bytes of a TLS (or other) stream into the
    /// pending bytes.
    async fn read_stream(
        &mut self,
        stream: &mut tokio::io::ReadHalf<Box<dyn crate::net::halves::Stream>>,
        room: usize,
    ) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        let room = room.clamp(1, READ_CHUNK);
        self.pending.reserve(room);
        (&mut *stream).take(room as u64).read_buf(&mut self.pending).await
    }

    /// Appends bytes as a read would (the fuzz targets feed it directly).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    pub(crate) fn bytes(&self, frame: Range<usize>) -> &[u8] {
        &self.pending[frame]
    }

    pub(crate) fn compact(&mut self) {
        if self.cursor == self.pending.len() {
            self.pending = Vec::new();
        } else {
            self.pending.drain(..self.cursor);
        }
        self.cursor = 0;
    }

    /// Cuts the next complete frame from what was read, if there is one.
    pub(crate) fn cut(&mut self, ep: &Endpoint) -> Result<Option<Range<usize>>, Stop> {
        let max = ep.max_frame_size;
        let rest = &self.pending[self.cursor..];
        match &ep.wire.markers {
            None => match find(rest, b"\n") {
                Some(nl) => {
                    let cr = usize::from(rest[..nl].ends_with(b"\r"));
                    let line = self.cursor..self.cursor + nl - cr;
                    self.cursor += nl + 1;
                    if line.len() > max {
                        return Err(Stop::TooLong);
                    }
                    Ok(Some(line))
                }
                // Even without its `\r\n` this would be too long.
                None if rest.len() >= max.saturating_add(2) => Err(Stop::TooLong),
                None => Ok(None),
            },
            Some((start, end)) => {
                let Some(s) = find(rest, start) else {
                    // Bytes outside markers are ignored; keep only what
                    // could be the beginning of a start marker.
                    self.cursor = self.pending.len() - rest.len().min(start.len() - 1);
                    return Ok(None);
                };
                self.cursor += s;
                let body = self.cursor + start.len();
                match find(&self.pending[body..], end) {
                    Some(e) => {
                        let payload = body..body + e;
                        self.cursor = payload.end + end.len();
                        if payload.len() > max {
                            return Err(Stop::TooLong);
                        }
                        Ok(Some(payload))
                    }
                    // Any end marker still to come would leave more than
                    // `max` bytes between the markers.
                    None if self.pending.len() - self.cursor
                        >= max.saturating_add(start.len() + end.len()) =>
                    {
                        Err(Stop::TooLong)
                    }
                    None => Ok(None),
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [b] => haystack.iter().position(|x| x == b),
        _ => haystack.windows(needle.len()).position(|w| w == needle),
    }
}

async fn accept(node: Arc<Node>, listener: TcpListener, ep: Arc<Endpoint>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of
                // spinning; accepting resumes when the pressure is gone.
                tracing::warn!(listener = %ep.key, error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !ep.allows(peer.ip()) {
            tracing::debug!(listener = %ep.key, %peer, "tcp peer not in allow list: refused");
            continue; // dropping the stream closes it
        }
        node.connections
            .spawn(serve(node.clone(), ep.clone(), stream, peer));
    }
}

/// Serves one TCP connection until either side closes it.
async fn serve(node: Arc<Node>, ep: Arc<Endpoint>, stream: TcpStream, peer: SocketAddr) {
    crate::net::prepare(&stream, node.config.http_server.send_buffer_size);
    let (mut reader, mut writer) = match &ep.tls {
        None => crate::net::halves::split_tcp(stream),
        Some(tls) => {
            // The handshake within the stale-connection delay, as a token.
            // Boxed: the handshake's state is large and lives only now.
            let handshake = Box::pin(tls.acceptor().accept(stream));
            match tokio::time::timeout(node.config.client.stale_close_delay, handshake).await {
                Ok(Ok(tls)) => crate::net::halves::split_stream(tls),
                Ok(Err(error)) => {
                    return tracing::debug!(listener = %ep.key, %peer, %error, "tcp TLS handshake failed");
                }
                Err(_) => {
                    return tracing::debug!(listener = %ep.key, %peer, "tcp TLS handshake not done in time")
                }
            }
        }
    };
    let mut input = Deframer::new();
    let client_cfg = &node.config.client;

    // Phase 1: who is this? With `token`, the first frame says; without,
    // the listener's configuration admits anyone it lets in. Either way the
    // one admission path decides (anonymous rules, limits, expiry).
    let token = if ep.token {
        let first = tokio::select! {
            r = next_text(&mut input, &mut reader, &ep) => r,
            _ = tokio::time::sleep(client_cfg.stale_close_delay) => Err("no token received in time"),
            _ = node.shutdown.cancelled() => return,
        };
        match first {
            Ok(token) => Some(token),
            Err(why) => return refuse(&mut writer, &ep, why).await,
        }
    } else {
        None
    };
    let credentials = match &token {
        Some(token) => Credentials::Token(token),
        None => Credentials::ListenerAnonymous,
    };
    let Admitted {
        identity,
        id,
        rx,
        user,
    } = match admission::admit(
        &node,
        admission::Peer {
            transport: crate::metrics::Transport::Tcp,
            remote: Some(peer),
        },
        credentials,
    ) {
        Ok(admitted) => admitted,
        Err(refused) => {
            tracing::debug!(listener = %ep.key, %peer, ?refused, "tcp client refused");
            let why = match refused {
                Refused::Error(ErrorCode::TokenExpired | ErrorCode::Expired) => "token expired",
                Refused::Disconnect(d) if d == Disconnect::CONNECTION_LIMIT => "connection limit reached",
                Refused::Disconnect(d) if d == Disconnect::PERMISSION_DENIED => {
                    "anonymous tokens are not allowed"
                }
                _ => "invalid token",
            };
            return refuse(&mut writer, &ep, why).await;
        }
    };
    let Identity {
        conn_info,
        expires_at,
        ..
    } = identity;

    // Phase 2: a hub client like any other.
    let _connection = node.metrics.connection(crate::metrics::Transport::Tcp);
    if node.shutdown.is_cancelled() {
        // Registered after the hub told everyone to go: nobody else will.
        node.hub.disconnect(id, DisconnectReason::Shutdown);
        return;
    }
    for channel in &ep.channels {
        if let Err(e) = Box::pin(node.subscribe(id, channel, SubscribeOptions::default(), |_| None)).await {
            tracing::warn!(listener = %ep.key, channel, error = %e, "tcp client not subscribed");
        }
    }
    tracing::debug!(listener = %ep.key, %peer, client = %id, user = &*user, "tcp client connected");
    let publisher = Arc::new(ClientInfo::new(id, user, conn_info, None));
    // A peer that accepts no bytes for as long as a WebSocket client may
    // stay silent is gone, even if its queue has not overflowed yet.
    let stall = client_cfg.ping_interval + client_cfg.pong_timeout;
    let write_task = tokio::spawn(write(writer, rx, ep.clone(), stall));
    tokio::pin!(write_task);
    let deadline = admission::deadline(&node, expires_at);
    let expiry = async {
        match deadline {
            Some(at) => tokio::time::sleep(crate::clock::until(at)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);

    let mut writer_done = false;
    let why = loop {
        let frame = tokio::select! {
            r = input.next(&mut reader, &ep) => r,
            _ = &mut write_task => {
                writer_done = true;
                break "queue closed by the hub, or the socket failed";
            }
            _ = &mut expiry => break "connection token expired",
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(Stop::Gone) => break "peer closed",
            Err(Stop::TooLong) => break "frame longer than max_frame_size",
        };
        let Some(text) = ep.wire.decode(input.bytes(frame)) else {
            break "frame is not valid UTF-8";
        };
        if ep.wire.markers.is_none() && text.is_empty() {
            continue; // blank lines (telnet, nc) carry nothing
        }
        if let Some(channel) = &ep.publish_to {
            // Boxed: a publish's state (through a broker, several KiB) lives
            // only while it runs, not in every idle connection's task.
            Box::pin(publish(&node, &ep, channel, &text, id, &publisher)).await;
        }
    };
    tracing::debug!(listener = %ep.key, %peer, client = %id, why, "tcp client gone");
    // Closes the queue (if the hub has not already): the writer flushes what
    // is queued and ends, which closes the socket.
    node.hub.disconnect(id, DisconnectReason::Removed);
    if !writer_done {
        let _ = tokio::time::timeout(Duration::from_secs(5), write_task).await;
    }
}

/// The next frame's text, for the token phase.
async fn next_text(
    input: &mut Deframer,
    reader: &mut ReadHalf,
    ep: &Endpoint,
) -> Result<String, &'static str> {
    loop {
        let frame = match input.next(reader, ep).await {
            Ok(frame) => frame,
            Err(Stop::Gone) => return Err("connection closed"),
            Err(Stop::TooLong) => return Err("frame longer than max_frame_size"),
        };
        match ep.wire.decode(input.bytes(frame)) {
            None => return Err("frame is not valid UTF-8"),
            Some(t) if ep.wire.markers.is_none() && t.trim().is_empty() => continue,
            Some(t) => return Ok(t.into_owned()),
        }
    }
}

/// Tells the peer why in one frame (`error: ...`), then closes.
async fn refuse(writer: &mut WriteHalf, ep: &Endpoint, why: &str) {
    let mut out = Vec::new();
    ep.wire.frame(&format!("error: {why}"), &mut out);
    let said = async {
        writer.write_all(&out).await?;
        // FIN before the socket is dropped, so the peer reads the reason
        // even if unread input makes the final close a reset.
        writer.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), said).await;
}

async fn publish(
    node: &Node,
    ep: &Endpoint,
    channel: &str,
    text: &str,
    id: ClientId,
    publisher: &Arc<ClientInfo>,
) {
    let data = match serde_json::to_vec(text) {
        Ok(json) => json,
        Err(_) => return, // a &str always serializes
    };
    let exclude = if ep.echo {
        Exclusion::default()
    } else {
        Exclusion {
            clients: vec![id],
            users: Vec::new(),
        }
    };
    let opts = PublishOptions {
        exclude,
        info: Some(publisher.clone()),
        ..Default::default()
    };
    if let Err(e) = node.publish(channel, data.into(), opts).await {
        tracing::warn!(listener = %ep.key, channel, error = %e, "tcp frame not published");
    }
}

/// Drains the client's queue and writes everything drained with one write,
/// until the queue closes (peer gone, slow, shutdown, API disconnect) or the
/// socket fails. TCP has no close code: the socket just closes.
async fn write(mut socket: WriteHalf, mut rx: ClientReceiver, ep: Arc<Endpoint>, stall: Duration) {
    let mut items = Vec::new();
    let mut batch: Vec<u8> = Vec::new();
    loop {
        match rx.drain(&mut items).await {
            Ok(_) => {}
            Err(reason) => {
                tracing::debug!(listener = %ep.key, code = reason.code(), "tcp client queue closed");
                return;
            }
        }
        // A single item (the common case when idle) is written from the
        // shared encoding without a copy.
        let mut single: Option<Bytes> = None;
        for item in items.drain(..) {
            // Raw items are JSON-protocol replies; a TCP peer has no use for them.
            let Outbound::Event(ev) = item else { continue };
            let bytes = ep.encode(&ev);
            if bytes.is_empty() {
                continue;
            }
            if batch.is_empty() && single.is_none() {
                single = Some(bytes);
            } else {
                if let Some(first) = single.take() {
                    batch.extend_from_slice(&first);
                }
                batch.extend_from_slice(&bytes);
            }
        }
        let out: &[u8] = match &single {
            Some(bytes) => bytes,
            None => &batch,
        };
        if out.is_empty() {
            continue;
        }
        match tokio::time::timeout(stall, socket.write_all(out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(listener = %ep.key, "tcp peer accepted no bytes in time: closing");
                return;
            }
        }
        batch.clear();
        if batch.capacity() > BATCH_KEEP {
            batch = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(markers: Option<(&str, &str)>, encoding: TcpEncoding, max: usize) -> Endpoint {
        Endpoint {
            key: "tcp[0]".into(),
            addr: "127.0.0.1:0".parse().unwrap(),
            wire: Wire {
                markers: markers.map(|(s, e)| (s.as_bytes().to_vec(), e.as_bytes().to_vec())),
                encoding,
                unsafe_data: TcpUnsafeData::Drop,
            },
            slot: None,
            channels: Vec::new(),
            publish_to: None,
            echo: true,
            max_frame_size: max,
            allow: Vec::new(),
            token: false,
            tls: None,
        }
    }

    /// A TCP connection keeps its reader and writer tasks for its whole
    /// life; see `transport::websocket`'s budget test for why this is
    /// checked.
    #[tokio::test]
    async fn tcp_connection_tasks_stay_within_their_memory_budget() {
        let node = Node::new(crate::config::Config::default()).expect("node");
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, peer) = l.accept().await.unwrap();
        let ep = Arc::new(endpoint(Some(("<", ">")), TcpEncoding::Utf8, 4096));
        let serving = serve(node.clone(), ep.clone(), server, peer);
        let size = std::mem::size_of_val(&serving);
        assert!(
            size <= 1_400,
            "the tcp reader task's future is {size} bytes (budget 1,400)"
        );
        let _client2 = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let (_, wr) = crate::net::halves::split_tcp(server);
        let (_, rx) = node.hub.connect("u", None);
        let writing = write(wr, rx, ep, Duration::from_secs(1));
        let size = std::mem::size_of_val(&writing);
        assert!(
            size <= 512,
            "the tcp writer task's future is {size} bytes (budget 512)"
        );
    }

    /// Feeds `input` in pieces of `step` bytes; returns the frames cut, and
    /// whether the input was refused as too long.
    fn frames(ep: &Endpoint, input: &[u8], step: usize) -> (Vec<Vec<u8>>, bool) {
        let mut d = Deframer::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            d.compact();
            d.pending.extend_from_slice(piece);
            loop {
                match d.cut(ep) {
                    Ok(Some(r)) => out.push(d.bytes(r).to_vec()),
                    Ok(None) => break,
                    Err(_) => return (out, true),
                }
            }
        }
        (out, false)
    }

    #[test]
    fn delimited_frames_ignore_bytes_outside_markers_in_any_split() {
        let ep = endpoint(Some(("<<", ">>")), TcpEncoding::Utf8, 64);
        let input = b"junk<<one>>\r\n<noise<<two>><<>>tail<";
        for step in 1..input.len() {
            let (got, refused) = frames(&ep, input, step);
            assert!(!refused);
            assert_eq!(
                got,
                vec![b"one".to_vec(), b"two".to_vec(), b"".to_vec()],
                "step {step}"
            );
        }
    }

    #[test]
    fn line_frames_drop_the_carriage_return() {
        let ep = endpoint(None, TcpEncoding::Utf8, 64);
        let (got, refused) = frames(&ep, b"a\r\nb\n\nc", 1);
        assert!(!refused);
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec(), b"".to_vec()]);
    }

    #[test]
    fn frame_size_limit_is_exact() {
        let ep = endpoint(Some(("<", ">")), TcpEncoding::Utf8, 4);
        assert_eq!(frames(&ep, b"<abcd>", 1), (vec![b"abcd".to_vec()], false));
        assert!(frames(&ep, b"<abcde>", 1).1);
        assert!(
            frames(&ep, b"<abcde", 7).1,
            "an unterminated frame is refused too"
        );
        let line = endpoint(None, TcpEncoding::Utf8, 4);
        assert_eq!(frames(&line, b"abcd\r\n", 1), (vec![b"abcd".to_vec()], false));
        assert!(frames(&line, b"abcde\n", 1).1);
        assert!(frames(&line, b"abcdef", 6).1);
    }

    #[test]
    fn framing_inside_published_data_never_splits_a_frame() {
        let publication = |data: &str| {
            crier_core::Event::new(
                None,
                EventKind::Publication(crier_core::Publication::new(serde_json::to_vec(data).unwrap())),
            )
        };
        let mut telegrams = endpoint(Some(("<", ">")), TcpEncoding::Utf8, 4096);
        assert_eq!(&telegrams.wire.encode_event(&publication("ok"))[..], b"<ok>");
        assert!(
            telegrams.wire.encode_event(&publication("X><FAKE")).is_empty(),
            "dropped"
        );
        telegrams.wire.unsafe_data = TcpUnsafeData::Replace;
        assert_eq!(
            &telegrams.wire.encode_event(&publication("X><FAKE"))[..],
            b"<X??FAKE>"
        );
        let mut lines = endpoint(None, TcpEncoding::Utf8, 4096);
        assert!(lines.wire.encode_event(&publication("a\nb")).is_empty());
        lines.wire.unsafe_data = TcpUnsafeData::Replace;
        assert_eq!(&lines.wire.encode_event(&publication("a\r\nb"))[..], b"a??b\n");
        let mut long = endpoint(Some(("<<", ">>")), TcpEncoding::Latin1, 4096);
        long.wire.unsafe_data = TcpUnsafeData::Replace;
        assert_eq!(
            &long.wire.encode_event(&publication("a>b>>c<<"))[..],
            b"<<a?b??c??>>"
        );
        // A body ending in the end marker's first bytes would end the frame
        // early (found by the tcp_deframe fuzz target): "a>" then ">>"
        // reads as "a". Dropped, or its framing bytes replaced.
        long.wire.unsafe_data = TcpUnsafeData::Drop;
        assert!(long.wire.encode_event(&publication("a>")).is_empty(), "dropped");
        assert_eq!(&long.wire.encode_event(&publication("a")).to_vec(), b"<<a>>");
        let mut nul = endpoint(Some(("\u{1}", "\0\0")), TcpEncoding::Utf8, 4096);
        assert!(nul.wire.encode_event(&publication("\0")).is_empty(), "dropped");
        nul.wire.unsafe_data = TcpUnsafeData::Replace;
        assert_eq!(&nul.wire.encode_event(&publication("b\0"))[..], b"\x01b?\0\0");
    }

    #[test]
    fn latin1_is_byte_exact_both_ways() {
        let wire = Wire {
            markers: Some((b"<".to_vec(), b">".to_vec())),
            encoding: TcpEncoding::Latin1,
            unsafe_data: TcpUnsafeData::Drop,
        };
        let all: Vec<u8> = (0..=255).collect();
        let text = wire.decode(&all).unwrap();
        let mut out = Vec::new();
        wire.frame(&text, &mut out);
        assert_eq!(&out[1..out.len() - 1], &all[..]);
        out.clear();
        wire.frame("é€", &mut out);
        assert_eq!(out, b"<\xE9?>");
    }

    #[test]
    fn data_text_unwraps_json_strings_only() {
        assert_eq!(data_text(br#""a\"b""#), "a\"b");
        assert_eq!(data_text(br#"{"a":1}"#), r#"{"a":1}"#);
        assert_eq!(data_text(b"42"), "42");
    }
}
