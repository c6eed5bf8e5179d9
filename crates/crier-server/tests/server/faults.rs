//! Broker faults beyond stop and start: a Redis that answers slowly.
//!
//! Node A reaches its own `redis-server` through a proxy in this test that
//! holds every reply for longer than the engine's `io_timeout`; node B
//! reaches the same Redis directly. What users see: A's API answers error
//! 100 within `io_timeout` (it does not hang for the delay), A's
//! subscribers are told 2500 and stay connected, their resubscribes get the
//! temporary error 100 while Redis is slow, B's clients keep receiving
//! without a pause; once Redis answers in time again, A's subscribers
//! recover, and every client has seen every offset of the channel exactly
//! once, in order — the publication whose reply A gave up waiting for
//! included (Redis ran it: it is there once, not lost and not twice).
//! (The network partition between a node and Redis or NATS is
//! `scripts/faults.sh`: it needs a network namespace.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::redis::RedisServer;
use super::support::{config, token, TestServer};

/// Bound on any one wait for the server or the broker.
const WAIT: Duration = Duration::from_secs(20);
/// The engine's `io_timeout` in this test.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the slow Redis holds each reply: well beyond `IO_TIMEOUT`.
const DELAY: Duration = Duration::from_secs(3);
const CHANNEL: &str = "faults:stream";

/// A TCP proxy in front of Redis that delays what Redis answers by the
/// current delay (commands reach Redis at once; Redis runs them; the
/// replies, pub/sub messages included, arrive late but in order).
struct SlowProxy {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl SlowProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue; // the node sees a closed connection
                };
                let (client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let mut client_read = client_read;
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    let _ = server_write.shutdown().await;
                });
                let delay = delay.clone();
                tokio::spawn(async move {
                    // Each chunk is due `delay` after it arrived; a writer
                    // sends them in order when due.
                    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
                    let writer = tokio::spawn(async move {
                        while let Some((due, bytes)) = rx.recv().await {
                            tokio::time::sleep_until(due).await;
                            if client_write.write_all(&bytes).await.is_err() {
                                break;
                            }
                        }
                        let _ = client_write.shutdown().await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match server_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let due =
                                    Instant::now() + Duration::from_millis(delay.load(Ordering::Relaxed));
                                if tx.send((due, buf[..n].to_vec())).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    drop(tx);
                    let _ = writer.await;
                });
            }
        });
        Self {
            addr,
            delay_ms,
            accept,
        }
    }

    fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn node_config(redis_url: &str) -> crier_server::config::Config {
    config(&format!(
        r#"
[[channel.namespaces]]
name = "faults"
history_size = 1000
history_ttl = "300s"
force_recovery = true
allow_subscribe_for_client = true

[engine]
type = "redis"

[engine.redis]
address = "{redis_url}"
connect_timeout = "500ms"
io_timeout = "{}ms"
"#,
        IO_TIMEOUT.as_millis()
    ))
}

/// What a following client reports to the test as it happens.
#[derive(Debug)]
enum Seen {
    /// The first subscribe succeeded.
    Subscribed,
    Publication,
    Unsubscribed(u64),
    /// A resubscribe answered with this error code.
    Refused(u64),
    Resubscribed {
        recovered: bool,
    },
    Closed(String),
}

/// Everything a following client saw, once it reached the target offset.
struct Followed {
    offsets: Vec<u64>,
    data: Vec<Value>,
    epochs: Vec<String>,
}

