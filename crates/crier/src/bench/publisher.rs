//! The publishing side of `crier bench`: P publishers, each one connection
//! (keep-alive HTTP/1.1 to the server API, or a client protocol WebSocket),
//! requests pipelined up to a window and paced to a share of the total rate.
//!
//! A publisher's task writes; a second task reads the answers. HTTP answers
//! come back in request order, so the n-th answer is for the n-th request
//! and no table of requests is kept; WebSocket replies carry the command id,
//! which encodes the same number. Answers are recognised by their first
//! bytes, never parsed into a JSON tree. WebSocket publishers speak the
//! plan's `--format`: with protobuf, commands are encoded by `crier_proto`
//! and replies decoded by it (a publish reply decodes without allocating).
//! With `--protocol raw` a WebSocket publisher writes bare payloads and
//! reads nothing back: there is no answer to wait for.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crier_loadgen::payload::{self, unix_nanos};
use crier_proto::client::{Command, Payload, PublishRequest};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{oneshot, Mutex, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use super::client::{self, Ws, CONNECT_ID};
use super::{Flow, Plan, Protocol, Via};
use crate::subscribe::{self, Format};

/// The first publish command's id on a WebSocket publisher.
const FIRST_PUBLISH_ID: u64 = CONNECT_ID as u64 + 1;

/// Publications written in one request batch (one write) at most.
const BATCH_MAX: usize = 64;

/// Bytes of one WebSocket frame of joined publish commands at most: under
/// the server's default 64 KiB message limit.
const WS_FRAME_BUDGET: usize = 60 * 1024;

/// A publish command's bytes besides its data and channel (id, keys, braces).
const COMMAND_OVERHEAD: usize = 64;

/// What one publisher did.
pub struct Outcome {
    /// Publications the server accepted, per channel.
    pub accepted: Vec<u64>,
    /// Publications the server refused.
    pub refused: u64,
    /// The first refusal, as the server worded it.
    pub first_refusal: Option<String>,
    /// Publications written.
    pub written: u64,
    /// Answers received (accepted + refused).
    pub answered: u64,
    /// Why the connection failed, if it did.
    pub failure: Option<String>,
}

impl Outcome {
    fn new(channels: usize) -> Outcome {
        Outcome {
            accepted: vec![0; channels],
            refused: 0,
            first_refusal: None,
            written: 0,
            answered: 0,
            failure: None,
        }
    }

    /// Publications written and never answered.
    pub fn unanswered(&self) -> u64 {
        self.written.saturating_sub(self.answered)
    }

    /// Counts the server's answer to this publisher's `n`-th publication.
    fn answer(&mut self, plan: &Plan, flow: &Flow, index: usize, n: u64, answer: Result<(), String>) {
        let channel = plan.channel_of_publication(plan_seq(plan, index, n));
        self.answered += 1;
        match answer {
            Ok(()) => self.accepted[channel] += 1,
            Err(why) => {
                self.refused += 1;
                self.first_refusal.get_or_insert(why);
                flow.refused(plan.fanout[channel]);
            }
        }
    }
}

/// Accepted publications per channel over all publishers.
pub fn accepted_per_channel(outcomes: &[Outcome], channels: usize) -> Vec<u64> {
    let mut total = vec![0; channels];
    for outcome in outcomes {
        for (sum, n) in total.iter_mut().zip(&outcome.accepted) {
            *sum += n;
        }
    }
    total
}

/// The run-wide sequence number of publisher `index`'s `n`-th publication:
/// publishers interleave, so sequence numbers are unique and dense.
fn plan_seq(plan: &Plan, index: usize, n: u64) -> u64 {
    n * plan.publishers as u64 + index as u64
}

/// Starts publisher `index`: it publishes from `start` until `end`, then
/// waits for answers until `deadline`.
pub fn spawn(
    plan: Arc<Plan>,
    flow: Arc<Flow>,
    index: usize,
    start: Instant,
    deadline: Instant,
) -> JoinHandle<Outcome> {
    let end = start + plan.duration;
    tokio::spawn(async move {
        let pacer = Pacer::new(&plan, index, start, end);
        match plan.via {
            Via::Api => http(plan, flow, index, pacer, deadline).await,
            Via::Ws if plan.protocol == Protocol::Raw => raw_websocket(plan, flow, index, pacer).await,
            Via::Ws => websocket(plan, flow, index, pacer, deadline).await,
        }
    })
}

/// Decides when a publisher writes and how many publications at once.
struct Pacer {
    /// Ticks at this publisher's share of the rate; None = as fast as the
    /// window allows.
    interval: Option<Interval>,
    /// This publisher's publications per second, when paced.
    per_second: f64,
    /// When this publisher's schedule starts (publishers are staggered).
    first: Instant,
    end: Instant,
    /// Publications handed out so far.
    issued: u64,
    /// Unanswered requests allowed; answers return permits.
    window: Arc<Semaphore>,
    /// Outstanding deliveries one publication may add.
    fanout: u64,
}

impl Pacer {
    fn new(plan: &Plan, index: usize, start: Instant, end: Instant) -> Pacer {
        let window = (plan.window / plan.publishers as u64).max(1) as usize;
        let (interval, per_second, first) = if plan.rate == 0 {
            (None, 0.0, start)
        } else {
            let per_second = plan.rate as f64 / plan.publishers as f64;
            let first = start + Duration::from_secs_f64(index as f64 / plan.rate as f64);
            // Never tick faster than the timer wheel turns; catch up in
            // batches instead.
            let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_millis(1));
            let mut interval = tokio::time::interval_at(first, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
            (Some(interval), per_second, first)
        };
        Pacer {
            interval,
            per_second,
            first,
            end,
            issued: 0,
            window: Arc::new(Semaphore::new(window)),
            fanout: plan.max_fanout(),
        }
    }

    /// Publications due by `now` on a schedule that starts at `first`.
    fn due(first: Instant, per_second: f64, now: Instant) -> u64 {
        if now < first {
            return 0;
        }
        ((now - first).as_secs_f64() * per_second) as u64 + 1
    }

    /// How many publications to write now: waits for the schedule, a free
    /// slot in the answer window and room in the delivery window. None once
    /// the duration is over.
    async fn next(&mut self, flow: &Flow) -> Option<usize> {
        let wanted = match &mut self.interval {
            None => BATCH_MAX,
            Some(interval) => loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = tokio::time::sleep_until(self.end) => return None,
                }
                let now = Instant::now();
                if now >= self.end {
                    return None;
                }
                let due = Self::due(self.first, self.per_second, now);
                if due > self.issued {
                    break ((due - self.issued) as usize).min(BATCH_MAX);
                }
            },
        };
        let permit = tokio::time::timeout_at(self.end, self.window.acquire())
            .await
            .ok()?
            .ok()?;
        permit.forget();
        let mut n = 1;
        let more = (wanted - 1).min(self.window.available_permits());
        if more > 0 {
            if let Ok(permits) = self.window.try_acquire_many(more as u32) {
                permits.forget();
                n += more;
            }
        }
        if !flow.room_for(n as u64 * self.fanout, self.end).await {
            return None;
        }
        self.issued += n as u64;
        Some(n)
    }
}

