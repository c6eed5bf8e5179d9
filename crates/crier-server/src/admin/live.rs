//! The figures the admin UI charts: once a second, a reading of this
//! node's counters goes into a ring of the last [`KEPT`] seconds; the UI
//! gets rates per second computed from consecutive readings.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::metrics::{live_latency_bound, LiveReading};
use crate::node::Node;

/// Seconds of history kept (five minutes).
const KEPT: usize = 300;

/// How often a reading is taken.
const EVERY: Duration = Duration::from_secs(1);

/// One reading of the counters (all since start).
#[derive(Clone)]
struct Reading {
    /// Unix ms.
    at: u64,
    publications: u64,
    deliveries: u64,
    slow: u64,
    clients: u64,
    subscriptions: u64,
    channels: u64,
    live: LiveReading,
}

pub(super) struct History {
    readings: Mutex<VecDeque<Reading>>,
}

impl History {
    /// Starts reading `node`'s counters every second (on the current tokio
    /// runtime, if there is one) until the node shuts down.
    pub(super) fn start(node: Arc<Node>) -> Arc<Self> {
        let history = Arc::new(History {
            readings: Mutex::new(VecDeque::with_capacity(KEPT + 1)),
        });
        history.read(&node);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let h = history.clone();
            runtime.spawn(async move {
                let mut every = tokio::time::interval(EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    tokio::select! {
                        _ = every.tick() => h.read(&node),
                        _ = node.shutdown.cancelled() => break,
                    }
                }
            });
        }
        history
    }

    fn read(&self, node: &Node) {
        let s = node.hub.stats();
        let reading = Reading {
            at: crate::clock::unix_now_ms(),
            publications: s.publications,
            deliveries: s.deliveries,
            slow: s.dropped_slow,
            clients: s.clients,
            subscriptions: s.subscriptions,
            channels: s.channels,
            live: node.metrics.live(),
        };
        let mut r = self.readings.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == KEPT + 1 {
            r.pop_front();
        }
        r.push_back(reading);
    }

    /// The series the charts draw, one point per second: `t` (Unix ms),
    /// publications and deliveries per second, delivery latency p50/p99
    /// and publish time p50/p99 (ms, `null` in a second without any), slow-consumer drops and
    /// disconnects by code per second, and clients, subscriptions and
    /// channels at each reading.
    pub(super) fn series(&self) -> Value {
        let r: Vec<Reading> = self
            .readings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut t = Vec::new();
        let (mut publications, mut deliveries, mut slow) = (Vec::new(), Vec::new(), Vec::new());
        let (mut p50, mut p99) = (Vec::new(), Vec::new());
        let (mut d50, mut d99) = (Vec::new(), Vec::new());
        let (mut clients, mut subscriptions, mut channels) = (Vec::new(), Vec::new(), Vec::new());
        let mut codes: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for (i, pair) in r.windows(2).enumerate() {
            let (a, b) = (&pair[0], &pair[1]);
            let secs = (b.at.saturating_sub(a.at) as f64 / 1000.0).max(0.001);
            let rate = |x: u64, y: u64| ((y.saturating_sub(x)) as f64 / secs * 10.0).round() / 10.0;
            t.push(b.at);
            publications.push(rate(a.publications, b.publications));
            deliveries.push(rate(a.deliveries, b.deliveries));
            slow.push(rate(a.slow, b.slow));
            clients.push(b.clients);
            subscriptions.push(b.subscriptions);
            channels.push(b.channels);
            let delta = buckets_delta(&a.live.latency, &b.live.latency);
            p50.push(quantile_ms(&delta, 0.50));
            p99.push(quantile_ms(&delta, 0.99));
            let delta = buckets_delta(&a.live.delivery, &b.live.delivery);
            d50.push(quantile_ms(&delta, 0.50));
            d99.push(quantile_ms(&delta, 0.99));
            let before: BTreeMap<u32, u64> = a.live.disconnects.iter().copied().collect();
            for (code, n) in &b.live.disconnects {
                let d = n.saturating_sub(before.get(code).copied().unwrap_or(0));
                let series = codes.entry(*code).or_insert_with(|| vec![0.0; i]);
                series.resize(i, 0.0);
                series.push(d as f64 / secs);
            }
        }
        let points = t.len();
        let disconnects: serde_json::Map<String, Value> = codes
            .into_iter()
            .map(|(code, mut v)| {
                v.resize(points, 0.0);
                (code.to_string(), json!(v))
            })
            .collect();
        json!({
            "t": t,
            "publications": publications,
            "deliveries": deliveries,
            "delivery_p50_ms": d50,
            "delivery_p99_ms": d99,
            "publish_p50_ms": p50,
            "publish_p99_ms": p99,
            "slow": slow,
            "disconnects": disconnects,
            "clients": clients,
            "subscriptions": subscriptions,
            "channels": channels,
        })
    }
}

/// Per bucket, what was counted between readings `a` and `b`.
fn buckets_delta(a: &[u64], b: &[u64]) -> Vec<u64> {
    b.iter()
        .zip(a.iter().chain(std::iter::repeat(&0)))
        .map(|(y, x)| y.saturating_sub(*x))
        .collect()
}

/// The `q` quantile of a bucketed count, in milliseconds (the upper bound
/// of the bucket it falls in), or `None` with no samples.
fn quantile_ms(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(live_latency_bound(i) * 1000.0);
        }
    }
    Some(live_latency_bound(buckets.len() - 1) * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        assert_eq!(quantile_ms(&[0, 0, 0], 0.5), None);
        // 90 publishes up to 1 µs, 10 up to 1,024 µs.
        let mut b = vec![0; 25];
        b[0] = 90;
        b[10] = 10;
        assert_eq!(quantile_ms(&b, 0.5), Some(0.001));
        assert_eq!(quantile_ms(&b, 0.99), Some(1.024));
    }
}
