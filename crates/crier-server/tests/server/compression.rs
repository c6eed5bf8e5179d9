//! permessage-deflate (RFC 7692, `websocket.compression`) from a client
//! that handles frames byte by byte, so the reserved bit and the
//! compressed bytes themselves are visible: what is negotiated, that
//! pushes and replies arrive compressed and inflate to the protocol's
//! messages, that compressed commands are understood, and what a
//! compressed message that inflates past the size limit, or is not
//! deflate data at all, gets.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

pub(super) const OFFER: &str = "permessage-deflate; client_max_window_bits";

pub(super) fn compressing(min_size: usize) -> crier_server::config::Config {
    let mut c = config("");
    c.websocket.compression = true;
    c.websocket.compression_min_size = min_size;
    c
}

/// One server frame: RSV1 (compressed), opcode, payload as sent.
struct Frame {
    compressed: bool,
    opcode: u8,
    payload: Vec<u8>,
}

pub(super) struct RawWs {
    stream: TcpStream,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    pub(super) extensions: Option<String>,
}

impl RawWs {
    pub(super) async fn open(s: &TestServer, offer: Option<&str>) -> Self {
        Self::open_at(s, "/connection/websocket", offer).await
    }

    pub(super) async fn open_at(s: &TestServer, path: &str, offer: Option<&str>) -> Self {
        let mut stream = TcpStream::connect(s.addr).await.expect("connect");
        let offer = offer.map_or(String::new(), |o| format!("Sec-WebSocket-Extensions: {o}\r\n"));
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
            s.addr
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send handshake");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await.expect("handshake answer");
            head.push(b[0]);
        }
        let head = String::from_utf8(head).expect("ASCII head");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        Self { stream, extensions }
    }

    /// Sends one masked frame; `rsv1` marks it compressed.
    pub(super) async fn send(&mut self, rsv1: bool, opcode: u8, payload: &[u8]) {
        let mut f = masked(opcode, true, payload);
        if rsv1 {
            f[0] |= 0x40;
        }
        self.stream.write_all(&f).await.expect("send frame");
    }

    pub(super) async fn send_json(&mut self, v: Value) {
        self.send(false, 1, v.to_string().as_bytes()).await;
    }

    async fn frame(&mut self) -> Frame {
        tokio::time::timeout(WAIT, async {
            let mut h = [0u8; 2];
            self.stream.read_exact(&mut h).await.expect("frame header");
            let len = match h[1] & 0x7f {
                126 => u64::from(self.stream.read_u16().await.expect("len")),
                127 => self.stream.read_u64().await.expect("len"),
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).await.expect("payload");
            Frame {
                compressed: h[0] & 0x40 != 0,
                opcode: h[0] & 0x0f,
                payload,
            }
        })
        .await
        .expect("a frame within 5 s")
    }

    /// The next text message as JSON lines (pings answered, inflated when
    /// compressed), with whether it came compressed.
    pub(super) async fn messages(&mut self) -> (Vec<Value>, bool) {
        loop {
            let f = self.frame().await;
            assert_eq!(f.opcode, 1, "a text frame, not opcode {}", f.opcode);
            let text = if f.compressed {
                inflate(&f.payload)
            } else {
                f.payload
            };
            let lines: Vec<Value> = std::str::from_utf8(&text)
                .expect("UTF-8")
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON line"))
                .filter(|v: &Value| *v != json!({}))
                .collect();
            if !lines.is_empty() {
                return (lines, f.compressed);
            }
        }
    }

    /// The close code the server ends with (frames before it skipped).
    pub(super) async fn close_code(&mut self) -> u16 {
        loop {
            let f = self.frame().await;
            if f.opcode == 8 {
                return u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        }
    }
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("valid deflate");
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("deflate");
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

#[tokio::test]
async fn compression_is_agreed_only_when_enabled_and_offered() {
    let on = TestServer::start(compressing(0)).await;
    let c = RawWs::open(&on, Some(OFFER)).await;
    assert_eq!(
        c.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    assert_eq!(RawWs::open(&on, None).await.extensions, None, "not offered");
    let small_window = RawWs::open(&on, Some("permessage-deflate; server_max_window_bits=10")).await;
    assert_eq!(
        small_window.extensions, None,
        "an offer crier cannot honour is declined"
    );
    on.shutdown().await;
    let off = TestServer::start(config("")).await;
    assert_eq!(
        RawWs::open(&off, Some(OFFER)).await.extensions,
        None,
        "compression off"
    );
    off.shutdown().await;
}

#[tokio::test]
async fn replies_and_publications_arrive_compressed_and_compressed_commands_are_read() {
    let s = TestServer::start(compressing(64)).await;
    let mut c = RawWs::open(&s, Some(OFFER)).await;
    // A compressed command (RSV1): the connect.
    let connect = json!({"id": 1, "connect": {"token": token("deflate-user")}}).to_string();
    c.send(true, 1, &deflate(connect.as_bytes())).await;
    let (reply, compressed) = c.messages().await;
    assert!(reply[0]["connect"]["client"].is_string(), "{reply:?}");
    assert!(compressed, "a connect reply over 64 bytes goes out compressed");
    c.send_json(json!({"id": 2, "subscribe": {"channel": "news"}}))
        .await;
    let (reply, _) = c.messages().await;
    assert!(reply[0]["subscribe"].is_object(), "{reply:?}");
    let text = "a highly compressible sentence, again and again; ".repeat(40);
    let (status, body) = s
        .api("publish", json!({"channel": "news", "data": {"text": text}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let f = c.frame().await;
    assert!(f.compressed, "the publication is compressed");
    assert!(
        f.payload.len() < text.len() / 5,
        "{} bytes for {}",
        f.payload.len(),
        text.len()
    );
    let push: Value = serde_json::from_slice(&inflate(&f.payload)).expect("JSON");
    assert_eq!(push["push"]["pub"]["data"]["text"], json!(text));
    // Under the minimum size: sent as is.
    s.api("publish", json!({"channel": "news", "data": 1})).await;
    let (pushes, compressed) = c.messages().await;
    assert_eq!(pushes[0]["push"]["pub"]["data"], json!(1));
    assert!(!compressed, "a short publication is not compressed");
    s.shutdown().await;
}

#[tokio::test]
async fn a_compressed_message_inflating_past_the_limit_closes_with_3501_and_garbage_with_1002() {
    let s = TestServer::start(compressing(0)).await;
    let mut w = watcher(&s).await;
    // 10 MB of spaces inside a command compress to about 10 KB, under the
    // 64 KiB message size limit; inflated they are far over it.
    let bomb = format!(r#"{{"id":2,"ping":{{}}{}}}"#, " ".repeat(10 << 20));
    let compressed = deflate(bomb.as_bytes());
    assert!(compressed.len() < 65_536, "{} bytes", compressed.len());
    let mut c = RawWs::open(&s, Some(OFFER)).await;
    c.send_json(json!({"id": 1, "connect": {"token": token("bomb")}}))
        .await;
    c.messages().await;
    c.send(true, 1, &compressed).await;
    assert_eq!(c.close_code().await, 3501);
    assert_still_served(&s, &mut w).await;

    let mut c = RawWs::open(&s, Some(OFFER)).await;
    c.send_json(json!({"id": 1, "connect": {"token": token("garbage")}}))
        .await;
    c.messages().await;
    c.send(true, 1, &[0xff, 0xff, 0xff, 0xff]).await;
    assert_eq!(c.close_code().await, 1002);
    assert_still_served(&s, &mut w).await;

    // RSV1 without an agreement is a protocol error as before.
    let mut c = RawWs::open(&s, None).await;
    c.send(true, 1, &deflate(b"{}")).await;
    assert_eq!(c.close_code().await, 1002);
    s.shutdown().await;
}

#[tokio::test]
async fn uni_websocket_streams_come_compressed_too() {
    let mut cfg = compressing(0);
    cfg.uni_websocket.enabled = true;
    let s = TestServer::start(cfg).await;
    let mut c = RawWs::open_at(&s, "/connection/uni_websocket", Some(OFFER)).await;
    assert!(c.extensions.is_some(), "agreed on the uni endpoint");
    c.send_json(json!({"token": token("uni-deflate"), "subs": {"news": {}}}))
        .await;
    let (connect, compressed) = c.messages().await;
    assert!(connect[0]["connect"]["client"].is_string(), "{connect:?}");
    assert!(compressed);
    s.api("publish", json!({"channel": "news", "data": {"n": 1}}))
        .await;
    let (pushes, compressed) = c.messages().await;
    assert_eq!(pushes[0]["pub"]["data"], json!({"n": 1}), "{pushes:?}");
    assert!(compressed);
    s.shutdown().await;
}
