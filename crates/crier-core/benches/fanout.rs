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
// drainer, so queues stay small and memory bounded.
const MAX_LAG: u64 = 16;

struct Setup {
    hub: Hub,
    stop: Arc<AtomicBool>,
    // Full passes the drainer has made over every queue.
    drained: Arc<AtomicU64>,
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
                for rx in &mut receivers {
                    let _ = rx.try_drain(&mut out);
                    items += out.len() as u64;
                    out.clear();
                }
                drained.fetch_add(1, Ordering::Release);
            }
            items
        })
    };
    Setup {
        hub,
        stop,
        drained,
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
                let base = s.drained.load(Ordering::Acquire);
                for i in 0..iters {
                    s.hub
                        .publish("bench", payload.clone(), PublishOptions::default())
                        .unwrap();
                    // Wait for the drainer only when it falls far behind.
                    while i > MAX_LAG && s.drained.load(Ordering::Acquire) < base + (i - MAX_LAG) / MAX_LAG {
                        std::hint::spin_loop();
                    }
                }
                start.elapsed()
            })
        });
        s.stop.store(true, Ordering::Relaxed);
        s.drainer.take().unwrap().join().unwrap();
        assert_eq!(
            s.hub.stats().dropped_slow,
            0,
            "a subscriber was dropped: queues too small"
        );
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
