//! What `crier bench` found, as a table for people or one JSON line for
//! scripts. Owns the arithmetic (expected deliveries, loss, rates,
//! percentiles, CPU and memory per unit) so both forms say the same thing;
//! never measures anything itself.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::publisher::Outcome;
use super::subscriber::{SlowTally, Tally};
use super::Plan;
use crier_loadgen::usage::Memory;

/// The server's usage over the run.
pub struct ServerUsage {
    pub pid: u32,
    /// CPU time used from the first publication to the end of the wait for
    /// stragglers.
    pub cpu: Duration,
    /// Memory before the subscribers connected.
    pub before: Memory,
    /// Memory once all of them had subscribed (idle).
    pub connected: Memory,
    /// Memory at the end.
    pub after: Memory,
}

/// Everything a run produced.
pub struct Report {
    pub plan: Arc<Plan>,
    pub connect_times: Vec<Duration>,
    pub connect_took: Duration,
    pub outcomes: Vec<Outcome>,
    /// Accepted publications per channel.
    pub accepted: Vec<u64>,
    pub tallies: Vec<Tally>,
    /// How each slow subscriber's connection ended.
    pub slow: Vec<SlowTally>,
    /// When publishing started.
    pub start: Instant,
    /// From `start` to the end of the wait for stragglers: the CPU window.
    pub window: Duration,
    pub server: Option<ServerUsage>,
    /// The load generator's own CPU time over the same window.
    pub client_cpu: Option<Duration>,
}

/// The figures, computed once.
struct Figures {
    accepted: u64,
    refused: u64,
    unanswered: u64,
    expected: u64,
    delivered: u64,
    loss: u64,
    worst_loss: u64,
    /// Deliveries beyond the expected: publications that were delivered
    /// but whose answer never came.
    surplus: u64,
    gone: usize,
    /// From the first publication to the last delivery.
    delivering: Duration,
    frames: u64,
    latency: Histogram<u64>,
    connect: [Duration; 3],
}

impl Report {
    /// Publications the server accepted.
    pub fn accepted(&self) -> u64 {
        self.accepted.iter().sum()
    }

    /// The first refusal or publisher failure, for the error message.
    pub fn first_refusal(&self) -> Option<String> {
        self.outcomes
            .iter()
            .find_map(|o| o.first_refusal.clone().or_else(|| o.failure.clone()))
    }

    fn first_failure(&self) -> Option<&str> {
        self.outcomes.iter().find_map(|o| o.failure.as_deref())
    }

    fn first_gone(&self) -> Option<&str> {
        self.tallies.iter().find_map(|t| t.gone.as_deref())
    }

    /// Every delivery's latency in microseconds, merged over subscribers.
    pub fn latency(&self) -> Histogram<u64> {
        let mut latency = Histogram::<u64>::new(2).expect("2 significant figures are valid");
        for tally in &self.tallies {
            for value in tally.latency.iter_recorded() {
                let _ = latency.record_n(value.value_iterated_to(), u64::from(value.count_at_value()));
            }
        }
        latency
    }

    /// The plot's caption: what was run, and its p99.
    pub fn plot_title(&self) -> String {
        let plan = &self.plan;
        let latency = self.latency();
        let pace = if plan.rate == 0 {
            "max rate".to_string()
        } else {
            format!("{}/s", plan.rate)
        };
        let slow = if plan.slow > 0 {
            format!(" + {} slow", plan.slow)
        } else {
            String::new()
        };
        format!(
            "crier bench: {} {} subscribers{slow}, {pace}, {} B; p99 {}",
            plan.subscribers,
            plan.describe_transport(),
            plan.size,
            human_duration(Duration::from_micros(latency.value_at_quantile(0.99)))
        )
    }

    /// Slow subscribers dropped by the server, and the codes they got
    /// ("none" for a reset or an end without a code), by count.
    fn slow_drops(&self) -> (usize, std::collections::BTreeMap<String, usize>) {
        let mut codes = std::collections::BTreeMap::new();
        let mut dropped = 0;
        for t in self.slow.iter().filter(|t| t.dropped) {
            dropped += 1;
            let code = t.code.map_or_else(|| "none".to_string(), |c| c.to_string());
            *codes.entry(code).or_insert(0) += 1;
        }
        (dropped, codes)
    }

