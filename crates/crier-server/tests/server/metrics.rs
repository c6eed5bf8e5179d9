//! `GET /metrics`: what a Prometheus scrape shows after real traffic.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::support::*;

const PROMETHEUS: &str = "[prometheus]\nenabled = true\n";

/// `GET http://addr/metrics`: (status, content type, body).
async fn scrape_at(addr: SocketAddr) -> (u16, String, String) {
    let url = format!("http://{addr}/metrics");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent.get(&url).call().expect("HTTP request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        (status, content_type, body)
    })
    .await
    .expect("blocking task")
}

/// Scrapes the main listener; panics unless it answers 200 in OpenMetrics.
async fn scrape(s: &TestServer) -> String {
    let (status, content_type, body) = scrape_at(s.addr).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "complete exposition:\n{body}");
    body
}

/// The value of one series (`name` or `name{labels}`) in a scrape.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn connections(text: &str, transport: &str) -> f64 {
    sample(text, &format!("crier_connections{{transport=\"{transport}\"}}"))
}

#[tokio::test]
async fn scrape_shows_connections_publications_deliveries_and_timings() {
    let s = TestServer::start(config(PROMETHEUS)).await;
    let mut a = Client::connect(&s.ws_url(), &token("a")).await;
    let mut b = Client::connect(&s.ws_url(), &token("b")).await;
    a.request(json!({"subscribe": {"channel": "news"}})).await;
    b.request(json!({"subscribe": {"channel": "news"}})).await;
    for i in 0..3 {
        let (status, r) = s
            .api("publish", json!({"channel": "news", "data": {"n": i}}))
            .await;
        assert_eq!(status, 200, "{r}");
    }
    for c in [&mut a, &mut b] {
        for i in 0..3 {
            assert_eq!(c.next_pub().await["pub"]["data"]["n"], i);
        }
    }

    let m = scrape(&s).await;
    assert_eq!(connections(&m, "websocket"), 2.0);
    for other in ["uni_websocket", "uni_sse", "uni_http_stream", "tcp"] {
        assert_eq!(connections(&m, other), 0.0, "{other} is exposed, at 0");
    }
    assert_eq!(sample(&m, "crier_clients"), 2.0);
    assert_eq!(sample(&m, "crier_channels"), 1.0);
    assert_eq!(sample(&m, "crier_subscriptions"), 2.0);
    assert_eq!(sample(&m, "crier_publications_total"), 3.0);
    assert_eq!(sample(&m, "crier_deliveries_total"), 6.0);
    assert_eq!(sample(&m, "crier_messages_total"), 0.0);
    assert_eq!(sample(&m, "crier_dropped_clients_total{reason=\"slow\"}"), 0.0);
    assert_eq!(sample(&m, "crier_dropped_clients_total{reason=\"closed\"}"), 0.0);
    assert_eq!(sample(&m, "crier_engine_errors_total"), 0.0);
    assert_eq!(sample(&m, "crier_publish_duration_seconds_count"), 3.0);
    assert_eq!(
        sample(&m, "crier_publish_duration_seconds_bucket{le=\"+Inf\"}"),
        3.0
    );
    assert!(sample(&m, "crier_publish_duration_seconds_sum") > 0.0);
    // Both clients read everything: two queues, both empty.
    assert_eq!(sample(&m, "crier_client_queue_depth_count"), 2.0);
    assert_eq!(sample(&m, "crier_client_queue_depth_bucket{le=\"0.0\"}"), 2.0);
    assert_eq!(sample(&m, "crier_client_queue_depth_sum"), 0.0);
    if cfg!(target_os = "linux") {
        assert!(sample(&m, "process_resident_memory_bytes") > 1_000_000.0);
        assert!(sample(&m, "process_cpu_seconds_total") >= 0.0);
    }

    // A client's own publish is timed too.
    let r = a
        .request(json!({"publish": {"channel": "news", "data": "mine"}}))
        .await;
    assert!(r["error"].is_null(), "{r}");
    let m = scrape(&s).await;
    assert_eq!(sample(&m, "crier_publish_duration_seconds_count"), 4.0);

    // Shutdown waits for every connection: each guard is gone, and each
    // client was closed with 3001.
    let node = s.node.clone();
    s.shutdown().await;
    let m = node.metrics.render();
    assert_eq!(connections(&m, "websocket"), 0.0);
    assert_eq!(sample(&m, "crier_disconnects_total{code=\"3001\"}"), 2.0);
}