/// A publisher's outcome once its `reader` of the server's answers ended:
/// what the reader counted, `written`, and the writer's `failure` if any.
async fn collect(
    reader: JoinHandle<Outcome>,
    plan: &Plan,
    written: u64,
    failure: Option<String>,
    answers: &str,
) -> Outcome {
    let mut outcome = match reader.await {
        Ok(outcome) => outcome,
        Err(e) => {
            let mut outcome = Outcome::new(plan.channels.len());
            outcome.failure = Some(format!("the {answers} reader failed: {e}"));
            outcome
        }
    };
    outcome.written = written;
    if failure.is_some() {
        outcome.failure = failure;
    }
    outcome
}

/// One `POST /api/publish` request.
pub(super) fn write_request(out: &mut String, plan: &Plan, body: &str) {
    let _ = write!(
        out,
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n",
        plan.api_path, plan.api_host
    );
    if let Some(key) = &plan.api_key {
        let _ = write!(out, "X-API-Key: {key}\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n{body}", body.len());
}

async fn http(
    plan: Arc<Plan>,
    flow: Arc<Flow>,
    index: usize,
    mut pacer: Pacer,
    deadline: Instant,
) -> Outcome {
    let stream = match client::tcp(plan.api_addr, None).await {
        Ok(stream) => stream,
        Err(e) => {
            let mut outcome = Outcome::new(plan.channels.len());
            outcome.failure = Some(format!("cannot reach the HTTP API: {e:#}"));
            return outcome;
        }
    };
    let (rd, mut wr) = stream.into_split();
    let (written_tx, written) = oneshot::channel();
    let reader = tokio::spawn(read_http(
        plan.clone(),
        flow.clone(),
        index,
        rd,
        pacer.window.clone(),
        written,
        deadline,
    ));
    let mut requests = String::new();
    let mut body = String::new();
    let mut written = 0u64;
    let mut failure = None;
    while let Some(n) = pacer.next(&flow).await {
        requests.clear();
        let sent = unix_nanos();
        let mut deliveries = 0;
        for _ in 0..n {
            let seq = plan_seq(&plan, index, written);
            let channel = plan.channel_of_publication(seq);
            body.clear();
            let _ = write!(body, "{{\"channel\":{},\"data\":", plan.channels[channel]);
            payload::write(&mut body, sent, seq, plan.size);
            body.push('}');
            write_request(&mut requests, &plan, &body);
            deliveries += plan.fanout[channel];
            written += 1;
        }
        flow.written(n as u64, deliveries);
        if let Err(e) = wr.write_all(requests.as_bytes()).await {
            failure = Some(format!("cannot write to the HTTP API: {e}"));
            break;
        }
    }
    let _ = written_tx.send(written);
    let outcome = collect(reader, &plan, written, failure, "answer").await;
    outcome
}

/// Reads HTTP answers until every written request is answered or
/// `deadline`, returning a permit to the window for each.
async fn read_http(
    plan: Arc<Plan>,
    flow: Arc<Flow>,
    index: usize,
    mut rd: OwnedReadHalf,
    window: Arc<Semaphore>,
    mut written_rx: oneshot::Receiver<u64>,
    deadline: Instant,
) -> Outcome {
    let mut outcome = Outcome::new(plan.channels.len());
    let mut written = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let mut at = 0;
        loop {
            match parse_response(&buf[at..]) {
                Ok(Some(response)) => {
                    at += response.len;
                    let n = outcome.answered;
                    outcome.answer(&plan, &flow, index, n, response.verdict());
                    window.add_permits(1);
                }
                Ok(None) => break,
                Err(e) => {
                    outcome.failure = Some(e);
                    return outcome;
                }
            }
        }
        buf.drain(..at);
        if written.is_some_and(|w| outcome.answered >= w) {
            return outcome;
        }
        if buf.capacity() - buf.len() < 4 * 1024 {
            buf.reserve(16 * 1024);
        }
        tokio::select! {
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => {
                    if written.is_none_or(|w| outcome.answered < w) {
                        outcome.failure = Some("the server closed the HTTP API connection".into());
                    }
                    return outcome;
                }
                Ok(_) => {}
                Err(e) => {
                    outcome.failure = Some(format!("cannot read from the HTTP API: {e}"));
                    return outcome;
                }
            },
            w = &mut written_rx, if written.is_none() => written = Some(w.unwrap_or(outcome.answered)),
            _ = tokio::time::sleep_until(deadline) => return outcome,
        }
    }
}

