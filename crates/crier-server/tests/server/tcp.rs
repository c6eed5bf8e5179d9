//! Plain TCP listeners over real sockets: framing both ways, fan-out with
//! and without echo, the bridge to WebSocket and the HTTP API, encodings,
//! limits, the allowlist, token auth and shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

/// The delimited listener of the issue, with `extra` keys appended to its
/// `[[tcp]]` table.
fn conbus(extra: &str) -> String {
    format!(
        r#"
[[tcp]]
listen = "127.0.0.1:0"
framing = "delimited"
start = "<"
end = ">"
channels = ["conbus"]
publish_to = "conbus"
{extra}
"#
    )
}

/// A raw TCP client that checks exact bytes.
struct Peer {
    stream: TcpStream,
}

impl Peer {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("tcp connects");
        Self { stream }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("tcp send");
    }

    /// Reads exactly `expected.len()` bytes and compares them.
    async fn expect(&mut self, expected: &[u8]) {
        let mut got = vec![0u8; expected.len()];
        let read = tokio::time::timeout(WAIT, self.stream.read_exact(&mut got)).await;
        match read {
            Ok(Ok(_)) => assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected),
                "raw: {got:?}"
            ),
            Ok(Err(e)) => panic!(
                "connection ended waiting for {:?}: {e}",
                String::from_utf8_lossy(expected)
            ),
            Err(_) => panic!(
                "nothing for 5 s while waiting for {:?}",
                String::from_utf8_lossy(expected)
            ),
        }
    }

    /// Waits until the server closes the connection; returns what it wrote
    /// before closing.
    async fn closed(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(WAIT, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return all,
                Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
                Err(_) => panic!(
                    "the server kept the connection open for 5 s (got {:?})",
                    String::from_utf8_lossy(&all)
                ),
            }
        }
    }
}

/// Waits until `channel` has `n` local subscribers.
async fn subscribers(s: &TestServer, channel: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.node.hub.subscriber_count(channel) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} has {} subscribers, expected {n}",
            s.node.hub.subscriber_count(channel)
        );
        tokio::task::yield_now().await;
    }
}

/// Connects `n` peers and waits until all are subscribed to `channel`.
async fn peers(s: &TestServer, addr: SocketAddr, channel: &str, n: usize) -> Vec<Peer> {
    let before = s.node.hub.subscriber_count(channel);
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(Peer::connect(addr).await);
    }
    subscribers(s, channel, before + n).await;
    all
}

#[tokio::test]
async fn every_tcp_client_gets_every_frame_in_order() {
    let (s, tcp) = TestServer::start_with_tcp(config(&conbus(""))).await;
    let mut p = peers(&s, tcp[0], "conbus", 3).await;
    let burst: Vec<u8> = (0..200).flat_map(|i| format!("<m{i}>").into_bytes()).collect();
    // Noise outside markers is ignored, and a frame may arrive in pieces.
    p[0].send(b"noise\r\n").await;
    p[0].send(&burst[..7]).await;
    p[0].send(&burst[7..]).await;
    for peer in &mut p {
        peer.expect(&burst).await; // echo is on: the sender too
    }
    p[2].send(b"<from 2>").await;
    for peer in &mut p {
        peer.expect(b"<from 2>").await;
    }
    s.shutdown().await;
}

#[tokio::test]
async fn echo_false_leaves_out_the_sender_only() {
    let (s, tcp) = TestServer::start_with_tcp(config(&conbus("echo = false"))).await;
    let mut p = peers(&s, tcp[0], "conbus", 3).await;
    p[0].send(b"<a>").await;
    p[1].expect(b"<a>").await;
    p[2].expect(b"<a>").await;
    // <a> was published before <b>, so if p0 had got its own frame it
    // would come first.
    p[1].send(b"<b>").await;
    p[0].expect(b"<b>").await;
    p[2].expect(b"<b>").await;
    p[2].send(b"<c>").await;
    p[0].expect(b"<c>").await;
    p[1].expect(b"<c>").await; // not <b>
    s.shutdown().await;
}