/// A client that behaves as the SDKs do: subscribes to [`CHANNEL`]; on an
/// unsubscribe push 2500 resubscribes, recovering from the last offset it
/// saw, and retries (every 200 ms, an SDK's backoff) while the answer is
/// the temporary error 100. Reports what it sees on `seen` and returns
/// every publication once it has seen offset `until` (set by the test when
/// publishing is over).
fn follow(
    who: &'static str,
    url: String,
    seen: mpsc::UnboundedSender<(&'static str, Seen)>,
    mut until: watch::Receiver<u64>,
) -> JoinHandle<Followed> {
    tokio::spawn(async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("websocket opens");
        let connect = json!({"id": 1, "connect": {"token": token(who)}});
        ws.send(Message::text(connect.to_string())).await.expect("send");
        let subscribe = json!({"id": 2, "subscribe": {"channel": CHANNEL}});
        ws.send(Message::text(subscribe.to_string())).await.expect("send");
        let mut followed = Followed {
            offsets: Vec::new(),
            data: Vec::new(),
            epochs: Vec::new(),
        };
        let mut epoch = String::new();
        let mut next_id = 3u32;
        let mut pending: Option<u32> = None; // the resubscribe in flight
        let mut retry_at: Option<Instant> = None;
        loop {
            if followed.offsets.last().copied().unwrap_or(0) >= *until.borrow() && *until.borrow() > 0 {
                return followed;
            }
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let msg = tokio::select! {
                m = tokio::time::timeout(WAIT, ws.next()) => m.unwrap_or_else(|_| panic!("{who}: nothing from the server for {WAIT:?}")),
                _ = until.changed() => continue,
                _ = retry => {
                    retry_at = None;
                    let last = followed.offsets.last().copied().unwrap_or(0);
                    let id = next_id;
                    next_id += 1;
                    pending = Some(id);
                    let cmd = json!({"id": id, "subscribe": {"channel": CHANNEL, "recover": true, "offset": last, "epoch": epoch}});
                    ws.send(Message::text(cmd.to_string())).await.expect("send");
                    continue;
                }
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Close(frame))) => {
                    let _ = seen.send((who, Seen::Closed(format!("{frame:?}"))));
                    panic!("{who}: the server closed the connection: {frame:?}");
                }
                Some(Ok(_)) => continue,
                other => panic!("{who}: connection ended: {other:?}"),
            };
            for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
                let m: Value = serde_json::from_str(line).expect("JSON from the server");
                if m == json!({}) {
                    ws.send(Message::text("{}")).await.expect("pong");
                    continue;
                }
                let id = m["id"].as_u64().unwrap_or(0) as u32;
                if id == 1 {
                    assert!(m["connect"].is_object(), "{who}: connect: {m}");
                } else if id == 2 {
                    assert!(m["subscribe"].is_object(), "{who}: first subscribe: {m}");
                    epoch = m["subscribe"]["epoch"].as_str().unwrap_or_default().to_owned();
                    followed.epochs.push(epoch.clone());
                    let _ = seen.send((who, Seen::Subscribed));
                } else if id != 0 && Some(id) == pending {
                    pending = None;
                    if let Some(code) = m["error"]["code"].as_u64() {
                        let _ = seen.send((who, Seen::Refused(code)));
                        assert_eq!(code, 100, "{who}: a resubscribe is refused only temporarily: {m}");
                        retry_at = Some(Instant::now() + Duration::from_millis(200));
                        continue;
                    }
                    let sub = &m["subscribe"];
                    epoch = sub["epoch"].as_str().unwrap_or_default().to_owned();
                    followed.epochs.push(epoch.clone());
                    for p in sub["publications"].as_array().into_iter().flatten() {
                        let offset = p["offset"]
                            .as_u64()
                            .expect("a recovered publication has an offset");
                        followed.offsets.push(offset);
                        followed.data.push(p["data"].clone());
                    }
                    let recovered = sub["recovered"] == json!(true);
                    let _ = seen.send((who, Seen::Resubscribed { recovered }));
                } else if let Some(p) = m["push"]["pub"].as_object() {
                    let offset = p["offset"].as_u64().expect("a publication has an offset");
                    followed.offsets.push(offset);
                    followed.data.push(p["data"].clone());
                    let _ = seen.send((who, Seen::Publication));
                } else if let Some(code) = m["push"]["unsubscribe"]["code"].as_u64() {
                    let _ = seen.send((who, Seen::Unsubscribed(code)));
                    assert_eq!(code, 2500, "{who}: {m}");
                    retry_at = Some(Instant::now());
                }
            }
        }
    })
}

/// What the clients reported so far.
#[derive(Default, Debug)]
struct Log {
    /// Whether the first subscribe succeeded, by client.
    subscribed: [bool; 2],
    /// Publications received live, by client.
    live: [u64; 2],
    /// Unsubscribe pushes, by client.
    unsubscribed: [Vec<u64>; 2],
    /// Resubscribes refused, by client, with their codes.
    refused: [Vec<u64>; 2],
    /// Resubscribes that succeeded, by client: `recovered` of each.
    resubscribed: [Vec<bool>; 2],
}

fn slot(who: &str) -> usize {
    usize::from(who == "on-b")
}

impl Log {
    fn apply(&mut self, who: &str, event: Seen) {
        let i = slot(who);
        match event {
            Seen::Subscribed => self.subscribed[i] = true,
            Seen::Publication => self.live[i] += 1,
            Seen::Unsubscribed(code) => self.unsubscribed[i].push(code),
            Seen::Refused(code) => self.refused[i].push(code),
            Seen::Resubscribed { recovered } => self.resubscribed[i].push(recovered),
            Seen::Closed(why) => panic!("{who} was disconnected: {why}"),
        }
    }
}

