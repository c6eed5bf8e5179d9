//! A minimal client-side WebSocket with permessage-deflate (RFC 7692), for
//! `crier bench --compression` subscribers only. tokio-tungstenite has no
//! permessage-deflate and refuses frames with a reserved bit set, so this
//! speaks the protocol itself: an HTTP/1.1 upgrade over the socket
//! [`client::tcp_with`] opens (same source address and receive buffer),
//! masked client frames (commands and pongs, never compressed), and server
//! frames read from one reused buffer.
//!
//! The server agrees to `server_no_context_takeover`, so every compressed
//! message inflates on its own: the connection's one `Decompress` is reset
//! before each, and fed the payload plus the four bytes of a sync flush
//! (RFC 7692 §7.2.2). An uncompressed message is handed out as a slice of
//! the read buffer, an inflated one as a slice of a reused output buffer;
//! the hot path allocates nothing once the buffers have grown to the
//! largest message.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::ops::Range;

use anyhow::{bail, Context};
use crier_proto::client::Command;
use flate2::{Decompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::Message;

use super::client;
use super::Node;
use crate::subscribe::{self, Format};

/// What the client offers: compression without context takeover both
/// ways, the only form crier answers with.
const OFFER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Appended to a compressed message before inflating it (RFC 7692 §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The read buffer's first size, as the uncompressed path's.
const READ_BUFFER: usize = 4 * 1024;

/// The longest message (on the wire, or inflated) this client accepts.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The longest handshake answer this client reads.
const MAX_HEAD: usize = 16 * 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// Why the server may refuse to compress, in the words of its
/// configuration.
const NOT_AGREED: &str = "the server did not agree to permessage-deflate (--compression): set \
                          `websocket.compression = true` in its configuration \
                          (or CRIER_WEBSOCKET_COMPRESSION=true)";

/// One complete data message, or the end of the connection.
pub enum Event<'a> {
    /// A text message (JSON), inflated if it came compressed.
    Text(&'a str),
    /// A binary message (protobuf), inflated if it came compressed.
    Binary(&'a [u8]),
    /// The server closed the connection: with a close frame's code and
    /// reason, or (`None`) without a code or by ending the stream.
    Closed(Option<(u16, String)>),
}

/// Where a complete message's bytes are.
enum At {
    /// In the read buffer (one uncompressed frame).
    Buf(Range<usize>),
    /// In `message` (an uncompressed message of several frames).
    Message,
    /// In `inflated`.
    Inflated,
}

/// What one frame amounted to.
enum Step {
    /// A message is complete: text or binary, and where.
    Message(bool, At),
    /// A ping: answer with its payload, at this range of the read buffer.
    Ping(Range<usize>),
    /// A close frame or the end of the stream.
    Closed(Option<(u16, String)>),
    /// A frame that completes nothing (a pong, a fragment).
    Nothing,
}

/// A WebSocket connection with permessage-deflate agreed.
pub struct DeflateWs {
    stream: TcpStream,
    /// Bytes read; `start..end` not yet parsed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the frame at `start` needs in all, once its header is known
    /// and it is incomplete.
    want: usize,
    /// A fragmented message being put together: its opcode and whether it
    /// is compressed.
    fragmented: Option<(u8, bool)>,
    /// The fragments' payloads so far.
    message: Vec<u8>,
    /// The last compressed message, inflated.
    inflated: Vec<u8>,
    inflate: Decompress,
    /// A frame being written.
    out: Vec<u8>,
    /// Masking keys: xorshift64, seeded per connection.
    mask_state: u64,
}

/// Opens a WebSocket connection to `node` offering permessage-deflate,
/// in `format`, and sends the connect command; returns once the server
/// accepted it. Fails if the server does not agree to compress.
pub async fn connect(
    plan: &super::Plan,
    node: &Node,
    source: Option<Ipv4Addr>,
    recv_buffer: Option<u32>,
    format: Format,
) -> anyhow::Result<DeflateWs> {
    let stream = client::tcp_with(node.ws_addr, source, recv_buffer).await?;
    let url = format.url(&node.ws_url);
    let path = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.strip_prefix(node.ws_host.as_str()))
        .filter(|path| path.starts_with('/'))
        .unwrap_or("/");
    let mut ws = DeflateWs::new(stream);
    ws.handshake(&node.ws_host, path)
        .await
        .with_context(|| format!("WebSocket handshake with {url} failed"))?;
    ws.command(format, &client::connect_command(plan))
        .await
        .context("connect refused")?;
    Ok(ws)
}

impl DeflateWs {
    fn new(stream: TcpStream) -> DeflateWs {
        // Masking keys need not be secret here, only varied.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u8);
        DeflateWs {
            stream,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            want: 0,
            fragmented: None,
            message: Vec::new(),
            inflated: Vec::new(),
            inflate: Decompress::new(false),
            out: Vec::with_capacity(64),
            mask_state: seed | 1,
        }
    }

    /// The upgrade: offers permessage-deflate and checks the answer.
    async fn handshake(&mut self, host: &str, path: &str) -> anyhow::Result<()> {
        let key = generate_key();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: {OFFER}\r\n\r\n"
        );
        self.stream
            .write_all(request.as_bytes())
            .await
            .context("cannot send the upgrade request")?;
        // The head ends at the first blank line; frames may follow it in
        // the same read, and stay in the buffer.
        let head_end = loop {
            if let Some(at) = find(&self.buf[..self.end], b"\r\n\r\n") {
                break at + 4;
            }
            if self.end >= MAX_HEAD {
                bail!("the server's answer has no end");
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self
                .stream
                .read(&mut self.buf[self.end..])
                .await
                .context("no answer to the upgrade request")?;
            if n == 0 {
                bail!("the server closed the connection during the upgrade");
            }
            self.end += n;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.start = head_end;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        if status.split(' ').nth(1) != Some("101") {
            bail!("the server answered {status:?}, not 101 Switching Protocols");
        }
        let mut accept = None;
        let mut extensions = Vec::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("sec-websocket-accept") {
                accept = Some(value);
            } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
                extensions.extend(value.split(',').map(str::trim));
            }
        }
        if accept != Some(derive_accept_key(key.as_bytes()).as_str()) {
            bail!("the server's Sec-WebSocket-Accept does not match the key sent");
        }
        let Some(agreed) = extensions.iter().find(|e| e.starts_with("permessage-deflate")) else {
            bail!("{NOT_AGREED}");
        };
        // Inflating each message on its own needs the server to compress
        // each on its own.
        if !agreed
            .split(';')
            .any(|p| p.trim() == "server_no_context_takeover")
        {
            bail!(
                "the server agreed to {agreed:?}, without server_no_context_takeover, which this \
                 client needs"
            );
        }
        Ok(())
    }

    /// Sends one command and waits for its reply, answering pings
    /// meanwhile. (Setup only: replies are decoded whole.)
    async fn command(&mut self, format: Format, command: &Command) -> anyhow::Result<()> {
        self.send_message(format.command(command))
            .await
            .context("cannot send a command")?;
        loop {
            let message = match self.next().await.context("connection lost")? {
                Event::Text(text) => Message::text(text),
                Event::Binary(bytes) => Message::binary(bytes.to_vec()),
                Event::Closed(Some((code, reason))) => bail!("disconnected: {code} {reason}"),
                Event::Closed(None) => bail!("the server closed the connection"),
            };
            let (pings, done) = client::answered(format, &message, command.id)?;
            for _ in 0..pings {
                self.send_message(format.command(&subscribe::pong()))
                    .await
                    .context("cannot answer a ping")?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Subscribes to `channel` (the plain name).
    pub async fn subscribe(&mut self, format: Format, channel: &str) -> anyhow::Result<()> {
        self.command(format, &client::subscribe_command(channel))
            .await
            .with_context(|| format!("subscribe to {channel:?} refused"))
    }

    /// Sends a text or binary message, uncompressed.
    async fn send_message(&mut self, message: Message) -> std::io::Result<()> {
        match message {
            Message::Text(text) => self.send(OP_TEXT, text.as_bytes()).await,
            Message::Binary(bytes) => self.send(OP_BINARY, &bytes).await,
            _ => Ok(()),
        }
    }

    /// Answers an application-level ping: `{}` in JSON (a text message),
    /// the single byte 0 in protobuf (a binary one).
    pub async fn pong(&mut self, text: bool) -> std::io::Result<()> {
        if text {
            self.send(OP_TEXT, b"{}").await
        } else {
            self.send(OP_BINARY, crier_proto::protobuf::PING).await
        }
    }

    /// Sends a close frame (1000), without waiting for the answer.
    pub async fn close(&mut self) -> std::io::Result<()> {
        self.send(OP_CLOSE, &1000u16.to_be_bytes()).await?;
        self.stream.flush().await
    }

    /// Writes one masked frame with FIN set and no reserved bit.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mask = self.mask_key();
        self.out.clear();
        self.out.push(0x80 | opcode);
        match payload.len() {
            n @ 0..=125 => self.out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                self.out.push(0x80 | 126);
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                self.out.push(0x80 | 127);
                self.out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.out.extend_from_slice(&mask);
        self.out
            .extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        self.stream.write_all(&self.out).await
    }

    fn mask_key(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        (x as u32).to_be_bytes()
    }

    /// The next complete data message; pings are answered and pongs
    /// skipped on the way. The message is valid until the next call.
    pub async fn next(&mut self) -> anyhow::Result<Event<'_>> {
        let (text, at) = loop {
            match self.parse()? {
                Some(Step::Message(text, at)) => break (text, at),
                Some(Step::Ping(range)) => {
                    let mut payload = [0u8; 125];
                    let n = range.len();
                    payload[..n].copy_from_slice(&self.buf[range]);
                    self.send(OP_PONG, &payload[..n])
                        .await
                        .context("cannot answer a ping")?;
                }
                Some(Step::Closed(how)) => return Ok(Event::Closed(how)),
                Some(Step::Nothing) => {}
                None => {
                    if !self.fill().await? {
                        return Ok(Event::Closed(None));
                    }
                }
            }
        };
        let bytes = match at {
            At::Buf(range) => &self.buf[range],
            At::Message => &self.message[..],
            At::Inflated => &self.inflated[..],
        };
        Ok(if text {
            Event::Text(std::str::from_utf8(bytes).context("a text message that is not UTF-8")?)
        } else {
            Event::Binary(bytes)
        })
    }

    /// Reads more bytes, making room for the frame at `start` first;
    /// false at the end of the stream.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let want = self.want.max(self.end - self.start + 1);
        if self.buf.len() - self.start < want || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .await
            .context("cannot read")?;
        self.end += n;
        Ok(n > 0)
    }

    /// Takes the frame at `start` if it is all there.
    fn parse(&mut self) -> anyhow::Result<Option<Step>> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            self.want = 2;
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        let rsv1 = b[0] & 0x40 != 0;
        let opcode = b[0] & 0x0f;
        if b[1] & 0x80 != 0 {
            bail!("the server sent a masked frame");
        }
        let (header, len) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (4, u64::from(u16::from_be_bytes([b[2], b[3]]))),
            127 if b.len() >= 10 => (10, u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"))),
            126 => {
                self.want = 4;
                return Ok(None);
            }
            127 => {
                self.want = 10;
                return Ok(None);
            }
            n => (2, u64::from(n)),
        };
        if len > MAX_MESSAGE as u64 {
            bail!("a frame of {len} bytes, more than this client takes");
        }
        let total = header + len as usize;
        if b.len() < total {
            self.want = total;
            return Ok(None);
        }
        self.want = 0;
        let payload = self.start + header..self.start + total;
        self.start += total;
        match opcode {
            OP_TEXT | OP_BINARY => {
                if self.fragmented.is_some() {
                    bail!("a new message before the last one's final fragment");
                }
                if !fin {
                    self.fragmented = Some((opcode, rsv1));
                    self.message.clear();
                    self.message.extend_from_slice(&self.buf[payload]);
                    return Ok(Some(Step::Nothing));
                }
                let at = if rsv1 {
                    inflate(&mut self.inflate, &self.buf[payload], &mut self.inflated)?;
                    At::Inflated
                } else {
                    At::Buf(payload)
                };
                Ok(Some(Step::Message(opcode == OP_TEXT, at)))
            }
            OP_CONTINUATION => {
                let Some((first, compressed)) = self.fragmented else {
                    bail!("a continuation frame outside a fragmented message");
                };
                if self.message.len() + payload.len() > MAX_MESSAGE {
                    bail!("a fragmented message longer than this client takes");
                }
                self.message.extend_from_slice(&self.buf[payload]);
                if !fin {
                    return Ok(Some(Step::Nothing));
                }
                self.fragmented = None;
                let at = if compressed {
                    inflate(&mut self.inflate, &self.message, &mut self.inflated)?;
                    At::Inflated
                } else {
                    At::Message
                };
                Ok(Some(Step::Message(first == OP_TEXT, at)))
            }
            OP_PING | OP_PONG | OP_CLOSE if !fin || len > 125 => {
                bail!("a fragmented or overlong control frame")
            }
            OP_PING => Ok(Some(Step::Ping(payload))),
            OP_PONG => Ok(Some(Step::Nothing)),
            OP_CLOSE => {
                let p = &self.buf[payload];
                Ok(Some(Step::Closed((p.len() >= 2).then(|| {
                    (
                        u16::from_be_bytes([p[0], p[1]]),
                        String::from_utf8_lossy(&p[2..]).into_owned(),
                    )
                }))))
            }
            other => bail!("a frame with the unknown opcode {other:#x}"),
        }
    }
}

/// Inflates one message compressed on its own into `out` (cleared first),
/// with `d` reset.
fn inflate(d: &mut Decompress, payload: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
    d.reset(false);
    out.clear();
    for (input, flush) in [
        (payload, FlushDecompress::None),
        (&TAIL[..], FlushDecompress::Sync),
    ] {
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 256 {
                if out.len() >= MAX_MESSAGE {
                    bail!("a compressed message inflates past {MAX_MESSAGE} bytes");
                }
                out.reserve(out.capacity().max(1024));
            }
            let (before_in, before_out) = (d.total_in(), d.total_out());
            d.decompress_vec(&input[consumed..], out, flush)
                .context("a compressed message that is not deflate data")?;
            consumed += (d.total_in() - before_in) as usize;
            // Done with this input once all of it is in and the output did
            // not fill up (nothing held back for lack of room).
            if consumed == input.len() && out.capacity() > out.len() {
                break;
            }
            if d.total_in() == before_in && d.total_out() == before_out && out.capacity() > out.len() {
                bail!("a compressed message that does not inflate");
            }
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// As the server compresses: one message on its own, the sync flush's
    /// four bytes cut off.
    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::new(1), false);
        let mut out = Vec::with_capacity(data.len() + 1024);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn messages_inflate_one_after_another_with_one_decompressor() {
        let mut d = Decompress::new(false);
        let mut out = Vec::new();
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for message in [&b"{\"push\":{}}"[..], &big, b"", b"{}"] {
            inflate(&mut d, &deflate(message), &mut out).unwrap();
            assert_eq!(out, message);
        }
        assert!(inflate(&mut d, &[0xff, 0xff, 0xff], &mut out).is_err());
    }

    /// One unmasked server frame.
    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(n as u8),
            n @ 126..=0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Reads one masked client frame: opcode and unmasked payload.
    async fn client_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.unwrap();
        assert_eq!(h[0] & 0xf0, 0x80, "FIN, no reserved bit");
        assert_ne!(h[1] & 0x80, 0, "client frames are masked");
        let len = match h[1] & 0x7f {
            126 => usize::from(s.read_u16().await.unwrap()),
            127 => s.read_u64().await.unwrap() as usize,
            n => usize::from(n),
        };
        let mut mask = [0u8; 4];
        s.read_exact(&mut mask).await.unwrap();
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        (h[0] & 0x0f, payload)
    }

    /// A server that upgrades with `extensions`, then writes `frames` in
    /// small pieces and hands back what the client sent.
    async fn server(
        extensions: &'static str,
        frames: Vec<u8>,
    ) -> (TcpStream, tokio::task::JoinHandle<Vec<(u8, Vec<u8>)>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(s.read_u8().await.unwrap());
            }
            let head = String::from_utf8(head).unwrap();
            assert!(
                head.starts_with("GET /connection/websocket?format=protobuf HTTP/1.1\r\n"),
                "{head}"
            );
            assert!(
                head.contains(&format!("Sec-WebSocket-Extensions: {OFFER}\r\n")),
                "{head}"
            );
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n{extensions}\r\n",
                derive_accept_key(key.as_bytes())
            );
            let mut out = answer.into_bytes();
            out.extend_from_slice(&frames);
            // Odd-sized pieces: headers and payloads split anywhere.
            for piece in out.chunks(7) {
                s.write_all(piece).await.unwrap();
                s.flush().await.unwrap();
            }
            let mut seen = Vec::new();
            loop {
                let f = client_frame(&mut s).await;
                let close = f.0 == OP_CLOSE;
                seen.push(f);
                if close {
                    return seen;
                }
            }
        });
        (TcpStream::connect(addr).await.unwrap(), task)
    }

    #[tokio::test]
    async fn frames_of_every_kind_are_read() {
        let json = br#"{"push":{"channel":"c","pub":{"data":{"t":1}}}}"#;
        let long: Vec<u8> = b"x".repeat(70_000);
        let medium: Vec<u8> = b"y".repeat(300);
        let compressed = deflate(&long);
        let (first, rest) = compressed.split_at(compressed.len() / 2);
        let mut frames = Vec::new();
        frames.extend(frame(true, false, OP_TEXT, json));
        frames.extend(frame(true, true, OP_TEXT, &deflate(json)));
        frames.extend(frame(true, false, OP_PING, b"hi"));
        frames.extend(frame(true, false, OP_BINARY, &medium));
        frames.extend(frame(true, false, OP_BINARY, &long));
        frames.extend(frame(false, true, OP_BINARY, first));
        frames.extend(frame(true, false, OP_PONG, b""));
        frames.extend(frame(true, false, OP_CONTINUATION, rest));
        frames.extend(frame(false, false, OP_TEXT, b"ab"));
        frames.extend(frame(true, false, OP_CONTINUATION, b"c"));
        frames.extend(frame(true, false, OP_CLOSE, b"\x0b\xc0bye"));
        let (stream, task) = server(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n",
            frames,
        )
        .await;
        let mut ws = DeflateWs::new(stream);
        ws.handshake("h", "/connection/websocket?format=protobuf")
            .await
            .unwrap();
        let json = std::str::from_utf8(json).unwrap();
        assert!(matches!(ws.next().await.unwrap(), Event::Text(t) if t == json));
        assert!(matches!(ws.next().await.unwrap(), Event::Text(t) if t == json));
        assert!(matches!(ws.next().await.unwrap(), Event::Binary(b) if b == medium));
        assert!(matches!(ws.next().await.unwrap(), Event::Binary(b) if b == long));
        assert!(matches!(ws.next().await.unwrap(), Event::Binary(b) if b == long));
        assert!(matches!(ws.next().await.unwrap(), Event::Text("abc")));
        ws.pong(false).await.unwrap();
        ws.pong(true).await.unwrap();
        match ws.next().await.unwrap() {
            Event::Closed(Some((3008, reason))) => assert_eq!(reason, "bye"),
            _ => panic!("a close frame with its code"),
        }
        ws.close().await.unwrap();
        assert_eq!(
            task.await.unwrap(),
            [
                (OP_PONG, b"hi".to_vec()),
                (OP_BINARY, vec![0]),
                (OP_TEXT, b"{}".to_vec()),
                (OP_CLOSE, vec![0x03, 0xe8]),
            ]
        );
    }

    #[tokio::test]
    async fn a_server_that_does_not_compress_is_named() {
        let (stream, task) = server("", Vec::new()).await;
        let mut ws = DeflateWs::new(stream);
        let e = ws
            .handshake("h", "/connection/websocket?format=protobuf")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("websocket.compression = true"), "{e}");
        task.abort();
    }
}
