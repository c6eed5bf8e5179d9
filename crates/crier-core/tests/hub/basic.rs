//! One test per hub operation: what a client of the hub would notice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crier_core::*;

use super::support::*;

fn with_history(size: usize) -> HubConfig {
    HubConfig {
        channels: ChannelConfig::new(ChannelOptions {
            history_size: size,
            ..Default::default()
        })
        .namespace(
            "room",
            ChannelOptions {
                history_size: size,
                presence: true,
                join_leave: true,
                ..Default::default()
            },
        ),
        ..Default::default()
    }
}

fn pub_data(seen: &[Seen]) -> Vec<Bytes> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Pub { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn ids_are_unique_and_registry_counts() {
    let hub = Hub::default();
    let (a, _ra) = hub.connect("u", None);
    let (b, _rb) = hub.connect("", None);
    assert_ne!(a, b);
    assert_eq!(hub.client_count(), 2);
    assert_eq!(
        hub.client(b).unwrap().user.as_ref(),
        "",
        "anonymous client keeps empty user"
    );
    assert!(hub.disconnect(a, DisconnectReason::Removed));
    assert!(
        !hub.disconnect(a, DisconnectReason::Removed),
        "second disconnect is a no-op"
    );
    assert_eq!(hub.client_count(), 1);
    assert!(hub.client(a).is_none());
}

#[test]
fn client_list_is_oldest_first_bounded_and_shows_subscriptions() {
    let hub = Hub::default();
    let ids: Vec<_> = (0..5).map(|i| hub.connect(format!("u{i}"), None)).collect();
    hub.subscribe(ids[1].0, "news", SubscribeOptions::default())
        .expect("subscribe");
    let list = hub.client_list(3);
    assert_eq!(
        list.iter().map(|c| c.id).collect::<Vec<_>>(),
        ids[..3].iter().map(|(id, _)| *id).collect::<Vec<_>>()
    );
    assert_eq!(list[1].user.as_ref(), "u1");
    assert_eq!(list[1].channels, vec![Arc::<str>::from("news")]);
    hub.disconnect(ids[0].0, DisconnectReason::Removed);
    assert_eq!(hub.client_list(10).len(), 4, "a client gone is not listed");
}

/// Anonymous clients (the empty user) share one user string, whichever
/// way the embedder passed it: an `Arc<str>` of their own would cost
/// every anonymous connection an allocation. Named users keep theirs.
#[test]
fn anonymous_clients_share_one_user_and_named_ones_keep_their_own() {
    let hub = Hub::default();
    let (a, _ra) = hub.connect("", None);
    let (b, _rb) = hub.connect(String::new(), None);
    let (c, _rc) = hub.connect("alice", None);
    let user = |id| hub.client(id).unwrap().user;
    assert_eq!(&*user(a), "");
    assert!(Arc::ptr_eq(&user(a), &user(b)));
    assert!(Arc::ptr_eq(&user(a), &anonymous_user()));
    assert_eq!(&*user(c), "alice");
    assert!(!Arc::ptr_eq(&user(c), &anonymous_user()));
    // Anonymous clients are nobody's: no user's list holds them.
    assert_eq!(hub.clients_of_user("alice"), vec![c]);
}

/// A client's channels are listed whatever order it joined and left them
/// in (the first is kept apart from the others, which are kept only while
/// there are any), and leaving with all of them frees every channel.
#[test]
fn a_client_lists_the_channels_it_is_in_as_it_joins_and_leaves() {
    let hub = Hub::default();
    let (a, _ra) = hub.connect("a", Some(Bytes::from("info")));
    let listed = |hub: &Hub| {
        let mut c: Vec<String> = hub
            .client(a)
            .unwrap()
            .channels
            .iter()
            .map(|c| c.to_string())
            .collect();
        c.sort();
        c
    };
    for ch in ["c1", "c2", "c3"] {
        hub.subscribe(a, ch, SubscribeOptions::default()).unwrap();
    }
    assert_eq!(listed(&hub), ["c1", "c2", "c3"]);
    assert_eq!(hub.client(a).unwrap().conn_info, Some(Bytes::from("info")));
    hub.unsubscribe(a, "c2").unwrap();
    hub.unsubscribe(a, "c3").unwrap();
    assert_eq!(listed(&hub), ["c1"]);
    hub.subscribe(a, "c4", SubscribeOptions::default()).unwrap();
    hub.unsubscribe(a, "c1").unwrap();
    assert_eq!(listed(&hub), ["c4"]);
    hub.subscribe(a, "c5", SubscribeOptions::default()).unwrap();
    hub.subscribe(a, "c1", SubscribeOptions::default()).unwrap();
    assert_eq!(listed(&hub), ["c1", "c4", "c5"]);
    assert!(hub.disconnect(a, DisconnectReason::Removed));
    assert!(
        hub.channels().is_empty(),
        "no channel outlives its last subscriber"
    );
}

#[test]
fn node_tags_keep_client_ids_apart_across_hubs() {
    // Two nodes of a cluster: the same counter, different tags.
    let tagged = |node_tag| {
        Hub::new(HubConfig {
            node_tag,
            ..HubConfig::default()
        })
    };
    let (one, two) = (tagged(7), tagged(8));
    let ids = |hub: &Hub| -> Vec<ClientId> { (0..3).map(|_| hub.connect("u", None).0).collect() };
    let (a, b) = (ids(&one), ids(&two));
    assert!(a.iter().all(|id| !b.contains(id)), "{a:?} vs {b:?}");
    assert_eq!(a[0], ClientId((7 << 40) | 1));
    assert_eq!(a[2], ClientId((7 << 40) | 3));
    // Untagged, ids count from 1 as they always did.
    assert_eq!(Hub::default().connect("u", None).0, ClientId(1));
    // Only 24 bits of tag: a larger one cannot spill into the sign bit.
    assert_eq!(
        tagged(u32::MAX).connect("u", None).0,
        ClientId((0xFF_FFFF << 40) | 1)
    );
}

#[test]
fn publish_reaches_every_subscriber_in_offset_order() {
    let hub = Hub::new(with_history(10));
    let mut rxs = Vec::new();
    for i in 0..5 {
        let (id, rx) = hub.connect(format!("u{i}"), None);
        hub.subscribe(id, "news", SubscribeOptions::default()).unwrap();
        rxs.push(rx);
    }
    let (outsider, mut outsider_rx) = hub.connect("x", None);
    hub.subscribe(outsider, "other", SubscribeOptions::default())
        .unwrap();
    for n in 0..3 {
        let pos = hub
            .publish("news", format!("m{n}"), PublishOptions::default())
            .unwrap();
        assert_eq!(pos.offset, n + 1);
    }
    for rx in &mut rxs {
        assert_eq!(offsets(rx), vec![1, 2, 3]);
    }
    assert!(take(&mut outsider_rx).is_empty(), "other channels get nothing");
    assert_eq!(hub.stats().deliveries, 15);
    assert_eq!(hub.stats().publications, 3);
}

#[test]
fn exclusion_by_client_and_by_user() {
    let hub = Hub::default();
    let (a, mut ra) = hub.connect("alice", None);
    let (b1, mut rb1) = hub.connect("bob", None);
    let (b2, mut rb2) = hub.connect("bob", None);
    for id in [a, b1, b2] {
        hub.subscribe(id, "c", SubscribeOptions::default()).unwrap();
    }
    let by_client = PublishOptions {
        exclude: Exclusion {
            clients: vec![b1],
            users: vec![],
        },
        ..Default::default()
    };
    hub.publish("c", "one", by_client).unwrap();
    assert_eq!(pub_data(&take(&mut ra)), vec![Bytes::from("one")]);
    assert!(take(&mut rb1).is_empty(), "the excluded connection gets nothing");
    assert_eq!(
        pub_data(&take(&mut rb2)),
        vec![Bytes::from("one")],
        "bob's other tab still gets it"
    );

    let by_user = PublishOptions {
        exclude: Exclusion {
            clients: vec![],
            users: vec!["bob".into()],
        },
        ..Default::default()
    };
    hub.publish("c", "two", by_user).unwrap();
    assert_eq!(pub_data(&take(&mut ra)), vec![Bytes::from("two")]);
    assert!(take(&mut rb1).is_empty());
    assert!(take(&mut rb2).is_empty());
}

#[test]
fn send_to_one_and_to_all() {
    let hub = Hub::default();
    let (a, mut ra) = hub.connect("a", None);
    let (_b, mut rb) = hub.connect("b", None);
    hub.send(a, "just you").unwrap();
    assert_eq!(take(&mut ra), vec![Seen::Message(Bytes::from("just you"))]);
    assert!(take(&mut rb).is_empty());
    assert_eq!(
        hub.send(ClientId(999), "x"),
        Err(HubError::UnknownClient(ClientId(999)))
    );
    assert_eq!(hub.send_all("everyone"), 2);
    assert_eq!(take(&mut ra), vec![Seen::Message(Bytes::from("everyone"))]);
    assert_eq!(take(&mut rb), vec![Seen::Message(Bytes::from("everyone"))]);
}

#[test]
fn unknown_namespace_invalid_name_and_unknown_client() {
    let hub = Hub::new(with_history(0));
    let (a, _ra) = hub.connect("a", None);
    assert_eq!(
        hub.subscribe(a, "nope:1", SubscribeOptions::default()),
        Err(HubError::UnknownChannel("nope:1".into()))
    );
    assert_eq!(
        hub.publish("nope:1", "x", PublishOptions::default()),
        Err(HubError::UnknownChannel("nope:1".into()))
    );
    assert_eq!(
        hub.subscribe(a, "", SubscribeOptions::default()),
        Err(HubError::InvalidChannel)
    );
    let long = "x".repeat(256);
    assert_eq!(
        hub.publish(&long, "x", PublishOptions::default()),
        Err(HubError::InvalidChannel)
    );
    let longest = "x".repeat(255);
    assert!(
        hub.publish(&longest, "x", PublishOptions::default()).is_ok(),
        "255 bytes is the longest name, and allowed"
    );
    assert_eq!(
        hub.subscribe(ClientId(42), "c", SubscribeOptions::default()),
        Err(HubError::UnknownClient(ClientId(42)))
    );
    assert!(
        hub.channels().is_empty(),
        "failed subscribes leave no channel behind"
    );
}

#[test]
fn double_subscribe_is_refused_and_unsubscribe_stops_delivery() {
    let hub = Hub::default();
    let (a, mut ra) = hub.connect("a", None);
    hub.subscribe(a, "c", SubscribeOptions::default()).unwrap();
    assert_eq!(
        hub.subscribe(a, "c", SubscribeOptions::default()),
        Err(HubError::AlreadySubscribed)
    );
    hub.publish("c", "1", PublishOptions::default()).unwrap();
    assert_eq!(hub.unsubscribe(a, "c"), Ok(true));
    assert_eq!(hub.unsubscribe(a, "c"), Ok(false));
    hub.publish("c", "2", PublishOptions::default()).unwrap();
    assert_eq!(pub_data(&take(&mut ra)), vec![Bytes::from("1")]);
    assert_eq!(hub.subscriber_count("c"), 0);
    assert!(hub.channels().is_empty(), "an empty channel is freed");
}

#[test]
fn disconnect_removes_every_trace() {
    let hub = Hub::new(with_history(0));
    let (a, _ra) = hub.connect("a", None);
    let (b, mut rb) = hub.connect("b", None);
    for ch in ["room:1", "room:2", "plain"] {
        hub.subscribe(a, ch, SubscribeOptions::default()).unwrap();
    }
    hub.subscribe(b, "room:1", SubscribeOptions::default()).unwrap();
    let _ = take(&mut rb);
    assert!(hub.disconnect(a, DisconnectReason::Removed));
    assert_eq!(hub.client_count(), 1);
    assert_eq!(hub.subscriber_count("room:1"), 1);
    assert_eq!(hub.subscriber_count("room:2"), 0);
    assert_eq!(hub.presence("room:1").unwrap().len(), 1);
    assert!(hub.presence("room:2").unwrap().is_empty());
    let names: Vec<String> = hub.channels().into_iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, vec!["room:1".to_string()]);
    assert_eq!(hub.stats().subscriptions, 1);
    assert_eq!(
        take(&mut rb),
        vec![Seen::Leave {
            channel: "room:1".into(),
            user: "a".into()
        }],
        "the other subscriber is told a left"
    );
    hub.disconnect(b, DisconnectReason::Removed);
    assert!(hub.channels().is_empty());
    assert_eq!(hub.stats().subscriptions, 0);
    assert_eq!(hub.stats().channels, 0);
}

