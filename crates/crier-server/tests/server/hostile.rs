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
