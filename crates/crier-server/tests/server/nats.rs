//! The NATS broker against real `nats-server -js` processes on free
//! loopback ports: offsets under concurrent publishers on two brokers
//! ("nodes"), history and recovery, fan-out between nodes in order, presence
//! with expiry, and NATS going away and coming back with or without its
//! JetStream data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{eventually_within, free_port};
use bytes::Bytes;
use crier_server::broker::{
    encode_info, BrokerError, BrokerEvent, BrokerEvents, HistoryQuery, InfoParts, PublishOptions,
    StreamPosition,
};
use crier_server::nats_broker::{NatsBroker, NatsConfig, Subscriptions};

/// Waits for events and restarts; never for synchronisation.
const WAIT: Duration = Duration::from_secs(10);

/// A `nats-server` child with JetStream on 127.0.0.1, killed on drop.
pub(super) struct NatsServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    pub(super) fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("crier-nats-test-{}-{port}", std::process::id()));
        let mut s = NatsServer {
            port,
            dir,
            child: None,
        };
        s.wipe();
        s.restart();
        s
    }

    fn wipe(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("jetstream store dir");
    }

    /// Starts (again) on the same port and store directory.
    fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "nats-server is needed for the NATS broker tests: install it \
                     (apt-get install nats-server; .ci/run does): {e}"
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    /// Until it greets a client with JetStream on (bounded: fails loudly).
    fn wait_ready(&mut self) {
        use std::io::Read;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("nats-server on port {} exited at start: {status}", self.port);
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 4096];
                if let Ok(n) = s.read(&mut buf) {
                    let info = String::from_utf8_lossy(&buf[..n]);
                    if info.starts_with("INFO ") && info.contains("\"jetstream\":true") {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server on port {} never greeted with JetStream on",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (a clean stop that keeps JetStream's files), then waits.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(super) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn broker_with(server: &NatsServer, presence_ttl: Duration) -> NatsBroker {
    NatsBroker::connect(NatsConfig {
        addresses: vec![server.url()],
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        presence_ttl,
        history_cap: 100,
        ..NatsConfig::default()
    })
    .expect("broker")
}

fn broker(server: &NatsServer) -> NatsBroker {
    broker_with(server, Duration::from_secs(60))
}

fn history_opts(size: usize) -> PublishOptions {
    PublishOptions {
        history_size: size,
        ..PublishOptions::default()
    }
}

fn query(size: usize) -> HistoryQuery {
    HistoryQuery {
        history_size: size,
        history_ttl: Duration::from_secs(300),
        ..HistoryQuery::default()
    }
}

fn since(p: &StreamPosition) -> HistoryQuery {
    HistoryQuery {
        since: Some(p.clone()),
        ..query(100)
    }
}

/// The broker connects in the background; until it has, calls answer
/// `Unavailable`.
async fn connected(b: &NatsBroker) {
    eventually_within("the broker to connect", WAIT, || async { b.ping().await.is_ok() }).await;
}

async fn next_event(events: &mut BrokerEvents) -> BrokerEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event within the wait")
        .expect("the event stream is open")
}

/// The next publication event, skipping connection events.
async fn next_publication(events: &mut BrokerEvents) -> (String, u64, String, Bytes) {
    loop {
        if let BrokerEvent::Publication {
            channel,
            offset,
            epoch,
            publication,
        } = next_event(events).await
        {
            assert_eq!(offset, publication.offset);
            return (channel.to_string(), offset, epoch, publication.data);
        }
    }
}

