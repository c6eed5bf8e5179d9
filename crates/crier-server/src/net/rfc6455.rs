//! Server-side WebSocket (RFC 6455) for both WebSocket endpoints: the
//! upgrade handshake, a reader of client frames, and a writer that sends a
//! batch of shared, already-encoded messages as one text frame with one
//! vectored write — no copy of the payloads and no per-connection output
//! buffer. Knows nothing of the client protocol.
//!
//! Why not a WebSocket crate here: tungstenite copies every payload into an
//! output buffer that keeps the size of the largest frame for the life of
//! the connection, and keeps its read buffer allocated while idle; at 5,000
//! subscribers under load that was ~38 KiB per connection
//! (docs/benchmarks.md). This module holds a read buffer only while bytes
//! are arriving and writes the hub's shared `Bytes` with `writev`.

use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use crate::net::deflate::{self, InflateError};
use crate::net::halves::read_draining;
pub use crate::net::halves::{ReadHalf, TcpOwner, WriteHalf};
use crate::net::WriteDeadline;

pub use crate::net::deflate::Deflate;

/// Bytes asked of the kernel per read while a frame is arriving.
const READ_CHUNK: usize = 1024;

/// Both halves of an upgraded connection: the raw TCP socket when
/// `server::serve_http` handed hyper one, the TLS stream when it handed it
/// that.
/// `own` puts the TCP socket in what the connection shares it from.
fn halves(
    upgraded: hyper::upgrade::Upgraded,
    own: impl FnOnce(TcpStream) -> Arc<dyn TcpOwner>,
) -> Option<(ReadHalf, WriteHalf, Bytes)> {
    let upgraded = match upgraded.downcast::<TokioIo<WriteDeadline<TcpStream>>>() {
        Ok(parts) => {
            let (rd, wr) = crate::net::halves::split_owned(own(parts.io.into_inner().into_inner()));
            return Some((rd, wr, parts.read_buf));
        }
        Err(upgraded) => upgraded,
    };
    type Tls = tokio_rustls::server::TlsStream<TcpStream>;
    let parts = upgraded.downcast::<TokioIo<WriteDeadline<Tls>>>().ok()?;
    let (rd, wr) = crate::net::halves::split_stream(parts.io.into_inner().into_inner());
    Some((rd, wr, parts.read_buf))
}

/// What one connection may do, and the subprotocol it speaks.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest incoming message, in bytes.
    pub message_size: usize,
    /// Longest one outgoing frame may take to be written.
    pub write_timeout: std::time::Duration,
    /// The `Sec-WebSocket-Protocol` to answer with (one the client
    /// offered), if any.
    pub protocol: Option<&'static str>,
    /// permessage-deflate, when enabled: accepted if the client offers it.
    pub deflate: Option<Deflate>,
}

/// Answers the WebSocket handshake in `request` and, once the connection
/// is upgraded, runs `serve` on its reader and writer (within `limits`),
/// as a task `tracker` waits for at shutdown.
pub fn accept<F, Fut>(request: Request, limits: Limits, tracker: &TaskTracker, serve: F) -> Response
where
    F: FnOnce(Reader, Writer) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    accept_owned(request, limits, tracker, |socket| Arc::new(socket), serve)
}

/// [`accept`], with a plain TCP socket put by `own` in what its reader,
/// writer and writes at once share it from (a transport's state for
/// writes at once: [`TcpOwner`], [`Writer::owner`]).
pub fn accept_owned<O, F, Fut>(
    mut request: Request,
    limits: Limits,
    tracker: &TaskTracker,
    own: O,
    serve: F,
) -> Response
where
    O: FnOnce(TcpStream) -> Arc<dyn TcpOwner> + Send + 'static,
    F: FnOnce(Reader, Writer) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let deflate = limits.deflate.filter(|_| deflate::offered(request.headers()));
    let response = match handshake(request.headers(), limits.protocol, deflate.is_some()) {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::BAD_REQUEST, "this connection cannot be upgraded\n").into_response();
    };
    let serving = tracker.clone();
    tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(error) => return tracing::debug!(%error, "WebSocket upgrade failed"),
        };
        // server::serve_http hands hyper plain TCP streams (or TLS ones);
        // the raw socket lets the reader wait without a buffer and the
        // writer use writev.
        let Some((rd, wr, pre)) = halves(upgraded, own) else {
            return tracing::warn!("WebSocket upgrade on a connection that is neither TCP nor TLS");
        };
        let mut reader = Reader::new(rd, pre, limits.message_size);
        let mut writer = Writer::new(wr, limits.write_timeout);
        if let Some(d) = deflate {
            reader.frames.inflate = true;
            writer.deflate = Some(Box::new(d));
        }
        // A task of its own: the connection's task holds `serve`'s future
        // alone, not this block's upgrade state beside it, for the
        // connection's whole life.
        serving.spawn(serve(reader, writer));
    });
    response
}

/// Checks the upgrade request's headers and builds the `101 Switching
/// Protocols` answer, or the error answer for a request that is not a
/// WebSocket handshake.
#[allow(clippy::result_large_err)]
pub(crate) fn handshake(
    headers: &HeaderMap,
    protocol: Option<&'static str>,
    deflate: bool,
) -> Result<Response, Response> {
    let bad = |why: &'static str| Err((StatusCode::BAD_REQUEST, why).into_response());
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return bad("expected a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)\n");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut r = (StatusCode::UPGRADE_REQUIRED, "unsupported WebSocket version\n").into_response();
        r.headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(r);
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return bad("missing Sec-WebSocket-Key\n");
    };
    if !valid_key(key.as_bytes()) {
        return bad("Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 §4.1)\n");
    }
    let accept = accept_key(key.as_bytes());
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())?,
    );
    if let Some(protocol) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    if deflate {
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static(deflate::RESPONSE),
        );
    }
    Ok(r)
}

