//! `nats-bench`: the fan-out workload of `crier bench`, against a NATS
//! server, so `scripts/compare-peers.sh` can put the two side by side.
//!
//! S subscriber connections (one `async-nats` client each) subscribe to one
//! subject; one publisher connection publishes the same timed payload as
//! `crier bench` (`crier_loadgen::payload`) at a fixed rate or, with
//! `--rate 0`, as fast as the same delivery window (`crier_loadgen::flow`)
//! allows — NATS never answers a publish, so the window is the only thing
//! that keeps a max-rate publisher from overrunning the subscribers. It
//! prints one JSON line whose keys are those of `crier bench --json`.
//!
//! Loopback only, bounded: the duration plus at most 2 s for stragglers.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use crier_loadgen::flow::Flow;
use crier_loadgen::payload;
use crier_loadgen::usage::{self, Memory, Pid};
use futures_util::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::time::Instant;

/// How long deliveries may trail the end of publishing.
const STRAGGLERS: Duration = Duration::from_secs(2);

/// The subject every subscriber listens on.
const SUBJECT: &str = "bench0";

#[derive(Debug, clap::Parser)]
#[command(about = "crier bench's fan-out workload against a NATS server (loopback only)")]
struct Args {
    /// The NATS server, host:port.
    #[arg(long, default_value = "127.0.0.1:4222")]
    server: String,
    /// Subscriber connections.
    #[arg(long)]
    subscribers: usize,
    /// Publications per second; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Publications in flight at most (written, not yet delivered to every
    /// subscriber).
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// How long to publish, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// The server's process id, for its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections opened at the same time, at most.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
}

/// What one subscriber saw.
struct Tally {
    received: u64,
    latency: Histogram<u32>,
    last_delivery: Option<Instant>,
    gone: bool,
}

