//! Publish one 100-byte payload to a channel with 1 … 100,000 subscribers
//! whose queues another thread drains. Criterion's throughput is set to the
//! number of deliveries, so its "time per element" is the cost per delivery.
//!
//! Run: `cargo bench -p crier-core --bench fanout`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crier_core::{Hub, HubConfig, PublishOptions, QueueLimits, SubscribeOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

// The publisher never runs more than this many publications ahead of the
// drainer (counted in deliveries taken out of the queues), so queues stay
// small and memory bounded.
const MAX_LAG: u64 = 16;

struct Setup {
    hub: Hub,
    stop: Arc<AtomicBool>,
    // Deliveries the drainer has taken out of the queues so far.
    drained: Arc<AtomicU64>,
    // Publications made so far, across every sample.
    published: u64,
    subscribers: u64,
    drainer: Option<thread::JoinHandle<u64>>,
}

fn setup(subscribers: usize) -> Setup {
    let hub = Hub::new(HubConfig {
        queue_limits: QueueLimits {
            max_messages: 1 << 16,
            max_bytes: 1 << 30,
        },
        ..Default::default()
    });
    let mut receivers = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let (id, rx) = hub.connect(format!("u{i}"), None);
        hub.subscribe(id, "bench", SubscribeOptions::default()).unwrap();
        receivers.push(rx);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let drained = Arc::new(AtomicU64::new(0));
    let drainer = {
        let stop = stop.clone();
        let drained = drained.clone();
        thread::spawn(move || {
            let mut out = Vec::with_capacity(1024);
            let mut items = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut pass = 0;
                for rx in &mut receivers {
                    let _ = rx.try_drain(&mut out);
                    pass += out.len() as u64;
                    out.clear();
                }
                items += pass;
                drained.fetch_add(pass, Ordering::Release);
            }
            items
        })
    };
    Setup {
        hub,
        stop,
        drained,
        published: 0,
        subscribers: subscribers as u64,
        drainer: Some(drainer),
    }
}

fn fanout(c: &mut Criterion) {
    let payload = Bytes::from(vec![b'x'; 100]);
    let mut group = c.benchmark_group("publish_fanout");
    for &n in &[1usize, 100, 10_000, 100_000] {
        let mut s = setup(n);
        group.throughput(Throughput::Elements(n as u64));
        if n >= 10_000 {
            group.sample_size(10).measurement_time(Duration::from_secs(8));
        }
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    s.hub
                        .publish("bench", payload.clone(), PublishOptions::default())
                        .unwrap();
                    s.published += 1;
                    // Wait for the drainer only when it falls far behind.
                    let behind_limit = s.published.saturating_sub(MAX_LAG) * s.subscribers;
                    while s.drained.load(Ordering::Acquire) < behind_limit {
                        std::hint::spin_loop();
                    }
                }
                start.elapsed()
            })
        });
        s.stop.store(true, Ordering::Relaxed);
        s.drainer.take().unwrap().join().unwrap();
        let stats = s.hub.stats();
        assert_eq!(
            stats.dropped_slow + stats.dropped_closed,
            0,
            "a subscriber was dropped: {stats:?}"
        );
    }
    group.finish();
}

/// The same publish with nobody draining meanwhile: queues are emptied
/// between timed batches of 8 publications, outside the timing. Shows the
/// hub's own cost per delivery without cross-core cache traffic.
fn fanout_solo(c: &mut Criterion) {
    let payload = Bytes::from(vec![b'x'; 100]);
    let mut group = c.benchmark_group("publish_fanout_solo");
    for &n in &[1usize, 100, 10_000, 100_000] {
        let hub = Hub::new(HubConfig {
            queue_limits: QueueLimits {
                max_messages: 1 << 16,
                max_bytes: 1 << 30,
            },
            ..Default::default()
        });
        let mut receivers: Vec<_> = (0..n)
            .map(|i| {
                let (id, rx) = hub.connect(format!("u{i}"), None);
                hub.subscribe(id, "bench", SubscribeOptions::default()).unwrap();
                rx
            })
            .collect();
        group.throughput(Throughput::Elements(8 * n as u64));
        if n >= 10_000 {
            group.sample_size(20);
        }
        let mut out = Vec::new();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for _ in 0..8 {
                        hub.publish("bench", payload.clone(), PublishOptions::default())
                            .unwrap();
                    }
                    total += start.elapsed();
                    for rx in &mut receivers {
                        let _ = rx.try_drain(&mut out);
                        out.clear();
                    }
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout, fanout_solo);
criterion_main!(benches);
