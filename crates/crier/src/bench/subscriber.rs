//! The receiving side of `crier bench`: S subscriber connections, each its
//! own task, counting deliveries and recording publish-to-delivery latency.
//!
//! This is the generator's hot path: every delivery of the run passes here,
//! on the same cores as the server. So a frame is scanned, never parsed:
//! each `{"t":` in it starts one delivery's send time (in a protobuf frame,
//! each publication's data is found by walking the fields in place, see
//! [`protobuf`](super::protobuf)), and the latency goes into the task's own
//! histogram (merged once, at the end). The only shared write per frame is
//! one atomic add for the flow control.
//!
//! With `--protocol raw` a WebSocket subscriber is subscribed by its
//! handshake alone, and each text message is a bare payload: the same scan
//! finds its one send time.
//!
//! Subscribers speak WebSocket (client protocol v2, JSON or protobuf), `uni_sse` or a plain
//! TCP listener's lines (`--transport`); the last two are byte streams
//! ([`stream`](super::stream)), scanned line by line the same way. With
//! `--compression`, WebSocket subscribers use [`deflate`](super::deflate)'s
//! own client (permessage-deflate); each inflated message goes through the
//! same scan.
//!
//! `--slow N` adds N connections that subscribe like the others (with a
//! 4 KiB receive buffer) and then never read, until the run is over: only
//! then do they read what is left, to see whether the server dropped them
//! and with which code. They count for nothing else.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::client::{self, Ws};
use super::deflate::{self, DeflateWs, Event};
use super::protobuf;
use super::stream::{self, StreamConn};
use crier_loadgen::payload::{self, unix_nanos};

use super::{Flow, Plan, Protocol, Transport};

/// How long one connection may take to connect and subscribe.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// The receive buffer of a slow subscriber's socket: small, so that the
/// server's queue limit for it is reached soon.
pub const SLOW_RECV_BUFFER: u32 = 4 * 1024;

/// When a slow subscriber finally reads: this long without a byte means
/// the server still holds it open.
const SLOW_SILENCE: Duration = Duration::from_secs(1);

/// ... and it reads for this long at most.
const SLOW_DRAIN: Duration = Duration::from_secs(10);

/// One subscriber connection, whichever transport.
enum Conn {
    Ws(Box<Ws>),
    /// WebSocket with permessage-deflate (`--compression`).
    Deflate(Box<DeflateWs>),
    Stream(StreamConn),
}

/// A slow subscriber: subscribed, never reading until told to.
pub struct Slow {
    /// Tells it the run is over: read what is left and say how it ended.
    stop: oneshot::Sender<()>,
    task: JoinHandle<SlowTally>,
}

/// How a slow subscriber's connection ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowTally {
    /// The server ended the connection (close frame, disconnect push,
    /// reset or end of stream).
    pub dropped: bool,
    /// The close or disconnect code it gave, if it gave one.
    pub code: Option<u16>,
    /// What was seen, in words.
    pub how: String,
}

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

impl Tally {
    /// Counts what one frame's `scan` delivered (and tells the flow); why
    /// the subscriber must stop, when the server unsubscribed it.
    fn count(&mut self, scan: &Scan, flow: &Flow) -> Option<String> {
        if scan.deliveries > 0 {
            self.received += scan.deliveries;
            self.last_delivery = Some(Instant::now());
            flow.delivered(scan.deliveries);
        }
        scan.unsubscribed
            .as_ref()
            .map(|line| format!("unsubscribed by the server: {line}"))
    }
}

/// All subscribers, connected and subscribed.
pub struct Opened {
    pub subscribers: Vec<Subscriber>,
    pub slow: Vec<Slow>,
    /// Per connection, from the TCP connect to the subscribe reply.
    pub connect_times: Vec<Duration>,
    /// The whole connect phase.
    pub took: Duration,
}