fn main() -> anyhow::Result<()> {
    let args: Args = clap::Parser::parse();
    let loopback = args
        .server
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", args.server))?
        .all(|a| match a.ip() {
            IpAddr::V4(ip) => ip.is_loopback(),
            IpAddr::V6(ip) => ip.is_loopback(),
        });
    if !loopback {
        bail!(
            "{} is not a loopback address: nats-bench loads loopback servers only",
            args.server
        );
    }
    if args.subscribers == 0 || args.duration <= 0.0 {
        bail!("--subscribers and --duration must be positive");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(run(&args))?;
    runtime.shutdown_background();
    println!("{report}");
    Ok(())
}

async fn connect(server: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        // Room for a whole window of deliveries; the flow keeps it there.
        .subscription_capacity(1 << 16)
        .connect(server)
        .await
        .with_context(|| format!("cannot connect to nats://{server}"))
}

async fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    let server = args.server_pid.map(Pid::Other);
    let before = server.map(usage::memory).transpose()?;
    let flow = Arc::new(Flow::new(args.window.saturating_mul(args.subscribers as u64)));

    // Connect and subscribe, a bounded number at a time; a flush after
    // each SUB means the server has registered it before publishing starts.
    let connect_start = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let mut opening = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let gate = gate.clone();
        let addr = args.server.clone();
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let client = connect(&addr).await?;
            let subscription = client.subscribe(SUBJECT).await.context("subscribe")?;
            client.flush().await.context("flush after subscribe")?;
            anyhow::Ok((client, subscription))
        }));
    }
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for task in opening {
        subscribers.push(task.await.context("a connect task failed")??);
    }
    let connect_took = connect_start.elapsed();
    let connected = server.map(usage::memory).transpose()?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::with_capacity(subscribers.len());
    for (client, mut subscription) in subscribers {
        let flow = flow.clone();
        let mut stop = stop_rx.clone();
        readers.push(tokio::spawn(async move {
            let _client = client;
            let mut tally = Tally {
                received: 0,
                latency: Histogram::new(2).expect("2 significant figures are valid"),
                last_delivery: None,
                gone: false,
            };
            loop {
                let first = tokio::select! {
                    message = subscription.next() => message,
                    _ = stop.changed() => break,
                };
                let Some(mut message) = first else {
                    tally.gone = true;
                    flow.subscriber_gone();
                    break;
                };
                // Take everything already buffered, then tell the flow once.
                let now = payload::unix_nanos();
                let mut n = 0;
                loop {
                    if let Some(sent) = payload::send_time(&message.payload) {
                        let _ = tally.latency.record(payload::latency_us(sent, now));
                        n += 1;
                    }
                    match subscription.next().now_or_never() {
                        Some(Some(next)) => message = next,
                        _ => break,
                    }
                }
                if n > 0 {
                    tally.received += n;
                    tally.last_delivery = Some(Instant::now());
                    flow.delivered(n);
                }
            }
            tally
        }));
    }

    let publisher = connect(&args.server).await?;
    let cpu_before = server.map(usage::cpu_time).transpose()?;
    let client_cpu_before = usage::cpu_time(Pid::This).ok();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(args.duration);
    let fanout = args.subscribers as u64;
    let mut ticker = (args.rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut sent = 0u64;
    let mut body = String::with_capacity(args.size + 64);
    while Instant::now() < until {
        if let Some(ticker) = ticker.as_mut() {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        if !flow.room_for(fanout, until).await {
            break;
        }
        body.clear();
        payload::write(&mut body, payload::unix_nanos(), sent, args.size);
        flow.written(1, fanout);
        publisher
            .publish(SUBJECT, bytes::Bytes::copy_from_slice(body.as_bytes()))
            .await
            .context("publish")?;
        sent += 1;
    }
    publisher.flush().await.context("flush the publisher")?;
    let _ = flow.wait_outstanding(0, Instant::now() + STRAGGLERS).await;
    let window = start.elapsed();
    let cpu_after = server.map(usage::cpu_time).transpose()?;
    let client_cpu_after = usage::cpu_time(Pid::This).ok();
    let after = server.map(usage::memory).transpose()?;
    let _ = stop_tx.send(true);
    let mut tallies = Vec::with_capacity(readers.len());
    for reader in readers {
        tallies.push(reader.await.context("a subscriber task failed")?);
    }

    let expected = sent * fanout;
    let delivered: u64 = tallies.iter().map(|t| t.received).sum();
    let mut latency = Histogram::<u64>::new(2).expect("2 significant figures are valid");
    for tally in &tallies {
        for v in tally.latency.iter_recorded() {
            let _ = latency.record_n(v.value_iterated_to(), u64::from(v.count_at_value()));
        }
    }
    let delivering = tallies
        .iter()
        .filter_map(|t| t.last_delivery)
        .max()
        .map_or(window, |last| last.saturating_duration_since(start));
    let per_delivery =
        |cpu: Duration| (delivered > 0).then(|| round(cpu.as_secs_f64() * 1e6 / delivered as f64, 3));
    let server_cpu = cpu_before.zip(cpu_after).map(|(b, a)| a.saturating_sub(b));
    let client_cpu = client_cpu_before
        .zip(client_cpu_after)
        .map(|(b, a)| a.saturating_sub(b));
    let rss_per_connection = before
        .zip(connected)
        .map(|(b, c): (Memory, Memory)| c.rss.saturating_sub(b.rss) / args.subscribers as u64);
    Ok(json!({
        "server": "nats",
        "subscribers": args.subscribers,
        "rate": args.rate,
        "window": args.window,
        "duration_s": args.duration,
        "size": args.size,
        "connect_ms": { "took": round(connect_took.as_secs_f64() * 1e3, 1) },
        "sent": sent,
        "deliveries_expected": expected,
        "deliveries": delivered,
        "loss": expected.saturating_sub(delivered),
        "subscribers_gone": tallies.iter().filter(|t| t.gone).count(),
        "deliveries_per_second": round(delivered as f64 / delivering.as_secs_f64().max(1e-9), 0),
        "latency_us": (!latency.is_empty()).then(|| json!({
            "p50": latency.value_at_quantile(0.5),
            "p90": latency.value_at_quantile(0.9),
            "p99": latency.value_at_quantile(0.99),
            "p99_9": latency.value_at_quantile(0.999),
            "max": latency.max(),
        })),
        "server_pid": args.server_pid,
        "server_cpu_seconds": server_cpu.map(|c| round(c.as_secs_f64(), 2)),
        "server_cpu_cores": server_cpu.map(|c| round(c.as_secs_f64() / window.as_secs_f64(), 2)),
        "server_cpu_us_per_delivery": server_cpu.and_then(per_delivery),
        "server_rss_connected_bytes": connected.map(|m| m.rss),
        "server_rss_per_connection_bytes": rss_per_connection,
        "server_peak_rss_bytes": after.map(|m| m.peak),
        "client_cpu_seconds": client_cpu.map(|c| round(c.as_secs_f64(), 2)),
        "client_cpu_us_per_delivery": client_cpu.and_then(per_delivery),
    }))
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}