/// Whether a `Sec-WebSocket-Key` is what RFC 6455 §4.1 asks for: 16 bytes,
/// base64-encoded (24 characters).
fn valid_key(key: &[u8]) -> bool {
    use base64::Engine as _;
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4): the
/// defined codes it may send, and the ranges for libraries and
/// applications; 1004–1006, 1015 and anything outside are protocol errors.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Whether the client offered subprotocol `name` (RFC 6455 §4.1: a
/// comma-separated list, possibly over several headers).
pub fn offers_protocol(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|p| p.trim() == name)))
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::{Digest, Sha1};
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// A complete message (or control frame) from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text or binary message, reassembled from its fragments.
    Data(Bytes),
    /// A ping; the caller answers with [`Writer::pong`].
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket closed or failed.
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    /// The peer broke RFC 6455 (unmasked frame, bad opcode, fragmented
    /// control frame, ...): close code 1002.
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message that is not UTF-8 (RFC 6455 §8.1): close code 1007.
    #[error("a text message is not UTF-8")]
    InvalidUtf8,
    /// A message longer than the limit.
    #[error("message too long: {size} bytes, the limit is {limit}")]
    TooLong {
        /// Bytes announced so far.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// Reads client frames. Holds a buffer only while a frame is arriving.
pub struct Reader {
    half: ReadHalf,
    frames: Frames,
}

/// The bytes-to-messages half of a [`Reader`], without the socket: the
/// bytes received and not yet parsed, and the message being reassembled.
pub struct Frames {
    buf: BytesMut,
    // The message being reassembled from fragments: its bytes so far,
    // whether it is compressed, whether it is text. Boxed: fragmented
    // messages are rare, and every idle connection holds its reader (8
    // bytes instead of 40).
    partial: Option<Box<(BytesMut, bool, bool)>>,
    limit: u32,
    // permessage-deflate was agreed: RSV1 marks a compressed message.
    inflate: bool,
    // The last message returned was text (opcode 1), not binary.
    text: bool,
}

impl Reader {
    /// Reads from `half`; `pre` holds bytes that arrived with the
    /// handshake; messages over `limit` bytes are refused.
    pub fn new(half: impl Into<ReadHalf>, pre: Bytes, limit: usize) -> Self {
        Reader {
            half: half.into(),
            frames: Frames::new(&pre, limit, false),
        }
    }

    /// Whether the last [`Incoming::Data`] was a text message.
    #[cfg(feature = "fuzzing")]
    pub fn last_was_text(&self) -> bool {
        self.frames.last_was_text()
    }

    /// The next message or control frame. Cancel-safe: bytes read are kept
    /// in the reader until a whole frame is there. The future is a
    /// reference to the reader and nothing else: every connection waits
    /// on one while idle ([`Reader::poll_next`] does the work).
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`Reader::next`] as a poll: ready with the next message or control
    /// frame, or pending with `cx` registered for the socket.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, ReadError>> {
        let frames = &mut self.frames;
        loop {
            if let Some(incoming) = frames.parse()? {
                return Poll::Ready(Ok(incoming));
            }
            if frames.buf.is_empty() {
                // Idle: hold no buffer while waiting for the next bytes.
                frames.buf = BytesMut::new();
            }
            let half = match &mut self.half {
                ReadHalf::Tcp(half) => half.tcp(),
                ReadHalf::Stream(stream) => {
                    // TLS keeps its own buffers: read into the frame's.
                    if frames.buf.capacity() - frames.buf.len() < READ_CHUNK {
                        frames.buf.reserve(READ_CHUNK);
                    }
                    let pinned = std::pin::Pin::new(stream);
                    match ready!(tokio_util::io::poll_read_buf(pinned, cx, &mut frames.buf))? {
                        0 => return Poll::Ready(Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()))),
                        _ => continue,
                    }
                }
            };
            // Wait for bytes without a buffer and without a syscall:
            // tokio's readiness, which registers `cx` until the socket is
            // readable. Then one `recv`, which clears that readiness when
            // it drained the socket (`read_draining`): one syscall per
            // incoming burst, where a one-byte peek, the read and a last
            // peek took three.
            ready!(half.poll_read_ready(cx))?;
            if frames.buf.capacity() - frames.buf.len() < READ_CHUNK {
                frames.buf.reserve(READ_CHUNK);
            }
            let room = frames.buf.capacity() - frames.buf.len();
            match read_draining(half, room, || half.try_read_buf(&mut frames.buf)) {
                Ok(0) => return Poll::Ready(Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()))),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }
}

impl Frames {
    fn limit(&self) -> usize {
        self.limit as usize
    }

    /// Starts with the bytes `pre`; messages over `limit` bytes are
    /// refused; `inflate` when permessage-deflate was agreed.
    pub fn new(pre: &[u8], limit: usize, inflate: bool) -> Self {
        Frames {
            buf: BytesMut::from(pre),
            partial: None,
            // 4 GiB at most (a `u32`: every idle connection holds this).
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            inflate,
            text: false,
        }
    }

    /// Whether the last [`Incoming::Data`] was a text message (the echo
    /// endpoint of the conformance tests answers in kind).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn last_was_text(&self) -> bool {
        self.text
    }

    /// Appends bytes received.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// One message or control frame from the bytes received, if a whole
    /// one is there.
    pub fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(frame) = self.frame()? else {
                return Ok(None);
            };
            let Frame {
                fin,
                opcode,
                compressed,
                payload,
            } = frame;
            match opcode {
                OP_CLOSE => {
                    if payload.len() == 1 {
                        return Err(ReadError::Protocol("close frame with a one-byte body"));
                    }
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    if code.is_some_and(|c| !valid_close_code(c)) {
                        return Err(ReadError::Protocol("invalid close code"));
                    }
                    if std::str::from_utf8(payload.get(2..).unwrap_or_default()).is_err() {
                        return Err(ReadError::Protocol("close reason is not UTF-8"));
                    }
                    return Ok(Some(Incoming::Close(code)));
                }
                OP_PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Incoming::Pong)),
                OP_TEXT | OP_BINARY if self.partial.is_some() => {
                    return Err(ReadError::Protocol("new message inside a fragmented one"))
                }
                OP_TEXT | OP_BINARY if fin => {
                    return self.message(payload, compressed, opcode == OP_TEXT).map(Some)
                }
                OP_TEXT | OP_BINARY => {
                    self.partial = Some(Box::new((payload, compressed, opcode == OP_TEXT)))
                }
                OP_CONTINUATION if compressed => {
                    return Err(ReadError::Protocol("RSV1 set on a continuation frame"))
                }
                OP_CONTINUATION => {
                    let Some(mut partial) = self.partial.take() else {
                        return Err(ReadError::Protocol("continuation without a message"));
                    };
                    partial.0.extend_from_slice(&payload);
                    if fin {
                        let (message, compressed, text) = *partial;
                        return self.message(message, compressed, text).map(Some);
                    }
                    self.partial = Some(partial);
                }
                _ => return Err(ReadError::Protocol("unknown opcode")),
            }
        }
    }

    /// A whole message, inflated when it came compressed (and refused if
    /// it inflates past the limit), checked to be UTF-8 if it is text.
    fn message(&mut self, payload: BytesMut, compressed: bool, text: bool) -> Result<Incoming, ReadError> {
        self.text = text;
        let bytes = if compressed {
            self.inflated(&payload)?
        } else {
            payload.freeze()
        };
        if text && std::str::from_utf8(&bytes).is_err() {
            return Err(ReadError::InvalidUtf8);
        }
        Ok(Incoming::Data(bytes))
    }

    fn inflated(&self, payload: &[u8]) -> Result<Bytes, ReadError> {
        match deflate::inflate(payload, self.limit()) {
            Ok(bytes) => Ok(bytes),
            Err(InflateError::TooLong) => Err(ReadError::TooLong {
                size: self.limit() + 1,
                limit: self.limit(),
            }),
            Err(InflateError::Invalid) => Err(ReadError::Protocol("invalid compressed data")),
        }
    }

    /// One raw frame, unmasked, if a whole one is in the buffer.
    fn frame(&mut self) -> Result<Option<Frame>, ReadError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0F);
        let (masked, len7) = (b[1] & 0x80 != 0, b[1] & 0x7F);
        // RSV1 marks a compressed message, when permessage-deflate was
        // agreed; RSV2 and RSV3 are never used.
        let compressed = rsv == 0x40 && self.inflate;
        if rsv != 0 && !compressed {
            return Err(ReadError::Protocol("reserved bits set (no extension was agreed)"));
        }
        if !masked {
            return Err(ReadError::Protocol("unmasked frame from a client"));
        }
        let control = opcode & 0x08 != 0;
        if control && compressed {
            return Err(ReadError::Protocol("RSV1 set on a control frame"));
        }
        if control && (!fin || len7 > 125) {
            return Err(ReadError::Protocol("fragmented or oversized control frame"));
        }
        let (ext, len) = match len7 {
            126 if b.len() >= 4 => (2, u64::from(u16::from_be_bytes([b[2], b[3]]))),
            127 if b.len() >= 10 => (8, u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"))),
            126 | 127 => return Ok(None),
            n => (0, u64::from(n)),
        };
        let before = self.partial.as_ref().map_or(0, |p| p.0.len());
        let size = usize::try_from(len).unwrap_or(usize::MAX).saturating_add(before);
        if !control && size > self.limit() {
            return Err(ReadError::TooLong {
                size,
                limit: self.limit(),
            });
        }
        let header = 2 + ext + 4;
        let total = header + len as usize;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let mask: [u8; 4] = self.buf[header - 4..header].try_into().expect("4 bytes");
        let mut frame = self.buf.split_to(total);
        frame.advance(header);
        for (i, byte) in frame.iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
        Ok(Some(Frame {
            fin,
            opcode,
            compressed,
            payload: frame,
        }))
    }
}