/// One HTTP/1.1 answer at the start of a buffer.
#[derive(Debug, PartialEq)]
pub(super) struct Response<'a> {
    /// Bytes it takes, head and body.
    pub len: usize,
    status: u16,
    body: &'a [u8],
}

impl Response<'_> {
    /// Accepted, or the refusal as the server worded it. An API error comes
    /// as `{"error":{...}}`, with status 200 or 4xx/5xx by configuration.
    pub fn verdict(&self) -> Result<(), String> {
        let body = self.body.trim_ascii_start();
        if self.status == 200 && !body.starts_with(b"{\"error\"") {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
        let hint = if self.status == 401 {
            " (give the server's http_api.key with --api-key)"
        } else {
            ""
        };
        Err(format!("HTTP {}: {}{hint}", self.status, text.trim()))
    }
}

/// Parses the answer at the start of `buf`: None when more bytes are
/// needed. Only `Content-Length` bodies: that is what crier sends.
pub(super) fn parse_response(buf: &[u8]) -> Result<Option<Response<'_>>, String> {
    let Some(head_len) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("an HTTP answer head longer than 64 KiB".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_len])
        .map_err(|_| "an HTTP answer head that is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP/1.1 answer: {status_line:?}"))?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("a bad Content-Length: {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "an HTTP answer with Transfer-Encoding {}, which crier bench does not read",
                value.trim()
            ));
        }
    }
    let body_start = head_len + 4;
    let len = body_start + length.unwrap_or(0);
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Response {
        len,
        status,
        body: &buf[body_start..len],
    }))
}

