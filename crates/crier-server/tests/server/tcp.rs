//! Plain TCP listeners over real sockets: framing both ways, fan-out with
//! and without echo, the bridge to WebSocket and the HTTP API, encodings,
//! limits, the allowlist, token auth and shutdown.

use std::time::Duration;

use serde_json::json;

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

/// 50 clients on one broadcast listener, five of them sending telegrams
/// while a backend publishes through the API, all at once: every client
/// gets every telegram once, all in the same order (the channel's), and each
/// sender's telegrams in the order it sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_each_get_every_telegram_in_the_same_order() {
    const CLIENTS: usize = 50;
    const SENDERS: usize = 5;
    const EACH: usize = 20;
    const TOTAL: usize = (SENDERS + 1) * EACH; // the API is one more sender
    let (s, tcp) = TestServer::start_with_tcp(config(&conbus(""))).await;
    let all = peers(&s, tcp[0], "conbus", CLIENTS).await;
    let s = std::sync::Arc::new(s);

    let mut readers = Vec::new();
    for (k, mut peer) in all.into_iter().enumerate() {
        readers.push(tokio::spawn(async move {
            if k < SENDERS {
                for i in 0..EACH {
                    peer.send(format!("<s{k}:{i}>").as_bytes()).await;
                    tokio::task::yield_now().await;
                }
            }
            peer.frames(b'>', TOTAL).await
        }));
    }
    let api = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..EACH {
                let (status, body) = s
                    .api(
                        "publish",
                        json!({"channel": "conbus", "data": format!("api:{i}")}),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
            }
        })
    };
    api.await.expect("api task");
    let mut got = Vec::new();
    for reader in readers {
        got.push(reader.await.expect("a client's task"));
    }

    let first = &got[0];
    for (k, frames) in got.iter().enumerate() {
        assert_eq!(frames, first, "client {k} saw another order than client 0");
    }
    let mut senders: Vec<String> = (0..SENDERS).map(|k| format!("<s{k}")).collect();
    senders.push("<api".into());
    for sender in senders {
        let seen: Vec<usize> = first
            .iter()
            .filter_map(|f| f.strip_prefix(&format!("{sender}:")))
            .map(|i| i.parse().expect("telegram number"))
            .collect();
        assert_eq!(
            seen,
            (0..EACH).collect::<Vec<_>>(),
            "{sender}'s telegrams, once each, in order"
        );
    }
    std::sync::Arc::into_inner(s)
        .expect("no other handle")
        .shutdown()
        .await;
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

/// One client stops reading while three others read everything: the hub
/// drops the silent one once its queue overflows, and the others get every
/// publication, in order, before and after.
#[tokio::test]
async fn slow_tcp_client_is_dropped_and_the_others_keep_everything() {
    const FAST: usize = 3;
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
    let mut fast = peers(&s, tcp[0], "conbus", FAST).await;
    let payload = "x".repeat(16 * 1024);
    let publish = |n: usize| {
        s.node
            .hub
            .publish(
                "conbus",
                json!(format!("{n}:{payload}")).to_string(),
                Default::default(),
            )
            .expect("publish");
    };
    // The readers keep pace with the publisher (each publication is read by
    // all of them before the next), so only the silent peer falls behind.
    let mut sent = 0;
    while s.node.hub.subscriber_count("conbus") == 1 + FAST {
        assert!(sent < 20_000, "the hub never dropped a client that reads nothing");
        publish(sent);
        for peer in &mut fast {
            peer.expect(format!("<{sent}:{payload}>").as_bytes()).await;
        }
        sent += 1;
    }
    assert_eq!(
        s.node.hub.subscriber_count("conbus"),
        FAST,
        "only the silent peer was dropped"
    );
    // A peer that accepts no bytes is not kept either: its connection ends
    // once writes have stalled for ping_interval + pong_timeout.
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.node.connections.len() > FAST {
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
    // The others go on receiving, sent by peers as well as by the hub.
    publish(sent);
    fast[0].send(b"<after>").await;
    for peer in &mut fast {
        peer.expect(format!("<{sent}:{payload}><after>").as_bytes()).await;
    }
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
