//! The two-phase subscribe a remote engine uses: history is read outside
//! the hub while deliveries from the engine's pub/sub lag behind or run
//! ahead of it. Every publication must reach a subscriber exactly once, in
//! offset order, and a stream that skips offsets or changes epoch must be
//! reported, never delivered with a hole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use bytes::Bytes;
use crier_core::{
    settle_recovery, Catchup, Delivery, EngineError, HistoryPage, Hub, HubError, Publication, StreamPosition,
    SubscribeOptions,
};

use super::support::{offsets, take, Seen};

fn publication(offset: u64) -> Publication {
    let mut p = Publication::new(format!("p{offset}"));
    p.offset = offset;
    p
}

fn pos(offset: u64) -> StreamPosition {
    StreamPosition {
        offset,
        epoch: "e1".into(),
    }
}

fn page(from: u64, top: u64) -> HistoryPage {
    HistoryPage {
        publications: (from..=top).map(publication).collect(),
        position: pos(top),
    }
}

fn recover(since: u64) -> SubscribeOptions {
    SubscribeOptions {
        catchup: Catchup::Recover(pos(since)),
        ..Default::default()
    }
}

#[test]
fn lagging_deliveries_are_neither_lost_nor_repeated() {
    let hub = Hub::default();
    let (a, mut ra) = hub.connect("a", None);
    hub.begin_subscribe(a, "c").unwrap();
    hub.finish_subscribe(a, "c", SubscribeOptions::default(), page(1, 0), false, |_| None)
        .unwrap();
    for o in 1..=5 {
        assert_eq!(hub.deliver_at("c", "e1", publication(o)), Delivery::Delivered(1));
    }
    // B begins; 6 and 7 arrive before its history read, which (made later)
    // already saw up to 9; 8, 9 and 10 are delivered after B finished.
    let (b, mut rb) = hub.connect("b", None);
    hub.begin_subscribe(b, "c").unwrap();
    hub.deliver_at("c", "e1", publication(6));
    hub.deliver_at("c", "e1", publication(7));
    let (history, recovered) = settle_recovery(&pos(5), page(6, 9), 100);
    assert!(recovered);
    let s = hub
        .finish_subscribe(b, "c", recover(5), history, true, |s| {
            Some(Bytes::from(format!("subscribed at {}", s.position.offset)))
        })
        .unwrap();
    assert_eq!(
        s.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![6, 7, 8, 9]
    );
    for o in 8..=10 {
        hub.deliver_at("c", "e1", publication(o));
    }
    assert_eq!(offsets(&mut ra), (1..=10).collect::<Vec<_>>());
    let seen = take(&mut rb);
    assert_eq!(seen[0], Seen::Raw(Bytes::from("subscribed at 9")));
    let live: Vec<u64> = seen[1..]
        .iter()
        .map(|s| match s {
            Seen::Pub { offset, .. } => *offset,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(live, vec![10], "B got 6..9 in its reply and only 10 live");
}

#[test]
fn publications_buffered_while_subscribing_follow_the_reply() {
    let hub = Hub::default();
    let (b, mut rb) = hub.connect("b", None);
    hub.begin_subscribe(b, "c").unwrap();
    // History was read at 3; 4 and 5 arrived before the finish.
    for o in 3..=5 {
        hub.deliver_at("c", "e1", publication(o));
    }
    assert!(take(&mut rb).is_empty(), "nothing reaches a pending subscriber");
    hub.finish_subscribe(b, "c", SubscribeOptions::default(), page(4, 3), false, |_| {
        Some(Bytes::from("reply"))
    })
    .unwrap();
    let seen = take(&mut rb);
    assert_eq!(seen[0], Seen::Raw(Bytes::from("reply")));
    assert_eq!(seen.len(), 3);
    hub.deliver_at("c", "e1", publication(6));
    assert_eq!(offsets(&mut rb), vec![6]);
}

#[test]
fn a_skipped_offset_or_a_new_epoch_is_a_gap_and_unsubscribe_all_tells_everyone() {
    let hub = Hub::default();
    let (a, mut ra) = hub.connect("a", None);
    hub.begin_subscribe(a, "c").unwrap();
    hub.finish_subscribe(a, "c", SubscribeOptions::default(), page(1, 2), false, |_| None)
        .unwrap();
    assert_eq!(hub.deliver_at("c", "e1", publication(3)), Delivery::Delivered(1));
    assert_eq!(hub.deliver_at("c", "e1", publication(5)), Delivery::Gap);
    assert_eq!(hub.deliver_at("c", "e2", publication(4)), Delivery::Gap);
    assert_eq!(offsets(&mut ra), vec![3], "nothing after the gap is delivered");
    // A subscribe in progress fails instead of joining a broken stream.
    let (b, _rb) = hub.connect("b", None);
    hub.begin_subscribe(b, "c").unwrap();
    let removed = hub.unsubscribe_all("c", Some(Bytes::from("unsubscribe 2500")));
    assert_eq!(removed, vec![a]);
    assert_eq!(take(&mut ra), vec![Seen::Raw(Bytes::from("unsubscribe 2500"))]);
    assert!(hub.client(a).unwrap().channels.is_empty());
    let err = hub
        .finish_subscribe(b, "c", SubscribeOptions::default(), page(1, 0), false, |_| None)
        .unwrap_err();
    assert!(matches!(err, HubError::Engine(_)), "{err:?}");
    assert!(hub.channels().is_empty(), "the channel is freed");
    assert_eq!(hub.deliver_at("c", "e2", publication(1)), Delivery::NoSubscribers);
}

#[test]
fn an_aborted_or_orphaned_subscribe_leaves_no_trace() {
    let hub = Hub::default();
    let (a, _ra) = hub.connect("a", None);
    hub.begin_subscribe(a, "c").unwrap();
    assert_eq!(hub.begin_subscribe(a, "c"), Err(HubError::AlreadySubscribed));
    assert_eq!(hub.channels().len(), 1);
    hub.abort_subscribe(a, "c");
    assert!(hub.channels().is_empty());
    // The client leaves while its history is being read.
    hub.begin_subscribe(a, "c").unwrap();
    hub.disconnect(a, crier_core::DisconnectReason::Shutdown);
    let err = hub
        .finish_subscribe(a, "c", SubscribeOptions::default(), page(1, 0), false, |_| None)
        .unwrap_err();
    assert_eq!(err, HubError::UnknownClient(a));
    assert!(hub.channels().is_empty());
    assert_eq!(hub.stats().subscriptions, 0);
}

#[test]
fn a_pending_subscribe_that_falls_too_far_behind_fails() {
    let hub = Hub::default();
    let (b, _rb) = hub.connect("b", None);
    hub.begin_subscribe(b, "c").unwrap();
    for o in 1..=5000 {
        hub.deliver_at("c", "e1", publication(o));
    }
    let err = hub
        .finish_subscribe(b, "c", SubscribeOptions::default(), page(1, 0), false, |_| None)
        .unwrap_err();
    assert!(matches!(err, HubError::Engine(_)), "{err:?}");
    assert!(hub.channels().is_empty());
}

/// A model of a remote engine: publications are appended to a shared log
/// ("Redis") and handed to a delivery thread that lags behind by a random
/// amount. Subscribers join at random moments through the two-phase
/// subscribe, recovering from offset 0. Each must see 1..=N exactly once,
/// in order.
#[test]
fn race_every_subscriber_sees_every_offset_once() {
    const N: u64 = 3000;
    const SUBSCRIBERS: usize = 24;
    let hub = Hub::default();
    let log: Arc<Mutex<Vec<Publication>>> = Arc::default();
    let (tx, rx) = mpsc::sync_channel::<Publication>(64);
    let done = Arc::new(AtomicBool::new(false));
    // The keeper: one live subscriber from the start so the channel exists.
    let (k, mut rk) = hub.connect("keeper", None);
    hub.begin_subscribe(k, "c").unwrap();
    hub.finish_subscribe(k, "c", SubscribeOptions::default(), page(1, 0), false, |_| None)
        .unwrap();
    let deliverer = {
        let hub = hub.clone();
        thread::spawn(move || {
            for p in rx {
                assert!(matches!(hub.deliver_at("c", "e1", p), Delivery::Delivered(_)));
            }
        })
    };
    let publisher = {
        let log = log.clone();
        let done = done.clone();
        thread::spawn(move || {
            for o in 1..=N {
                let p = publication(o);
                log.lock().unwrap().push(p.clone());
                tx.send(p).unwrap();
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut joined = Vec::new();
    for i in 0..SUBSCRIBERS {
        let (id, rx) = hub.connect(format!("s{i}"), None);
        hub.begin_subscribe(id, "c").unwrap();
        // The "history read": everything in the log now.
        let history = {
            let log = log.lock().unwrap();
            HistoryPage {
                publications: log.clone(),
                position: pos(log.len() as u64),
            }
        };
        let (history, recovered) = settle_recovery(&pos(0), history, usize::MAX);
        assert!(recovered);
        let s = hub
            .finish_subscribe(id, "c", recover(0), history, true, |_| None)
            .unwrap();
        joined.push((s.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), rx));
        thread::yield_now();
    }
    publisher.join().unwrap();
    deliverer.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    assert_eq!(offsets(&mut rk), (1..=N).collect::<Vec<_>>());
    for (mut seen, mut rx) in joined {
        seen.extend(offsets(&mut rx));
        assert_eq!(seen, (1..=N).collect::<Vec<_>>());
    }
}

#[test]
fn a_pending_subscribe_buffers_exactly_its_limit() {
    // 4096 publications arriving while subscribing are kept and follow the
    // reply; one more fails the subscribe.
    let hub = Hub::default();
    let (a, mut ra) = hub.connect("a", None);
    hub.begin_subscribe(a, "c").unwrap();
    for o in 1..=4096 {
        hub.deliver_at("c", "e1", publication(o));
    }
    hub.finish_subscribe(a, "c", SubscribeOptions::default(), page(1, 0), false, |_| None)
        .unwrap();
    assert_eq!(offsets(&mut ra), (1..=4096).collect::<Vec<_>>());
    let (b, _rb) = hub.connect("b", None);
    hub.begin_subscribe(b, "c").unwrap();
    for o in 4097..=4096 + 4097 {
        hub.deliver_at("c", "e1", publication(o));
    }
    let err = hub
        .finish_subscribe(b, "c", SubscribeOptions::default(), page(1, 4096), false, |_| {
            None
        })
        .unwrap_err();
    assert!(matches!(err, HubError::Engine(_)), "{err:?}");
    assert_eq!(hub.subscriber_count("c"), 1, "only a");
}

#[test]
fn a_history_read_of_another_epoch_fails_the_subscribe_and_leaves_no_trace() {
    let hub = Hub::default();
    let (a, _ra) = hub.connect("a", None);
    hub.begin_subscribe(a, "c").unwrap();
    // Deliveries show this node the stream at epoch e1 ...
    assert_eq!(hub.deliver_at("c", "e1", publication(1)), Delivery::Delivered(0));
    // ... but the history read saw e2: the stream was reset in between.
    let other = HistoryPage {
        publications: Vec::new(),
        position: StreamPosition {
            offset: 5,
            epoch: "e2".into(),
        },
    };
    let err = hub
        .finish_subscribe(a, "c", SubscribeOptions::default(), other, false, |_| None)
        .unwrap_err();
    assert!(
        matches!(err, HubError::Engine(EngineError::Unavailable(_))),
        "{err:?}"
    );
    assert!(hub.channels().is_empty());
    assert_eq!(hub.stream_mark("c"), None);
}

#[test]
fn the_stream_mark_follows_finished_subscribes_and_deliveries() {
    let hub = Hub::default();
    assert_eq!(hub.stream_mark("c"), None, "no local subscribers");
    let (a, _ra) = hub.connect("a", None);
    hub.begin_subscribe(a, "c").unwrap();
    assert_eq!(hub.stream_mark("c"), None, "nothing seen yet");
    hub.finish_subscribe(a, "c", SubscribeOptions::default(), page(1, 7), false, |_| None)
        .unwrap();
    assert_eq!(hub.stream_mark("c"), Some(pos(7)));
    assert_eq!(hub.deliver_at("c", "e1", publication(8)), Delivery::Delivered(1));
    assert_eq!(hub.stream_mark("c"), Some(pos(8)));
}

/// A client disconnected while its two-phase subscribe finishes must never
/// be left seated in the channel (it would hold the channel, and its
/// presence, forever). Each round starts the disconnect and the finish at
/// the same moment, so the disconnect lands before, during and after the
/// finish across rounds; whichever wins, nothing of the client remains.
#[test]
fn a_client_leaving_while_its_subscribe_finishes_is_never_seated() {
    const ROUNDS: usize = 5_000;
    let hub = Hub::default();
    let start = Arc::new(std::sync::Barrier::new(2));
    let done = Arc::new(std::sync::Barrier::new(2));
    let (ids, next_id) = mpsc::channel();
    let leaver = {
        let (hub, start, done) = (hub.clone(), start.clone(), done.clone());
        thread::spawn(move || {
            for id in next_id {
                start.wait();
                hub.disconnect(id, crier_core::DisconnectReason::Removed);
                done.wait();
            }
        })
    };
    for round in 0..ROUNDS {
        let (id, _rx) = hub.connect("u", None);
        hub.begin_subscribe(id, "c").unwrap();
        ids.send(id).unwrap();
        start.wait();
        // Shift the finish against the disconnect by a different amount
        // each round, so the disconnect lands at every point of it.
        for _ in 0..(round * 7_919) % 4_000 {
            std::hint::spin_loop();
        }
        let finished =
            hub.finish_subscribe(id, "c", SubscribeOptions::default(), page(1, 0), false, |_| None);
        done.wait();
        assert_eq!(hub.subscriber_count("c"), 0, "round {round}: {finished:?}");
        assert!(hub.channels().is_empty(), "round {round}");
    }
    drop(ids);
    leaver.join().unwrap();
    assert_eq!(hub.stats().subscriptions, 0);
    assert_eq!(hub.client_count(), 0);
}
