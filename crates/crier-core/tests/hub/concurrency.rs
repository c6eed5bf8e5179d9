//! Many threads at once: publishers, subscribers that come and go, and
//! disconnects. Every subscriber must see strictly increasing offsets with
//! no gap, and the registry must be empty at the end.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crier_core::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::support::describe;
use super::support::Seen;

fn config() -> HubConfig {
    HubConfig {
        channels: ChannelConfig::new(ChannelOptions {
            history_size: 500,
            ..Default::default()
        })
        .namespace(
            "room",
            ChannelOptions {
                history_size: 100,
                presence: true,
                join_leave: true,
                ..Default::default()
            },
        ),
        queue_limits: QueueLimits {
            max_messages: 1 << 20,
            max_bytes: 1 << 30,
        },
        node_tag: 0,
    }
}

// Receives until `expected_last` (or the publishers finished and the queue
// is empty); returns publication offsets of `channel`, in order.
fn collect(rx: &mut ClientReceiver, channel: &str, done: &AtomicBool, rounds: usize) -> Vec<u64> {
    let mut offs = Vec::new();
    let mut out = Vec::new();
    for _ in 0..rounds {
        if rx.drain_blocking(&mut out, Duration::from_millis(50)).is_err() {
            break;
        }
        if done.load(Ordering::SeqCst) {
            break;
        }
    }
    let _ = rx.try_drain(&mut out);
    for s in describe(out) {
        if let Seen::Pub {
            channel: c, offset, ..
        } = s
        {
            if c == channel {
                offs.push(offset);
            }
        }
    }
    offs
}