#[tokio::test]
async fn slow_client_drop_is_counted_by_reason_and_code() {
    let s = TestServer::start(config(&format!("[client]\nqueue_max_size = 65536\n{PROMETHEUS}"))).await;
    let mut slow = Client::connect(&s.ws_url(), &token("slow")).await;
    slow.request(json!({"subscribe": {"channel": "news"}})).await;
    let mut fast = Client::connect(&s.ws_url(), &token("fast")).await;
    fast.request(json!({"subscribe": {"channel": "news"}})).await;
    // `slow` stops reading while `fast` keeps up (as in ws.rs).
    let payload = format!("\"{}\"", "y".repeat(16 * 1024));
    let hub = s.node.hub.clone();
    for _ in 0..2000 {
        hub.publish("news", payload.clone(), Default::default()).unwrap();
        fast.next_pub().await;
        if hub.stats().dropped_slow > 0 {
            break;
        }
    }
    assert_eq!(slow.closed().await.code, 3008);

    let m = scrape(&s).await;
    assert_eq!(sample(&m, "crier_dropped_clients_total{reason=\"slow\"}"), 1.0);
    assert_eq!(sample(&m, "crier_disconnects_total{code=\"3008\"}"), 1.0);
    assert_eq!(sample(&m, "crier_clients"), 1.0, "only `fast` is left");
    s.shutdown().await;
}

#[tokio::test]
async fn uni_connections_and_their_disconnects_are_counted() {
    let uni = "[uni_http_stream]\nenabled = true\n[uni_websocket]\nenabled = true\n";
    let s = TestServer::start(config(&format!("{uni}{PROMETHEUS}"))).await;

    // An HTTP stream, read line by line until its connect push.
    let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
    let body = json!({"token": token("streamer"), "subs": {"news": {}}}).to_string();
    let head = format!(
        "POST /connection/uni_http_stream HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        s.addr,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write request");
    let mut stream = BufReader::new(tcp).lines();
    let mut next_message = async || -> Option<Value> {
        loop {
            let line = tokio::time::timeout(WAIT, stream.next_line())
                .await
                .expect("stream silent for 5 s")
                .ok()??;
            if line == "0" {
                return None; // last chunk: the body ended
            }
            if line.starts_with('{') && line != "{}" {
                return Some(serde_json::from_str(&line).expect("JSON line"));
            }
        }
    };
    let connect = next_message().await.expect("connect push");
    assert!(connect["connect"]["client"].is_string(), "{connect}");

    // A uni WebSocket.
    let url = format!("ws://{}/connection/uni_websocket", s.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("opens");
    let req = json!({"token": token("listener")});
    ws.send(Message::text(req.to_string())).await.unwrap();
    let first = tokio::time::timeout(WAIT, ws.next()).await.expect("connect push");
    assert!(matches!(first, Some(Ok(Message::Text(_)))), "{first:?}");

    let m = scrape(&s).await;
    assert_eq!(connections(&m, "uni_http_stream"), 1.0);
    assert_eq!(connections(&m, "uni_websocket"), 1.0);
    assert_eq!(connections(&m, "websocket"), 0.0);
    assert_eq!(sample(&m, "crier_clients"), 2.0);

    // The API ends the stream: it is told 3503, then its body ends.
    s.api("disconnect", json!({"user": "streamer"})).await;
    let d = next_message().await.expect("disconnect push");
    assert_eq!(d["disconnect"]["code"], 3503, "{d}");
    assert!(next_message().await.is_none(), "stream ends");
    let m = scrape(&s).await;
    assert_eq!(connections(&m, "uni_http_stream"), 0.0);
    assert_eq!(sample(&m, "crier_disconnects_total{code=\"3503\"}"), 1.0);

    let node = s.node.clone();
    s.shutdown().await;
    let m = node.metrics.render();
    assert_eq!(connections(&m, "uni_websocket"), 0.0);
    assert_eq!(sample(&m, "crier_disconnects_total{code=\"3001\"}"), 1.0);
}

#[tokio::test]
async fn separate_listener_serves_metrics_instead_of_the_main_router() {
    let extra = format!("{PROMETHEUS}listen = \"127.0.0.1:0\"\n");
    let (s, metrics) = TestServer::start_with_metrics(config(&extra)).await;
    assert_ne!(metrics, s.addr);
    let _c = Client::connect(&s.ws_url(), &token("watched")).await;

    let (status, content_type, body) = scrape_at(metrics).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(connections(&body, "websocket"), 1.0);

    let (status, _, _) = scrape_at(s.addr).await;
    assert_eq!(status, 404, "not on the main listener when a separate one is set");
    s.shutdown().await;
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    let s = TestServer::start(config("")).await;
    let (status, _, _) = scrape_at(s.addr).await;
    assert_eq!(status, 404);
    s.shutdown().await;
}
