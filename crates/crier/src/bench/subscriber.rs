//! The receiving side of `crier bench`: S subscriber connections, each its
//! own task, counting deliveries and recording publish-to-delivery latency.
//!
//! This is the generator's hot path: every delivery of the run passes here,
//! on the same cores as the server. So a frame is scanned, never parsed:
//! each `{"t":` in it starts one delivery's send time, and the latency goes
//! into the task's own histogram (merged once, at the end). The only shared
//! write per frame is one atomic add for the flow control.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::{self, Ws};
use crier_loadgen::payload::{self, unix_nanos};

use super::{Flow, Plan};

/// How long one connection may take to connect and subscribe.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A subscribed connection, reading in its own task.
pub struct Subscriber {
    /// Tells the task to stop reading and hand back its tally.
    stop: oneshot::Sender<()>,
    task: JoinHandle<Tally>,
}

/// What one subscriber saw.
pub struct Tally {
    /// Its channel (index into the plan's channels).
    pub channel: usize,
    /// Publications received.
    pub received: u64,
    /// WebSocket frames that carried them: received / frames is how well
    /// the server batches.
    pub frames: u64,
    /// Publish-to-delivery latency in microseconds.
    pub latency: Histogram<u32>,
    /// When the last publication arrived.
    pub last_delivery: Option<Instant>,
    /// Why it stopped receiving before the end, if it did.
    pub gone: Option<String>,
}

/// All subscribers, connected and subscribed.
pub struct Opened {
    pub subscribers: Vec<Subscriber>,
    /// Per connection, from the TCP connect to the subscribe reply.
    pub connect_times: Vec<Duration>,
    /// The whole connect phase.
    pub took: Duration,
}

/// Opens and subscribes every subscriber, `connect_concurrency` at a time.
/// Fails, naming the first error, unless every one of them subscribed.
pub async fn open_all(plan: &Arc<Plan>, flow: &Arc<Flow>, progress: &ProgressBar) -> anyhow::Result<Opened> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(plan.connect_concurrency));
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let mut subscribers = Vec::with_capacity(plan.subscribers);
    for i in 0..plan.subscribers {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(subscriber(
            plan.clone(),
            flow.clone(),
            i,
            gate.clone(),
            ready_tx.clone(),
            stopped,
        ));
        subscribers.push(Subscriber { stop, task });
    }
    drop(ready_tx);
    let mut connect_times = Vec::with_capacity(plan.subscribers);
    let mut failed = 0;
    let mut first_error = None;
    while let Some(outcome) = ready.recv().await {
        match outcome {
            Ok(took) => connect_times.push(took),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        progress.inc(1);
        if connect_times.len() + failed == plan.subscribers {
            break;
        }
    }
    if connect_times.len() < plan.subscribers {
        for s in &subscribers {
            s.task.abort();
        }
        let failed = plan.subscribers - connect_times.len();
        let why = first_error.map_or_else(|| "a subscriber task failed".to_string(), |e| format!("{e:#}"));
        bail!(
            "{failed} of {} subscribers could not connect and subscribe; the first error: {why}",
            plan.subscribers
        );
    }
    Ok(Opened {
        subscribers,
        connect_times,
        took: started.elapsed(),
    })
}

/// Stops every subscriber and collects what each saw.
pub async fn stop_all(subscribers: Vec<Subscriber>) -> Vec<Tally> {
    let mut tasks = Vec::with_capacity(subscribers.len());
    for s in subscribers {
        let _ = s.stop.send(());
        tasks.push(s.task);
    }
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(tally) = task.await {
            tallies.push(tally);
        }
    }
    tallies
}

async fn subscriber(
    plan: Arc<Plan>,
    flow: Arc<Flow>,
    i: usize,
    gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<anyhow::Result<Duration>>,
    mut stop: oneshot::Receiver<()>,
) -> Tally {
    let channel = plan.channel_of_subscriber(i);
    let mut tally = Tally {
        channel,
        received: 0,
        frames: 0,
        latency: Histogram::new(2).expect("2 significant figures are valid"),
        last_delivery: None,
        gone: None,
    };
    let setup = async {
        let _permit = gate.acquire().await.context("connect gate closed")?;
        let started = Instant::now();
        let mut ws = client::connect(&plan, plan.source(i)).await?;
        client::subscribe(&mut ws, &plan.channels[channel]).await?;
        anyhow::Ok((ws, started.elapsed()))
    };
    let mut ws = match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
        Ok(Ok((ws, took))) => {
            let _ = ready.send(Ok(took));
            ws
        }
        Ok(Err(e)) => {
            let _ = ready.send(Err(e));
            return tally;
        }
        Err(_) => {
            let _ = ready.send(Err(anyhow::anyhow!(
                "no subscribe reply within {SETUP_TIMEOUT:?}"
            )));
            return tally;
        }
    };
    drop(ready);

    tally.gone = receive(&mut ws, &flow, &mut tally, &mut stop).await;
    if tally.gone.is_some() {
        flow.subscriber_gone();
    } else {
        let _ = tokio::time::timeout(Duration::from_millis(100), ws.close(None)).await;
    }
    tally
}