type Sink = SplitSink<Ws, Message>;

async fn websocket(
    plan: Arc<Plan>,
    flow: Arc<Flow>,
    index: usize,
    mut pacer: Pacer,
    deadline: Instant,
) -> Outcome {
    // Publishers come after the subscribers in the source-address rotation.
    let ws = match client::connect(&plan, plan.first_node(), plan.source(plan.subscribers + index)).await {
        Ok(ws) => ws,
        Err(e) => {
            let mut outcome = Outcome::new(plan.channels.len());
            outcome.failure = Some(format!("publisher connection failed: {e:#}"));
            return outcome;
        }
    };
    let (sink, stream) = ws.split();
    let sink = Arc::new(Mutex::new(sink));
    let (written_tx, written) = oneshot::channel();
    let reader = tokio::spawn(read_ws(
        plan.clone(),
        flow.clone(),
        index,
        stream,
        sink.clone(),
        pacer.window.clone(),
        written,
        deadline,
    ));
    let mut written = 0u64;
    let mut failure = None;
    // Commands of one batch share a frame, as the protocol allows.
    let mut frame = Batch::new(&plan);
    while let Some(n) = pacer.next(&flow).await {
        let sent = unix_nanos();
        for _ in 0..n {
            let seq = plan_seq(&plan, index, written);
            let channel = plan.channel_of_publication(seq);
            // Keep each frame under the server's message size limit (64 KiB
            // by default, `websocket.message_size_limit`): send what is
            // joined so far when the next command would not fit.
            if !frame.is_empty()
                && frame.len() + plan.size + plan.channels[channel].len() + COMMAND_OVERHEAD > WS_FRAME_BUDGET
            {
                if let Err(e) = sink.lock().await.send(frame.take()).await {
                    failure = Some(format!("cannot write to the publisher connection: {e}"));
                    break;
                }
            }
            frame.push(&plan, FIRST_PUBLISH_ID + written, channel, sent, seq);
            flow.written(1, plan.fanout[channel]);
            written += 1;
        }
        if failure.is_some() {
            break;
        }
        if let Err(e) = sink.lock().await.send(frame.take()).await {
            failure = Some(format!("cannot write to the publisher connection: {e}"));
            break;
        }
    }
    let _ = written_tx.send(written);
    let outcome = collect(reader, &plan, written, failure, "reply").await;
    let _ = tokio::time::timeout(Duration::from_millis(100), sink.lock().await.close()).await;
    outcome
}

