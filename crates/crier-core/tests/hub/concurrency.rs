//! Many threads at once: publishers, subscribers that come and go, and
//! disconnects. Every subscriber must see strictly increasing offsets with
//! no gap, and the registry must be empty at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

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
    let clients: Vec<_> = (0..4u64)
        .map(|seed| {
            let hub = hub.clone();
            let done = done.clone();
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
                    let offs = collect(&mut rx, channel, &done, rng.gen_range(1..4));
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

/// A subscriber joins with catch-up at a seeded point of a publish burst;
/// catch-up plus live must be exactly every offset after its position, once.
#[test]
fn snapshot_race_each_offset_exactly_once() {
    let mut schedule = SmallRng::seed_from_u64(0xC41E);
    for _ in 0..40 {
        let hub = Hub::new(config());
        let seed_pos = hub.publish("c", "seed", PublishOptions::default()).unwrap();
        const BURST: u64 = 2000;
        let join_after = schedule.gen_range(0..BURST);
        let publisher = {
            let p = hub.publisher();
            thread::spawn(move || {
                for i in 0..BURST {
                    p.publish("c", i.to_string()).unwrap();
                }
            })
        };
        // Join once the publisher has made `join_after` publications: a
        // spin on the counter, never a sleep.
        while hub.stats().publications < 1 + join_after {
            std::hint::spin_loop();
        }
        let (id, mut rx) = hub.connect("late", None);
        let s = hub
            .subscribe(
                id,
                "c",
                SubscribeOptions {
                    catchup: Catchup::Recover(seed_pos.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
        publisher.join().unwrap();
        let mut seen: Vec<u64> = s.publications.iter().map(|p| p.offset).collect();
        if !s.recovered {
            // Too much was missed to replay: the live stream starts exactly
            // after the returned position.
            seen.clear();
            assert!(s.position.offset > seed_pos.offset);
        }
        let first = if s.recovered {
            seed_pos.offset + 1
        } else {
            s.position.offset + 1
        };
        let mut out = Vec::new();
        rx.try_drain(&mut out).unwrap();
        for item in describe(out) {
            if let Seen::Pub { offset, .. } = item {
                seen.push(offset);
            }
        }
        let expected: Vec<u64> = (first..=1 + BURST).collect();
        assert_eq!(
            seen, expected,
            "joined after {join_after}: catch-up + live must be every offset once"
        );
    }
}
