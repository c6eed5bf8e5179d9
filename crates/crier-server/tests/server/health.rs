//! `/health` (liveness) and `/health/ready` (readiness), with Centrifugo's
//! `health.*` keys.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

async fn get(s: &TestServer, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut all = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut all))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let status = all.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (
        status,
        all.split("\r\n\r\n").nth(1).unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn health_and_readiness_answer_where_configured() {
    let s = TestServer::start(config("")).await;
    assert_eq!(get(&s, "/health").await, (200, "{}".to_string()));
    assert_eq!(
        get(&s, "/health/ready").await.0,
        200,
        "the memory engine is always ready"
    );
    s.shutdown().await;

    let s = TestServer::start(config("[health]\nhandler_prefix = \"/status\"\n")).await;
    assert_eq!(get(&s, "/status").await.0, 200);
    assert_eq!(get(&s, "/health").await.0, 404);
    s.shutdown().await;

    let s = TestServer::start(config("[health]\nenabled = false\n")).await;
    assert_eq!(get(&s, "/health").await.0, 404);
    s.shutdown().await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn readiness_fails_while_the_broker_is_unreachable_and_liveness_does_not() {
    // Nothing listens on this port: the node starts and keeps retrying.
    let port = free_port();
    let s = TestServer::start(config(&format!(
        "[engine]\ntype = \"redis\"\n[engine.redis]\naddress = \"redis://127.0.0.1:{port}\"\n"
    )))
    .await;
    assert_eq!(get(&s, "/health").await.0, 200, "alive");
    let (status, body) = get(&s, "/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("engine unreachable"), "{body}");
    s.shutdown().await;
}
