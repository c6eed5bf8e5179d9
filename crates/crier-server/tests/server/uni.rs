//! Unidirectional transports over real sockets: SSE (GET and POST), HTTP
//! streaming, uni WebSocket.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::support::*;

const UNI: &str =
    "[uni_sse]\nenabled = true\n[uni_http_stream]\nenabled = true\n[uni_websocket]\nenabled = true\n";

/// A streaming HTTP response read message by message.
pub(super) struct UniStream {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
    pub(super) status: u16,
}

impl UniStream {
    pub(super) async fn request(s: &TestServer, method: &str, path: &str, body: &str) -> Self {
        let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{body}",
            s.addr,
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.expect("write request");
        let mut lines = BufReader::new(tcp).lines();
        let status_line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("status")
            .expect("io")
            .unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Self { lines, status }
    }

    /// The next JSON message (SSE `data:` lines or NDJSON lines; chunk
    /// headers and blank lines are skipped); `None` when the body ends.
    pub(super) async fn next(&mut self) -> Option<Value> {
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .expect("server silent for 5 s");
            let line = line.ok()??;
            if line == "0" {
                return None; // the last chunk of a chunked body: the stream ended
            }
            let json = line.strip_prefix("data: ").unwrap_or(&line);
            if json.starts_with('{') {
                return Some(serde_json::from_str(json).expect("JSON message"));
            }
        }
    }

    /// The next message that is not a ping.
    pub(super) async fn push(&mut self) -> Value {
        loop {
            let v = self.next().await.expect("stream ended early");
            if v != json!({}) {
                return v;
            }
        }
    }
}

fn cf_connect(v: Value) -> String {
    let text = v.to_string();
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[tokio::test]
async fn sse_get_with_token_channels_receives_publications() {
    let s = TestServer::start(config(UNI)).await;
    let t = crier_server::auth::TokenBuilder::new()
        .user("viewer")
        .channels(["news"])
        .sign_hs256(SECRET);
    let path = format!(
        "/connection/uni_sse?cf_connect={}",
        cf_connect(json!({"token": t}))
    );
    let mut sse = UniStream::request(&s, "GET", &path, "").await;
    assert_eq!(sse.status, 200);
    let connect = sse.push().await;
    assert!(
        connect["connect"]["client"].is_string(),
        "connect push first: {connect}"
    );
    assert!(connect["connect"]["subs"]["news"].is_object(), "{connect}");
    s.api("publish", json!({"channel": "news", "data": {"x": 1}}))
        .await;
    let p = sse.push().await;
    assert_eq!(
        p,
        json!({"channel": "news", "pub": {"data": {"x": 1}, "offset": 1}})
    );
    s.shutdown().await;
}

#[tokio::test]
async fn sse_post_and_http_stream_subscribe_from_connect_subs_with_recovery() {
    let s = TestServer::start(config(UNI)).await;
    let (_, r) = s
        .api("publish", json!({"channel": "news", "data": "first"}))
        .await;
    let epoch = r["result"]["epoch"].as_str().unwrap().to_owned();
    s.api("publish", json!({"channel": "news", "data": "second"}))
        .await;
    for (path, name) in [
        ("/connection/uni_sse", "sse"),
        ("/connection/uni_http_stream", "http_stream"),
    ] {
        let body = json!({"token": token("reader"), "subs": {"news": {"recover": true, "offset": 1, "epoch": epoch}}});
        let mut st = UniStream::request(&s, "POST", path, &body.to_string()).await;
        assert_eq!(st.status, 200, "{name}");
        let connect = st.push().await;
        let sub = &connect["connect"]["subs"]["news"];
        assert_eq!(sub["recovered"], true, "{name}: {connect}");
        assert_eq!(
            sub["publications"][0]["data"], "second",
            "{name}: recovered exactly the missed one"
        );
        assert_eq!(sub["publications"].as_array().unwrap().len(), 1);
    }
    s.shutdown().await;
}

#[tokio::test]
async fn uni_refusals_and_disabled_transport() {
    let s = TestServer::start(config(UNI)).await;
    let path = format!(
        "/connection/uni_sse?cf_connect={}",
        cf_connect(json!({"token": "bad.token.here"}))
    );
    let mut sse = UniStream::request(&s, "GET", &path, "").await;
    let d = sse.push().await;
    assert_eq!(d["disconnect"]["code"], 3500, "{d}");
    assert!(
        sse.next().await.is_none(),
        "stream ends after the disconnect push"
    );
    // A token whose `expire_at` has passed: a uni client cannot refresh in
    // place, so it is told 3005 (reconnect with a fresh token).
    let lapsed = crier_server::auth::TokenBuilder::new()
        .user("late")
        .exp(unix_now() + 600)
        .expire_at(unix_now() - 5)
        .sign_hs256(SECRET);
    let body = json!({"token": lapsed});
    let mut late = UniStream::request(&s, "POST", "/connection/uni_http_stream", &body.to_string()).await;
    let d = late.push().await;
    assert_eq!(d["disconnect"]["code"], 3005, "{d}");
    let bad = UniStream::request(&s, "POST", "/connection/uni_http_stream", "{not json").await;
    assert_eq!(bad.status, 400);
    // Not allowed to subscribe to `closed:`: the connection works, without it.
    let body = json!({"token": token("x"), "subs": {"closed:1": {}}});
    let mut st = UniStream::request(&s, "POST", "/connection/uni_http_stream", &body.to_string()).await;
    let connect = st.push().await;
    assert!(connect["connect"]["subs"]["closed:1"].is_null(), "{connect}");
    s.shutdown().await;

    let s = TestServer::start(config("")).await;
    let off = UniStream::request(&s, "POST", "/connection/uni_http_stream", "{}").await;
    assert_eq!(off.status, 404, "uni transports are off by default");
    s.shutdown().await;
}

#[tokio::test]
async fn uni_stream_ends_with_disconnect_push_and_vanished_reader_is_forgotten() {
    let s = TestServer::start(config(UNI)).await;
    let body = json!({"token": token("gone"), "subs": {"news": {}}});
    let mut st = UniStream::request(&s, "POST", "/connection/uni_http_stream", &body.to_string()).await;
    st.push().await;
    s.api("disconnect", json!({"user": "gone"})).await;
    let d = st.push().await;
    assert_eq!(d["disconnect"]["code"], 3503, "{d}");
    assert!(st.next().await.is_none());

    let mut st = UniStream::request(&s, "POST", "/connection/uni_http_stream", &body.to_string()).await;
    st.push().await;
    assert_eq!(s.node.hub.client_count(), 1);
    drop(st);
    // The hub notices the closed stream at the next delivery attempt.
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.node.hub.client_count() > 0 {
        s.api("publish", json!({"channel": "news", "data": 1})).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "vanished reader still registered"
        );
        tokio::task::yield_now().await;
    }
    s.shutdown().await;
}

