//! The bad-input catalogue (docs/reliability.md lists the same rows): each
//! hostile input across the WebSocket handshake and frames, the JSON
//! protocol, the server API, the uni transports, the TCP listeners and
//! JWTs, with the answer it must get. After every row a healthy client on
//! the same node still receives a fresh publication, and at the end the
//! node holds no client or channel the inputs left behind.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

/// The answer an input must get.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// An HTTP status (the request is not upgraded).
    Status(u16),
    /// A WebSocket close frame with this code.
    Close(u16),
    /// An error reply with this protocol code; the connection stays.
    Error(u64),
    /// A subscribe reply that says the position could not be recovered.
    NotRecovered,
    /// A batch whose reply for its one command is this error code.
    BatchError(u64),
    /// A uni stream that starts with a disconnect push of this code.
    UniDisconnect(u64),
    /// A TCP listener that writes this and closes.
    TcpClosed(String),
    /// A TCP frame that never reaches the listener's clients.
    TcpNotDelivered,
}

/// One hostile input.
enum Input {
    /// Raw bytes on a fresh HTTP connection.
    Http(String),
    /// A WebSocket upgrade (valid unless `handshake` says otherwise), then,
    /// after a connect with a valid token when `connected`, these raw
    /// client frames.
    WsFrames { connected: bool, frames: Vec<u8> },
    /// Text frames after (or instead of, when not `connected`) a connect.
    WsText { connected: bool, text: String },
    /// `POST /api/<method>` with this key (None: no header) and body.
    Api {
        method: &'static str,
        key: Option<&'static str>,
        body: String,
    },
    /// `POST` of a connect request to a uni endpoint.
    Uni { path: &'static str, body: String },
    /// This text as the first message on `/connection/uni_websocket`.
    UniWebSocket(&'static str),
    /// A binary frame after a protobuf connect (`?format=protobuf`).
    Protobuf(Vec<u8>),
    /// A frame after connect on a socket that agreed on permessage-deflate.
    Deflated(Vec<u8>),
    /// Bytes to the token-checking TCP listener.
    TcpToken(Vec<u8>),
    /// A publication through the API to the TCP listeners' channel.
    TcpPublish(Value),
}

const CONFIG: &str = r#"
[uni_sse]
enabled = true
[uni_http_stream]
enabled = true
[uni_websocket]
enabled = true
[websocket]
compression = true
[client]
allowed_origins = ["http://good.example"]
channel_limit = 8
[[tcp]]
listen = "127.0.0.1:0"
framing = "delimited"
start = "<"
end = ">"
token = true
max_frame_size = 2048
[[tcp]]
listen = "127.0.0.1:0"
framing = "delimited"
start = "<"
end = ">"
channels = ["conbus"]
"#;

fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    masked(0x8, true, &p)
}

fn nested(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

fn upgrade(path: &str, key: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{extra}\r\n"
    )
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// `text` as one compressed (RSV1) masked text frame.
fn compressed(text: &str) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::new(9), false);
    let mut out = Vec::with_capacity(text.len() / 100 + 1024);
    c.compress_vec(text.as_bytes(), &mut out, FlushCompress::Sync)
        .expect("deflate");
    out.truncate(out.len() - 4);
    let mut f = masked(0x1, true, &out);
    f[0] |= 0x40;
    f
}

fn signed(claims: Value, secret: &str) -> String {
    let claims = claims.as_object().expect("claims object").clone();
    crier_server::auth::sign_hs256(secret, &claims)
}