/// Reads publish replies until every written command is answered or
/// `deadline`, answering pings, returning a permit to the window for each.
#[allow(clippy::too_many_arguments)]
async fn read_ws(
    plan: Arc<Plan>,
    flow: Arc<Flow>,
    index: usize,
    mut stream: SplitStream<Ws>,
    sink: Arc<Mutex<Sink>>,
    window: Arc<Semaphore>,
    mut written_rx: oneshot::Receiver<u64>,
    deadline: Instant,
) -> Outcome {
    let mut outcome = Outcome::new(plan.channels.len());
    let mut written = None;
    loop {
        if written.is_some_and(|w| outcome.answered >= w) {
            return outcome;
        }
        let message = tokio::select! {
            m = stream.next() => m,
            w = &mut written_rx, if written.is_none() => {
                written = Some(w.unwrap_or(outcome.answered));
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => return outcome,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(frame))) => {
                for reply in crier_proto::protobuf::parse_replies(&frame) {
                    let reply = match reply {
                        Ok(reply) => reply,
                        Err(e) => {
                            outcome.failure = Some(format!("a malformed protobuf reply to a publisher: {e}"));
                            return outcome;
                        }
                    };
                    if subscribe::is_ping(&reply) {
                        let pong = Format::Protobuf.command(&subscribe::pong());
                        let _ = sink.lock().await.send(pong).await;
                        continue;
                    }
                    let Some(n) = u64::from(reply.id).checked_sub(FIRST_PUBLISH_ID) else {
                        continue;
                    };
                    let answer = match &reply.error {
                        // Worded as the JSON path words it: the reply as JSON.
                        Some(_) => Err(serde_json::to_string(&reply)
                            .unwrap_or_default()
                            .chars()
                            .take(300)
                            .collect()),
                        None => Ok(()),
                    };
                    outcome.answer(&plan, &flow, index, n, answer);
                    window.add_permits(1);
                }
                continue;
            }
            Some(Ok(Message::Close(frame))) => {
                outcome.failure = Some(match frame {
                    Some(frame) => format!(
                        "publisher disconnected: {} {}",
                        u16::from(frame.code),
                        frame.reason
                    ),
                    None => "publisher disconnected".into(),
                });
                return outcome;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                outcome.failure = Some(format!("publisher connection lost: {e}"));
                return outcome;
            }
            None => {
                outcome.failure = Some("the server closed the publisher connection".into());
                return outcome;
            }
        };
        for line in text.split('\n') {
            if line == "{}" {
                let _ = sink.lock().await.send(Message::text("{}")).await;
                continue;
            }
            let Some(id) = reply_id(line) else { continue };
            let Some(n) = id.checked_sub(FIRST_PUBLISH_ID) else {
                continue;
            };
            let answer = if line.contains("\"error\"") {
                Err(line.chars().take(300).collect())
            } else {
                Ok(())
            };
            outcome.answer(&plan, &flow, index, n, answer);
            window.add_permits(1);
        }
    }
}

/// What a `--protocol raw` publisher's write buffer holds before it writes:
/// a whole batch of 64-byte payloads goes out in one write, as a batch of
/// joined publish commands does on the client protocol.
const RAW_WRITE_BUFFER: usize = 64 * 1024;

/// A `--protocol raw` publisher: each publication is its payload alone, one
/// text message, and a batch is flushed in one write. A raw server answers
/// nothing, so a publication counts as accepted once written and its window
/// permit comes back at once: only the delivery window paces it.
async fn raw_websocket(plan: Arc<Plan>, flow: Arc<Flow>, index: usize, mut pacer: Pacer) -> Outcome {
    let mut outcome = Outcome::new(plan.channels.len());
    let source = plan.source(plan.subscribers + index);
    let ws = match client::open_raw(plan.first_node(), source, None, RAW_WRITE_BUFFER).await {
        Ok(ws) => ws,
        Err(e) => {
            outcome.failure = Some(format!("publisher connection failed: {e:#}"));
            return outcome;
        }
    };
    let (mut sink, mut stream) = ws.split();
    // Nothing is expected from the server, but reading answers its pings
    // and notices a close.
    let closed = async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Close(_))) | None => {
                    return "the server closed the publisher connection".to_string()
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return format!("publisher connection lost: {e}"),
            }
        }
    };
    tokio::pin!(closed);
    loop {
        let n = tokio::select! {
            n = pacer.next(&flow) => n,
            why = &mut closed => {
                outcome.failure = Some(why);
                break;
            }
        };
        let Some(n) = n else { break };
        let sent = unix_nanos();
        let mut failed = None;
        for _ in 0..n {
            let seq = plan_seq(&plan, index, outcome.written);
            let channel = plan.channel_of_publication(seq);
            let mut data = String::with_capacity(plan.size + 8);
            payload::write(&mut data, sent, seq, plan.size);
            flow.written(1, plan.fanout[channel]);
            outcome.written += 1;
            outcome.answered += 1;
            outcome.accepted[channel] += 1;
            if let Err(e) = sink.feed(Message::text(data)).await {
                failed = Some(e);
                break;
            }
        }
        let written = match failed {
            Some(e) => Err(e),
            None => sink.flush().await,
        };
        if let Err(e) = written {
            outcome.failure = Some(format!("cannot write to the publisher connection: {e}"));
            break;
        }
        pacer.window.add_permits(n);
    }
    let _ = tokio::time::timeout(Duration::from_millis(100), sink.close()).await;
    outcome
}