#[tokio::test]
async fn uni_websocket_connect_message_then_pushes() {
    let s = TestServer::start(config(UNI)).await;
    let url = format!("ws://{}/connection/uni_websocket", s.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("opens");
    let req = json!({"token": token("uw"), "subs": {"chat:1": {}}});
    ws.send(Message::text(req.to_string())).await.unwrap();
    let connect = next_push(&mut ws).await;
    assert!(connect["connect"]["subs"]["chat:1"].is_object(), "{connect}");
    s.api("publish", json!({"channel": "chat:1", "data": {"hi": true}}))
        .await;
    let p = next_push(&mut ws).await;
    assert_eq!(p["channel"], "chat:1");
    assert_eq!(p["pub"]["data"], json!({"hi": true}));
    s.node.shutdown.cancel();
    let d = next_push(&mut ws).await;
    assert_eq!(d["disconnect"]["code"], 3001, "{d}");
    s.shutdown().await;
}

async fn next_push<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("silent")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v != json!({}) {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn an_sse_reader_that_stops_reading_is_dropped_after_the_write_timeout() {
    // A queue too large to overflow here, so only http_server.write_timeout
    // can free the stuck stream.
    let s = TestServer::start(config(&format!(
        "{UNI}[http_server]\nwrite_timeout = \"300ms\"\n[client]\nqueue_max_size = 268435456\n[crier]\nclient_queue_max_messages = 0\n"
    )))
    .await;
    let mut w = watcher(&s).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(s.addr).await.unwrap();
    let path = format!(
        "/connection/uni_sse?cf_connect={}",
        cf_connect(json!({"token": token("stuck"), "subs": {"stuck": {}}}))
    );
    let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr);
    stuck.write_all(head.as_bytes()).await.unwrap();
    // Read until the connect push arrives (it is subscribed), then stop.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"connect\"") {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut stuck, &mut buf))
            .await
            .expect("the connect push within 5 s")
            .unwrap();
        assert!(n > 0, "stream ended before the connect push");
        seen.extend_from_slice(&buf[..n]);
    }
    // Publish 64 KB at a time until the server lets go of the reader; 2,000
    // of them (125 MiB) are far more than loopback buffers hold.
    let big = "x".repeat(64 * 1024);
    let mut dropped = false;
    for _ in 0..2000 {
        let (status, body) = s.api("publish", json!({"channel": "stuck", "data": big})).await;
        assert_eq!(status, 200, "{body}");
        let (_, r) = s.api("channels", json!({"pattern": "stuck"})).await;
        if r["result"]["channels"]["stuck"].is_null() {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the stuck SSE reader was never dropped");
    // Its socket is closed: reading what is left ends (EOF or reset).
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut stuck, &mut rest),
    )
    .await;
    assert!(ended.is_ok(), "the server still holds the stream open");
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}