/// Opens and subscribes every subscriber (and every slow one),
/// `connect_concurrency` at a time. Fails, naming the first error, unless
/// every one of them subscribed.
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
    let mut slow = Vec::with_capacity(plan.slow);
    for i in plan.subscribers..plan.subscribers + plan.slow {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(slow_subscriber(
            plan.clone(),
            i,
            gate.clone(),
            ready_tx.clone(),
            stopped,
        ));
        slow.push(Slow { stop, task });
    }
    drop(ready_tx);
    // TCP listeners subscribe silently: publish probes until every
    // connection has read one.
    let (probe_stop, probe_stopped) = oneshot::channel();
    let mut probe = (plan.transport == Transport::Tcp)
        .then(|| tokio::spawn(super::probe::run(plan.clone(), probe_stopped)));
    let total = plan.subscribers + plan.slow;
    let mut connect_times = Vec::with_capacity(plan.subscribers);
    let mut subscribed = 0;
    let mut failed = 0;
    let mut first_error = None;
    while subscribed + failed < total {
        let outcome = tokio::select! {
            outcome = ready.recv() => outcome,
            probed = async { probe.as_mut().expect("checked").await }, if probe.is_some() => {
                probe = None;
                let e = match probed {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::anyhow!("the probe task failed: {e}"),
                };
                // Without probes no TCP subscriber can be confirmed.
                first_error = Some(e);
                break;
            }
        };
        let Some((is_slow, outcome)) = outcome else { break };
        match outcome {
            Ok(took) => {
                subscribed += 1;
                if !is_slow {
                    connect_times.push(took);
                }
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        progress.inc(1);
    }
    let _ = probe_stop.send(());
    if let Some(probe) = probe {
        let _ = probe.await;
    }
    if subscribed < total {
        for s in &subscribers {
            s.task.abort();
        }
        for s in &slow {
            s.task.abort();
        }
        let failed = total - subscribed;
        let why = first_error.map_or_else(|| "a subscriber task failed".to_string(), |e| format!("{e:#}"));
        bail!("{failed} of {total} subscribers could not connect and subscribe; the first error: {why}");
    }
    Ok(Opened {
        subscribers,
        slow,
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

/// Tells every slow subscriber the run is over and collects how each
/// connection ended. They read concurrently.
pub async fn stop_slow(slow: Vec<Slow>) -> Vec<SlowTally> {
    let mut tasks = Vec::with_capacity(slow.len());
    for s in slow {
        let _ = s.stop.send(());
        tasks.push(s.task);
    }
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        tallies.push(task.await.unwrap_or_else(|e| SlowTally {
            dropped: false,
            code: None,
            how: format!("task failed: {e}"),
        }));
    }
    tallies
}

/// Connects subscriber `i` and subscribes it, holding a connect-gate
/// permit while connecting.
async fn setup(
    plan: &Plan,
    i: usize,
    recv_buffer: Option<u32>,
    gate: &Semaphore,
) -> anyhow::Result<(Conn, Duration)> {
    let k = plan.channel_of_subscriber(i);
    let channel = &plan.channels[k];
    let permit = gate.acquire().await.context("connect gate closed")?;
    let started = Instant::now();
    let source = plan.source(i);
    let conn = match plan.transport {
        Transport::Ws if plan.compression => {
            let node = plan.node_of_subscriber(i);
            let mut ws = deflate::connect(plan, node, source, recv_buffer, plan.format).await?;
            ws.subscribe(plan.format, &plan.channel_names[k]).await?;
            Conn::Deflate(Box::new(ws))
        }
        Transport::Ws if plan.protocol == Protocol::Raw => {
            let node = plan.node_of_subscriber(i);
            Conn::Ws(Box::new(client::open_raw(node, source, recv_buffer, 0).await?))
        }
        Transport::Ws => {
            let node = plan.node_of_subscriber(i);
            let mut ws = client::connect_with(plan, node, source, recv_buffer, plan.format).await?;
            client::subscribe(&mut ws, plan.format, &plan.channel_names[k]).await?;
            Conn::Ws(Box::new(ws))
        }
        Transport::Sse => Conn::Stream(stream::sse(plan, i, source, recv_buffer, channel).await?),
        Transport::Tcp => {
            let mut conn = stream::tcp(plan, source, recv_buffer).await?;
            // Subscribed on accept; the first probe proves it. Others may
            // connect meanwhile.
            drop(permit);
            stream::first_line(&mut conn).await?;
            Conn::Stream(conn)
        }
    };
    Ok((conn, started.elapsed()))
}

/// [`setup`] within [`SETUP_TIMEOUT`], its outcome told on `ready`.
async fn setup_and_tell(
    plan: &Plan,
    i: usize,
    recv_buffer: Option<u32>,
    gate: &Semaphore,
    is_slow: bool,
    ready: mpsc::UnboundedSender<(bool, anyhow::Result<Duration>)>,
) -> Option<Conn> {
    match tokio::time::timeout(SETUP_TIMEOUT, setup(plan, i, recv_buffer, gate)).await {
        Ok(Ok((conn, took))) => {
            let _ = ready.send((is_slow, Ok(took)));
            Some(conn)
        }
        Ok(Err(e)) => {
            let _ = ready.send((is_slow, Err(e)));
            None
        }
        Err(_) => {
            let _ = ready.send((
                is_slow,
                Err(anyhow::anyhow!(
                    "not subscribed within {SETUP_TIMEOUT:?}{}",
                    if plan.transport == Transport::Tcp {
                        " (no probe publication arrived: does the [[tcp]] listener's `channels` \
                         hold the --channel-prefix channel, with framing = \"line\"?)"
                    } else {
                        ""
                    }
                )),
            ));
            None
        }
    }
}

async fn subscriber(
    plan: Arc<Plan>,
    flow: Arc<Flow>,
    i: usize,
    gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<(bool, anyhow::Result<Duration>)>,
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
    let Some(conn) = setup_and_tell(&plan, i, None, &gate, false, ready).await else {
        return tally;
    };
    match conn {
        Conn::Ws(ws) => {
            let mut ws = *ws;
            tally.gone = receive(&mut ws, &flow, &mut tally, &mut stop).await;
            if tally.gone.is_none() {
                let _ = tokio::time::timeout(Duration::from_millis(100), ws.close(None)).await;
            }
        }
        Conn::Deflate(ws) => {
            let mut ws = *ws;
            tally.gone = receive_deflate(&mut ws, &flow, &mut tally, &mut stop).await;
            if tally.gone.is_none() {
                let _ = tokio::time::timeout(Duration::from_millis(100), ws.close()).await;
            }
        }
        Conn::Stream(mut conn) => {
            tally.gone = receive_stream(&mut conn, &flow, &mut tally, &mut stop).await;
        }
    }
    if tally.gone.is_some() {
        flow.subscriber_gone();
    }
    tally
}

/// The pong to a JSON ping: the empty command. (Static, like the
/// protobuf one: a frame costs no allocation for it.)
const JSON_PONG: Utf8Bytes = Utf8Bytes::from_static("{}");

/// The pong to a protobuf ping: one empty command, the single byte 0.
const PROTOBUF_PONG: Bytes = Bytes::from_static(crier_proto::protobuf::PING);

/// Reads until told to stop; returns why it stopped early, if it did. Text
/// frames are JSON, binary frames protobuf; a ping is answered in the
/// format it came in.
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
        let (scan, pong) = match message {
            Some(Ok(Message::Text(text))) => (
                scan(text.as_str(), unix_nanos(), &mut tally.latency),
                Message::Text(JSON_PONG),
            ),
            Some(Ok(Message::Binary(frame))) => (
                protobuf::scan(&frame, unix_nanos(), &mut tally.latency),
                Message::Binary(PROTOBUF_PONG),
            ),
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
        tally.frames += 1;
        if let Some(why) = tally.count(&scan, flow) {
            return Some(why);
        }
        if scan.ping && ws.send(pong).await.is_err() {
            return Some("cannot answer a ping".into());
        }
    }
}

/// [`receive`] for permessage-deflate subscribers: each message, inflated
/// if it came compressed, is scanned as the other path scans a frame.
async fn receive_deflate(
    ws: &mut DeflateWs,
    flow: &Flow,
    tally: &mut Tally,
    stop: &mut oneshot::Receiver<()>,
) -> Option<String> {
    loop {
        let event = tokio::select! {
            biased;
            _ = &mut *stop => return None,
            e = ws.next() => e,
        };
        let (scan, text) = match event {
            Ok(Event::Text(text)) => (scan(text, unix_nanos(), &mut tally.latency), true),
            Ok(Event::Binary(frame)) => (protobuf::scan(frame, unix_nanos(), &mut tally.latency), false),
            Ok(Event::Closed(Some((code, reason)))) => return Some(format!("disconnected: {code} {reason}")),
            Ok(Event::Closed(None)) => return Some("the server closed the connection".into()),
            Err(e) => return Some(format!("connection lost: {e:#}")),
        };
        tally.frames += 1;
        if let Some(why) = tally.count(&scan, flow) {
            return Some(why);
        }
        if scan.ping && ws.pong(text).await.is_err() {
            return Some("cannot answer a ping".into());
        }
    }
}

/// [`receive`] for byte-stream subscribers: a "frame" is one read.
async fn receive_stream(
    conn: &mut StreamConn,
    flow: &Flow,
    tally: &mut Tally,
    stop: &mut oneshot::Receiver<()>,
) -> Option<String> {
    loop {
        let read = tokio::select! {
            biased;
            _ = &mut *stop => return None,
            r = conn.read() => r,
        };
        match read {
            Ok(0) => return Some("the server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Some(format!("connection lost: {e:#}")),
        }
        tally.frames += 1;
        let now = unix_nanos();
        let latency = &mut tally.latency;
        if let Some(scan) = conn.take_lines(|text| scan(text, now, latency)) {
            let unsubscribed = tally.count(&scan, flow);
            if let Some(line) = scan.disconnected {
                return Some(format!("disconnected: {line}"));
            }
            if unsubscribed.is_some() {
                return unsubscribed;
            }
        }
        if conn.overlong() {
            return Some(
                "a line longer than any publication: is the TCP listener's framing = \"line\"?".into(),
            );
        }
    }
}

async fn slow_subscriber(
    plan: Arc<Plan>,
    i: usize,
    gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<(bool, anyhow::Result<Duration>)>,
    stop: oneshot::Receiver<()>,
) -> SlowTally {
    let Some(conn) = setup_and_tell(&plan, i, Some(SLOW_RECV_BUFFER), &gate, true, ready).await else {
        return SlowTally {
            dropped: false,
            code: None,
            how: "never subscribed".into(),
        };
    };
    // Never read until the run is over; the socket stays open.
    let _ = stop.await;
    let deadline = Instant::now() + SLOW_DRAIN;
    match conn {
        Conn::Ws(ws) => {
            let mut ws = *ws;
            let tally = drain_ws(&mut ws, deadline).await;
            if !tally.dropped {
                let _ = tokio::time::timeout(Duration::from_millis(100), ws.close(None)).await;
            }
            tally
        }
        Conn::Deflate(ws) => {
            let mut ws = *ws;
            let tally = drain_deflate(&mut ws, deadline).await;
            if !tally.dropped {
                let _ = tokio::time::timeout(Duration::from_millis(100), ws.close()).await;
            }
            tally
        }
        Conn::Stream(mut conn) => drain_stream(&mut conn, deadline).await,
    }
}

/// [`drain_ws`] for a permessage-deflate connection.
async fn drain_deflate(ws: &mut DeflateWs, deadline: Instant) -> SlowTally {
    let dropped = |code: Option<u16>, how: String| SlowTally {
        dropped: true,
        code,
        how,
    };
    loop {
        let wait = SLOW_SILENCE.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return still_open(deadline),
            Ok(Ok(Event::Closed(Some((code, reason))))) => {
                return dropped(Some(code), format!("close {code} {reason}"));
            }
            Ok(Ok(Event::Closed(None))) => {
                return dropped(None, "close without a code, or end of stream".into())
            }
            Ok(Err(e)) => return dropped(None, format!("connection lost: {e:#}")),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads a slow WebSocket subscriber's backlog to its end.
async fn drain_ws(ws: &mut Ws, deadline: Instant) -> SlowTally {
    let dropped = |code: Option<u16>, how: String| SlowTally {
        dropped: true,
        code,
        how,
    };
    loop {
        let wait = SLOW_SILENCE.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return still_open(deadline),
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                let code = u16::from(frame.code);
                return dropped(Some(code), format!("close {code} {}", frame.reason));
            }
            Ok(Some(Ok(Message::Close(None)))) => return dropped(None, "close without a code".into()),
            Ok(None) => return dropped(None, "end of stream".into()),
            Ok(Some(Err(e))) => return dropped(None, format!("connection lost: {e}")),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Reads a slow byte-stream subscriber's backlog to its end; a uni_sse
/// disconnect push gives the code.
async fn drain_stream(conn: &mut StreamConn, deadline: Instant) -> SlowTally {
    let mut code = None;
    let mut how = None;
    let mut ignored = Histogram::new(2).expect("2 significant figures are valid");
    loop {
        let wait = SLOW_SILENCE.min(deadline.saturating_duration_since(Instant::now()));
        let end = match tokio::time::timeout(wait, conn.read()).await {
            Err(_) => return still_open(deadline),
            Ok(Ok(0)) => "end of stream".to_string(),
            Ok(Ok(_)) => {
                if let Some(Some(line)) = conn.take_lines(|text| scan(text, 0, &mut ignored).disconnected) {
                    code = code.or_else(|| disconnect_code(&line));
                    how.get_or_insert(line);
                }
                if conn.overlong() {
                    return SlowTally {
                        dropped: false,
                        code: None,
                        how: "no line framing".into(),
                    };
                }
                continue;
            }
            Ok(Err(e)) => format!("connection lost: {e:#}"),
        };
        return SlowTally {
            dropped: true,
            code,
            how: how.unwrap_or(end),
        };
    }
}

fn still_open(deadline: Instant) -> SlowTally {
    SlowTally {
        dropped: false,
        code: None,
        how: if Instant::now() >= deadline {
            format!("still receiving after {SLOW_DRAIN:?}")
        } else {
            "still open".into()
        },
    }
}

/// The code of a `{"disconnect":{"code":N,...}}` push.
fn disconnect_code(line: &str) -> Option<u16> {
    const KEY: &str = "\"code\":";
    let at = line.find(KEY)? + KEY.len();
    let digits = payload::digits(line[at..].trim_start().as_bytes())?;
    u16::try_from(digits).ok()
}

/// What one frame held.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Scan {
    /// Publications found (each latency recorded).
    pub deliveries: u64,
    /// The server pinged (an empty `{}` message, or an empty protobuf one).
    pub ping: bool,
    /// An unsubscribe push, verbatim (protobuf: as JSON).
    pub unsubscribed: Option<String>,
    /// A unidirectional transport's disconnect push, verbatim.
    pub disconnected: Option<String>,
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
        } else if line.contains("{\"disconnect\"") && found.disconnected.is_none() {
            found.disconnected = Some(line.trim().to_string());
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
                unsubscribed: None,
                disconnected: None,
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
                unsubscribed: None,
                disconnected: None,
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