fn catalogue() -> Vec<(&'static str, Input, Answer)> {
    use Answer::*;
    use Input::*;
    let exp = unix_now() + 3600;
    let ws_text = |connected, text: &str| WsText {
        connected,
        text: text.to_string(),
    };
    let frames = |connected, frames: Vec<u8>| WsFrames { connected, frames };
    let api = |method, body: &str| Api {
        method,
        key: Some(API_KEY),
        body: body.to_string(),
    };
    let uni = |path, body: &str| Uni {
        path,
        body: body.to_string(),
    };
    let connect_with = |token: String| format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#);
    vec![
        // WebSocket handshake
        ("upgrade without Upgrade headers", Http("GET /connection/websocket HTTP/1.1\r\nHost: x\r\n\r\n".into()), Status(400)),
        ("upgrade with version 8", Http(upgrade("/connection/websocket", KEY, "").replace("Version: 13", "Version: 8")), Status(426)),
        ("upgrade without a key", Http(upgrade("/connection/websocket", KEY, "").replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "")), Status(400)),
        ("upgrade with key !!!", Http(upgrade("/connection/websocket", "!!!", "")), Status(400)),
        ("upgrade with a 15-byte key", Http(upgrade("/connection/websocket", "dGhlIHNhbXBsZSBub25jZQ", "")), Status(400)),
        ("upgrade from a foreign origin", Http(upgrade("/connection/websocket", KEY, "Origin: http://evil.example\r\n")), Status(403)),
        ("POST to the WebSocket endpoint", Http("POST /connection/websocket HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into()), Status(405)),
        ("40 KiB of headers", Http(format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Fill: {}\r\n\r\n", "a".repeat(40 * 1024))), Status(431)),
        ("a request line that is not HTTP", Http("HELLO\r\n\r\n".into()), Status(400)),
        ("an unknown path", Http("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n".into()), Status(404)),
        // WebSocket frames
        ("an unmasked frame", frames(false, vec![0x81, 0x02, b'{', b'}']), Close(1002)),
        ("opcode 3", frames(false, masked(0x3, true, b"x")), Close(1002)),
        ("a fragmented ping", frames(false, masked(0x9, false, b"")), Close(1002)),
        ("a ping of 126 bytes", frames(false, [vec![0x89, 0x80 | 126, 0, 126, 0, 0, 0, 0], vec![0; 126]].concat()), Close(1002)),
        ("a continuation with nothing before it", frames(false, masked(0x0, true, b"x")), Close(1002)),
        ("a message inside a fragmented one", frames(false, [masked(0x1, false, b"a"), masked(0x1, true, b"b")].concat()), Close(1002)),
        ("reserved bits set", frames(false, { let mut f = masked(0x1, true, b"{}"); f[0] |= 0x40; f }), Close(1002)),
        ("close code 999", frames(true, close(999, b"")), Close(1002)),
        ("close code 1005", frames(true, close(1005, b"")), Close(1002)),
        ("close code 5000", frames(true, close(5000, b"")), Close(1002)),
        ("a one-byte close body", frames(true, masked(0x8, true, &[3])), Close(1002)),
        ("a close reason that is not UTF-8", frames(true, close(1000, &[0xFF, 0xFE])), Close(1002)),
        ("a message over 64 KiB", frames(true, masked(0x1, true, &vec![b' '; 70_000])), Close(3501)),
        ("a frame announcing 2^63 bytes", frames(true, [vec![0x81, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], vec![0; 4]].concat()), Close(3501)),
        ("a normal close 1000", frames(true, close(1000, b"bye")), Close(1000)),
        // Protobuf and compression
        ("a protobuf frame with a truncated varint", Protobuf(vec![0x80]), Close(3501)),
        ("a protobuf length beyond the frame", Protobuf(vec![0x05, 0x08, 0x01]), Close(3501)),
        ("a 10 MB protobuf length prefix", Protobuf(vec![0x80, 0xad, 0xe2, 0x04, 0x08, 0x01]), Close(3501)),
        ("a protobuf field of the wrong wire type", Protobuf(vec![0x03, 0x0a, 0x01, 0x41]), Close(3501)),
        ("a protobuf channel that is not UTF-8", Protobuf(vec![0x06, 0x2a, 0x04, 0x0a, 0x02, 0xff, 0xfe]), Close(3501)),
        ("a compressed message inflating past 64 KiB", Deflated(compressed(&format!(r#"{{"id":2,"ping":{{}}{}}}"#, " ".repeat(1 << 20)))), Close(3501)),
        ("a compressed message that is not deflate", Deflated({ let mut f = masked(0x1, true, &[0xff, 0xff, 0xff]); f[0] |= 0x40; f }), Close(1002)),
        // JSON protocol
        ("text that is not JSON", ws_text(false, "hello"), Close(3501)),
        ("a JSON array", ws_text(false, "[]"), Close(3501)),
        ("subscribe before connect", ws_text(false, r#"{"id":1,"subscribe":{"channel":"news"}}"#), Close(3501)),
        ("connect with an id over u32", ws_text(false, r#"{"id":4294967296,"connect":{}}"#), Close(3501)),
        ("connect without a token", ws_text(false, r#"{"id":1,"connect":{}}"#), Close(3500)),
        ("connect nested 20,000 deep", ws_text(false, &format!(r#"{{"id":1,"connect":{{"data":{}}}}}"#, nested(20_000))), Close(3501)),
        ("a second connect", ws_text(true, r#"{"id":9,"connect":{}}"#), Close(3501)),
        ("a command with an id and no method", ws_text(true, r#"{"id":9}"#), Close(3501)),
        ("publish data nested 20,000 deep", ws_text(true, &format!(r#"{{"id":9,"publish":{{"channel":"chat:1","data":{}}}}}"#, nested(20_000))), Close(3501)),
        ("1,025 commands in one frame", ws_text(true, &vec![r#"{"id":9,"ping":{}}"#; 1025].join("\n")), Close(3501)),
        ("subscribe to an empty channel", ws_text(true, r#"{"id":9,"subscribe":{"channel":""}}"#), Error(107)),
        ("subscribe to a 300-byte channel", ws_text(true, &format!(r#"{{"id":9,"subscribe":{{"channel":"{}"}}}}"#, "c".repeat(300))), Error(107)),
        ("subscribe to an unknown namespace", ws_text(true, r#"{"id":9,"subscribe":{"channel":"nope:1"}}"#), Error(102)),
        ("subscribe to a closed namespace", ws_text(true, r#"{"id":9,"subscribe":{"channel":"closed:1"}}"#), Error(103)),
        ("publish to a closed namespace", ws_text(true, r#"{"id":9,"publish":{"channel":"closed:1","data":{}}}"#), Error(103)),
        ("presence where it is off", ws_text(true, r#"{"id":9,"presence":{"channel":"news"}}"#), Error(108)),
        ("an rpc with no handler", ws_text(true, r#"{"id":9,"rpc":{"method":"x"}}"#), Error(104)),
        ("recovery from a bogus epoch", ws_text(true, r#"{"id":9,"subscribe":{"channel":"chat:r","recover":true,"offset":5,"epoch":"bogus"}}"#), NotRecovered),
        // JWTs
        ("a token signed with another key", ws_text(false, &connect_with(signed(json!({"sub": "u", "exp": exp}), "not-the-secret-key-at-all-000000"))), Close(3500)),
        ("a token with alg none", ws_text(false, &connect_with(format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", base64url(&json!({"sub": "u", "exp": exp}))))), Close(3500)),
        ("a token of two parts", ws_text(false, &connect_with("eyJhbGciOiJIUzI1NiJ9.e30".into())), Close(3500)),
        ("an expired token", ws_text(false, &connect_with(signed(json!({"sub": "u", "exp": unix_now() - 60}), SECRET))), Error(109)),
        ("a token not valid before next hour", ws_text(false, &connect_with(signed(json!({"sub": "u", "exp": exp, "nbf": exp - 60}), SECRET))), Error(109)),
        ("a token whose exp is a string", ws_text(false, &connect_with(signed(json!({"sub": "u", "exp": "soon"}), SECRET))), Close(3500)),
        ("a subscription token for another user", ws_text(true, &format!(r#"{{"id":9,"subscribe":{{"channel":"$chat:p","token":"{}"}}}}"#, signed(json!({"sub": "someone-else", "channel": "$chat:p", "exp": exp}), SECRET))), Close(3500)),
        // Server API
        ("API without a key", Api { method: "info", key: None, body: "{}".into() }, Status(401)),
        ("API with a wrong key", Api { method: "info", key: Some("wrong"), body: "{}".into() }, Status(401)),
        ("API body that is not JSON", api("publish", "{"), Status(400)),
        ("API body that is an array", api("publish", "[]"), Status(400)),
        ("API field of the wrong type", api("publish", r#"{"channel":5,"data":1}"#), Status(400)),
        ("API data nested 20,000 deep", api("publish", &format!(r#"{{"channel":"news","data":{}}}"#, nested(20_000))), Status(400)),
        ("API body announced as 3 MiB", Http(format!("POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: {}\r\n\r\n", 3 << 20)), Status(413)),
        ("API unknown method", api("teleport", "{}"), Error(104)),
        ("API publish without a channel", api("publish", r#"{"data":1}"#), Error(107)),
        ("API disconnect naming nobody", api("disconnect", "{}"), Error(107)),
        ("API subscribe with a bad client id", api("subscribe", r#"{"channel":"news","client":"x"}"#), Error(107)),
        ("API history of an unknown namespace", api("history", r#"{"channel":"nope:1"}"#), Error(102)),
        ("API batch inside a batch", api("batch", r#"{"commands":[{"batch":{"commands":[]}}]}"#), BatchError(104)),
        // Uni transports
        ("uni_http_stream body that is not JSON", uni("/connection/uni_http_stream", "nope"), Status(400)),
        ("uni_http_stream nested 20,000 deep", uni("/connection/uni_http_stream", &format!(r#"{{"data":{}}}"#, nested(20_000))), Status(400)),
        ("uni_http_stream over channel_limit", uni("/connection/uni_http_stream", &json!({"token": token("uni"), "subs": (0..50).map(|i| (format!("c{i}"), json!({}))).collect::<serde_json::Map<_, _>>()}).to_string()), UniDisconnect(3505)),
        ("uni_sse with a bad token", uni("/connection/uni_sse", r#"{"token":"bad"}"#), UniDisconnect(3500)),
        ("uni_websocket first message not JSON", UniWebSocket("nope"), Close(3501)),
        ("uni_websocket first message nested 20,000 deep", UniWebSocket(Box::leak(format!(r#"{{"data":{}}}"#, nested(20_000)).into_boxed_str())), Close(3501)),
        // TCP listeners
        ("TCP token frame that is not a JWT", TcpToken(b"<nonsense>".to_vec()), TcpClosed("<error: invalid token>".into())),
        ("TCP frame over max_frame_size", TcpToken([b"<".to_vec(), vec![b'x'; 4096]].concat()), TcpClosed("<error: frame longer than max_frame_size>".into())),
        ("TCP frame that is not UTF-8", TcpToken(vec![b'<', 0xFF, 0xFE, b'>']), TcpClosed("<error: frame is not valid UTF-8>".into())),
        ("TCP blank token, anonymous not allowed", TcpToken(b"< >".to_vec()), TcpClosed("<error: invalid token>".into())),
        ("data that would split a telegram", TcpPublish(json!("X><FAKE")), TcpNotDelivered),
        ("data with a start marker", TcpPublish(json!("<inject")), TcpNotDelivered),
    ]
}

fn base64url(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Reads one HTTP response head (or what came before the close).
async fn http_status(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => head.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no HTTP answer in 5 s: {:?}", String::from_utf8_lossy(&head)),
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Reads server frames until a close; its code (0 if the socket ended).
async fn close_code(stream: &mut TcpStream, pending: &mut Vec<u8>) -> u16 {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Parse whole frames in `pending`.
        while pending.len() >= 2 {
            let len7 = (pending[1] & 0x7F) as usize;
            let (ext, len) = match len7 {
                126 if pending.len() >= 4 => (2, u16::from_be_bytes([pending[2], pending[3]]) as usize),
                127 if pending.len() >= 10 => {
                    (8, u64::from_be_bytes(pending[2..10].try_into().unwrap()) as usize)
                }
                126 | 127 => break,
                n => (0, n),
            };
            if pending.len() < 2 + ext + len {
                break;
            }
            let opcode = pending[0] & 0x0F;
            let payload: Vec<u8> = pending[2 + ext..2 + ext + len].to_vec();
            pending.drain(..2 + ext + len);
            if opcode == 0x8 {
                return if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                };
            }
        }
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return 0,
            Ok(Ok(n)) => pending.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no close in 5 s"),
        }
    }
}

/// Opens a raw WebSocket; with `connected`, connects with a valid token
/// and reads the reply. Returns the stream and bytes read past the head.
async fn raw_ws(addr: SocketAddr, connected: bool) -> (TcpStream, Vec<u8>) {
    let connect = connected.then(|| {
        let text = format!(r#"{{"id":1,"connect":{{"token":"{}"}}}}"#, token("raw"));
        masked(0x1, true, text.as_bytes())
    });
    raw_ws_at(addr, "/connection/websocket", "", connect).await
}

/// Opens a raw WebSocket at `path` (with `extra` headers); sends `connect`
/// (a whole frame) if given and reads the one-frame reply.
async fn raw_ws_at(
    addr: SocketAddr,
    path: &str,
    extra: &str,
    connect: Option<Vec<u8>>,
) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(upgrade(path, KEY, extra).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let body_at = loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("101 in 5 s")
            .unwrap();
        assert!(n > 0, "closed during the handshake");
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut pending = head.split_off(body_at);
    if let Some(connect) = connect {
        stream.write_all(&connect).await.unwrap();
        // The connect reply is one text frame.
        while pending.len() < 2 || pending.len() < 2 + (pending[1] & 0x7F) as usize {
            let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
                .await
                .expect("reply")
                .unwrap();
            assert!(n > 0, "closed before the connect reply");
            pending.extend_from_slice(&buf[..n]);
        }
        // JSON, compressed or protobuf: the reply names the client either way
        // only in plain JSON, so check the frame is not a close.
        assert_ne!(pending[0] & 0x0F, 0x8, "connected");
        pending.clear();
    }
    (stream, pending)
}

async fn answer_of(s: &TestServer, tcp: &[SocketAddr], watcher_conbus: &mut Peer, input: Input) -> Answer {
    match input {
        Input::Http(raw) => {
            let mut stream = TcpStream::connect(s.addr).await.unwrap();
            stream.write_all(raw.as_bytes()).await.unwrap();
            Answer::Status(http_status(&mut stream).await)
        }
        Input::UniWebSocket(text) => {
            let mut stream = TcpStream::connect(s.addr).await.unwrap();
            stream
                .write_all(upgrade("/connection/uni_websocket", KEY, "").as_bytes())
                .await
                .unwrap();
            assert_eq!(http_status(&mut stream).await, 101);
            stream
                .write_all(&masked(0x1, true, text.as_bytes()))
                .await
                .unwrap();
            Answer::Close(close_code(&mut stream, &mut Vec::new()).await)
        }
        Input::Protobuf(frame) => {
            let mut connect = bytes::BytesMut::new();
            crier_proto::protobuf::command_frame(
                &mut connect,
                &crier_proto::client::Command {
                    id: 1,
                    connect: Some(crier_proto::client::ConnectRequest {
                        token: token("raw-protobuf"),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
            let path = "/connection/websocket?format=protobuf";
            let (mut stream, mut pending) =
                raw_ws_at(s.addr, path, "", Some(masked(0x2, true, &connect))).await;
            stream.write_all(&masked(0x2, true, &frame)).await.unwrap();
            Answer::Close(close_code(&mut stream, &mut pending).await)
        }
        Input::Deflated(frame) => {
            let connect = format!(r#"{{"id":1,"connect":{{"token":"{}"}}}}"#, token("raw-deflate"));
            let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
            let connect = Some(masked(0x1, true, connect.as_bytes()));
            let (mut stream, mut pending) = raw_ws_at(s.addr, "/connection/websocket", offer, connect).await;
            stream.write_all(&frame).await.unwrap();
            Answer::Close(close_code(&mut stream, &mut pending).await)
        }
        Input::WsFrames { connected, frames } => {
            let (mut stream, mut pending) = raw_ws(s.addr, connected).await;
            stream.write_all(&frames).await.unwrap();
            Answer::Close(close_code(&mut stream, &mut pending).await)
        }
        Input::WsText { connected, text } => {
            let mut c = if connected {
                Client::connect(&s.ws_url(), &token("prober")).await
            } else {
                Client::open(&s.ws_url()).await
            };
            c.send_text(&text).await;
            // Replies to commands before the hostile one (pings) are skipped.
            loop {
                match c.next_raw().await {
                    Ok(v) if v.get("error").is_some() => {
                        break Answer::Error(v["error"]["code"].as_u64().unwrap_or(0))
                    }
                    Ok(v) if v["subscribe"].is_object() && v["subscribe"]["recovered"] != json!(true) => {
                        break Answer::NotRecovered
                    }
                    Ok(v) if v.get("ping").is_some() => {}
                    Ok(v) => panic!("{text:.80}: answered {v}"),
                    Err(closed) => break Answer::Close(closed.code),
                }
            }
        }
        Input::Api { method, key, body } => {
            let header = key.map(|k| ("X-API-Key", k.to_string()));
            let (status, reply) = s.api_with(method, body, header).await;
            match reply.get("error") {
                Some(e) if status == 200 => Answer::Error(e["code"].as_u64().unwrap_or(0)),
                _ if status == 200 && method == "batch" => {
                    Answer::BatchError(reply["replies"][0]["error"]["code"].as_u64().unwrap_or(0))
                }
                _ => Answer::Status(status),
            }
        }
        Input::Uni { path, body } => {
            let mut stream = TcpStream::connect(s.addr).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut all = Vec::new();
            let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut all))
                .await
                .expect("uni answer ends in 5 s");
            let text = String::from_utf8_lossy(&all);
            let status: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            match text.find("\"disconnect\"") {
                Some(_) if status == 200 => {
                    let at = text.find("\"code\":").expect("a code") + 7;
                    let code: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
                    Answer::UniDisconnect(code.parse().unwrap())
                }
                _ => Answer::Status(status),
            }
        }
        Input::TcpToken(bytes) => {
            let mut peer = Peer::connect(tcp[0]).await;
            peer.send(&bytes).await;
            Answer::TcpClosed(String::from_utf8_lossy(&peer.closed().await).into_owned())
        }
        Input::TcpPublish(data) => {
            let (status, _) = s.api("publish", json!({"channel": "conbus", "data": data})).await;
            assert_eq!(status, 200);
            // The next, clean publication is the next thing the device sees.
            let (status, _) = s
                .api("publish", json!({"channel": "conbus", "data": "clean"}))
                .await;
            assert_eq!(status, 200);
            watcher_conbus.expect(b"<clean>").await;
            Answer::TcpNotDelivered
        }
    }
}

#[tokio::test]
async fn every_hostile_input_gets_its_documented_answer_and_the_node_keeps_serving() {
    let (s, tcp) = TestServer::start_with_tcp(config(CONFIG)).await;
    let mut w = watcher(&s).await;
    let mut device = peers(&s, tcp[1], "conbus", 1).await.remove(0);
    let clients = s.node.hub.client_count();
    let rows = catalogue();
    assert!(rows.len() >= 60, "the catalogue has {} rows", rows.len());
    for (name, input, want) in rows {
        let got = answer_of(&s, &tcp, &mut device, input).await;
        assert_eq!(got, want, "{name}");
        assert_still_served(&s, &mut w).await;
    }
    // Nothing the inputs opened stays registered.
    eventually_within("every prober is gone", Duration::from_secs(5), || async {
        s.node.hub.client_count() == clients
    })
    .await;
    assert!(
        s.node
            .hub
            .channels()
            .iter()
            .all(|(name, _)| ["news", "conbus"].contains(&&**name)),
        "{:?}",
        s.node.hub.channels()
    );
    s.shutdown().await;
}
