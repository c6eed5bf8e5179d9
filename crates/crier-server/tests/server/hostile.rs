//! Hostile clients: each input the server must survive, the answer it must
//! get, and a healthy client on the same node that keeps being served.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::support::*;

/// A config whose HTTP deadlines are short enough to test.
fn impatient() -> crier_server::config::Config {
    let mut c = config("");
    c.http_server.header_read_timeout = Duration::from_millis(400);
    c.http_server.body_read_timeout = Duration::from_millis(400);
    c
}

#[tokio::test]
async fn an_idle_http_connection_is_closed_after_the_header_deadline() {
    let s = TestServer::start(impatient()).await;
    let mut w = watcher(&s).await;
    let mut idle = Peer::connect(s.addr).await;
    // The server closes it on its own: `closed` fails after 5 s otherwise.
    assert!(idle.closed().await.is_empty(), "no answer to an empty request");
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn headers_trickled_a_byte_at_a_time_are_cut_off() {
    let s = TestServer::start(impatient()).await;
    let mut w = watcher(&s).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let request = format!(
        "POST /api/info HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(200)
    );
    let started = std::time::Instant::now();
    let mut cut = false;
    // One byte every 50 ms would take 12 s for the whole head.
    for byte in request.as_bytes() {
        if stream.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut probe = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(50), stream.peek(&mut probe)).await {
            Ok(Ok(_)) | Ok(Err(_)) => {
                cut = true; // the server answered (408) or closed
                break;
            }
            Err(_) => {}
        }
    }
    assert!(cut, "the whole trickled head was accepted");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut after {:?}",
        started.elapsed()
    );
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn a_body_shorter_than_announced_gets_408_after_the_body_deadline() {
    let s = TestServer::start(impatient()).await;
    let mut w = watcher(&s).await;
    for path in [
        "/api/publish",
        "/connection/uni_http_stream",
        "/connection/uni_sse",
    ] {
        let mut peer = Peer::connect(s.addr).await;
        peer.send(
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: 100\r\n\r\n{{\"chan")
                .as_bytes(),
        )
        .await;
        let answer = String::from_utf8_lossy(&peer.closed().await).into_owned();
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
    }
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused() {
    let mut c = config("");
    c.http_server.max_request_body_size = 10_000;
    let s = TestServer::start(c).await;
    let mut w = watcher(&s).await;
    let mut peer = Peer::connect(s.addr).await;
    let huge = "a".repeat(40 * 1024);
    peer.send(format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: {huge}\r\n\r\n").as_bytes())
        .await;
    let answer = String::from_utf8_lossy(&peer.closed().await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let big = json!({"channel": "news", "data": {"x": "b".repeat(20_000)}}).to_string();
    let (status, _) = s
        .api_with("publish", big, Some(("X-API-Key", API_KEY.to_string())))
        .await;
    assert_eq!(status, 413);
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_does_not_stop_the_others() {
    let s = TestServer::start(config("")).await;
    let mut w = watcher(&s).await;
    // A connected client that pings as fast as it can and never reads.
    let mut raw = TcpStream::connect(s.addr).await.unwrap();
    raw.write_all(
        b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let ping = {
        let mut f = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
        f.extend(std::iter::repeat_n(0u8, 125));
        f
    };
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 1000).collect();
    // 100,000 pings (13 MB): kept one pong each, that was ~100k pending
    // frames; now at most one waits.
    for _ in 0..100 {
        if raw.write_all(&burst).await.is_err() {
            break;
        }
    }
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn publishing_to_ever_new_channels_stays_within_the_history_budget() {
    let mut c = config("");
    c.engine.memory.history_max_bytes = 256 * 1024;
    let s = TestServer::start(c).await;
    let mut w = watcher(&s).await;
    let mut churner = Client::connect(&s.ws_url(), &token("churner")).await;
    for i in 0..3_000 {
        let channel = format!("chat:fresh{i}");
        let r = churner
            .request(json!({"publish": {"channel": channel, "data": {"pad": "x".repeat(200)}}}))
            .await;
        assert!(r["publish"].is_object(), "{r}");
    }
    let metrics = s.node.metrics.render();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert!(
        value("crier_history_bytes ") <= 256.0 * 1024.0 + 4096.0,
        "{metrics}"
    );
    assert!(
        value("crier_history_evicted_streams_total ") > 1000.0,
        "{metrics}"
    );
    // The newest channel kept its history.
    let (_, h) = s
        .api("history", json!({"channel": "chat:fresh2999", "limit": 10}))
        .await;
    assert_eq!(
        h["result"]["publications"].as_array().map(Vec::len),
        Some(1),
        "{h}"
    );
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

/// A line of `/metrics` text: the value of `name` with exactly `labels`.
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_protocol_error_after_connect_always_closes_with_1002() {
    let s = TestServer::start(config("")).await;
    for _ in 0..20 {
        let mut c = Client::connect(&s.ws_url(), &token("proto")).await;
        // An unmasked frame is a protocol error: never 3000, whatever wins
        // the race between the close and the client's removal.
        c.send_raw_bytes(&[0x81, 0x02, b'{', b'}']).await;
        assert_eq!(c.closed_without_pong().await.code, 1002);
    }
    s.shutdown().await;
}

#[tokio::test]
async fn thousands_of_pipelined_commands_from_a_reading_client_all_get_replies() {
    let s = TestServer::start(config("")).await;
    let mut c = Client::connect(&s.ws_url(), &token("pipeliner")).await;
    // 5,000 pings in five frames (the per-frame cap is 1,024): more than
    // the queue's 4,096 messages if the replies piled up unsent.
    for frame in 0..5 {
        let text: Vec<String> = (0..1000)
            .map(|i| format!(r#"{{"id":{},"ping":{{}}}}"#, 100 + frame * 1000 + i))
            .collect();
        c.send_text(&text.join("\n")).await;
    }
    let mut seen = 0;
    while seen < 5000 {
        let v = c.next().await;
        assert!(v.get("ping").is_some(), "{v}");
        seen += 1;
    }
    let metrics = s.node.metrics.render();
    assert_eq!(
        metric(&metrics, "crier_disconnects_total", "code=\"3008\""),
        0.0,
        "{metrics}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn never_reading_subscribers_are_dropped_with_3008_and_counted() {
    let mut c = config("");
    // Small kernel buffers and a small queue, so the test needs little data.
    c.http_server.send_buffer_size = 16 * 1024;
    c.client.queue_max_size = 64 * 1024;
    c.websocket.write_timeout = Duration::from_secs(1);
    let s = TestServer::start(c).await;
    let mut w = watcher(&s).await;
    let mut stuck = Vec::new();
    for i in 0..5 {
        let mut c = Client::connect(&s.ws_url(), &token(&format!("stuck{i}"))).await;
        let r = c.request(json!({"subscribe": {"channel": "news"}})).await;
        assert!(r["subscribe"].is_object());
        stuck.push(c); // never read again
    }
    let pad = "x".repeat(1024);
    for n in 0..400 {
        let (status, _) = s
            .api(
                "publish",
                json!({"channel": "news", "data": {"n": n, "pad": pad}}),
            )
            .await;
        assert_eq!(status, 200);
        // The watcher reads everything and keeps up.
        assert_eq!(w.next_pub().await["pub"]["data"]["n"], n);
        if s.node.hub.stats().dropped_slow >= 5 {
            break;
        }
    }
    assert_eq!(
        s.node.hub.stats().dropped_slow,
        5,
        "every never-reading subscriber was dropped"
    );
    eventually_within("3008 counted for each", Duration::from_secs(5), || async {
        metric(
            &s.node.metrics.render(),
            "crier_disconnects_total",
            "code=\"3008\"",
        ) == 5.0
    })
    .await;
    drop(stuck);
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn connection_and_command_rates_are_limited_and_counted() {
    let mut c = config("");
    c.client.connection_rate_limit = 3;
    c.client.command_rate_limit = 5;
    let s = TestServer::start(c).await;
    // A burst of one second's worth of connects, then 3013.
    let mut admitted = Vec::new();
    let mut refused = None;
    for i in 0..10 {
        let mut c = Client::open(&s.ws_url()).await;
        let r = c
            .send_and_next(&json!({"id": 1, "connect": {"token": token(&format!("r{i}"))}}).to_string())
            .await;
        match r {
            Ok(v) if v["connect"].is_object() => admitted.push(c),
            Ok(v) => panic!("{v}"),
            Err(closed) => {
                refused = Some(closed.code);
                break;
            }
        }
    }
    assert_eq!(refused, Some(3013), "refused after {} connects", admitted.len());
    assert!(admitted.len() <= 4, "{} admitted", admitted.len());
    // Commands beyond 5 a second get error 111; the connection stays.
    let c = &mut admitted[0];
    let mut limited = 0;
    for _ in 0..10 {
        let r = c.request(json!({"ping": {}})).await;
        if r["error"]["code"] == 111 {
            limited += 1;
        }
    }
    assert!(limited >= 4, "{limited} of 10 limited");
    let metrics = s.node.metrics.render();
    assert!(
        metric(
            &metrics,
            "crier_limit_refusals_total",
            "limit=\"connection_rate_limit\""
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "crier_limit_refusals_total",
            "limit=\"command_rate_limit\""
        ) >= 4.0,
        "{metrics}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_uni_request_naming_more_channels_than_channel_limit_is_refused() {
    let mut c = config("[uni_http_stream]\nenabled = true\n");
    c.client.channel_limit = 128;
    let s = TestServer::start(c).await;
    let subs: serde_json::Map<String, serde_json::Value> =
        (0..3000).map(|i| (format!("c{i}"), json!({}))).collect();
    let body = json!({"token": token("uni"), "subs": subs}).to_string();
    let mut peer = Peer::connect(s.addr).await;
    peer.send(
        format!(
            "POST /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let answer = String::from_utf8_lossy(&peer.closed().await).into_owned();
    assert!(answer.contains(r#""code":3505"#), "{answer}");
    assert_eq!(s.node.hub.stats().subscriptions, 0, "nothing was subscribed");
    s.shutdown().await;
}