/// Reads until told to stop; returns why it stopped early, if it did.
async fn receive(
    ws: &mut Ws,
    flow: &Flow,
    tally: &mut Tally,
    stop: &mut oneshot::Receiver<()>,
) -> Option<String> {
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut *stop => return None,
            m = ws.next() => m,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(Some(frame)))) => {
                return Some(format!(
                    "disconnected: {} {}",
                    u16::from(frame.code),
                    frame.reason
                ));
            }
            Some(Ok(Message::Close(None))) | None => return Some("the server closed the connection".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Some(format!("connection lost: {e}")),
        };
        let scan = scan(text.as_str(), unix_nanos(), &mut tally.latency);
        tally.frames += 1;
        if scan.deliveries > 0 {
            tally.received += scan.deliveries;
            tally.last_delivery = Some(Instant::now());
            flow.delivered(scan.deliveries);
        }
        if let Some(line) = scan.unsubscribed {
            return Some(format!("unsubscribed by the server: {line}"));
        }
        if scan.ping && ws.send(Message::text("{}")).await.is_err() {
            return Some("cannot answer a ping".into());
        }
    }
}

/// What one frame held.
#[derive(Debug, Default, PartialEq)]
struct Scan {
    /// Publications found (each latency recorded).
    deliveries: u64,
    /// The server pinged (an empty `{}` message).
    ping: bool,
    /// An unsubscribe push, verbatim.
    unsubscribed: Option<String>,
}

/// Scans a frame of newline-separated messages for publications of the
/// payload `crier bench` sends, recording `now - t` for each. Never parses
/// JSON: publications are recognised by their data's first bytes.
fn scan(text: &str, now_nanos: u64, latency: &mut Histogram<u32>) -> Scan {
    let mut found = Scan::default();
    for line in text.split('\n') {
        if let Some(at) = line.find(payload::SEND_TIME) {
            // A mangled send time still counts as a delivery, at the
            // largest latency.
            let sent = payload::digits(&line.as_bytes()[at + payload::SEND_TIME.len()..]).unwrap_or(0);
            let micros = payload::latency_us(sent, now_nanos);
            // Recording only fails if the histogram cannot grow; the value
            // is clamped well below that.
            let _ = latency.record(micros);
            found.deliveries += 1;
        } else if line == "{}" {
            found.ping = true;
        } else if line.contains("\"unsubscribe\"") && found.unsubscribed.is_none() {
            found.unsubscribed = Some(line.to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> Histogram<u32> {
        Histogram::new(2).unwrap()
    }

    #[test]
    fn a_joined_frame_counts_every_publication() {
        let mut latency = histogram();
        let frame = concat!(
            r#"{"push":{"channel":"bench0","pub":{"data":{"t":100000,"s":0,"p":"xx"},"offset":1}}}"#,
            "\n",
            r#"{"push":{"channel":"bench0","pub":{"data":{"t":200000,"s":1,"p":"xx"},"offset":2}}}"#,
            "\n{}"
        );
        // 200 and 100 µs: exact at two significant figures.
        let found = scan(frame, 300_000, &mut latency);
        assert_eq!(
            found,
            Scan {
                deliveries: 2,
                ping: true,
                unsubscribed: None
            }
        );
        assert_eq!(latency.len(), 2);
        assert_eq!(latency.min(), 100);
        assert_eq!(latency.max(), 200);
    }

    #[test]
    fn pings_and_other_pushes_are_not_deliveries() {
        let mut latency = histogram();
        assert_eq!(
            scan("{}", 1, &mut latency),
            Scan {
                deliveries: 0,
                ping: true,
                unsubscribed: None
            }
        );
        let unsub =
            r#"{"push":{"channel":"bench0","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#;
        assert_eq!(scan(unsub, 1, &mut latency).unsubscribed.as_deref(), Some(unsub));
        assert!(latency.is_empty());
    }

    #[test]
    fn a_send_time_from_the_future_counts_as_zero() {
        let mut latency = histogram();
        let found = scan(r#"{"push":{"pub":{"data":{"t":9000,"s":1}}}}"#, 10, &mut latency);
        assert_eq!(found.deliveries, 1);
        assert_eq!(latency.max(), 0);
    }
}