    fn figures(&self) -> Figures {
        let accepted = self.accepted();
        let expected: u64 = self
            .accepted
            .iter()
            .zip(&self.plan.fanout)
            .map(|(a, f)| a * f)
            .sum();
        let delivered: u64 = self.tallies.iter().map(|t| t.received).sum();
        let worst_loss = self
            .tallies
            .iter()
            .map(|t| self.accepted[t.channel].saturating_sub(t.received))
            .max()
            .unwrap_or(0);
        let last = self.tallies.iter().filter_map(|t| t.last_delivery).max();
        let latency = self.latency();
        let mut connect = self.connect_times.clone();
        connect.sort_unstable();
        let at = |q: f64| {
            connect
                .get(((connect.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        Figures {
            accepted,
            refused: self.outcomes.iter().map(|o| o.refused).sum(),
            unanswered: self.outcomes.iter().map(Outcome::unanswered).sum(),
            expected,
            delivered,
            loss: expected.saturating_sub(delivered),
            worst_loss,
            surplus: delivered.saturating_sub(expected),
            gone: self.tallies.iter().filter(|t| t.gone.is_some()).count()
                + (self.plan.subscribers - self.tallies.len()),
            delivering: last.map_or(self.plan.duration, |last| {
                last.saturating_duration_since(self.start)
            }),
            frames: self.tallies.iter().map(|t| t.frames).sum(),
            latency,
            connect: [at(0.5), at(0.99), connect.last().copied().unwrap_or_default()],
        }
    }

    pub fn to_json(&self) -> Value {
        let f = self.figures();
        let plan = &self.plan;
        let latency = (!f.latency.is_empty()).then(|| {
            json!({
                "p50": f.latency.value_at_quantile(0.5),
                "p90": f.latency.value_at_quantile(0.9),
                "p99": f.latency.value_at_quantile(0.99),
                "p99_9": f.latency.value_at_quantile(0.999),
                "max": f.latency.max(),
                "mean": round(f.latency.mean(), 1),
            })
        });
        let server = self.server.as_ref();
        let (slow_dropped, slow_codes) = self.slow_drops();
        let mut report = json!({
            "transport": plan.transport.name(),
            "subscribers": plan.subscribers,
            "slow": plan.slow,
            "slow_dropped": slow_dropped,
            "slow_close_codes": slow_codes,
            "slow_first_kept": self.slow.iter().find(|t| !t.dropped).map(|t| t.how.as_str()),
            "channels": plan.channels.len(),
            "publishers": plan.publishers,
            "publish_via": match plan.via { super::Via::Api => "api", super::Via::Ws => "ws" },
            "rate": plan.rate,
            "window": plan.window,
            "duration_s": plan.duration.as_secs_f64(),
            "size": plan.size,
            "connect_ms": {
                "took": ms(self.connect_took),
                "p50": ms(f.connect[0]),
                "p99": ms(f.connect[1]),
                "max": ms(f.connect[2]),
            },
            "sent": f.accepted,
            "refused": f.refused,
            "unanswered": f.unanswered,
            "first_refusal": self.outcomes.iter().find_map(|o| o.first_refusal.as_deref()),
            "publisher_failure": self.first_failure(),
            "publish_rate": round(f.accepted as f64 / plan.duration.as_secs_f64(), 1),
            "deliveries_expected": f.expected,
            "deliveries": f.delivered,
            "loss": f.loss,
            "loss_worst_subscriber": f.worst_loss,
            "surplus": f.surplus,
            "subscribers_gone": f.gone,
            "first_gone": self.first_gone(),
            "deliveries_per_second": round(per_second(f.delivered, f.delivering), 0),
            "messages_per_frame": (f.frames > 0).then(|| round(f.delivered as f64 / f.frames as f64, 2)),
            "latency_us": latency,
            "server_pid": server.map(|s| s.pid),
            "server_cpu_seconds": server.map(|s| round(s.cpu.as_secs_f64(), 2)),
            "server_cpu_cores": server.map(|s| round(s.cpu.as_secs_f64() / self.window.as_secs_f64(), 2)),
            "server_cpu_us_per_delivery": server.and_then(|s| per_delivery(s.cpu, f.delivered)),
            "server_rss_before_bytes": server.map(|s| s.before.rss),
            "server_rss_connected_bytes": server.map(|s| s.connected.rss),
            "server_rss_per_connection_bytes": server.map(|s| self.rss_per_connection(s)),
            "server_rss_after_bytes": server.map(|s| s.after.rss),
            "server_peak_rss_bytes": server.map(|s| s.after.peak),
            "client_cpu_seconds": self.client_cpu.map(|c| round(c.as_secs_f64(), 2)),
            "client_cpu_us_per_delivery": self.client_cpu.and_then(|c| per_delivery(c, f.delivered)),
        });
        // Set apart: one more key in the literal passes `json!`'s
        // recursion limit.
        report["format"] = plan.format.name().into();
        report["protocol"] = plan.protocol.name().into();
        report["compression"] = plan.compression.into();
        report["server_rss_anon_per_connection_bytes"] =
            server.and_then(|s| self.anon_per_connection(s)).into();
        report
    }

    fn rss_per_connection(&self, server: &ServerUsage) -> u64 {
        self.per_connection(server.before.rss, server.connected.rss)
    }

    /// The same, counting anonymous pages only (the heap): code pages
    /// paged in or out between the two readings do not move it.
    fn anon_per_connection(&self, server: &ServerUsage) -> Option<u64> {
        Some(self.per_connection(server.before.anon?, server.connected.anon?))
    }

    /// What the server grew by from `before` to `connected`, per subscriber.
    fn per_connection(&self, before: u64, connected: u64) -> u64 {
        connected.saturating_sub(before) / self.plan.subscribers as u64
    }

    /// The human-readable report, one line per row.
    pub fn table(&self) -> Vec<String> {
        let f = self.figures();
        let plan = &self.plan;
        let mut rows: Vec<(&str, String)> = Vec::new();
        let pace = if plan.rate == 0 {
            format!("as fast as the window allows (window {})", plan.window)
        } else {
            format!("{} publications/s in total", plan.rate)
        };
        rows.push((
            "run",
            format!(
                "{} {} subscribers on {} channel{}, {} publisher{} via {}, {pace}, {:?}, {}-byte payloads",
                plan.subscribers,
                plan.describe_transport(),
                plan.channels.len(),
                plural(plan.channels.len()),
                plan.publishers,
                plural(plan.publishers),
                plan.describe_via(),
                plan.duration,
                plan.size
            ),
        ));
        rows.push((
            "compression",
            if plan.compression {
                "on: subscribers offered permessage-deflate and the server agreed".into()
            } else {
                "off".into()
            },
        ));
        rows.push((
            "connect",
            format!(
                "all subscribed in {}; per connection p50 {}, p99 {}, max {}",
                human_duration(self.connect_took),
                human_duration(f.connect[0]),
                human_duration(f.connect[1]),
                human_duration(f.connect[2])
            ),
        ));
        let mut published = format!(
            "{} accepted ({:.0}/s), {} refused, {} unanswered",
            f.accepted,
            f.accepted as f64 / plan.duration.as_secs_f64(),
            f.refused,
            f.unanswered
        );
        if let Some(why) = self.outcomes.iter().find_map(|o| o.first_refusal.as_deref()) {
            published.push_str(&format!("; first refusal: {why}"));
        }
        if let Some(why) = self.first_failure() {
            published.push_str(&format!("; publisher failed: {why}"));
        }
        rows.push(("published", published));
        rows.push((
            "delivered",
            format!(
                "{} of {} expected; loss {} (worst subscriber {}){}",
                f.delivered,
                f.expected,
                f.loss,
                f.worst_loss,
                if f.surplus > 0 {
                    format!(", {} from unanswered publications", f.surplus)
                } else {
                    String::new()
                }
            ),
        ));
        if f.gone > 0 {
            rows.push((
                "lost",
                format!(
                    "{} subscriber{} stopped receiving early: {}",
                    f.gone,
                    plural(f.gone),
                    self.first_gone().unwrap_or("(task failed)")
                ),
            ));
        }
        if plan.slow > 0 {
            let (dropped, codes) = self.slow_drops();
            let codes = codes
                .iter()
                .map(|(code, n)| format!("{code} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut line = format!(
                "{} never-reading subscriber{} (4 KiB receive buffer, not counted above): {dropped} dropped by the server",
                plan.slow,
                plural(plan.slow)
            );
            if dropped > 0 {
                line.push_str(&format!(" (close codes: {codes})"));
            }
            if let Some(kept) = self.slow.iter().find(|t| !t.dropped) {
                line.push_str(&format!("; not dropped: {}", kept.how));
            }
            rows.push(("slow", line));
        }
        rows.push((
            "throughput",
            format!(
                "{:.0} deliveries/s over {}; {} messages per frame",
                per_second(f.delivered, f.delivering),
                human_duration(f.delivering),
                if f.frames > 0 {
                    format!("{:.2}", f.delivered as f64 / f.frames as f64)
                } else {
                    "-".into()
                }
            ),
        ));
        if !f.latency.is_empty() {
            let us = |q: f64| human_duration(Duration::from_micros(f.latency.value_at_quantile(q)));
            rows.push((
                "latency",
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    us(0.5),
                    us(0.9),
                    us(0.99),
                    us(0.999),
                    human_duration(Duration::from_micros(f.latency.max()))
                ),
            ));
        }
        match &self.server {
            Some(s) => {
                rows.push((
                    "server cpu",
                    format!(
                        "pid {}: {:.2} s ({:.2} cores){}",
                        s.pid,
                        s.cpu.as_secs_f64(),
                        s.cpu.as_secs_f64() / self.window.as_secs_f64(),
                        per_delivery(s.cpu, f.delivered)
                            .map(|us| format!(", {us} µs per delivery"))
                            .unwrap_or_default()
                    ),
                ));
                rows.push((
                    "server memory",
                    format!(
                        "RSS {} before, {} connected ({} per connection{}), {} after; peak {}",
                        bytes(s.before.rss),
                        bytes(s.connected.rss),
                        bytes(self.rss_per_connection(s)),
                        self.anon_per_connection(s)
                            .map(|anon| format!(", {} of heap", bytes(anon)))
                            .unwrap_or_default(),
                        bytes(s.after.rss),
                        bytes(s.after.peak)
                    ),
                ));
            }
            None => rows.push(("server", "give --server-pid PID for its CPU and memory".into())),
        }
        if let Some(cpu) = self.client_cpu {
            rows.push((
                "bench cpu",
                format!(
                    "{:.2} s ({:.2} cores){}",
                    cpu.as_secs_f64(),
                    cpu.as_secs_f64() / self.window.as_secs_f64(),
                    per_delivery(cpu, f.delivered)
                        .map(|us| format!(", {us} µs per delivery"))
                        .unwrap_or_default()
                ),
            ));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.into_iter()
            .map(|(k, v)| format!("{k:<width$}  {v}"))
            .collect()
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1_000.0, 3)
}

fn per_second(n: u64, over: Duration) -> f64 {
    if over.is_zero() {
        0.0
    } else {
        n as f64 / over.as_secs_f64()
    }
}

/// CPU microseconds per delivery, to 3 decimals.
fn per_delivery(cpu: Duration, deliveries: u64) -> Option<f64> {
    (deliveries > 0).then(|| round(cpu.as_secs_f64() * 1e6 / deliveries as f64, 3))
}

fn human_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1024.0 {
        format!("{n:.0} B")
    } else if n < 1024.0 * 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(human_duration(Duration::from_micros(250)), "250 µs");
        assert_eq!(human_duration(Duration::from_micros(1_500)), "1.50 ms");
        assert_eq!(human_duration(Duration::from_millis(2_500)), "2.50 s");
        assert_eq!(bytes(9 * 1024 + 512), "9.5 KiB");
        assert_eq!(per_delivery(Duration::from_secs(1), 400_000), Some(2.5));
        assert_eq!(per_delivery(Duration::from_secs(1), 0), None);
    }
}
