//! The Redis broker against real `redis-server` processes on free loopback
//! ports: offsets and epochs, history and recovery limits, pub/sub between
//! two brokers ("nodes"), sharding over two servers, presence, and Redis
//! going away and coming back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{eventually_within, free_port};
use bytes::Bytes;
use crier_server::redis_broker::{
    BrokerError, BrokerEvent, HistoryQuery, PublishOptions, RedisBroker, RedisConfig, StreamPosition,
    Subscriber,
};

/// Waits for events and restarts; never for synchronisation.
const WAIT: Duration = Duration::from_secs(10);

/// A `redis-server` child on 127.0.0.1, killed on drop.
pub(super) struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub(super) fn start() -> Self {
        Self::start_on(free_port())
    }

    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server is needed for the Redis broker tests: install it \
                     (apt-get install redis-server; .ci/run does): {e}"
                )
            });
        let mut server = Self {
            port,
            child: Some(child),
        };
        server.wait_ready();
        server
    }

    /// Until it answers PING (bounded: fails loudly).
    fn wait_ready(&mut self) {
        use std::io::{Read, Write};
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("redis-server on port {} exited at start: {status}", self.port);
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} never answered PING",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes (`STOP`) or thaws (`CONT`) the process: a Redis that keeps
    /// its sockets open but answers nothing.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    pub(super) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A raw connection for poking at keys behind the broker's back.
    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection to redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(servers: &[&RedisServer]) -> RedisConfig {
    RedisConfig {
        addresses: servers.iter().map(|s| s.url()).collect(),
        command_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        ..RedisConfig::default()
    }
}

fn broker(servers: &[&RedisServer]) -> RedisBroker {
    RedisBroker::connect(config(servers)).expect("broker")
}

fn history_opts(size: usize) -> PublishOptions {
    PublishOptions {
        history_size: size,
        history_ttl: Duration::from_secs(300),
        meta_ttl: Duration::from_secs(3600),
        ..PublishOptions::default()
    }
}

fn since(p: &StreamPosition) -> HistoryQuery {
    HistoryQuery {
        since: Some(p.clone()),
        ..HistoryQuery::default()
    }
}

async fn next_event(sub: &mut Subscriber) -> BrokerEvent {
    tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("an event within the wait")
        .expect("the event stream is open")
}