#[test]
fn concurrent_publish_subscribe_disconnect_keeps_order_and_leaks_nothing() {
    let hub = Hub::new(config());
    let done = Arc::new(AtomicBool::new(false));
    let channels = ["c", "room:1"];
    // The publishers start once every client made its first subscription,
    // so each first subscription has publications to check however the
    // threads are scheduled.
    let (subscribed, first_subscriptions) = mpsc::channel();
    let clients: Vec<_> = (0..4u64)
        .map(|seed| {
            let hub = hub.clone();
            let done = done.clone();
            let subscribed = subscribed.clone();
            thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed);
                let mut checked = 0usize;
                for round in 0..40 {
                    let (id, mut rx) = hub.connect(format!("user{}", rng.gen_range(0..3)), None);
                    let channel = channels[round % 2];
                    let start = hub
                        .subscribe(id, channel, SubscribeOptions::default())
                        .unwrap()
                        .position
                        .offset;
                    let mut offs = collect(&mut rx, channel, &done, rng.gen_range(1..4));
                    if round == 0 {
                        subscribed.send(()).unwrap();
                        // Every publication of the channel from now on is
                        // queued for this client: wait for the first.
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while offs.is_empty() {
                            assert!(Instant::now() < deadline, "no publication in 10 s");
                            offs = collect(&mut rx, channel, &done, 1);
                        }
                    }
                    for (expected, off) in (start + 1..).zip(&offs) {
                        assert_eq!(*off, expected, "gap or duplicate in {channel} after {start}");
                    }
                    checked += offs.len();
                    match rng.gen_range(0..3) {
                        0 => {
                            hub.unsubscribe(id, channel).unwrap();
                            hub.disconnect(id, DisconnectReason::Removed);
                        }
                        1 => {
                            hub.disconnect(id, DisconnectReason::Removed);
                        }
                        _ => drop(rx), // vanished client: the hub must notice by itself
                    }
                }
                checked
            })
        })
        .collect();
    for _ in 0..4 {
        first_subscriptions
            .recv_timeout(Duration::from_secs(10))
            .expect("a client did not subscribe within 10 s");
    }
    let publishers: Vec<_> = (0..3)
        .map(|t| {
            let p = hub.publisher();
            thread::spawn(move || {
                for i in 0..3000 {
                    p.publish(channels[i % 2], format!("{t}-{i}")).unwrap();
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let checked: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(
        checked > 0,
        "subscribers received nothing: the test checked nothing"
    );
    // Vanished clients are only noticed on a delivery attempt.
    hub.publish("c", "flush", PublishOptions::default()).unwrap();
    hub.publish("room:1", "flush", PublishOptions::default()).unwrap();
    assert_eq!(hub.client_count(), 0, "registry leaks clients");
    assert!(hub.channels().is_empty(), "channels leak: {:?}", hub.channels());
    assert!(hub.presence("room:1").unwrap().is_empty(), "presence leaks");
    let stats = hub.stats();
    assert_eq!(stats.subscriptions, 0);
    assert_eq!(stats.channels, 0);
    assert_eq!(stats.clients, 0);
    assert_eq!(stats.publications, 9002);
}

// ----- snapshot races --------------------------------------------------------

const BURST: u64 = 2000;

// A hub whose "c" history holds the whole burst, so only the recovery cap
// decides whether a late subscriber recovers.
fn race_hub(recovery_cap: usize) -> Hub {
    let mut channels = ChannelConfig::new(ChannelOptions {
        history_size: BURST as usize + 10,
        ..Default::default()
    });
    channels.recovery_max_publications = recovery_cap;
    Hub::new(HubConfig {
        channels,
        queue_limits: QueueLimits {
            max_messages: 1 << 20,
            max_bytes: 1 << 30,
        },
        node_tag: 0,
    })
}

// The payload of the publication at `offset`: "seed" at 1, then the burst.
fn payload(offset: u64) -> String {
    match offset {
        1 => "seed".to_owned(),
        o => (o - 2).to_string(),
    }
}

// Publishes "seed" then a burst of `BURST` on a second thread; once
// `join_after` burst publications are made, the publisher waits until this
// thread is about to subscribe, then carries on, so the subscribe lands in
// the middle of the burst. The handshake is two spin-waits on one atomic
// (both threads are running when the subscribe starts), never a sleep.
// Returns the seed's position, the subscribe answer and the offsets of the
// publications that arrived live.
fn join_during_burst(
    hub: &Hub,
    join_after: u64,
    catchup: impl FnOnce(&StreamPosition) -> Catchup,
) -> (StreamPosition, Subscribed, Vec<u64>) {
    const PAUSED: u8 = 1;
    const GO: u8 = 2;
    let seed = hub.publish("c", "seed", PublishOptions::default()).unwrap();
    let step = Arc::new(AtomicU8::new(0));
    let publisher = {
        let p = hub.publisher();
        let step = step.clone();
        thread::spawn(move || {
            for i in 0..BURST {
                if i == join_after {
                    step.store(PAUSED, Ordering::SeqCst);
                    while step.load(Ordering::SeqCst) != GO {
                        std::hint::spin_loop();
                        thread::yield_now();
                    }
                }
                p.publish("c", i.to_string()).unwrap();
            }
        })
    };
    let (id, mut rx) = hub.connect("late", None);
    let catchup = catchup(&seed);
    while step.load(Ordering::SeqCst) != PAUSED {
        std::hint::spin_loop();
        thread::yield_now();
    }
    step.store(GO, Ordering::SeqCst);
    let s = hub
        .subscribe(
            id,
            "c",
            SubscribeOptions {
                catchup,
                ..Default::default()
            },
        )
        .unwrap();
    publisher.join().unwrap();
    let mut out = Vec::new();
    rx.try_drain(&mut out).unwrap();
    let mut live = Vec::new();
    for item in describe(out) {
        if let Seen::Pub { offset, data, .. } = item {
            assert_eq!(
                data,
                payload(offset),
                "live publication {offset} carries its own data"
            );
            live.push(offset);
        }
    }
    (seed, s, live)
}

/// A subscriber joins with recovery in the middle of a publish burst;
/// catch-up plus live must be exactly every offset after its position, once.
/// The schedule is deterministic: even rounds raise the recovery cap above
/// the burst (history holds all of it), so recovery must succeed whatever
/// the timing; odd rounds join after more than the Centrifugo cap of 300
/// publications, so it must fail and the live stream start right after the
/// returned position.
#[test]
fn snapshot_race_each_offset_exactly_once() {
    const ROUNDS: usize = 40;
    const CAP: usize = 300;
    let mut schedule = SmallRng::seed_from_u64(0xC41E);
    let (mut recovered, mut raced) = (0, 0);
    for round in 0..ROUNDS {
        let must_recover = round % 2 == 0;
        let (hub, join_after) = if must_recover {
            (race_hub(BURST as usize + 1), schedule.gen_range(0..BURST / 2))
        } else {
            (race_hub(CAP), schedule.gen_range(CAP as u64 + 1..BURST / 2))
        };
        let (seed, s, live) = join_during_burst(&hub, join_after, |seed| Catchup::Recover(seed.clone()));
        let top = 1 + BURST;
        assert!(
            s.position.offset > join_after,
            "round {round}: joined after {join_after} publications, position {}",
            s.position.offset
        );
        assert_eq!(
            s.recovered, must_recover,
            "round {round}: joined after {join_after}"
        );
        let caught_up: Vec<u64> = s.publications.iter().map(|p| p.offset).collect();
        for p in &s.publications {
            assert_eq!(
                p.data,
                payload(p.offset),
                "replayed publication {} carries its own data",
                p.offset
            );
        }
        if s.recovered {
            // Everything between the seed and the join point, replayed.
            assert_eq!(
                caught_up,
                (seed.offset + 1..=s.position.offset).collect::<Vec<_>>()
            );
            assert!(caught_up.len() as u64 >= join_after);
            recovered += 1;
        } else {
            assert!(caught_up.is_empty(), "not recovered means nothing replayed");
        }
        assert_eq!(
            live,
            (s.position.offset + 1..=top).collect::<Vec<_>>(),
            "round {round}, joined after {join_after}: live must be every offset after the position, once"
        );
        if !live.is_empty() && s.position.offset > seed.offset {
            raced += 1;
        }
    }
    assert_eq!(recovered, ROUNDS / 2, "every round within the cap recovered");
    // The subscribe landed inside the burst (some publications before it,
    // some after) in nearly every round; a loaded machine may delay a few.
    assert!(
        raced >= ROUNDS / 2,
        "only {raced} of {ROUNDS} rounds joined mid-burst"
    );
}

/// A subscriber asks for the latest publication as a snapshot in the middle
/// of a burst: it gets exactly the publication at its position, then live
/// publications strictly newer than it, with no duplicate and no gap.
#[test]
fn snapshot_race_latest_then_strictly_newer() {
    const ROUNDS: usize = 30;
    let mut schedule = SmallRng::seed_from_u64(0x1A7E57);
    let mut raced = 0;
    for round in 0..ROUNDS {
        let hub = race_hub(300);
        let join_after = schedule.gen_range(0..BURST / 2);
        let (_, s, live) = join_during_burst(&hub, join_after, |_| Catchup::Latest);
        assert!(
            s.position.offset > join_after,
            "round {round}: position {}",
            s.position.offset
        );
        assert!(!s.recovered);
        let snapshot: Vec<u64> = s.publications.iter().map(|p| p.offset).collect();
        assert_eq!(
            snapshot,
            vec![s.position.offset],
            "round {round}: the snapshot is the publication at the position"
        );
        assert_eq!(s.publications[0].data, payload(s.position.offset));
        assert_eq!(
            live,
            (s.position.offset + 1..=1 + BURST).collect::<Vec<_>>(),
            "round {round}, joined after {join_after}: live must start right after the snapshot"
        );
        if !live.is_empty() {
            raced += 1;
        }
    }
    assert!(
        raced >= ROUNDS / 2,
        "only {raced} of {ROUNDS} rounds joined mid-burst"
    );
}

/// The last subscriber of a channel leaves while another one joins: the
/// channel must stay for the newcomer, who gets every publication made
/// while it is subscribed. One thread subscribes and leaves in a tight loop
/// while the other joins, publishes, checks and leaves, so the join lands
/// at every point of the leave, including between the leave seeing the
/// channel empty and freeing it.
#[test]
fn a_subscriber_joining_as_the_last_one_leaves_keeps_the_channel() {
    const ROUNDS: usize = 50_000;
    let hub = Hub::new(config());
    let (leaver, mut rl) = hub.connect("leaver", None);
    let (joiner, mut rj) = hub.connect("joiner", None);
    let stop = Arc::new(AtomicBool::new(false));
    let leaving = {
        let (hub, stop) = (hub.clone(), stop.clone());
        thread::spawn(move || {
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                hub.subscribe(leaver, "c", SubscribeOptions::default()).unwrap();
                hub.unsubscribe(leaver, "c").unwrap();
                let _ = rl.try_drain(&mut out);
                out.clear();
            }
        })
    };
    let mut out = Vec::new();
    for round in 0..ROUNDS {
        hub.subscribe(joiner, "c", SubscribeOptions::default()).unwrap();
        hub.publish("c", format!("{round}"), PublishOptions::default())
            .unwrap();
        rj.try_drain(&mut out).unwrap();
        let got: Vec<Seen> = describe(std::mem::take(&mut out));
        if !matches!(&got[..], [Seen::Pub { data, .. }] if *data == *format!("{round}")) {
            stop.store(true, Ordering::Relaxed);
            panic!("round {round}: the joiner got {got:?}");
        }
        hub.unsubscribe(joiner, "c").unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    leaving.join().unwrap();
    assert!(hub.channels().is_empty());
}