#[test]
fn dropped_receiver_is_forgotten_on_next_delivery() {
    let hub = Hub::default();
    let (a, ra) = hub.connect("a", None);
    let (b, mut rb) = hub.connect("b", None);
    hub.subscribe(a, "c", SubscribeOptions::default()).unwrap();
    hub.subscribe(b, "c", SubscribeOptions::default()).unwrap();
    drop(ra);
    hub.publish("c", "x", PublishOptions::default()).unwrap();
    assert!(hub.client(a).is_none());
    assert_eq!(hub.subscriber_count("c"), 1);
    assert_eq!(hub.stats().dropped_closed, 1);
    assert_eq!(offsets(&mut rb), vec![1]);
}

#[test]
fn recovery_replays_exactly_the_gap() {
    let hub = Hub::new(with_history(10));
    let (a, _ra) = hub.connect("a", None);
    let first = hub.subscribe(a, "c", SubscribeOptions::default()).unwrap();
    assert_eq!(first.position.offset, 0);
    for i in 1..=5 {
        hub.publish("c", format!("m{i}"), PublishOptions::default())
            .unwrap();
    }
    let (b, _rb) = hub.connect("b", None);
    let since = StreamPosition {
        offset: 2,
        epoch: first.position.epoch.clone(),
    };
    let s = hub
        .subscribe(
            b,
            "c",
            SubscribeOptions {
                catchup: Catchup::Recover(since),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(s.recovered);
    let offs: Vec<u64> = s.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offs, vec![3, 4, 5]);
    assert_eq!(s.position.offset, 5);
}

#[test]
fn recovery_fails_plainly_on_wrong_epoch_trimmed_history_or_too_many() {
    let mut cfg = with_history(3);
    cfg.channels.recovery_max_publications = 2;
    let hub = Hub::new(cfg);
    let (a, _ra) = hub.connect("a", None);
    let epoch = hub
        .subscribe(a, "c", SubscribeOptions::default())
        .unwrap()
        .position
        .epoch;
    for i in 1..=5 {
        hub.publish("c", format!("m{i}"), PublishOptions::default())
            .unwrap();
    }
    let cases = [
        (
            StreamPosition {
                offset: 4,
                epoch: "other".into(),
            },
            "wrong epoch",
        ),
        (
            StreamPosition {
                offset: 1,
                epoch: epoch.clone(),
            },
            "offset 2 was trimmed",
        ),
        (
            StreamPosition {
                offset: 2,
                epoch: epoch.clone(),
            },
            "3 missed > max 2",
        ),
        (
            StreamPosition {
                offset: 9,
                epoch: epoch.clone(),
            },
            "beyond the top",
        ),
    ];
    for (since, why) in cases {
        let (b, _rb) = hub.connect("b", None);
        let s = hub
            .subscribe(
                b,
                "c",
                SubscribeOptions {
                    catchup: Catchup::Recover(since),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(!s.recovered, "{why}");
        assert!(s.publications.is_empty(), "{why}: all or nothing");
        assert_eq!(
            s.position.offset, 5,
            "{why}: the answer still carries the position"
        );
    }
    let (b, _rb) = hub.connect("b", None);
    let s = hub
        .subscribe(
            b,
            "c",
            SubscribeOptions {
                catchup: Catchup::Recover(StreamPosition { offset: 5, epoch }),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(s.recovered, "nothing missed is a successful recovery");
}

#[test]
fn recovery_honours_exclusion() {
    let hub = Hub::new(with_history(10));
    let (a, _ra) = hub.connect("alice", None);
    let epoch = hub
        .subscribe(a, "c", SubscribeOptions::default())
        .unwrap()
        .position
        .epoch;
    hub.publish("c", "for all", PublishOptions::default()).unwrap();
    let not_bob = PublishOptions {
        exclude: Exclusion {
            clients: vec![],
            users: vec!["bob".into()],
        },
        ..Default::default()
    };
    hub.publish("c", "not for bob", not_bob).unwrap();
    let (b, _rb) = hub.connect("bob", None);
    let s = hub
        .subscribe(
            b,
            "c",
            SubscribeOptions {
                catchup: Catchup::Recover(StreamPosition { offset: 0, epoch }),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(s.recovered);
    let data: Vec<Bytes> = s.publications.iter().map(|p| p.data.clone()).collect();
    assert_eq!(
        data,
        vec![Bytes::from("for all")],
        "bob's reconnect does not replay his own message"
    );
}

#[test]
fn latest_snapshot_then_live() {
    let hub = Hub::new(with_history(10));
    hub.publish("state", "s1", PublishOptions::default()).unwrap();
    hub.publish("state", "s2", PublishOptions::default()).unwrap();
    let (a, mut ra) = hub.connect("a", None);
    let s = hub
        .subscribe(
            a,
            "state",
            SubscribeOptions {
                catchup: Catchup::Latest,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(s.publications.len(), 1);
    assert_eq!(s.publications[0].data, "s2");
    assert_eq!(s.publications[0].offset, 2);
    hub.publish("state", "s3", PublishOptions::default()).unwrap();
    assert_eq!(offsets(&mut ra), vec![3]);
}

#[test]
fn presence_and_join_leave() {
    let hub = Hub::new(with_history(0));
    let (a, mut ra) = hub.connect("alice", Some(Bytes::from("conn-a")));
    let (b, mut rb) = hub.connect("bob", None);
    let (b2, _rb2) = hub.connect("bob", None);
    hub.subscribe(a, "room:1", SubscribeOptions::default()).unwrap();
    hub.subscribe(
        b,
        "room:1",
        SubscribeOptions {
            chan_info: Some(Bytes::from("seat 4")),
            ..Default::default()
        },
    )
    .unwrap();
    hub.subscribe(b2, "room:1", SubscribeOptions::default()).unwrap();
    assert_eq!(
        take(&mut ra),
        vec![
            Seen::Join {
                channel: "room:1".into(),
                user: "bob".into()
            },
            Seen::Join {
                channel: "room:1".into(),
                user: "bob".into()
            }
        ]
    );
    assert_eq!(
        take(&mut rb),
        vec![Seen::Join {
            channel: "room:1".into(),
            user: "bob".into()
        }]
    );
    let present = hub.presence("room:1").unwrap();
    assert_eq!(present.len(), 3);
    let alice = present.iter().find(|i| i.client == a).unwrap();
    assert_eq!(alice.conn_info().map(|b| &b[..]), Some(&b"conn-a"[..]));
    let bob = present.iter().find(|i| i.client == b).unwrap();
    assert_eq!(bob.chan_info().map(|b| &b[..]), Some(&b"seat 4"[..]));
    assert_eq!(
        hub.presence_stats("room:1").unwrap(),
        PresenceStats { clients: 3, users: 2 }
    );
    hub.unsubscribe(b, "room:1").unwrap();
    assert_eq!(
        take(&mut ra),
        vec![Seen::Leave {
            channel: "room:1".into(),
            user: "bob".into()
        }]
    );
    // Channels without presence keep none.
    hub.subscribe(a, "plain", SubscribeOptions::default()).unwrap();
    assert!(hub.presence("plain").unwrap().is_empty());
}

#[test]
fn subscribe_notice_precedes_live_publications() {
    let hub = Hub::default();
    let (a, mut ra) = hub.connect("a", None);
    hub.subscribe_with(a, "c", SubscribeOptions::default(), |s| {
        Some(Bytes::from(format!("subscribed at {}", s.position.offset)))
    })
    .unwrap();
    hub.publish("c", "x", PublishOptions::default()).unwrap();
    let seen = take(&mut ra);
    assert_eq!(seen[0], Seen::Raw(Bytes::from("subscribed at 0")));
    assert!(matches!(seen[1], Seen::Pub { offset: 1, .. }));
    hub.unsubscribe_with(a, "c", Some(Bytes::from("bye"))).unwrap();
    assert_eq!(take(&mut ra), vec![Seen::Raw(Bytes::from("bye"))]);
}

#[test]
fn deliver_fans_out_remote_publications_locally() {
    let hub = Hub::default();
    let (a, mut ra) = hub.connect("a", None);
    hub.subscribe(a, "c", SubscribeOptions::default()).unwrap();
    let mut p = Publication::new("from node B");
    p.offset = 41;
    assert_eq!(hub.deliver("c", p), 1);
    assert_eq!(offsets(&mut ra), vec![41]);
    assert_eq!(hub.deliver("empty", Publication::new("x")), 0);
}

#[test]
fn broadcast_to_several_channels() {
    let hub = Hub::new(with_history(0));
    let (a, mut ra) = hub.connect("a", None);
    hub.subscribe(a, "x", SubscribeOptions::default()).unwrap();
    hub.subscribe(a, "y", SubscribeOptions::default()).unwrap();
    let results = hub.broadcast(&["x", "y", "nope:1"], "b", PublishOptions::default());
    assert!(results[0].is_ok() && results[1].is_ok());
    assert!(matches!(results[2], Err(HubError::UnknownChannel(_))));
    let channels: Vec<String> = take(&mut ra)
        .into_iter()
        .map(|s| match s {
            Seen::Pub { channel, .. } => channel,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(channels, vec!["x".to_string(), "y".to_string()]);
}

#[test]
fn publisher_works_from_plain_threads() {
    let hub = Hub::default();
    let (a, mut ra) = hub.connect("a", None);
    hub.subscribe(a, "sim", SubscribeOptions::default()).unwrap();
    let publisher = hub.publisher();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let p = publisher.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    p.publish("sim", format!("{t}:{i}")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let offs = offsets(&mut ra);
    assert_eq!(offs, (1..=400).collect::<Vec<u64>>());
}

#[test]
fn shutdown_tells_everyone() {
    let hub = Hub::default();
    let (_a, mut ra) = hub.connect("a", None);
    let (_b, mut rb) = hub.connect("b", None);
    assert_eq!(hub.shutdown(), 2);
    assert_eq!(closed_reason(&mut ra), DisconnectReason::Shutdown);
    assert_eq!(closed_reason(&mut rb), DisconnectReason::Shutdown);
    assert_eq!(hub.client_count(), 0);
}

#[test]
fn disconnect_user_closes_all_their_connections_with_reason() {
    let hub = Hub::default();
    let (_a1, mut r1) = hub.connect("a", None);
    let (_a2, mut r2) = hub.connect("a", None);
    let (_b, _rb) = hub.connect("b", None);
    let reason = DisconnectReason::Custom {
        code: 3503,
        reason: "force disconnect".into(),
        reconnect: false,
    };
    assert_eq!(hub.disconnect_user("a", reason.clone()), 2);
    assert_eq!(closed_reason(&mut r1), reason);
    assert_eq!(closed_reason(&mut r2), reason);
    assert_eq!(hub.client_count(), 1);
}

#[test]
fn a_shared_event_is_encoded_once_per_format() {
    let hub = Hub::default();
    let mut rxs = Vec::new();
    for _ in 0..50 {
        let (id, rx) = hub.connect("u", None);
        hub.subscribe(id, "c", SubscribeOptions::default()).unwrap();
        rxs.push(rx);
    }
    hub.publish("c", "payload", PublishOptions::default()).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    const JSON: Format = Format::new(0);
    for rx in &mut rxs {
        let mut out = Vec::new();
        rx.drain_blocking(&mut out, Duration::from_secs(1)).unwrap();
        let Outbound::Event(ev) = &out[0] else {
            panic!("expected an event")
        };
        let bytes = ev.encoded(JSON, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            Bytes::from("encoded")
        });
        assert_eq!(*bytes, "encoded");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn channel_without_history_still_numbers_for_live_subscribers() {
    let hub = Hub::new(with_history(0));
    let (a, mut ra) = hub.connect("a", None);
    hub.subscribe(a, "c", SubscribeOptions::default()).unwrap();
    hub.publish("c", "1", PublishOptions::default()).unwrap();
    hub.publish(
        "c",
        "2",
        PublishOptions {
            skip_history: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(offsets(&mut ra), vec![1, 2]);
    assert!(hub
        .history("c", &HistoryQuery::default())
        .unwrap()
        .publications
        .is_empty());
}

#[test]
fn queue_depths_reports_each_clients_waiting_items_without_draining() {
    let hub = Hub::default();
    let (a, mut ra) = hub.connect("a", None);
    let (b, _rb) = hub.connect("b", None);
    let (_idle, _ri) = hub.connect("idle", None);
    hub.subscribe(a, "c", SubscribeOptions::default()).unwrap();
    hub.subscribe(b, "c", SubscribeOptions::default()).unwrap();
    hub.send(a, "direct").unwrap();
    for i in 0..3 {
        hub.publish("c", format!("{i}"), PublishOptions::default())
            .unwrap();
    }
    let mut depths = Vec::new();
    hub.queue_depths(|d| depths.push(d));
    depths.sort_unstable();
    assert_eq!(depths, vec![0, 3, 4], "one entry per client: idle, b, a");

    // Read-only: what was counted is still there to drain.
    let mut out = Vec::new();
    assert_eq!(ra.try_drain(&mut out), Ok(4));
    let mut depths = Vec::new();
    hub.queue_depths(|d| depths.push(d));
    depths.sort_unstable();
    assert_eq!(depths, vec![0, 0, 3]);

    // A departed client is not reported; `f` may call back into the hub.
    hub.disconnect(b, DisconnectReason::Removed);
    let mut seen = 0;
    hub.queue_depths(|_| seen += hub.client_count());
    assert_eq!(seen, 2 * 2);
}

#[test]
fn user_count_counts_distinct_users_with_the_anonymous_as_one() {
    let hub = Hub::default();
    assert_eq!(hub.user_count(), 0);
    let (_ann1, _r1) = hub.connect("ann", None);
    let (_ann2, _r2) = hub.connect("ann", None);
    let (bob, _r3) = hub.connect("bob", None);
    let (anon1, _r4) = hub.connect("", None);
    let (_anon2, _r5) = hub.connect("", None);
    assert_eq!(hub.user_count(), 3);
    hub.disconnect(anon1, DisconnectReason::Removed);
    assert_eq!(hub.user_count(), 3, "another anonymous connection remains");
    hub.disconnect(bob, DisconnectReason::Removed);
    assert_eq!(hub.user_count(), 2);
}

#[test]
fn channel_options_are_the_namespaces_or_say_why_the_channel_is_refused() {
    let hub = Hub::new(with_history(7));
    let room = hub.channel_options("room:1").unwrap();
    assert!(room.presence && room.join_leave);
    assert_eq!(room.history_size, 7);
    let top = hub.channel_options("plain").unwrap();
    assert!(!top.presence && !top.join_leave);
    assert_eq!(top.history_size, 7);
    assert!(matches!(
        hub.channel_options("nope:1"),
        Err(HubError::UnknownChannel(c)) if c == "nope:1"
    ));
    assert!(matches!(hub.channel_options(""), Err(HubError::InvalidChannel)));
}

#[test]
fn send_raw_queues_bytes_in_order_with_everything_else() {
    let hub = Hub::default();
    let (a, mut ra) = hub.connect("a", None);
    hub.subscribe(a, "c", SubscribeOptions::default()).unwrap();
    hub.send_raw(a, Bytes::from("reply 1")).unwrap();
    hub.publish("c", "p", PublishOptions::default()).unwrap();
    hub.send_raw(a, Bytes::from("reply 2")).unwrap();
    let seen = take(&mut ra);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], Seen::Raw(Bytes::from("reply 1")));
    assert!(matches!(&seen[1], Seen::Pub { data, .. } if data == "p"));
    assert_eq!(seen[2], Seen::Raw(Bytes::from("reply 2")));
    let gone = ClientId(999_999);
    assert_eq!(
        hub.send_raw(gone, Bytes::from("x")),
        Err(HubError::UnknownClient(gone))
    );
}

#[test]
fn remove_history_drops_what_the_channel_kept() {
    let hub = Hub::new(with_history(10));
    hub.publish("c", "one", PublishOptions::default()).unwrap();
    hub.publish("c", "two", PublishOptions::default()).unwrap();
    let page = hub.history("c", &HistoryQuery::default()).unwrap();
    assert_eq!(
        pub_data(&describe_publications(page.publications)),
        ["one", "two"]
    );
    hub.remove_history("c").unwrap();
    let page = hub.history("c", &HistoryQuery::default()).unwrap();
    assert!(page.publications.is_empty());
    assert!(matches!(
        hub.remove_history("nope:1"),
        Err(HubError::UnknownChannel(_))
    ));
}

fn describe_publications(ps: Vec<Publication>) -> Vec<Seen> {
    ps.into_iter()
        .map(|p| Seen::Pub {
            channel: String::new(),
            offset: p.offset,
            data: p.data,
        })
        .collect()
}

#[test]
fn backlogged_holds_while_more_than_half_of_a_queue_limit_waits() {
    let hub = Hub::new(HubConfig {
        queue_limits: QueueLimits {
            max_messages: 4,
            max_bytes: 1 << 20,
        },
        ..Default::default()
    });
    let (a, mut ra) = hub.connect("a", None);
    assert!(!hub.backlogged(a));
    hub.send_raw(a, Bytes::from("1")).unwrap();
    hub.send_raw(a, Bytes::from("2")).unwrap();
    assert!(!hub.backlogged(a), "half is not more than half");
    hub.send_raw(a, Bytes::from("3")).unwrap();
    assert!(hub.backlogged(a));
    assert_eq!(take(&mut ra).len(), 3);
    assert!(!hub.backlogged(a), "drained");
    assert!(
        !hub.backlogged(ClientId(999_999)),
        "an unknown client is not backlogged"
    );
}

#[test]
fn sweep_frees_expired_history_without_waiting_for_a_publish() {
    let clock = Arc::new(ManualClock::new(0));
    let engine = Arc::new(MemoryEngine::new(clock.clone()));
    let hub = Hub::with_engine(
        HubConfig {
            channels: ChannelConfig::new(ChannelOptions {
                history_size: 10,
                history_ttl: Some(Duration::from_secs(1)),
                ..Default::default()
            }),
            ..Default::default()
        },
        engine.clone(),
    );
    hub.publish("c", "x", PublishOptions::default()).unwrap();
    clock.advance(2_000);
    assert_eq!(engine.stream_count(), 1, "time alone frees nothing");
    hub.sweep();
    assert_eq!(engine.stream_count(), 0);
}

#[test]
fn a_publication_without_offset_reaches_every_subscriber_but_the_excluded() {
    let hub = Hub::new(with_history(10));
    let (ann, mut ra) = hub.connect("ann", None);
    let (bob, mut rb) = hub.connect("bob", None);
    hub.publish("c", "before", PublishOptions::default()).unwrap();
    hub.subscribe(ann, "c", SubscribeOptions::default()).unwrap();
    hub.subscribe(bob, "c", SubscribeOptions::default()).unwrap();
    // Offset 0: no position assigned (made elsewhere), never filtered by
    // position, still filtered by its exclusion.
    let mut p = Publication::new("no offset");
    p.exclusion = Some(Arc::new(Exclusion {
        users: vec!["bob".into()],
        ..Default::default()
    }));
    assert_eq!(hub.deliver("c", p), 1);
    assert_eq!(
        take(&mut ra),
        vec![Seen::Pub {
            channel: "c".into(),
            offset: 0,
            data: Bytes::from("no offset"),
        }]
    );
    assert!(take(&mut rb).is_empty());
}

#[test]
fn channel_config_is_the_one_the_hub_was_made_with() {
    let hub = Hub::new(with_history(7));
    let config = hub.channel_config();
    assert_eq!(config.without_namespace.history_size, 7);
    assert!(config.resolve("room:1").is_some_and(|o| o.presence));
    assert!(config.resolve("nope:1").is_none());
}

/// A client's connection for writes at once: what it was sent.
#[derive(Default)]
struct Socket(std::sync::Mutex<Vec<Seen>>);

impl WriteNow for Socket {
    fn write_now(&self, item: &Outbound) -> bool {
        self.0.lock().unwrap().extend(describe(vec![item.clone()]));
        true
    }

    fn write_all_now(&self, items: &[Outbound]) -> bool {
        self.0.lock().unwrap().extend(describe(items.to_vec()));
        true
    }
}

/// An embedder's spread that keeps the flushes it is handed.
#[derive(Default)]
struct Keep(std::sync::Mutex<Vec<Flush>>);

impl Spread for Keep {
    fn spread(&self, flush: Flush) {
        self.0.lock().unwrap().push(flush);
    }
}

/// A hub with a [`Keep`] spread and `n` clients of "news" with writes at
/// once, each writer waiting with a waker that counts its wake-ups in
/// the returned `Wakes`; "m1" published to them.
fn published_to_at_once_subscribers(n: usize) -> Spreading {
    let hub = Hub::new(HubConfig::default());
    let keep = Arc::new(Keep::default());
    assert!(hub.spread_with(keep.clone()));
    assert!(!hub.spread_with(Arc::new(Keep::default())), "one per hub");
    let wakes = Arc::new(Wakes::default());
    let clients = (0..n)
        .map(|i| {
            let (id, mut rx) = hub.connect(format!("u{i}"), None);
            hub.subscribe(id, "news", SubscribeOptions::default()).unwrap();
            take(&mut rx);
            let socket = Arc::new(Socket::default());
            rx.write_now(socket.clone());
            let waker = std::task::Waker::from(wakes.clone());
            let mut out = Vec::new();
            assert!(rx
                .poll_drain(&mut std::task::Context::from_waker(&waker), &mut out)
                .is_pending());
            (rx, socket)
        })
        .collect();
    hub.publish("news", "m1", PublishOptions::default()).unwrap();
    let flushes = std::mem::take(&mut *keep.0.lock().unwrap());
    Spreading {
        hub,
        flushes,
        wakes,
        clients,
    }
}

struct Spreading {
    hub: Hub,
    flushes: Vec<Flush>,
    wakes: Arc<Wakes>,
    clients: Vec<(ClientReceiver, Arc<Socket>)>,
}

/// Runs each flush on a thread of its own, as a spread would.
fn run_on_threads(flushes: Vec<Flush>) {
    let threads: Vec<_> = flushes
        .into_iter()
        .map(|f| std::thread::spawn(move || f.run()))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[derive(Default)]
struct Wakes(AtomicUsize);

impl std::task::Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_large_fan_out_leaves_its_writes_at_once_to_flushes_of_128_clients() {
    let Spreading {
        hub,
        flushes,
        wakes,
        clients,
    } = published_to_at_once_subscribers(200);
    let mut sizes: Vec<usize> = flushes.iter().map(Flush::len).collect();
    sizes.sort();
    assert_eq!(sizes, [72, 128]);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "no writer woken");
    assert!(clients.iter().all(|(_, s)| s.0.lock().unwrap().is_empty()));
    // Run on other threads, the flushes write every delivery at once.
    run_on_threads(flushes);
    for (rx, socket) in &clients {
        assert_eq!(pub_data(&socket.0.lock().unwrap()), [Bytes::from("m1")]);
        assert_eq!(rx.len(), 0);
    }
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
    assert_eq!(hub.stats().deliveries, 200);
}

#[test]
fn a_flush_dropped_unrun_leaves_every_delivery_to_its_writer() {
    let Spreading {
        flushes,
        wakes,
        mut clients,
        ..
    } = published_to_at_once_subscribers(130);
    drop(flushes);
    assert_eq!(wakes.0.load(Ordering::SeqCst), 130);
    for (rx, socket) in &mut clients {
        assert_eq!(pub_data(&take(rx)), [Bytes::from("m1")]);
        assert!(socket.0.lock().unwrap().is_empty());
    }
}

#[test]
fn a_fan_out_of_128_or_fewer_is_written_at_once_by_the_publisher() {
    let Spreading {
        flushes,
        wakes,
        clients,
        ..
    } = published_to_at_once_subscribers(128);
    assert!(flushes.is_empty());
    for (_, socket) in &clients {
        assert_eq!(pub_data(&socket.0.lock().unwrap()), [Bytes::from("m1")]);
    }
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
}

#[test]
fn a_publication_while_a_flush_holds_the_one_before_reaches_every_client_after_it() {
    let Spreading {
        hub,
        flushes,
        wakes,
        mut clients,
    } = published_to_at_once_subscribers(200);
    hub.publish("news", "m2", PublishOptions::default()).unwrap();
    assert_eq!(wakes.0.load(Ordering::SeqCst), 200, "m2 woke each writer");
    // Woken first, a writer takes nothing while a flush holds m1, and
    // waits again.
    let waker = std::task::Waker::from(wakes.clone());
    for (rx, _) in &mut clients {
        let mut out = Vec::new();
        assert!(rx
            .poll_drain(&mut std::task::Context::from_waker(&waker), &mut out)
            .is_pending());
        assert!(out.is_empty());
    }
    run_on_threads(flushes);
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        400,
        "each flush woke the writer again"
    );
    for (rx, socket) in &mut clients {
        assert!(
            socket.0.lock().unwrap().is_empty(),
            "m1 is never written at once past m2"
        );
        assert_eq!(pub_data(&take(rx)), [Bytes::from("m1"), Bytes::from("m2")]);
    }
    assert_eq!(hub.stats().deliveries, 400);
}