#[tokio::test]
async fn offsets_grow_from_one_under_a_stable_epoch() {
    let redis = RedisServer::start();
    let b = broker(&[&redis]);
    let mut epoch = None;
    for i in 1..=20u64 {
        let p = b
            .publish("news", Bytes::from(format!("{{\"i\":{i}}}")), &history_opts(100))
            .await
            .unwrap();
        assert_eq!(p.offset, i);
        assert_eq!(p.epoch, *epoch.get_or_insert_with(|| p.epoch.clone()));
    }
    // Without history the offset still grows; another channel has its own.
    let p = b
        .publish("news", Bytes::from_static(b"{}"), &history_opts(0))
        .await
        .unwrap();
    assert_eq!(p.offset, 21);
    let q = b
        .publish("other", Bytes::from_static(b"{}"), &history_opts(10))
        .await
        .unwrap();
    assert_eq!(q.offset, 1);
    assert_ne!(q.epoch, p.epoch);
    // A second broker (another node) sees the same stream.
    let b2 = broker(&[&redis]);
    let (_, pos) = b2
        .history(
            "news",
            &HistoryQuery {
                limit: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(pos, p);
    // A history read of an unknown channel creates its epoch, which stays.
    let (pubs, fresh) = b.history("fresh", &HistoryQuery::default()).await.unwrap();
    assert!(pubs.is_empty());
    assert_eq!(fresh.offset, 0);
    let first = b
        .publish("fresh", Bytes::from_static(b"1"), &history_opts(10))
        .await
        .unwrap();
    assert_eq!(
        first,
        StreamPosition {
            offset: 1,
            epoch: fresh.epoch
        }
    );
}

#[tokio::test]
async fn history_since_returns_exactly_the_later_publications_byte_exact() {
    let redis = RedisServer::start();
    let b = broker(&[&redis]);
    let payloads: Vec<Bytes> = (0..10)
        .map(|i| {
            Bytes::from(format!(
                "{{\"n\":{i},\"s\":\"h\\u00e9 \\\"q\\\" \u{1F600}\",\"f\":1.50e0, \"sp\" : [ ]}}"
            ))
        })
        .collect();
    let mut positions = Vec::new();
    for (i, data) in payloads.iter().enumerate() {
        let mut opts = history_opts(100);
        if i == 3 {
            opts.info = Some(Bytes::from_static(br#"{"user":"alice","client":"c1"}"#));
            opts.tags = vec![("k".into(), "v".into())];
            opts.exclude_clients = vec!["node-a/7".into()];
            opts.exclude_users = vec!["bob".into()];
        }
        positions.push(b.publish("h", data.clone(), &opts).await.unwrap());
    }
    let (pubs, top) = b.history("h", &since(&positions[4])).await.unwrap();
    assert_eq!(top, positions[9]);
    assert_eq!(
        pubs.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![6, 7, 8, 9, 10]
    );
    for p in &pubs {
        assert_eq!(p.data, payloads[p.offset as usize - 1], "byte-exact data");
    }
    // All, with what was attached.
    let (all, _) = b.history("h", &HistoryQuery::default()).await.unwrap();
    assert_eq!(all.len(), 10);
    let fourth = &all[3];
    assert_eq!(
        fourth.info.as_deref(),
        Some(&br#"{"user":"alice","client":"c1"}"#[..])
    );
    assert_eq!(fourth.tags, vec![("k".to_string(), "v".to_string())]);
    assert_eq!(fourth.exclude_clients, vec!["node-a/7".to_string()]);
    assert_eq!(fourth.exclude_users, vec!["bob".to_string()]);
    assert!(all[2].info.is_none() && all[2].tags.is_empty());
    // From the top: nothing. Limit and reverse.
    let (none, _) = b.history("h", &since(&positions[9])).await.unwrap();
    assert!(none.is_empty());
    let q = HistoryQuery {
        since: Some(positions[1].clone()),
        limit: Some(3),
        ..Default::default()
    };
    let (three, _) = b.history("h", &q).await.unwrap();
    assert_eq!(three.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![3, 4, 5]);
    let q = HistoryQuery {
        limit: Some(2),
        reverse: true,
        ..Default::default()
    };
    let (newest, _) = b.history("h", &q).await.unwrap();
    assert_eq!(newest.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![10, 9]);
    let q = HistoryQuery {
        since: Some(positions[4].clone()),
        reverse: true,
        ..Default::default()
    };
    let (older, _) = b.history("h", &q).await.unwrap();
    assert_eq!(
        older.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![4, 3, 2, 1]
    );
    // An empty epoch matches any (as in Centrifugo).
    let any = StreamPosition {
        offset: 8,
        epoch: String::new(),
    };
    let (two, _) = b.history("h", &since(&any)).await.unwrap();
    assert_eq!(two.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![9, 10]);
    // A position beyond the top cannot be served.
    let ahead = StreamPosition {
        offset: 11,
        epoch: top.epoch.clone(),
    };
    assert_eq!(
        b.history("h", &since(&ahead)).await,
        Err(BrokerError::UnrecoverablePosition { current: top.clone() })
    );
    // remove_history keeps offset and epoch.
    b.remove_history("h").await.unwrap();
    let (gone, pos) = b.history("h", &since(&positions[4])).await.unwrap();
    assert!(gone.is_empty());
    assert_eq!(pos, top);
    let next = b
        .publish("h", Bytes::from_static(b"{}"), &history_opts(100))
        .await
        .unwrap();
    assert_eq!(
        next,
        StreamPosition {
            offset: 11,
            epoch: top.epoch
        }
    );
}

/// Whether publications `pubs` continue `since` without a gap up to `top`:
/// what a recovering caller checks.
fn recoverable(
    since: &StreamPosition,
    pubs: &[crier_server::redis_broker::RemotePublication],
    top: &StreamPosition,
) -> bool {
    pubs.iter()
        .enumerate()
        .all(|(i, p)| p.offset == since.offset + 1 + i as u64)
        && since.offset + pubs.len() as u64 == top.offset
}

#[tokio::test]
async fn trimming_and_ttl_make_old_positions_unrecoverable() {
    let redis = RedisServer::start();
    let b = broker(&[&redis]);
    let mut positions = Vec::new();
    for i in 0..10 {
        positions.push(
            b.publish("t", Bytes::from(format!("{i}")), &history_opts(3))
                .await
                .unwrap(),
        );
    }
    // Only the last three are kept.
    let (pubs, top) = b.history("t", &HistoryQuery::default()).await.unwrap();
    assert_eq!(pubs.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![8, 9, 10]);
    let (pubs, top2) = b.history("t", &since(&positions[1])).await.unwrap();
    assert_eq!(pubs.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![8, 9, 10]);
    assert!(!recoverable(&positions[1], &pubs, &top2), "a gap 3..7 must show");
    let (pubs, _) = b.history("t", &since(&positions[6])).await.unwrap();
    assert!(
        recoverable(&positions[6], &pubs, &top),
        "from 7 the rest is there"
    );

    // History expires after its TTL; the position stays.
    let short = PublishOptions {
        history_ttl: Duration::from_millis(100),
        ..history_opts(100)
    };
    let p1 = b.publish("ttl", Bytes::from_static(b"a"), &short).await.unwrap();
    let p2 = b.publish("ttl", Bytes::from_static(b"b"), &short).await.unwrap();
    let (pubs, _) = b.history("ttl", &since(&p1)).await.unwrap();
    assert_eq!(pubs.len(), 1);
    eventually_within("the history stream expires", WAIT, || async {
        b.history("ttl", &since(&p1))
            .await
            .is_ok_and(|(pubs, top)| pubs.is_empty() && top == p2)
    })
    .await;
    let (pubs, top) = b.history("ttl", &since(&p1)).await.unwrap();
    assert!(!recoverable(&p1, &pubs, &top));
}

#[tokio::test]
async fn a_new_epoch_is_detected() {
    let redis = RedisServer::start();
    let b = broker(&[&redis]);
    let old = b
        .publish("e", Bytes::from_static(b"1"), &history_opts(10))
        .await
        .unwrap();
    b.publish("e", Bytes::from_static(b"2"), &history_opts(10))
        .await
        .unwrap();
    // The meta key disappears (deleted, or Redis lost it).
    let mut raw = redis.raw().await;
    let _: i64 = redis::cmd("DEL")
        .arg("crier:{e}:m")
        .query_async(&mut raw)
        .await
        .unwrap();
    match b.history("e", &since(&old)).await {
        Err(BrokerError::UnrecoverablePosition { current }) => {
            assert_ne!(current.epoch, old.epoch);
            assert_eq!(current.offset, 0);
        }
        other => panic!("expected unrecoverable position, got {other:?}"),
    }
    // The old epoch's history is gone with it; offsets restart.
    let (pubs, _) = b.history("e", &HistoryQuery::default()).await.unwrap();
    assert!(pubs.is_empty());
    let fresh = b
        .publish("e", Bytes::from_static(b"3"), &history_opts(10))
        .await
        .unwrap();
    assert_eq!(fresh.offset, 1);
    assert_ne!(fresh.epoch, old.epoch);

    // The meta key expiring (meta_ttl) does the same.
    let brief = PublishOptions {
        meta_ttl: Duration::from_millis(100),
        ..history_opts(10)
    };
    let before = b.publish("m", Bytes::from_static(b"x"), &brief).await.unwrap();
    eventually_within("the meta key expires", WAIT, || async {
        let mut raw = redis.raw().await;
        let n: i64 = redis::cmd("EXISTS")
            .arg("crier:{m}:m")
            .query_async(&mut raw)
            .await
            .unwrap();
        n == 0
    })
    .await;
    assert!(matches!(
        b.history("m", &since(&before)).await,
        Err(BrokerError::UnrecoverablePosition { current }) if current.epoch != before.epoch
    ));
}

#[tokio::test]
async fn a_publication_on_one_node_reaches_subscribers_on_another_in_order_once() {
    let redis = RedisServer::start();
    let a = broker(&[&redis]);
    // B pings its pub/sub connection all the time, amid the messages.
    let b = RedisBroker::connect(RedisConfig {
        pubsub_ping_interval: Duration::from_millis(1),
        ..config(&[&redis])
    })
    .unwrap();
    // Before B subscribes: these must never arrive.
    for i in 0..5 {
        a.publish("room", Bytes::from(format!("[{i}]")), &history_opts(100))
            .await
            .unwrap();
    }
    let mut sub = b.subscriptions();
    sub.subscribe("room").await.unwrap();
    sub.subscribe("room").await.unwrap(); // twice is once
    let mut published = Vec::new();
    for i in 5..105 {
        let data = Bytes::from(format!("{{\"i\":{i}}}"));
        let p = a.publish("room", data.clone(), &history_opts(100)).await.unwrap();
        published.push((p, data));
    }
    for (p, data) in &published {
        match next_event(&mut sub).await {
            BrokerEvent::Publication {
                channel,
                offset,
                epoch,
                publication,
            } => {
                assert_eq!(&*channel, "room");
                assert_eq!((offset, &epoch), (p.offset, &p.epoch));
                assert_eq!(publication.offset, p.offset);
                assert_eq!(&publication.data, data);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Nothing else came in between or after: the next event is the next
    // publication, on a channel subscribed last.
    sub.subscribe("marker").await.unwrap();
    a.publish("marker", Bytes::from_static(b"{}"), &history_opts(0))
        .await
        .unwrap();
    assert!(
        matches!(next_event(&mut sub).await, BrokerEvent::Publication { channel, offset: 1, .. } if &*channel == "marker")
    );

    // After unsubscribe nothing of the channel arrives.
    sub.unsubscribe("room").await.unwrap();
    a.publish("room", Bytes::from_static(b"{}"), &history_opts(100))
        .await
        .unwrap();
    a.publish("marker", Bytes::from_static(b"{}"), &history_opts(0))
        .await
        .unwrap();
    assert!(
        matches!(next_event(&mut sub).await, BrokerEvent::Publication { channel, offset: 2, .. } if &*channel == "marker")
    );
}

#[tokio::test]
async fn channels_spread_over_two_shards_each_with_consistent_offsets() {
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let a = broker(&[&r1, &r2]);
    let b = broker(&[&r1, &r2]);
    let channels: Vec<String> = (0..40).map(|i| format!("shard-test:{i}")).collect();
    let mut sub = b.subscriptions();
    for c in &channels {
        sub.subscribe(c).await.unwrap();
    }
    for round in 1..=3u64 {
        for c in &channels {
            // Both nodes publish; offsets interleave in one sequence per channel.
            let node = if round % 2 == 0 { &a } else { &b };
            let p = node
                .publish(c, Bytes::from(format!("{round}")), &history_opts(10))
                .await
                .unwrap();
            assert_eq!(p.offset, round, "{c}");
        }
    }
    // Every channel's keys live on exactly its shard.
    let (mut raw1, mut raw2) = (r1.raw().await, r2.raw().await);
    let mut on = [0usize; 2];
    for c in &channels {
        let key = format!("crier:{{{c}}}:m");
        let e1: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut raw1)
            .await
            .unwrap();
        let e2: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut raw2)
            .await
            .unwrap();
        assert_eq!(e1 + e2, 1, "{c} on exactly one shard");
        let shard = if e1 == 1 { 0 } else { 1 };
        assert_eq!(shard, a.shard_of(c));
        on[shard] += 1;
    }
    assert!(on[0] >= 10 && on[1] >= 10, "spread: {on:?}");
    // The subscriber got each channel's publications in offset order.
    let mut next = std::collections::HashMap::<String, u64>::new();
    for _ in 0..channels.len() * 3 {
        match next_event(&mut sub).await {
            BrokerEvent::Publication { channel, offset, .. } => {
                let want = next.entry(channel.to_string()).or_insert(1);
                assert_eq!(offset, *want, "{channel}");
                *want += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(next.values().all(|&n| n == 4));
}

#[tokio::test]
async fn presence_add_remove_expire_and_stats() {
    let redis = RedisServer::start();
    let a = broker(&[&redis]);
    let b = broker(&[&redis]);
    let long = Duration::from_secs(60);
    a.add_presence("p", "a/1", "alice", Bytes::from_static(br#"{"n":1}"#), long)
        .await
        .unwrap();
    a.add_presence("p", "a/2", "alice", Bytes::from_static(br#"{"n":2}"#), long)
        .await
        .unwrap();
    b.add_presence("p", "b/1", "bob", Bytes::from_static(br#"{"n":3}"#), long)
        .await
        .unwrap();
    b.add_presence("p", "b/2", "", Bytes::from_static(b"{}"), long)
        .await
        .unwrap();
    assert_eq!(a.presence_stats("p").await.unwrap(), (4, 3));
    let mut all = b.presence("p").await.unwrap();
    all.sort_by(|x, y| x.client.cmp(&y.client));
    let got: Vec<(&str, &str, &[u8])> = all.iter().map(|e| (&*e.client, &*e.user, &e.info[..])).collect();
    assert_eq!(
        got,
        vec![
            ("a/1", "alice", &br#"{"n":1}"#[..]),
            ("a/2", "alice", &br#"{"n":2}"#[..]),
            ("b/1", "bob", &br#"{"n":3}"#[..]),
            ("b/2", "", &b"{}"[..]),
        ]
    );
    a.remove_presence("p", "a/1").await.unwrap();
    assert_eq!(b.presence_stats("p").await.unwrap(), (3, 3));
    a.remove_presence("p", "a/2").await.unwrap();
    assert_eq!(b.presence_stats("p").await.unwrap(), (2, 2));
    // Refresh keeps an entry; a crashed node's entries expire.
    b.add_presence("p", "b/1", "bob", Bytes::from_static(b"{}"), long)
        .await
        .unwrap();
    a.add_presence(
        "p",
        "a/3",
        "carol",
        Bytes::from_static(b"{}"),
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    assert_eq!(b.presence_stats("p").await.unwrap(), (3, 3));
    eventually_within("a/3 expires", WAIT, || async {
        b.presence_stats("p").await.unwrap() == (2, 2)
    })
    .await;
    let left: Vec<String> = b
        .presence("p")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client)
        .collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&"a/3".to_string()));
    assert_eq!(a.presence_stats("empty").await.unwrap(), (0, 0));
    assert!(a.presence("empty").await.unwrap().is_empty());
}

#[tokio::test]
async fn redis_down_then_back_unavailable_lost_restored() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let a = broker(&[&redis]);
    // Pings every 20 ms: a healthy connection must not be taken for lost.
    let b = RedisBroker::connect(RedisConfig {
        pubsub_ping_interval: Duration::from_millis(20),
        ..config(&[&redis])
    })
    .unwrap();
    let mut sub = b.subscriptions();
    sub.subscribe("live").await.unwrap();
    let first = a
        .publish("live", Bytes::from_static(b"1"), &history_opts(10))
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut sub).await,
        BrokerEvent::Publication { offset: 1, .. }
    ));

    redis.kill();
    let started = Instant::now();
    let err = a
        .publish("live", Bytes::from_static(b"2"), &history_opts(10))
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Unavailable(_)), "{err:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(600), "took {took:?}");
    let started = Instant::now();
    let err = a.history("live", &HistoryQuery::default()).await.unwrap_err();
    assert!(matches!(err, BrokerError::Unavailable(_)), "{err:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1200), "took {took:?}");
    assert_eq!(next_event(&mut sub).await, BrokerEvent::Lost { shard: 0 });
    // While down, subscribing is unavailable; a subscriber started now
    // reports the shard lost at once.
    assert!(matches!(
        sub.subscribe("other").await,
        Err(BrokerError::Unavailable(_))
    ));
    let mut late = b.subscriptions();
    assert_eq!(next_event(&mut late).await, BrokerEvent::Lost { shard: 0 });

    let _back = RedisServer::start_on(port);
    assert_eq!(next_event(&mut sub).await, BrokerEvent::Restored { shard: 0 });
    assert_eq!(next_event(&mut late).await, BrokerEvent::Restored { shard: 0 });
    late.subscribe("live").await.unwrap();
    // Resubscribed: a new publication arrives (Redis lost its data: new epoch).
    let after = a
        .publish("live", Bytes::from_static(b"3"), &history_opts(10))
        .await
        .unwrap();
    assert_eq!(after.offset, 1);
    assert_ne!(after.epoch, first.epoch);
    for s in [&mut sub, &mut late] {
        match next_event(s).await {
            BrokerEvent::Publication {
                channel,
                offset,
                epoch,
                ..
            } => {
                assert_eq!((&*channel, offset, epoch), ("live", 1, after.epoch.clone()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Recovery from before the outage is refused with the new position.
    assert!(matches!(
        b.history("live", &since(&first)).await,
        Err(BrokerError::UnrecoverablePosition { current }) if current == after
    ));
}

#[tokio::test]
async fn a_hung_redis_is_noticed_by_timeouts_and_pings() {
    let redis = RedisServer::start();
    let a = broker(&[&redis]);
    let b = RedisBroker::connect(RedisConfig {
        pubsub_ping_interval: Duration::from_millis(50),
        ..config(&[&redis])
    })
    .unwrap();
    let mut sub = b.subscriptions();
    sub.subscribe("h").await.unwrap();
    a.publish("h", Bytes::from_static(b"1"), &history_opts(10))
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut sub).await,
        BrokerEvent::Publication { offset: 1, .. }
    ));

    redis.signal("STOP");
    let started = Instant::now();
    let err = a
        .publish("h", Bytes::from_static(b"2"), &history_opts(10))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, BrokerError::Unavailable(_)), "{err:?}");
    // The command timeout (500 ms) bounds it.
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
    assert_eq!(next_event(&mut sub).await, BrokerEvent::Lost { shard: 0 });

    redis.signal("CONT");
    assert_eq!(next_event(&mut sub).await, BrokerEvent::Restored { shard: 0 });
    // Same Redis, data kept: whatever of publish "2" ran, offsets continue.
    let p = a
        .publish("h", Bytes::from_static(b"3"), &history_opts(10))
        .await
        .unwrap();
    assert!(p.offset == 2 || p.offset == 3, "{p:?}");
    loop {
        match next_event(&mut sub).await {
            BrokerEvent::Publication { offset, .. } if offset == p.offset => break,
            BrokerEvent::Publication { offset: 2, .. } => {} // "2", if it ran late
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Occupancy (cluster-wide occupied/vacated): two nodes hold a channel,
/// one transition each way; a node that stops its heartbeat is swept by
/// the other, which alone sees the channels it leaves empty.
#[tokio::test]
async fn occupancy_transitions_once_and_a_dead_nodes_channels_are_swept() {
    let redis = RedisServer::start();
    let b = broker(&[&redis]);
    let ttl = Duration::from_millis(400);
    assert!(b.heartbeat("n1", ttl).await.unwrap(), "never seen: lapsed");
    assert!(!b.heartbeat("n1", ttl).await.unwrap());
    b.heartbeat("n2", ttl).await.unwrap();
    assert!(b.hold("room", "n1", true).await.unwrap(), "empty -> held");
    assert!(!b.hold("room", "n2", true).await.unwrap());
    assert!(!b.hold("room", "n2", true).await.unwrap(), "already recorded");
    assert!(b.hold("alone", "n2", true).await.unwrap());
    assert!(!b.hold("room", "n1", false).await.unwrap());
    assert!(!b.hold("room", "n1", true).await.unwrap(), "n2 holds it still");
    // n2 stops; n1 keeps beating and sweeps. Polling for a TTL to pass,
    // as `eventually_within` does.
    let deadline = Instant::now() + WAIT;
    let swept = loop {
        b.heartbeat("n1", ttl).await.unwrap();
        let swept = b.sweep("n1").await.unwrap();
        if !swept.is_empty() {
            break swept;
        }
        assert!(Instant::now() < deadline, "n2 never swept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(swept, vec![("alone".to_owned(), "n2".to_owned())]);
    assert!(b.sweep("n1").await.unwrap().is_empty(), "once");
    assert!(b.hold("room", "n1", false).await.unwrap(), "n1 was the last");
    assert!(b.hold("alone", "n1", true).await.unwrap(), "alone was empty");
    // n2 comes back: it had lapsed, and records its channels again.
    assert!(b.heartbeat("n2", ttl).await.unwrap());
    assert!(!b.hold("alone", "n2", true).await.unwrap());
}