async fn subscribed(b: &NatsBroker, channels: &[&str]) -> (Subscriptions, BrokerEvents) {
    let (subs, events) = b.subscriptions();
    for c in channels {
        subs.subscribe(c).await.expect("subscribe");
    }
    (subs, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_publishing_at_once_share_one_gapless_offset_sequence() {
    let nats = NatsServer::start();
    let (a, b) = (broker(&nats), broker(&nats));
    connected(&a).await;
    connected(&b).await;
    let publish = |node: NatsBroker, tag: &'static str| async move {
        let mut positions = Vec::new();
        for i in 0..25 {
            let p = node
                .publish("race", Bytes::from(format!("\"{tag}{i}\"")), &history_opts(100))
                .await
                .expect("publish");
            positions.push(p);
        }
        positions
    };
    let (pa, pb) = tokio::join!(
        tokio::spawn(publish(a.clone(), "a")),
        tokio::spawn(publish(b.clone(), "b"))
    );
    let mut all: Vec<StreamPosition> = pa.unwrap().into_iter().chain(pb.unwrap()).collect();
    let epoch = all[0].epoch.clone();
    assert!(all.iter().all(|p| p.epoch == epoch), "one epoch: {all:?}");
    all.sort_by_key(|p| p.offset);
    let offsets: Vec<u64> = all.iter().map(|p| p.offset).collect();
    assert_eq!(
        offsets,
        (1..=50).collect::<Vec<_>>(),
        "every offset once, none skipped"
    );

    // History holds all 50 in offset order, each node's own in its order.
    let (pubs, top) = a.history("race", &query(100)).await.unwrap();
    assert_eq!(
        top,
        StreamPosition {
            offset: 50,
            epoch: epoch.clone()
        }
    );
    assert_eq!(pubs.iter().map(|p| p.offset).collect::<Vec<_>>(), offsets);
    let mine: Vec<String> = pubs
        .iter()
        .map(|p| String::from_utf8(p.data.to_vec()).unwrap())
        .filter(|d| d.starts_with("\"a"))
        .collect();
    assert_eq!(mine, (0..25).map(|i| format!("\"a{i}\"")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_since_reverse_limits_and_removal() {
    let nats = NatsServer::start();
    let b = broker(&nats);
    connected(&b).await;
    // A channel never published to has a position (offset 0, an epoch that
    // stays), so a subscriber can recover from it later.
    let (none, start) = b.history("h", &query(10)).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(start.offset, 0);
    assert!(!start.epoch.is_empty());
    for i in 1..=8u64 {
        let opts = history_opts(if i == 5 { 0 } else { 10 });
        let p = b.publish("h", Bytes::from(i.to_string()), &opts).await.unwrap();
        assert_eq!(
            p,
            StreamPosition {
                offset: i,
                epoch: start.epoch.clone()
            }
        );
    }
    let offsets =
        |pubs: &[crier_server::broker::RemotePublication]| pubs.iter().map(|p| p.offset).collect::<Vec<_>>();
    // Offset 5 was published with skip_history: in the stream, not history.
    let (all, top) = b.history("h", &since(&start)).await.unwrap();
    assert_eq!(offsets(&all), vec![1, 2, 3, 4, 6, 7, 8]);
    assert_eq!(all[0].data, Bytes::from_static(b"1"), "byte-exact");
    assert_eq!(top.offset, 8);
    let after6 = StreamPosition {
        offset: 6,
        epoch: start.epoch.clone(),
    };
    let (later, _) = b.history("h", &since(&after6)).await.unwrap();
    assert_eq!(offsets(&later), vec![7, 8]);
    let (nothing, _) = b.history("h", &since(&top)).await.unwrap();
    assert!(nothing.is_empty(), "nothing after the top");
    let newest_two = HistoryQuery {
        limit: Some(2),
        reverse: true,
        ..query(10)
    };
    assert_eq!(offsets(&b.history("h", &newest_two).await.unwrap().0), vec![8, 7]);
    // The namespace keeps 3: only the last 3 history publications count.
    assert_eq!(
        offsets(&b.history("h", &query(3)).await.unwrap().0),
        vec![6, 7, 8]
    );
    assert!(b.history("h", &query(0)).await.unwrap().0.is_empty());

    // Another epoch, or beyond the top: unrecoverable, with the position.
    for bad in [
        StreamPosition {
            offset: 2,
            epoch: "not-this-one".into(),
        },
        StreamPosition {
            offset: 9,
            epoch: start.epoch.clone(),
        },
    ] {
        match b.history("h", &since(&bad)).await {
            Err(BrokerError::UnrecoverablePosition { current }) => assert_eq!(current, top),
            other => panic!("{bad:?}: {other:?}"),
        }
    }

    // Removing history keeps the position; the next publication follows.
    b.remove_history("h").await.unwrap();
    let (gone, kept) = b.history("h", &query(10)).await.unwrap();
    assert!(gone.is_empty(), "{gone:?}");
    assert_eq!(kept, top);
    let next = b
        .publish("h", Bytes::from_static(b"9"), &history_opts(10))
        .await
        .unwrap();
    assert_eq!(
        next,
        StreamPosition {
            offset: 9,
            epoch: start.epoch.clone()
        }
    );
    assert_eq!(offsets(&b.history("h", &query(10)).await.unwrap().0), vec![9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_on_one_node_reaches_the_other_in_order_once() {
    let nats = NatsServer::start();
    let (a, b) = (broker(&nats), broker(&nats));
    connected(&a).await;
    connected(&b).await;
    let (subs, mut events) = subscribed(&b, &["x.y", "other"]).await;
    for i in 1..=30u64 {
        a.publish("x.y", Bytes::from(i.to_string()), &history_opts(10))
            .await
            .unwrap();
    }
    a.publish("other", Bytes::from_static(b"o"), &history_opts(10))
        .await
        .unwrap();
    a.publish("unheard", Bytes::from_static(b"u"), &history_opts(10))
        .await
        .unwrap();
    // Order holds within a channel, not across channels: each channel's
    // subscription forwards on its own task, so under load "other" may
    // overtake the end of "x.y".
    let (mut xy, mut other) = (Vec::new(), 0);
    for _ in 0..31 {
        let (channel, offset, _, data) = next_publication(&mut events).await;
        match channel.as_str() {
            "x.y" => xy.push((offset, data)),
            "other" => other += 1,
            c => panic!("a publication of {c}, which b did not subscribe to"),
        }
    }
    let want: Vec<_> = (1..=30u64).map(|i| (i, Bytes::from(i.to_string()))).collect();
    assert_eq!(xy, want, "x.y in order, each once");
    assert_eq!(other, 1);

    // After unsubscribing, nothing more of that channel arrives: the next
    // event is the other channel's.
    subs.unsubscribe("x.y").await.unwrap();
    a.publish("x.y", Bytes::from_static(b"late"), &history_opts(10))
        .await
        .unwrap();
    a.publish("other", Bytes::from_static(b"o2"), &history_opts(10))
        .await
        .unwrap();
    let (channel, offset, _, _) = next_publication(&mut events).await;
    assert_eq!((channel.as_str(), offset), ("other", 2));

    // Control messages are plain: no offset, no history.
    subs.subscribe("").await.unwrap();
    a.publish_control(b"node-a\nhello").await.unwrap();
    let (channel, offset, _, data) = next_publication(&mut events).await;
    assert_eq!((channel.as_str(), offset), ("", 0));
    assert_eq!(data, Bytes::from_static(b"node-a\nhello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_add_remove_expire_and_stats() {
    let nats = NatsServer::start();
    let a = broker_with(&nats, Duration::from_secs(1));
    connected(&a).await;
    let info = |client: u64, user: &str| {
        Bytes::from(encode_info(&InfoParts {
            client,
            user: user.into(),
            conn_info: None,
            chan_info: None,
        }))
    };
    let ttl = Duration::from_secs(1);
    a.add_presence("room", "1", "ann", info(1, "ann"), ttl)
        .await
        .unwrap();
    a.add_presence("room", "2", "ann", info(2, "ann"), ttl)
        .await
        .unwrap();
    a.add_presence("room", "3", "bob", info(3, "bob"), ttl)
        .await
        .unwrap();
    a.add_presence("elsewhere", "4", "cid", info(4, "cid"), ttl)
        .await
        .unwrap();
    assert_eq!(a.presence_stats("room").await.unwrap(), (3, 2));
    a.remove_presence("room", "2").await.unwrap();
    let mut clients: Vec<String> = a
        .presence("room")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client)
        .collect();
    clients.sort();
    assert_eq!(clients, vec!["1", "3"]);
    // Not refreshed: gone after the TTL. Refreshed: still there.
    let started = Instant::now();
    eventually_within("unrefreshed entries to age out", WAIT, || async {
        a.add_presence("room", "3", "bob", info(3, "bob"), ttl)
            .await
            .unwrap();
        a.presence_stats("room").await.unwrap() == (1, 1)
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "aged out too early"
    );
    assert_eq!(a.presence("room").await.unwrap()[0].user, "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_then_back_unavailable_lost_restored() {
    let mut nats = NatsServer::start();
    let (a, b) = (broker(&nats), broker(&nats));
    connected(&a).await;
    connected(&b).await;
    let (subs, mut events) = subscribed(&b, &["feed"]).await;
    let first = a
        .publish("feed", Bytes::from_static(b"1"), &history_opts(10))
        .await
        .unwrap();
    assert_eq!(next_publication(&mut events).await.1, 1);

    nats.stop();
    loop {
        if next_event(&mut events).await == (BrokerEvent::Lost { shard: 0 }) {
            break;
        }
    }
    match a
        .publish("feed", Bytes::from_static(b"2"), &history_opts(10))
        .await
    {
        Err(BrokerError::Unavailable(_)) => {}
        other => panic!("publish with NATS down: {other:?}"),
    }
    assert!(matches!(
        subs.subscribe("feed").await,
        Err(BrokerError::Unavailable(_))
    ));

    // Back with its JetStream files: the same stream goes on.
    nats.restart();
    loop {
        if next_event(&mut events).await == (BrokerEvent::Restored { shard: 0 }) {
            break;
        }
    }
    connected(&a).await;
    subs.subscribe("feed").await.unwrap();
    let next = a
        .publish("feed", Bytes::from_static(b"3"), &history_opts(10))
        .await
        .unwrap();
    assert_eq!(next.epoch, first.epoch, "the same stream");
    // The publish refused while NATS went down may still have been sent
    // when the client reconnected (its acknowledgement had timed out):
    // then it is offset 2, once, and this one is 3. Either way the stream
    // has no gap, and the subscriber gets it in order.
    let (pubs, _) = a.history("feed", &since(&first)).await.unwrap();
    let got: Vec<(u64, Bytes)> = pubs.into_iter().map(|p| (p.offset, p.data)).collect();
    let want: Vec<(u64, Bytes)> = match next.offset {
        2 => vec![(2, Bytes::from_static(b"3"))],
        3 => vec![(2, Bytes::from_static(b"2")), (3, Bytes::from_static(b"3"))],
        other => panic!("offset {other} after 1"),
    };
    assert_eq!(got, want);
    for (offset, data) in want {
        let (_, o, _, d) = next_publication(&mut events).await;
        assert_eq!((o, d), (offset, data));
    }

    // Back without its data: a new epoch, and the old position is
    // unrecoverable rather than silently empty.
    nats.kill();
    nats.wipe();
    nats.restart();
    connected(&a).await;
    match a.history("feed", &since(&next)).await {
        Err(BrokerError::UnrecoverablePosition { current }) => {
            assert_eq!(current.offset, 0);
            assert_ne!(current.epoch, first.epoch);
        }
        other => panic!("{other:?}"),
    }
    let fresh = a
        .publish("feed", Bytes::from_static(b"x"), &history_opts(10))
        .await
        .unwrap();
    assert_eq!(fresh.offset, 1);
    assert_ne!(fresh.epoch, first.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reading_a_new_channel_at_once_agree_on_its_epoch() {
    let nats = NatsServer::start();
    let (a, b) = (broker(&nats), broker(&nats));
    connected(&a).await;
    connected(&b).await;
    for i in 0..10 {
        let channel = format!("fresh{i}");
        let q = query(10);
        let (ra, rb) = tokio::join!(a.history(&channel, &q), b.history(&channel, &q));
        let (pa, pb) = (ra.unwrap().1, rb.unwrap().1);
        assert_eq!(pa, pb, "{channel}: one epoch for both nodes");
        let p = b
            .publish(&channel, Bytes::from_static(b"1"), &history_opts(10))
            .await
            .unwrap();
        assert_eq!(
            p,
            StreamPosition {
                offset: 1,
                epoch: pa.epoch
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reads_while_entries_are_rewritten_never_fail() {
    // A node refreshes its clients' entries all the time; a presence read
    // that overlaps a rewrite must still answer, with every client once.
    let nats = NatsServer::start();
    let (a, b) = (broker(&nats), broker(&nats));
    connected(&a).await;
    connected(&b).await;
    let info = |client: u64| {
        Bytes::from(encode_info(&InfoParts {
            client,
            user: format!("u{client}"),
            conn_info: None,
            chan_info: None,
        }))
    };
    let ttl = Duration::from_secs(60);
    for c in 1..=3u64 {
        a.add_presence("busy", &c.to_string(), &format!("u{c}"), info(c), ttl)
            .await
            .unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (a, stop) = (a.clone(), stop.clone());
        tokio::spawn(async move {
            let mut writes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let c = writes % 3 + 1;
                a.add_presence("busy", &c.to_string(), &format!("u{c}"), info(c), ttl)
                    .await
                    .unwrap();
                writes += 1;
            }
            writes
        })
    };
    for round in 0..40 {
        let entries = b
            .presence("busy")
            .await
            .unwrap_or_else(|e| panic!("read {round}: {e}"));
        let mut seen: Vec<(String, String)> = entries.into_iter().map(|e| (e.client, e.user)).collect();
        seen.sort();
        let want: Vec<(String, String)> = (1..=3).map(|c| (c.to_string(), format!("u{c}"))).collect();
        assert_eq!(seen, want, "read {round}: every client once");
        assert_eq!(b.presence_stats("busy").await.unwrap(), (3, 3), "read {round}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0, "the rewrites overlapped the reads");
}

/// Occupancy (cluster-wide occupied/vacated): two nodes hold a channel,
/// one transition each way; a node that stops its heartbeat is swept by
/// the other, which alone sees the channels it leaves empty.
#[tokio::test]
async fn occupancy_transitions_once_and_a_dead_nodes_channels_are_swept() {
    let nats = NatsServer::start();
    let b = broker(&nats);
    connected(&b).await;
    let ttl = Duration::from_millis(400);
    assert!(b.heartbeat("n1", ttl).await.unwrap(), "never seen: lapsed");
    assert!(!b.heartbeat("n1", ttl).await.unwrap());
    b.heartbeat("n2", ttl).await.unwrap();
    assert!(b.hold("room", "n1", true).await.unwrap(), "empty -> held");
    assert!(!b.hold("room", "n2", true).await.unwrap());
    assert!(!b.hold("room", "n2", true).await.unwrap(), "already recorded");
    assert!(b.hold("alone", "n2", true).await.unwrap());
    assert!(!b.hold("room", "n1", false).await.unwrap());
    assert!(
        !b.hold("room", "n1", true).await.unwrap(),
        "n2 holds it still: no transition"
    );
    // n2 stops; n1 keeps beating and sweeps.
    // Polling for a TTL to pass, as `eventually_within` does.
    let deadline = Instant::now() + WAIT;
    let swept = loop {
        b.heartbeat("n1", ttl).await.unwrap();
        let swept = b.sweep("n1", ttl).await.unwrap();
        if !swept.is_empty() {
            break swept;
        }
        assert!(Instant::now() < deadline, "n2 never swept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(swept, vec![("alone".to_owned(), "n2".to_owned())]);
    assert!(b.sweep("n1", ttl).await.unwrap().is_empty(), "once");
    assert!(b.hold("room", "n1", false).await.unwrap(), "n1 was the last");
    assert!(b.hold("alone", "n1", true).await.unwrap(), "alone was empty");
}