struct Frame {
    fin: bool,
    opcode: u8,
    compressed: bool,
    payload: BytesMut,
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// RSV1 in a frame's first byte: a compressed message (RFC 7692).
const RSV1: u8 = 0x40;

/// Writes the header of an unmasked server frame with `len` payload bytes
/// into `out`; its length.
fn header_into(out: &mut [u8; 10], opcode: u8, len: usize) -> usize {
    out[0] = 0x80 | opcode;
    match len {
        0..=125 => {
            out[1] = len as u8;
            2
        }
        126..=0xFFFF => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    }
}

/// The header of an unmasked server frame with `len` payload bytes;
/// `opcode` may carry [`RSV1`].
fn header(opcode: u8, len: usize) -> Bytes {
    let mut h = [0u8; 10];
    let n = header_into(&mut h, opcode, len);
    Bytes::copy_from_slice(&h[..n])
}

/// Writes server frames. Owned by one task at a time (the connection's
/// reader before connect, its writer task after), so no lock: the reader
/// hands what it must send later (pongs, a close) to the writer task
/// through [`Controls`].
pub struct Writer {
    half: WriteHalf,
    // A frame not out within this many milliseconds is a client that
    // stopped reading (a `u32`, not a 16-byte `Duration`: every connection's
    // task holds its writer; 49 days at most).
    timeout_ms: u32,
    // permessage-deflate was agreed, with these settings (boxed: every
    // connection's tasks hold a writer, few agree on compression).
    deflate: Option<Box<Deflate>>,
}

/// A control frame the reader asks the writer task to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Answer a ping with its payload.
    Pong(Bytes),
    /// Close with this code and reason; the writer ends after it.
    Close(u16, &'static str),
}

/// Control frames waiting for a connection's writer: a mutex around a
/// short list, touched only when the client pings or closes, and a flag
/// the writer checks without the lock.
/// Bounded: at most one pong (the latest ping's, which RFC 6455 §5.5.3
/// allows answering alone) and one close wait, however many pings a client
/// that never reads sends. It wakes no one: the reader that queues and
/// the writer that sends are polled by one task, which polls the writer
/// again when its reader queued something (no waker kept: every
/// connection's task holds this).
#[derive(Default)]
pub struct Controls {
    pending: std::sync::Mutex<Vec<Control>>,
    // Whether `pending` holds anything: the writer checks this on every
    // wake-up without taking the lock.
    queued: std::sync::atomic::AtomicBool,
}

impl Controls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Control>> {
        // Nothing panics while holding it; a poisoned list is still a list.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `control` for the writer task: a pong replaces a pong still
    /// waiting, and nothing is queued after a close.
    pub fn send(&self, control: Control) {
        {
            let mut pending = self.lock();
            if pending.iter().any(|c| matches!(c, Control::Close(..))) {
                return;
            }
            match (
                pending.iter_mut().find(|c| matches!(c, Control::Pong(_))),
                control,
            ) {
                (Some(waiting), pong @ Control::Pong(_)) => *waiting = pong,
                (_, control) => pending.push(control),
            }
            self.queued.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether a control frame is queued (taken with
    /// [`Controls::take_now`]). One atomic load, no lock: the writer
    /// checks it on every wake-up.
    pub fn is_queued(&self) -> bool {
        self.queued.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The control frames queued now, in order.
    pub fn take_now(&self) -> Vec<Control> {
        let mut pending = self.lock();
        self.queued.store(false, std::sync::atomic::Ordering::Release);
        std::mem::take(&mut *pending)
    }
}

/// Most iovecs one `sendmsg` takes ([`send_joined`]): runs of short
/// parts are joined into one, so a frame of joined messages is one or a
/// few; a long part (1 KiB at least) is one of its own, and two runs are
/// never next to each other, so a call that stops here sends 16 KiB at
/// least. The slots are on the stack, written before each call: few, so
/// that each call writes little (256 took 10 KiB of stores per call;
/// docs/benchmarks.md, "No arrays of 256 parts per send").
const IOVECS: usize = 32;

/// The separator between messages joined into one frame.
const NEWLINE: Bytes = Bytes::from_static(b"\n");

impl Writer {
    /// Writes to `half`; a frame that takes longer than `timeout` to go
    /// out fails with `TimedOut`.
    pub fn new(half: impl Into<WriteHalf>, timeout: std::time::Duration) -> Self {
        Writer {
            half: half.into(),
            timeout_ms: u32::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX),
            deflate: None,
        }
    }

    /// Sends a control frame the reader asked for.
    pub async fn control(&mut self, control: Control) -> io::Result<()> {
        match control {
            Control::Pong(payload) => self.pong(payload).await,
            Control::Close(code, reason) => self.close(code, reason).await,
        }
    }

    /// Sends `messages` joined with `\n` as one text frame, with one
    /// vectored write when the socket has room. Empties `messages`.
    pub async fn text(&mut self, messages: &mut Vec<Bytes>) -> io::Result<()> {
        self.messages(false, messages).await
    }

    /// Sends `messages` as one frame: binary ones back to back (each
    /// carries its own length), text ones joined with `\n`. One vectored
    /// write when the socket has room. Empties `messages`.
    pub async fn messages(&mut self, binary: bool, messages: &mut Vec<Bytes>) -> io::Result<()> {
        let mut out = self.message_frame(binary, messages);
        if self.try_write(&mut out)? {
            return Ok(());
        }
        self.finish(out).await
    }

    /// Builds the frames [`Writer::messages`] sends, for
    /// [`Writer::try_write`]: the messages joined into frames of up to
    /// [`JOIN_MAX`] payload bytes (a longer message alone); compressed
    /// when this connection agreed on it and the frame is long enough (a
    /// compressing connection's writer sends one message per frame, so
    /// that path joins only what it is given). Empties `messages`.
    pub fn message_frame(&self, binary: bool, messages: &mut Vec<Bytes>) -> Outgoing {
        let separators = if binary {
            0
        } else {
            messages.len().saturating_sub(1)
        };
        let len = messages.iter().map(Bytes::len).sum::<usize>() + separators;
        let opcode = if binary { OP_BINARY } else { OP_TEXT };
        if let Some(d) = self.deflate().filter(|d| len >= d.min_size) {
            // Compressed for this connection alone: joined, then deflated.
            let mut joined = Vec::with_capacity(len);
            for (i, m) in messages.drain(..).enumerate() {
                if i > 0 && !binary {
                    joined.push(b'\n');
                }
                joined.extend_from_slice(&m);
            }
            let payload = deflate::compress(&joined, d.level);
            return Outgoing::new(vec![header(opcode | RSV1, payload.len()), payload]);
        }
        plain_frames(binary, messages.drain(..))
    }

    /// Sends `messages` as [`Writer::messages`] does, as much as the
    /// socket takes now, without waiting. Borrowed: when they make one
    /// frame (at most [`JOIN_MAX`] bytes, plain TCP, no compression: every
    /// frame of a client that keeps up), nothing is allocated and no
    /// message's reference count touched. `None` when all of it went out;
    /// else what is left (the rest the socket did not take, or everything
    /// when this path does not apply), owned, for [`Writer::finish`].
    pub fn try_write_messages<'m, I>(&mut self, binary: bool, messages: I) -> io::Result<Option<Outgoing>>
    where
        I: ExactSizeIterator<Item = &'m Bytes> + Clone,
    {
        let count = messages.len();
        let separators = if binary { 0 } else { count.saturating_sub(1) };
        let len = messages.clone().map(Bytes::len).sum::<usize>() + separators;
        let socket = match &self.half {
            WriteHalf::Tcp(half) if self.deflate.is_none() && len <= JOIN_MAX => half.socket(),
            _ => {
                let mut out = self.message_frame(binary, &mut messages.cloned().collect());
                return Ok((!self.try_write(&mut out)?).then_some(out));
            }
        };
        let opcode = if binary { OP_BINARY } else { OP_TEXT };
        let mut head = [0u8; 10];
        let n = header_into(&mut head, opcode, len);
        let written = match send_parts(socket, frame_parts(&head[..n], binary, messages.clone())) {
            Ok(w) if w == n + len => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        // The socket is full: what it did not take waits, owned (the same
        // frame, as `message_frame` lays it out).
        let mut out = self.message_frame(binary, &mut messages.cloned().collect());
        out.advance(written);
        // A socket that took part may take the rest now (the client read
        // meanwhile), as `try_write` would try: what must wait for `finish`
        // (a boxed future and a timer per waiting connection) is what the
        // socket refuses, and a connection that waits less holds less
        // (peak RSS at 5,000 subscribers at max rate: 38-40 MiB with this
        // retry, 42-43 without; docs/benchmarks.md).
        if written > 0 && send_now(socket, &mut out)? {
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// The compression agreed with this client, if any.
    pub fn deflate(&self) -> Option<Deflate> {
        self.deflate.as_deref().copied()
    }

    /// Builds one frame per message, with RSV1 where it is already
    /// compressed (a shared encoding, compressed once for every
    /// subscriber), for [`Writer::try_write`]. Empties `frames`.
    pub fn frames_frame(binary: bool, frames: &mut Vec<(Bytes, bool)>) -> Outgoing {
        let opcode = if binary { OP_BINARY } else { OP_TEXT };
        let mut parts = Vec::with_capacity(frames.len() * 2);
        for (payload, compressed) in frames.drain(..) {
            let op = if compressed { opcode | RSV1 } else { opcode };
            parts.push(header(op, payload.len()));
            parts.push(payload);
        }
        Outgoing::new(parts)
    }

    /// Writes as much of `out` as the socket takes now, without waiting:
    /// `true` when all of it is out. The common case on a client that
    /// reads: one `writev`, no timer, no future. A TLS stream takes
    /// nothing here (its records are written by [`Writer::finish`]).
    pub fn try_write(&mut self, out: &mut Outgoing) -> io::Result<bool> {
        match &self.half {
            WriteHalf::Tcp(half) => send_now(half.socket(), out),
            WriteHalf::Stream(_) => Ok(out.is_empty()),
        }
    }

    /// Writes the rest of `out`, waiting for the socket up to the write
    /// timeout (a client that stopped reading fails with `TimedOut`).
    pub async fn finish(&mut self, out: Outgoing) -> io::Result<()> {
        let Outgoing { mut parts, first } = out;
        parts.drain(..first);
        self.write(parts).await
    }

    /// Answers a ping with its payload.
    pub async fn pong(&mut self, payload: Bytes) -> io::Result<()> {
        self.write(vec![header(OP_PONG, payload.len()), payload]).await
    }

    /// Sends a close frame with `code` and `reason` (cut to fit a control
    /// frame) and shuts the sending side down.
    pub async fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        let payload = Bytes::from(payload);
        self.write(vec![header(OP_CLOSE, payload.len()), payload]).await?;
        self.half.shutdown().await
    }

    /// What this connection's socket lives in, when other threads may
    /// send frames on it while this writer waits ([`Direct`]): plain TCP
    /// without compression only (a TLS stream's state, or a compressor,
    /// is this writer's alone).
    pub fn owner(&self) -> Option<&Arc<dyn TcpOwner>> {
        match &self.half {
            WriteHalf::Tcp(half) if self.deflate.is_none() => Some(half.owner()),
            _ => None,
        }
    }

    /// Sends what `direct` left behind (the rest of a frame the socket did
    /// not take at once), waiting up to the write timeout; the error that
    /// ended `direct`'s last send, if one did.
    pub async fn finish_direct(&mut self, direct: &Direct) -> io::Result<()> {
        match direct.take_rest() {
            Rest::Nothing => Ok(()),
            Rest::Frame(out) => self.finish(*out).await,
            Rest::Failed(kind) => Err(kind.into()),
        }
    }

    async fn write(&mut self, parts: Vec<Bytes>) -> io::Result<()> {
        match tokio::time::timeout(
            std::time::Duration::from_millis(self.timeout_ms.into()),
            write_all(&mut self.half, parts),
        )
        .await
        {
            Ok(written) => written,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not take a frame within the write timeout",
            )),
        }
    }
}

/// Writes every byte of `parts`, with as few `writev` calls as the socket
/// allows; a TLS stream is flushed after (it may keep records back).
async fn write_all(half: &mut WriteHalf, parts: Vec<Bytes>) -> io::Result<()> {
    match half {
        // Boxed: reached only when a frame must wait for the socket, or
        // for a control frame; it must not grow every caller's task.
        WriteHalf::Tcp(half) => Box::pin(send_all(half.socket(), Outgoing::new(parts))).await,
        // Boxed so the TLS path does not grow every connection's writer
        // task (the plain TCP path is the hot one).
        WriteHalf::Stream(stream) => {
            Box::pin(async move {
                write_parts(stream, parts).await?;
                stream.flush().await
            })
            .await
        }
    }
}

async fn write_parts(half: &mut (impl AsyncWrite + Unpin), parts: Vec<Bytes>) -> io::Result<()> {
    let mut out = Outgoing::new(parts);
    while !out.is_empty() {
        let written = {
            let slices: Vec<IoSlice<'_>> = out.parts[out.first..].iter().map(|p| IoSlice::new(p)).collect();
            half.write_vectored(&slices).await?
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        out.advance(written);
    }
    Ok(())
}

/// Writes as much of `out` as `socket` takes now, without waiting: `true`
/// when all of it is out.
fn send_now(socket: &TcpStream, out: &mut Outgoing) -> io::Result<bool> {
    while !out.is_empty() {
        let sent = send_parts(socket, out.parts[out.first..].iter().map(|p| &p[..]));
        match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The most payload bytes a frame of joined messages carries; a longer
/// message goes alone. Clients limit the frames they accept (Apple's
/// `URLSessionWebSocketTask` and Python's `websockets` take at most 1 MiB
/// by default), and a writer that drains a long queue at once (a client
/// back from a pause, with a raised `client.queue_max_size`) must stay
/// within them; 64 KiB per frame still joins about 400 small messages.
const JOIN_MAX: usize = 64 * 1024;

/// Frames up to this size go out by one `send` of a copy on the stack
/// instead of a `sendmsg` of their parts: the kernel's message header and
/// vector cost it about 0.3 µs more per call than a `send`, far more than
/// the copy (docs/benchmarks.md, "Fan-outs spread over the cores").
const COPY_MAX: usize = 512;

/// Parts shorter than this are copied into the thread's [`JOINED`]
/// buffer rather than given to the kernel as iovecs of their own: per
/// iovec, `sendmsg` pays a user-copy setup that costs more than copying a
/// short part here. Longer parts (a large message) go by reference.
const JOIN_PART_MAX: usize = 1024;

/// The most bytes one call joins in [`JOINED`]: a full frame of joined
/// messages ([`JOIN_MAX`] and its header) fits.
const JOINED_CAP: usize = JOIN_MAX + 16;

thread_local! {
    // The buffer `send_parts_to` joins short parts in, one per thread that
    // sends (the runtime's workers), grown to the largest join and kept:
    // at most 128 KiB of capacity (a 64 KiB join, grown by doubling).
    static JOINED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Sends the start of `parts` with one call, never waiting: joined on
/// the stack by one `send` when they are COPY_MAX bytes in all at most,
/// else by one `sendmsg` of up to IOVECS iovecs, its runs of short parts
/// joined in the thread's buffer first (the rest goes in the next call).
/// `parts` is walked, never gathered: a frame of the 64-message window is
/// 128 parts.
fn send_parts<'p>(socket: &TcpStream, parts: impl Iterator<Item = &'p [u8]> + Clone) -> io::Result<usize> {
    socket.try_io(tokio::io::Interest::WRITABLE, || {
        send_parts_to(socket2::SockRef::from(socket), parts)
    })
}

/// [`send_parts`] without asking tokio's readiness first, for a write at
/// once from another thread ([`Direct`]): it would only tell what the
/// `send` tells anyway, and costs a cache miss per delivery on a line of
/// its own (tokio's `ScheduledIo`: 2 % of the server's samples at 100/s
/// to 1,000 subscribers). A `WouldBlock` here leaves tokio's readiness
/// set; the writer task that takes over then learns it from its own
/// `send`, which clears it before waiting.
fn send_parts_to<'p>(
    socket: socket2::SockRef<'_>,
    parts: impl Iterator<Item = &'p [u8]> + Clone,
) -> io::Result<usize> {
    // Stops counting past COPY_MAX: a batch may have hundreds of parts.
    let small = parts
        .clone()
        .try_fold(0, |n, p| Some(n + p.len()).filter(|&n| n <= COPY_MAX))
        .is_some();
    if small {
        let mut buf = [0u8; COPY_MAX];
        let mut n = 0;
        for part in parts {
            buf[n..n + part.len()].copy_from_slice(part);
            n += part.len();
        }
        return socket.send(&buf[..n]);
    }
    JOINED.with(|joined| match joined.try_borrow_mut() {
        Ok(mut joined) => send_joined(socket, parts, &mut joined),
        // (Never: nothing sends while a send of this thread runs.)
        Err(_) => send_joined(socket, parts, &mut Vec::new()),
    })
}

/// One `sendmsg` of the start of `parts` (at most IOVECS iovecs), each
/// run of parts shorter than JOIN_PART_MAX copied into `joined` and sent
/// as one iovec: a frame of 64 joined 170-byte messages is 128 parts, whose
/// iovecs cost the kernel a quarter of the server's CPU at max rate on
/// some machines ("Joined sends", docs/benchmarks.md). Stops before a
/// part that would take the copies past JOINED_CAP.
fn send_joined<'p>(
    socket: socket2::SockRef<'_>,
    parts: impl Iterator<Item = &'p [u8]>,
    joined: &mut Vec<u8>,
) -> io::Result<usize> {
    // Where each iovec comes from: a range of `joined`, or a part itself.
    #[derive(Clone, Copy)]
    enum Slot<'p> {
        Joined(usize, usize),
        Part(&'p [u8]),
    }
    joined.clear();
    let mut slots = [Slot::Part(&[]); IOVECS];
    let mut n: usize = 0;
    for part in parts {
        let short = part.len() < JOIN_PART_MAX;
        if short && joined.len() + part.len() > JOINED_CAP {
            break;
        }
        // A short part after a run of them extends the last iovec.
        if let (true, Some(Slot::Joined(_, end))) = (short, n.checked_sub(1).map(|last| &mut slots[last])) {
            joined.extend_from_slice(part);
            *end = joined.len();
            continue;
        }
        if n == IOVECS {
            break;
        }
        slots[n] = if short {
            let start = joined.len();
            joined.extend_from_slice(part);
            Slot::Joined(start, joined.len())
        } else {
            Slot::Part(part)
        };
        n += 1;
    }
    // One run: a `send`, cheaper than a `sendmsg` (COPY_MAX).
    if let [Slot::Joined(start, end)] = slots[..n] {
        return socket.send(&joined[start..end]);
    }
    let mut slices = [IoSlice::new(&[]); IOVECS];
    for (slice, slot) in slices.iter_mut().zip(&slots[..n]) {
        *slice = IoSlice::new(match *slot {
            Slot::Joined(start, end) => &joined[start..end],
            Slot::Part(part) => part,
        });
    }
    // sendmsg, not writev: a socket written through the VFS pays its file
    // bookkeeping (`vfs_writev`, `fdget_pos`: 7 % of the server's samples
    // at low rates, against 5 % for the sendmsg path; docs/benchmarks.md).
    socket.send_vectored(&slices[..n])
}

/// The parts of one uncompressed frame of `messages` for one `send` or
/// `sendmsg`: its header `head`, then the messages, a newline between two
/// unless `binary`; walked, never gathered ([`send_parts`]).
fn frame_parts<'a, 'm: 'a, M>(
    head: &'a [u8],
    binary: bool,
    messages: M,
) -> impl Iterator<Item = &'a [u8]> + Clone + use<'a, 'm, M>
where
    M: Iterator<Item = &'m Bytes> + Clone,
{
    let messages = messages.enumerate().flat_map(move |(i, m)| {
        let separator: Option<&'a [u8]> = (i > 0 && !binary).then_some(b"\n");
        separator.into_iter().chain(std::iter::once(&m[..]))
    });
    std::iter::once(head).chain(messages)
}

/// `messages` joined into uncompressed frames of up to [`JOIN_MAX`]
/// payload bytes (a longer message alone), as [`Writer::messages`] sends
/// them.
fn plain_frames(binary: bool, messages: impl ExactSizeIterator<Item = Bytes>) -> Outgoing {
    let opcode = if binary { OP_BINARY } else { OP_TEXT };
    let mut parts = Vec::with_capacity(messages.len() * 2);
    // The frame being built: its header's slot, filled in once its
    // length is known, and its payload so far.
    let mut head = 0;
    let mut len = 0;
    parts.push(Bytes::new());
    for m in messages {
        let joined = head + 1 < parts.len();
        let separator = usize::from(joined && !binary);
        if joined && len + separator + m.len() > JOIN_MAX {
            parts[head] = header(opcode, len);
            head = parts.len();
            len = 0;
            parts.push(Bytes::new());
        } else if separator == 1 {
            parts.push(NEWLINE);
            len += 1;
        }
        len += m.len();
        parts.push(m);
    }
    parts[head] = header(opcode, len);
    Outgoing::new(parts)
}

/// Writes all of `out` to `socket`, waiting for room.
async fn send_all(socket: &TcpStream, mut out: Outgoing) -> io::Result<()> {
    while !send_now(socket, &mut out)? {
        socket.writable().await?;
    }
    Ok(())
}

/// A connection's socket, sent to from other threads while its writer task
/// waits (the hub's write at once, `crier_core::WriteNow`): one frame per
/// send, one `sendmsg`, never waiting. What the socket did not take is
/// kept for the writer task ([`Writer::finish_direct`]), which must send it
/// before anything else; the queue sees to that. Holds no socket: it
/// lives beside the one it sends on, in that socket's [`TcpOwner`], whose
/// [`Writer::owner`] allows it.
pub struct Direct {
    opcode: u8,
    rest: std::sync::Mutex<Rest>,
}

/// What a [`Direct`] send left for the writer task.
pub enum Rest {
    /// Nothing: every frame went out.
    Nothing,
    /// The rest of a frame (boxed: a rest is rare, and every connection
    /// holds a `Direct`).
    Frame(Box<Outgoing>),
    /// The socket failed.
    Failed(io::ErrorKind),
}

impl Direct {
    /// Sends frames of binary messages when `binary`, else of text ones.
    pub fn new(binary: bool) -> Self {
        Direct {
            opcode: if binary { OP_BINARY } else { OP_TEXT },
            rest: std::sync::Mutex::new(Rest::Nothing),
        }
    }

    /// Sends `payload` on `socket` as one frame now. `true` when all of it
    /// went out; otherwise the rest (or the failure) waits for the writer
    /// task.
    pub fn send(&self, socket: &TcpStream, payload: &Bytes) -> bool {
        let mut head = [0u8; 10];
        let n = header_into(&mut head, self.opcode, payload.len());
        let sent = send_parts_to(
            socket2::SockRef::from(socket),
            [&head[..n], &payload[..]].into_iter(),
        );
        let rest = match sent {
            Ok(k) if k == n + payload.len() => return true,
            Ok(k) => Ok(k),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e.kind()),
        };
        let rest = match rest {
            Ok(k) => {
                let mut out = Outgoing::new(vec![Bytes::copy_from_slice(&head[..n]), payload.clone()]);
                out.advance(k);
                Rest::Frame(Box::new(out))
            }
            Err(kind) => Rest::Failed(kind),
        };
        *self.lock() = rest;
        false
    }

    /// Sends `messages` on `socket` now, as [`Writer::messages`] frames
    /// them (several messages joined into one frame). `true` when all of
    /// it went out; otherwise the rest (or the failure) waits for the
    /// writer task, as after [`send`](Self::send). Messages that do not
    /// make one frame ([`JOIN_MAX`]) all wait for the writer.
    pub fn send_all<'m, I>(&self, socket: &TcpStream, messages: I) -> bool
    where
        I: ExactSizeIterator<Item = &'m Bytes> + Clone,
    {
        let binary = self.opcode == OP_BINARY;
        let count = messages.len();
        let separators = if binary { 0 } else { count.saturating_sub(1) };
        let len = messages.clone().map(Bytes::len).sum::<usize>() + separators;
        let sent = if len <= JOIN_MAX {
            let mut head = [0u8; 10];
            let n = header_into(&mut head, self.opcode, len);
            let parts = frame_parts(&head[..n], binary, messages.clone());
            match send_parts_to(socket2::SockRef::from(socket), parts) {
                Ok(w) if w == n + len => return true,
                Ok(w) => Ok(w),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(e.kind()),
            }
        } else {
            Ok(0)
        };
        *self.lock() = match sent {
            Ok(k) => {
                let mut out = plain_frames(binary, messages.cloned());
                out.advance(k);
                Rest::Frame(Box::new(out))
            }
            Err(kind) => Rest::Failed(kind),
        };
        false
    }

    /// Whether a send left something for the writer task.
    pub fn has_rest(&self) -> bool {
        !matches!(*self.lock(), Rest::Nothing)
    }

    fn take_rest(&self) -> Rest {
        std::mem::replace(&mut *self.lock(), Rest::Nothing)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rest> {
        // Nothing panics while holding it.
        self.rest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One or more frames on their way out: header and payload parts, written
/// with as few `writev` calls as the socket allows.
pub struct Outgoing {
    parts: Vec<Bytes>,
    // The first part not yet (fully) written.
    first: usize,
}

impl Outgoing {
    fn new(parts: Vec<Bytes>) -> Self {
        let mut out = Outgoing { parts, first: 0 };
        out.skip_empty();
        out
    }

    /// Everything is out.
    fn is_empty(&self) -> bool {
        self.first >= self.parts.len()
    }

    /// `written` more bytes went out.
    fn advance(&mut self, written: usize) {
        let mut left = written;
        while left > 0 {
            let part = &mut self.parts[self.first];
            if left >= part.len() {
                left -= part.len();
                self.first += 1;
            } else {
                part.advance(left);
                left = 0;
            }
        }
        self.skip_empty();
    }

    // Skips empty parts, so `is_empty` holds once every byte is out.
    fn skip_empty(&mut self) {
        while self.first < self.parts.len() && self.parts[self.first].is_empty() {
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
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

    #[tokio::test]
    async fn a_ping_flood_keeps_one_pong_and_a_close_ends_the_list() {
        let controls = Controls::default();
        for i in 0..100_000u32 {
            controls.send(Control::Pong(Bytes::from(i.to_be_bytes().to_vec())));
        }
        assert!(controls.is_queued());
        assert_eq!(
            controls.take_now(),
            vec![Control::Pong(Bytes::from(99_999u32.to_be_bytes().to_vec()))]
        );
        controls.send(Control::Pong(Bytes::from_static(b"a")));
        controls.send(Control::Close(1000, ""));
        controls.send(Control::Pong(Bytes::from_static(b"b")));
        assert!(controls.is_queued());
        assert_eq!(
            controls.take_now(),
            vec![Control::Pong(Bytes::from_static(b"a")), Control::Close(1000, "")]
        );
        assert!(!controls.is_queued());
    }

    #[test]
    fn only_16_byte_base64_keys_are_accepted() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            &b"!!!"[..],
            b"",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZXg=",
            b"dGhlIHNhbXBsZSBub25j!Q==",
        ] {
            assert!(!valid_key(bad), "{}", String::from_utf8_lossy(bad));
        }
        for ok in [1000, 1001, 1003, 1007, 1011, 3000, 4999] {
            assert!(valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!valid_close_code(bad), "{bad}");
        }
    }

    #[test]
    fn accept_key_of_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn reads_fragmented_large_and_control_frames_across_reads() {
        let (mut client, server) = pair().await;
        let (rd, _wr) = crate::net::halves::split_tcp(server);
        let big = vec![b'x'; 70_000];
        let mut bytes = masked(false, OP_TEXT, b"hel");
        bytes.extend(masked(true, OP_PING, b"p"));
        bytes.extend(masked(true, OP_CONTINUATION, b"lo"));
        bytes.extend(masked(true, OP_BINARY, &big));
        bytes.extend(masked(true, OP_CLOSE, &1000u16.to_be_bytes()));
        // The first two bytes arrive with the handshake.
        let mut r = Reader::new(rd, Bytes::copy_from_slice(&bytes[..2]), 100_000);
        let writer = tokio::spawn(async move {
            for chunk in bytes[2..].chunks(777) {
                client.write_all(chunk).await.unwrap();
            }
            client
        });
        assert_eq!(r.next().await.unwrap(), Incoming::Ping(Bytes::from_static(b"p")));
        assert_eq!(
            r.next().await.unwrap(),
            Incoming::Data(Bytes::from_static(b"hello"))
        );
        assert_eq!(r.next().await.unwrap(), Incoming::Data(Bytes::from(big)));
        assert_eq!(r.next().await.unwrap(), Incoming::Close(Some(1000)));
        drop(writer.await.unwrap());
        assert!(matches!(r.next().await, Err(ReadError::Io(_))));
    }

    /// A read that drains the socket clears its readiness: the reader then
    /// waits, holding no buffer, and wakes for the next message, every
    /// time (one `recv` per burst, no peek).
    #[tokio::test]
    async fn a_reader_that_drained_the_socket_waits_and_wakes_for_each_next_message() {
        use futures_util::FutureExt as _;
        let (mut client, server) = pair().await;
        let (rd, _wr) = crate::net::halves::split_tcp(server);
        let mut r = Reader::new(rd, Bytes::new(), 1024);
        for i in 0..50u32 {
            let message = format!("message {i}");
            client
                .write_all(&masked(true, OP_TEXT, message.as_bytes()))
                .await
                .unwrap();
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), r.next())
                .await
                .expect("the reader wakes for the message")
                .unwrap();
            assert_eq!(got, Incoming::Data(Bytes::from(message)));
            assert!(
                r.next().now_or_never().is_none(),
                "nothing more: the reader waits"
            );
            assert_eq!(r.frames.buf.capacity(), 0, "a waiting reader holds no buffer");
        }
        drop(client);
        assert!(matches!(r.next().await, Err(ReadError::Io(_))), "end of stream");
    }

    #[tokio::test]
    async fn refuses_what_rfc_6455_forbids_and_what_is_too_long() {
        for (bytes, want) in [
            (vec![0x81, 0x02, b'h', b'i'], "unmasked"),
            (masked(true, 0x3, b""), "opcode"),
            (masked(false, OP_PING, b""), "control"),
            (masked(true, OP_CONTINUATION, b"x"), "continuation"),
            (
                [masked(false, OP_TEXT, b"a"), masked(true, OP_TEXT, b"b")].concat(),
                "inside",
            ),
            (masked(true, OP_TEXT, &[b'x'; 2000]), "too long"),
            (
                masked(true, OP_CLOSE, &999u16.to_be_bytes()),
                "invalid close code",
            ),
            (
                masked(true, OP_CLOSE, &1005u16.to_be_bytes()),
                "invalid close code",
            ),
            (
                masked(true, OP_CLOSE, &5000u16.to_be_bytes()),
                "invalid close code",
            ),
            (masked(true, OP_CLOSE, &[3]), "one-byte"),
            (masked(true, OP_CLOSE, &[0x03, 0xE8, 0xFF]), "UTF-8"),
            (
                [
                    masked(false, OP_TEXT, &[b'x'; 600]),
                    masked(true, OP_CONTINUATION, &[b'x'; 600]),
                ]
                .concat(),
                "too long",
            ),
        ] {
            let (mut client, server) = pair().await;
            let (rd, _wr) = crate::net::halves::split_tcp(server);
            let mut r = Reader::new(rd, Bytes::new(), 1024);
            client.write_all(&bytes).await.unwrap();
            let err = r.next().await.unwrap_err().to_string();
            assert!(err.contains(want), "{err} should say {want}");
        }
    }

    /// Autobahn cases 6.x: a text message that is not UTF-8 fails the
    /// connection (1007), whole, fragmented or compressed; the same bytes
    /// in a binary message are data. The reader says which kind it read.
    #[test]
    fn text_messages_must_be_utf8_and_binary_ones_need_not() {
        let bad = [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xED, 0xA0, 0x80, 0x65];
        for bytes in [
            masked(true, OP_TEXT, &bad),
            [
                masked(false, OP_TEXT, &bad[..4]),
                masked(true, OP_CONTINUATION, &bad[4..]),
            ]
            .concat(),
        ] {
            let mut f = Frames::new(&bytes, 1024, false);
            assert!(matches!(f.parse(), Err(ReadError::InvalidUtf8)));
        }
        let mut compressed = masked(true, OP_TEXT, &deflate::compress(&bad, 1));
        compressed[0] |= RSV1;
        let mut f = Frames::new(&compressed, 1024, true);
        assert!(matches!(f.parse(), Err(ReadError::InvalidUtf8)));
        let mut f = Frames::new(&masked(true, OP_BINARY, &bad), 1024, false);
        assert_eq!(
            f.parse().unwrap(),
            Some(Incoming::Data(Bytes::copy_from_slice(&bad)))
        );
        assert!(!f.last_was_text());
        f.extend(&masked(true, OP_TEXT, "κόσμε".as_bytes()));
        assert_eq!(f.parse().unwrap(), Some(Incoming::Data(Bytes::from("κόσμε"))));
        assert!(f.last_was_text());
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_times_the_writer_out() {
        let (client, server) = pair().await;
        let (_rd, wr) = crate::net::halves::split_tcp(server);
        let mut w = Writer::new(wr, std::time::Duration::from_millis(200));
        let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
        // Loopback buffers hold a few MiB; 64 MiB can never fit, so one of
        // these writes must stall and fail with the timeout.
        let mut outcome = Ok(());
        for _ in 0..1024 {
            outcome = w.text(&mut vec![chunk.clone()]).await;
            if outcome.is_err() {
                break;
            }
        }
        let err = outcome.expect_err("a stalled frame fails");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        drop(client);
    }

    /// Reads exactly `len` bytes from `client` on a task of its own, while
    /// the writer under test waits for the socket.
    fn read_exactly(mut client: TcpStream, len: usize) -> tokio::task::JoinHandle<Vec<u8>> {
        tokio::spawn(async move {
            let mut got = vec![0u8; len];
            client
                .read_exact(&mut got)
                .await
                .expect("the server sent all of it");
            got
        })
    }

    /// The writer task's path: what the socket takes now goes out at once
    /// (`try_write`), the rest later (`finish`); the client must read
    /// one intact frame, whatever the split.
    #[tokio::test]
    async fn a_frame_the_socket_takes_only_in_part_arrives_whole() {
        let (client, server) = pair().await;
        let (_rd, wr) = crate::net::halves::split_tcp(server);
        let mut w = Writer::new(wr, std::time::Duration::from_secs(10));
        let parts: Vec<Bytes> = (0..64u8)
            .map(|i| Bytes::from(vec![b'a' + i % 26; 256 * 1024]))
            .collect();
        let mut out = w.message_frame(false, &mut parts.clone());
        assert!(
            !w.try_write(&mut out).unwrap(),
            "16 MiB cannot fit a loopback socket's buffers"
        );
        // Each message is longer than JOIN_MAX: a frame of its own.
        let expected = parts.iter().map(|p| 10 + p.len()).sum();
        let reading = read_exactly(client, expected);
        w.finish(out).await.unwrap();
        let got = reading.await.unwrap();
        for (i, (frame, part)) in got.chunks(10 + 256 * 1024).zip(&parts).enumerate() {
            assert_eq!(frame[0], 0x80 | OP_TEXT, "frame {i}");
            assert_eq!(frame[1], 127, "a 64-bit length");
            assert_eq!(u64::from_be_bytes(frame[2..10].try_into().unwrap()), 256 * 1024);
            assert!(frame[10..] == part[..], "message {i} arrives intact");
        }
    }

    /// `send_parts_to` joins runs of short parts in the thread's buffer
    /// and sends long ones by reference, in one `sendmsg` per call: the
    /// bytes arrive in order whatever the mix, a call stops at IOVECS
    /// iovecs or JOINED_CAP joined bytes, and never more than it reports.
    #[tokio::test]
    async fn short_parts_joined_and_long_ones_borrowed_arrive_in_order() {
        let (client, server) = pair().await;
        // A mix: runs of short parts (1-1,023 bytes) between long ones,
        // each part's bytes its own.
        let mut parts: Vec<Bytes> = (0..3000usize)
            .map(|i| {
                let len = match i % 97 {
                    0 => JOIN_PART_MAX + i % 5000,
                    k => 1 + (k * 37 + i) % (JOIN_PART_MAX - 1),
                };
                Bytes::from(vec![(i % 251) as u8; len])
            })
            .collect();
        // More long parts in a row than one call's iovecs.
        parts.extend((0..IOVECS + 3).map(|i| Bytes::from(vec![(i % 7) as u8; JOIN_PART_MAX])));
        let expected: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let reading = read_exactly(client, expected.len());
        let mut out = Outgoing::new(parts.clone());
        let mut calls = 0;
        while !out.is_empty() {
            let left: usize = out.parts[out.first..].iter().map(Bytes::len).sum();
            match send_parts(&server, out.parts[out.first..].iter().map(|p| &p[..])) {
                Ok(n) => {
                    assert!(n > 0 && n <= left, "a call reports what it sent");
                    out.advance(n);
                    calls += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => server.writable().await.unwrap(),
                Err(e) => panic!("{e}"),
            }
        }
        let got = reading.await.unwrap();
        assert!(got == expected, "every byte, in order");
        assert!(calls >= 2, "IOVECS long parts take two calls at least");
        // One call's joined bytes stay within JOINED_CAP.
        let buffered = JOINED.with(|joined| joined.borrow().capacity());
        assert!(buffered > 0, "short parts were joined in the thread's buffer");
        assert!(buffered <= 2 * JOINED_CAP, "the buffer grows to one join at most");
    }

    /// Frames parsed from what a client read: (opcode, payload).
    fn parse_frames(mut got: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !got.is_empty() {
            let (len, at) = match got[1] {
                126 => (u16::from_be_bytes([got[2], got[3]]) as usize, 4),
                127 => (u64::from_be_bytes(got[2..10].try_into().unwrap()) as usize, 10),
                n => (n as usize, 2),
            };
            frames.push((got[0], got[at..at + len].to_vec()));
            got = &got[at + len..];
        }
        frames
    }

    /// The writer task's path for a client that keeps up: borrowed
    /// messages, one frame each time, until the socket is full; the rest
    /// the socket did not take is then owned and sent by `finish`. The
    /// client must read every frame intact and in order.
    #[tokio::test]
    async fn borrowed_messages_go_out_whole_until_the_socket_is_full_and_the_rest_follows() {
        let (client, server) = pair().await;
        let (_rd, wr) = crate::net::halves::split_tcp(server);
        let mut w = Writer::new(wr, std::time::Duration::from_secs(10));
        // 40 messages of 200 bytes: one frame of 8,039 bytes, 79 parts
        // (small enough that a fresh socket takes the first ones whole).
        let batch = |c: usize| -> Vec<Bytes> {
            (0..40)
                .map(|i| Bytes::from(vec![b'a' + ((c * 40 + i) % 26) as u8; 200]))
                .collect()
        };
        let mut sent = Vec::new();
        let rest = loop {
            assert!(sent.len() < 20_000, "the socket never filled");
            let messages = batch(sent.len());
            let rest = w.try_write_messages(false, messages.iter()).unwrap();
            sent.push(messages);
            if let Some(rest) = rest {
                break rest;
            }
        };
        assert!(sent.len() > 1, "the first frames went out whole, at once");
        let frame_len = 4 + 40 * 200 + 39;
        let reading = read_exactly(client, sent.len() * frame_len);
        w.finish(rest).await.unwrap();
        let got = reading.await.unwrap();
        for (c, (frame, messages)) in got.chunks(frame_len).zip(&sent).enumerate() {
            assert_eq!(frame[0], 0x80 | OP_TEXT, "frame {c}");
            assert_eq!(frame[1], 126, "a 16-bit length");
            assert_eq!(u16::from_be_bytes([frame[2], frame[3]]) as usize, frame_len - 4);
            let joined = messages
                .iter()
                .map(|m| std::str::from_utf8(m).unwrap())
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                frame[4..] == *joined.as_bytes(),
                "frame {c} arrives intact and in order"
            );
        }
    }

    /// A frame of more messages than the old 256-part arrays held (and
    /// than one call has iovecs) goes out borrowed, at once, from the
    /// writer and from a write at once: one frame, text joined by
    /// newlines, binary back to back, every message whole and in order.
    #[tokio::test]
    async fn a_frame_of_hundreds_of_short_messages_goes_out_at_once() {
        let messages: Vec<Bytes> = (0..400u32).map(|i| Bytes::from(format!("m{i:05}"))).collect();
        for (binary, direct) in [(false, false), (true, false), (false, true), (true, true)] {
            let (client, server) = pair().await;
            let (separator, opcode) = if binary { ("", OP_BINARY) } else { ("\n", OP_TEXT) };
            let payload = messages
                .iter()
                .map(|m| std::str::from_utf8(m).unwrap())
                .collect::<Vec<_>>()
                .join(separator);
            let reading = read_exactly(client, 4 + payload.len());
            if direct {
                let sent = Direct::new(binary).send_all(&server, messages.iter());
                assert!(sent, "all of it at once (binary: {binary})");
            } else {
                let (_rd, wr) = crate::net::halves::split_tcp(server);
                let mut w = Writer::new(wr, std::time::Duration::from_secs(5));
                let rest = w.try_write_messages(binary, messages.iter()).unwrap();
                assert!(rest.is_none(), "all of it at once (binary: {binary})");
            }
            let frames = parse_frames(&reading.await.unwrap());
            assert_eq!(frames.len(), 1, "one frame (binary: {binary}, direct: {direct})");
            assert_eq!(frames[0].0, 0x80 | opcode);
            assert!(frames[0].1 == payload.as_bytes(), "every message whole, in order");
        }
    }

    /// A long queue drained at once goes out as frames of at most
    /// JOIN_MAX payload bytes (a longer message alone), every message
    /// whole and in order, joined by newlines within a frame.
    #[tokio::test]
    async fn a_long_batch_is_split_into_frames_clients_accept() {
        let (mut client, server) = pair().await;
        let (_rd, wr) = crate::net::halves::split_tcp(server);
        let mut w = Writer::new(wr, std::time::Duration::from_secs(10));
        let mut messages: Vec<Bytes> = (0..300u32)
            .map(|i| Bytes::from(format!("{i:04}:{}", "m".repeat(995))))
            .collect();
        messages.insert(150, Bytes::from(vec![b'L'; JOIN_MAX + 1]));
        let want = messages.clone();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        w.text(&mut messages).await.unwrap();
        drop(w);
        let frames = parse_frames(&reading.await.unwrap());
        // 65 messages of 1,000 bytes (and 64 newlines) fill a frame: 150
        // messages take three, the long one its own, 150 more three.
        assert_eq!(frames.len(), 7);
        let mut seen = Vec::new();
        for (opcode, payload) in &frames {
            assert_eq!(*opcode, 0x80 | OP_TEXT);
            let alone = payload.len() == JOIN_MAX + 1 && payload.iter().all(|b| *b == b'L');
            assert!(
                payload.len() <= JOIN_MAX || alone,
                "a {}-byte frame",
                payload.len()
            );
            seen.extend(payload.split(|b| *b == b'\n').map(<[u8]>::to_vec));
        }
        let want: Vec<Vec<u8>> = want.iter().map(|m| m.to_vec()).collect();
        assert!(seen == want, "every message whole, in order");
    }

    #[tokio::test]
    async fn writes_joined_text_pong_and_close_frames() {
        let (mut client, server) = pair().await;
        let (_rd, wr) = crate::net::halves::split_tcp(server);
        let mut w = Writer::new(wr, std::time::Duration::from_secs(5));
        let long = Bytes::from(vec![b'y'; 300]);
        let mut batch = vec![Bytes::from_static(b"{\"a\":1}"), long.clone()];
        w.text(&mut batch).await.unwrap();
        assert!(batch.is_empty());
        w.pong(Bytes::from_static(b"p")).await.unwrap();
        w.close(3008, "slow").await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let payload_len = 7 + 1 + 300;
        let mut want = vec![0x81, 126];
        want.extend_from_slice(&(payload_len as u16).to_be_bytes());
        want.extend_from_slice(b"{\"a\":1}\n");
        want.extend_from_slice(&long);
        want.extend_from_slice(&[0x8A, 1, b'p']);
        want.extend_from_slice(&[0x88, 6, 0x0B, 0xC0]);
        want.extend_from_slice(b"slow");
        assert_eq!(got, want);
    }
}