#[tokio::test]
async fn api_and_websocket_publications_reach_tcp_clients_and_back() {
    let (s, tcp) = TestServer::start_with_tcp(config(&conbus(""))).await;
    let mut ws = Client::connect(&s.ws_url(), &token("alice")).await;
    let reply = ws.request(json!({"subscribe": {"channel": "conbus"}})).await;
    assert!(reply["error"].is_null(), "{reply}");
    let mut p = peers(&s, tcp[0], "conbus", 1).await.remove(0);

    let (status, body) = s.api("publish", json!({"channel": "conbus", "data": "Y"})).await;
    assert_eq!(status, 200, "{body}");
    p.expect(b"<Y>").await;
    assert_eq!(ws.next_pub().await["pub"]["data"], "Y");

    // Data that is not a JSON string arrives as its JSON text.
    s.api("publish", json!({"channel": "conbus", "data": {"a": 1}}))
        .await;
    p.expect(br#"<{"a":1}>"#).await;
    let reply = ws
        .request(json!({"publish": {"channel": "conbus", "data": {"b": [1, 2]}}}))
        .await;
    assert!(reply["error"].is_null(), "{reply}");
    p.expect(br#"<{"b":[1,2]}>"#).await;

    // A TCP frame reaches the WebSocket client as a JSON string.
    p.send(b"<X>").await;
    p.expect(b"<X>").await;
    loop {
        let push = ws.next_pub().await;
        if push["pub"]["data"] == "X" {
            break;
        }
    }
    s.shutdown().await;
}

#[tokio::test]
async fn line_framing_strips_line_endings_and_adds_newlines() {
    let cfg = r#"
[[tcp]]
listen = "127.0.0.1:0"
channels = ["lines"]
publish_to = "lines"
"#;
    let (s, tcp) = TestServer::start_with_tcp(config(cfg)).await;
    let mut p = peers(&s, tcp[0], "lines", 2).await;
    // CRLF (telnet) and LF (nc) both end a line; blank lines carry nothing.
    p[0].send(b"hello <you>\r\n\r\nworld\n").await;
    p[1].expect(b"hello <you>\nworld\n").await;
    s.api("publish", json!({"channel": "lines", "data": "Y"})).await;
    p[0].expect(b"hello <you>\nworld\nY\n").await;
    p[1].expect(b"Y\n").await;
    s.shutdown().await;
}

#[tokio::test]
async fn latin1_round_trips_bytes_exactly() {
    let (s, tcp) = TestServer::start_with_tcp(config(&conbus(r#"encoding = "latin-1""#))).await;
    let mut ws = Client::connect(&s.ws_url(), &token("alice")).await;
    ws.request(json!({"subscribe": {"channel": "conbus"}})).await;
    let mut p = peers(&s, tcp[0], "conbus", 2).await;
    p[0].send(b"<\xE9\xFF>").await;
    p[1].expect(b"<\xE9\xFF>").await;
    assert_eq!(ws.next_pub().await["pub"]["data"], "\u{e9}\u{ff}");
    // Characters latin-1 cannot say become '?'.
    s.api("publish", json!({"channel": "conbus", "data": "é€"})).await;
    p[1].expect(b"<\xE9?>").await;
    s.shutdown().await;
}

#[tokio::test]
async fn oversized_frames_close_only_that_connection() {
    let (s, tcp) = TestServer::start_with_tcp(config(&conbus("max_frame_size = 16"))).await;
    let mut p = peers(&s, tcp[0], "conbus", 4).await;
    // Exactly the limit is fine.
    p[0].send(b"<0123456789abcdef>").await;
    p[3].expect(b"<0123456789abcdef>").await;
    // One byte more closes the sender.
    p[1].send(b"<0123456789abcdefg>").await;
    p[1].closed().await;
    // So does an unterminated frame that can no longer fit.
    p[2].send(b"<0123456789abcdefghij").await;
    p[2].closed().await;
    subscribers(&s, "conbus", 2).await;
    // The others keep working, and got no broken frame.
    p[0].send(b"<still here>").await;
    p[3].expect(b"<still here>").await;
    p[0].expect(b"<0123456789abcdef><still here>").await;
    s.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_closes_the_connection() {
    let (s, tcp) = TestServer::start_with_tcp(config(&conbus(""))).await;
    let mut p = peers(&s, tcp[0], "conbus", 2).await;
    // Bytes outside markers are never decoded.
    p[0].send(b"\xFF<ok>").await;
    p[1].expect(b"<ok>").await;
    p[0].expect(b"<ok>").await;
    p[0].send(b"<\xFF>").await;
    p[0].closed().await;
    subscribers(&s, "conbus", 1).await;
    p[1].send(b"<after>").await;
    p[1].expect(b"<after>").await;
    s.shutdown().await;
}

#[tokio::test]
async fn allow_list_refuses_other_addresses() {
    let cfg = format!(
        "{}{}",
        conbus(r#"allow = ["10.9.8.7"]"#),
        conbus(r#"allow = ["127.0.0.1", "::1"]"#)
    );
    let (s, tcp) = TestServer::start_with_tcp(config(&cfg)).await;
    assert_eq!(tcp.len(), 2);
    let mut refused = Peer::connect(tcp[0]).await;
    assert!(refused.closed().await.is_empty());
    let mut p = peers(&s, tcp[1], "conbus", 1).await.remove(0);
    p.send(b"<in>").await;
    p.expect(b"<in>").await;
    s.shutdown().await;
}

#[tokio::test]
async fn token_listeners_need_a_valid_token_first() {
    let (s, tcp) = TestServer::start_with_tcp(config(&conbus("token = true"))).await;
    // A bad token: one error frame, then closed, never registered.
    let mut bad = Peer::connect(tcp[0]).await;
    bad.send(b"<not.a.jwt>").await;
    assert_eq!(bad.closed().await, b"<error: invalid token>");
    let expired = crier_server::auth::TokenBuilder::new()
        .user("bob")
        .exp(unix_now() - 10)
        .sign_hs256(SECRET);
    let mut late = Peer::connect(tcp[0]).await;
    late.send(format!("<{expired}>").as_bytes()).await;
    assert_eq!(late.closed().await, b"<error: token expired>");
    assert_eq!(s.node.hub.subscriber_count("conbus"), 0);

    // A good token: the connection belongs to its user. A frame sent right
    // behind the token is published once the client is registered.
    let mut good = Peer::connect(tcp[0]).await;
    good.send(format!("<{}><hi>", token("carol")).as_bytes()).await;
    good.expect(b"<hi>").await;
    assert_eq!(s.node.hub.clients_of_user("carol").len(), 1);
    // The server API reaches it by user, like any connection.
    let (status, body) = s.api("disconnect", json!({"user": "carol"})).await;
    assert_eq!(status, 200, "{body}");
    good.closed().await;
    subscribers(&s, "conbus", 0).await;
    s.shutdown().await;
}

#[tokio::test]
async fn slow_tcp_client_is_dropped_and_keeps_an_ordered_prefix() {
    let cfg = format!(
        r#"
[client]
queue_max_size = 65536
ping_interval = "1s"
pong_timeout = "500ms"
{}"#,
        conbus("")
    );
    let (s, tcp) = TestServer::start_with_tcp(config(&cfg)).await;
    // This peer reads nothing until the hub has given up on it.
    let mut slow = peers(&s, tcp[0], "conbus", 1).await.remove(0);
    let payload = "x".repeat(16 * 1024);
    let mut sent = 0;
    while s.node.hub.subscriber_count("conbus") == 1 {
        assert!(sent < 20_000, "the hub never dropped a client that reads nothing");
        s.node
            .hub
            .publish(
                "conbus",
                json!(format!("{sent}:{payload}")).to_string(),
                Default::default(),
            )
            .expect("publish");
        sent += 1;
        tokio::task::yield_now().await;
    }
    // A peer that accepts no bytes is not kept either: its connection ends
    // once writes have stalled for ping_interval + pong_timeout.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !s.node.connections.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "stalled connection kept");
        tokio::task::yield_now().await;
    }
    // What it got before the socket closed is frames in order with no gap;
    // only the last one may be cut off by the stalled write.
    let got = slow.closed().await;
    let text = String::from_utf8(got).expect("utf-8");
    let mut frames: Vec<&str> = text.split('>').collect();
    let tail = frames.pop().unwrap_or_default();
    assert!(frames.len() < sent, "it cannot have got everything");
    for (i, frame) in frames.iter().enumerate() {
        assert!(*frame == format!("<{i}:{payload}"), "frame {i} is wrong");
    }
    let next = format!("<{}:{payload}", frames.len());
    assert!(next.starts_with(tail), "the cut-off frame is not the next one");
    s.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_tcp_connections() {
    let (s, tcp) = TestServer::start_with_tcp(config(&conbus(""))).await;
    let mut p = peers(&s, tcp[0], "conbus", 2).await;
    let started = tokio::time::Instant::now();
    s.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited for TCP connections"
    );
    for peer in &mut p {
        peer.closed().await;
    }
}

#[tokio::test]
async fn bad_tcp_settings_are_refused_with_their_key() {
    let cases = [
        (
            r#"[[tcp]]
listen = "127.0.0.1:0"
framing = "delimited"
end = ">""#,
            "tcp[0].start",
        ),
        (
            r#"[[tcp]]
listen = "nowhere""#,
            "tcp[0].listen",
        ),
        (
            r#"[[tcp]]
listen = "127.0.0.1:0"
channels = ["ok", "nosuch:thing"]"#,
            "tcp[0].channels[1]",
        ),
        (
            r#"[[tcp]]
listen = "127.0.0.1:0"
publish_to = "nosuch:thing""#,
            "tcp[0].publish_to",
        ),
        (
            r#"[[tcp]]
listen = "127.0.0.1:0"
start = "<""#,
            "tcp[0].start",
        ),
        (
            r#"[[tcp]]
listen = "127.0.0.1:0"
allow = ["localhost"]"#,
            "tcp[0].allow[0]",
        ),
    ];
    for (toml, key) in cases {
        match crier_server::Server::bind(config(toml)).await {
            Ok(_) => panic!("accepted:\n{toml}"),
            Err(e) => assert!(e.to_string().starts_with(key), "{key}: {e}"),
        }
    }
}