/// Publish commands joined into one WebSocket frame, in the plan's format.
enum Batch {
    /// Newline-separated JSON commands, in a text frame.
    Json(String),
    /// Length-delimited protobuf commands, in a binary frame.
    Protobuf {
        frame: BytesMut,
        /// The payload being written.
        data: String,
        /// One publish command per channel, reused: only its id and data
        /// change.
        commands: Vec<Command>,
    },
}

impl Batch {
    fn new(plan: &Plan) -> Batch {
        match plan.format {
            Format::Json => Batch::Json(String::new()),
            Format::Protobuf => Batch::Protobuf {
                frame: BytesMut::new(),
                data: String::new(),
                commands: plan
                    .channel_names
                    .iter()
                    .map(|channel| Command {
                        publish: Some(PublishRequest {
                            channel: channel.clone(),
                            ..PublishRequest::default()
                        }),
                        ..Command::default()
                    })
                    .collect(),
            },
        }
    }

    /// Bytes so far.
    fn len(&self) -> usize {
        match self {
            Batch::Json(frame) => frame.len(),
            Batch::Protobuf { frame, .. } => frame.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends command `id`: publication `seq`, sent at `sent`, to `channel`.
    fn push(&mut self, plan: &Plan, id: u64, channel: usize, sent: u64, seq: u64) {
        match self {
            Batch::Json(frame) => {
                if !frame.is_empty() {
                    frame.push('\n');
                }
                let _ = write!(
                    frame,
                    "{{\"id\":{id},\"publish\":{{\"channel\":{},\"data\":",
                    plan.channels[channel]
                );
                payload::write(frame, sent, seq, plan.size);
                frame.push_str("}}");
            }
            Batch::Protobuf {
                frame,
                data,
                commands,
            } => {
                data.clear();
                payload::write(data, sent, seq, plan.size);
                let command = &mut commands[channel];
                // Ids past u32 would take more publications than a bounded
                // run makes.
                command.id = id as u32;
                if let Some(publish) = &mut command.publish {
                    publish.data = Some(Payload::new(Bytes::copy_from_slice(data.as_bytes())));
                }
                crier_proto::protobuf::command_frame(frame, command);
            }
        }
    }

    /// The frame so far, as a message; the batch is empty after.
    fn take(&mut self) -> Message {
        match self {
            Batch::Json(frame) => Message::text(std::mem::take(frame)),
            Batch::Protobuf { frame, .. } => Message::binary(frame.split().freeze()),
        }
    }
}

/// The id of a reply line (`{"id":N,...}`); pushes have none.
fn reply_id(line: &str) -> Option<u64> {
    if line.starts_with("{\"push\"") {
        return None;
    }
    let at = line.find("\"id\":")? + 5;
    let digits = &line[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn pipelined_answers_are_split_by_content_length() {
        let ok = answer("200 OK", r#"{"result":{"offset":1,"epoch":"e"}}"#);
        let refused = answer("200 OK", r#"{"error":{"code":102,"message":"unknown channel"}}"#);
        let mut buf = ok.clone();
        buf.extend_from_slice(&refused);
        buf.extend_from_slice(&answer("401 Unauthorized", ""));
        buf.extend_from_slice(b"HTTP/1.1 2");

        let first = parse_response(&buf).unwrap().unwrap();
        assert_eq!((first.len, first.status), (ok.len(), 200));
        assert_eq!(first.verdict(), Ok(()));
        let second = parse_response(&buf[first.len..]).unwrap().unwrap();
        assert_eq!(second.len, refused.len());
        assert!(second.verdict().unwrap_err().contains("unknown channel"));
        let third = parse_response(&buf[first.len + second.len..]).unwrap().unwrap();
        assert!(third.verdict().unwrap_err().contains("--api-key"));
        let rest = &buf[first.len + second.len + third.len..];
        assert_eq!(
            parse_response(rest),
            Ok(None),
            "an incomplete answer waits for more"
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn reply_ids() {
        assert_eq!(reply_id(r#"{"id":17,"publish":{}}"#), Some(17));
        assert_eq!(
            reply_id(r#"{"id":3,"error":{"code":103,"message":"permission denied"}}"#),
            Some(3)
        );
        assert_eq!(
            reply_id(r#"{"push":{"channel":"c","pub":{"data":{"id":1}}}}"#),
            None
        );
    }
}