/// Takes the clients' reports until `done` holds (within `within`).
async fn until(
    seen: &mut mpsc::UnboundedReceiver<(&'static str, Seen)>,
    log: &mut Log,
    what: &str,
    within: Duration,
    done: impl Fn(&Log) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(log) {
        let (who, event) = tokio::time::timeout_at(deadline, seen.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: not within {within:?}; so far {log:?}"))
            .expect("the clients are running");
        log.apply(who, event);
    }
}

#[tokio::test]
async fn a_slow_redis_is_announced_and_recovered_from_without_loss_or_duplicates() {
    let redis = RedisServer::start();
    let redis_addr: SocketAddr = redis
        .url()
        .trim_start_matches("redis://")
        .parse()
        .expect("redis address");
    let proxy = SlowProxy::start(redis_addr).await;
    let a = TestServer::start(node_config(&proxy.url())).await;
    let b = Arc::new(TestServer::start(node_config(&redis.url())).await);

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (until_tx, until_rx) = watch::channel(0u64);
    let on_a = follow("on-a", a.ws_url(), seen_tx.clone(), until_rx.clone());
    let on_b = follow("on-b", b.ws_url(), seen_tx, until_rx);
    let mut log = Log::default();
    until(&mut seen, &mut log, "both clients subscribe", WAIT, |l| {
        l.subscribed == [true, true]
    })
    .await;

    // A backend publishing through B all along, at its own pace of one
    // publication every 100 ms; B never fails one.
    let (stop_tx, stop_rx) = watch::channel(false);
    let publisher = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !*stop_rx.borrow() {
                n += 1;
                let (status, body) = b
                    .api(
                        "publish",
                        json!({"channel": CHANNEL, "data": {"via": "b", "n": n}}),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                assert!(
                    body["error"].is_null(),
                    "B publishes while A's Redis is slow: {body}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await; // the backend's pace
            }
            n
        })
    };
    until(&mut seen, &mut log, "both clients receive", WAIT, |l| {
        l.live.iter().all(|&n| n >= 5)
    })
    .await;

    // Redis turns slow for A.
    proxy.set_delay(DELAY);
    let started = Instant::now();
    let (status, body) = a
        .api(
            "publish",
            json!({"channel": CHANNEL, "data": {"via": "a", "n": 0}}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(
        body["error"]["code"],
        json!(100),
        "A's publish is refused, temporarily: {body}"
    );
    assert!(
        took < DELAY,
        "A answers within its io_timeout ({IO_TIMEOUT:?}), not after the {DELAY:?} Redis takes: {took:?}"
    );
    let (_, body) = a.api("history", json!({"channel": CHANNEL, "limit": 0})).await;
    assert_eq!(body["error"]["code"], json!(100), "history on A: {body}");

    until(&mut seen, &mut log, "A's subscriber told 2500", WAIT, |l| {
        !l.unsubscribed[0].is_empty()
    })
    .await;
    assert_eq!(log.unsubscribed[0], [2500]);
    until(
        &mut seen,
        &mut log,
        "A's resubscribe refused while Redis is slow",
        WAIT,
        |l| !l.refused[0].is_empty(),
    )
    .await;
    // Meanwhile B's client keeps receiving, live, without a pause.
    let b_then = log.live[1];
    until(
        &mut seen,
        &mut log,
        "B's client served while A's Redis is slow",
        Duration::from_secs(5),
        |l| l.live[1] >= b_then + 10,
    )
    .await;
    assert!(
        log.resubscribed[0].is_empty(),
        "no resubscribe succeeds while Redis is slow: {log:?}"
    );

    // Redis answers in time again: A's subscriber recovers.
    proxy.set_delay(Duration::ZERO);
    until(&mut seen, &mut log, "A's subscriber resubscribed", WAIT, |l| {
        !l.resubscribed[0].is_empty()
    })
    .await;
    assert_eq!(log.resubscribed[0], [true], "recovered from its offset");
    let a_then = log.live[0];
    until(&mut seen, &mut log, "A's subscriber live again", WAIT, |l| {
        l.live[0] >= a_then + 5
    })
    .await;

    stop_tx.send(true).expect("publisher running");
    let published_by_b = publisher.await.expect("publisher");
    let (_, top) = b.api("history", json!({"channel": CHANNEL, "limit": 0})).await;
    let top = top["result"]["offset"].as_u64().expect("B reads the top offset");
    until_tx.send(top).expect("clients running");
    let (on_a, on_b) = (on_a.await.expect("client on A"), on_b.await.expect("client on B"));

    // Every offset once, in order, on both nodes; one epoch throughout.
    let all: Vec<u64> = (1..=top).collect();
    assert_eq!(on_b.offsets, all, "B's client");
    assert_eq!(
        on_a.offsets, all,
        "A's client, across the slow Redis and its recovery"
    );
    assert_eq!(on_a.data, on_b.data, "the same publications");
    for f in [&on_a, &on_b] {
        assert!(
            f.epochs.windows(2).all(|w| w[0] == w[1]),
            "one epoch: {:?}",
            f.epochs
        );
    }
    // What B's backend published is all there, and so is A's publication
    // that was answered 100: Redis had run it, so it has an offset and
    // arrived once (a publish answered 100 is not known to have failed).
    let via = |v: &str| on_a.data.iter().filter(|d| d["via"] == json!(v)).count() as u64;
    assert_eq!(via("b"), published_by_b);
    assert_eq!(via("a"), 1);
    assert_eq!(top, published_by_b + 1);
    a.shutdown().await;
    let Ok(b) = Arc::try_unwrap(b) else {
        panic!("the publisher is done with B")
    };
    b.shutdown().await;
}
