//! The bidirectional WebSocket transport, `/connection/websocket`: reads
//! frames of newline-separated commands into the [`Session`], and writes
//! everything the hub queued for the client as one frame per drain. Owns the
//! socket, the ping/pong and expiry timers; never decides protocol outcomes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use crier_core::ClientReceiver;
use crier_proto::client::Request as Command;
use crier_proto::codes::Disconnect;

use crate::admission::Peer;
use crate::metrics::Transport;
use crate::net::rfc6455::{self, Control, Controls, Incoming, ReadError, Reader, Writer};
use crate::node::Node;
use crate::session::{Refusal, Session};
use crate::wire::{disconnect_of, Codec};

/// Upgrades a request to a WebSocket client connection.
pub async fn upgrade(State(node): State<Arc<Node>>, request: Request) -> Response {
    let headers = request.headers();
    let origin = headers.get("origin").and_then(|v| v.to_str().ok());
    let host = headers.get("host").and_then(|v| v.to_str().ok());
    let remote = crate::net::remote(request.extensions());
    let peer = Peer {
        transport: Transport::WebSocket,
        remote,
    };
    if !node.origin_allowed(peer, origin, host) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let codec = format(&request);
    let limits = rfc6455::Limits {
        message_size: node.config.websocket.message_size_limit,
        write_timeout: node.config.websocket.write_timeout,
        protocol: (codec == Codec::Protobuf
            && rfc6455::offers_protocol(request.headers(), PROTOBUF_PROTOCOL))
        .then_some(PROTOBUF_PROTOCOL),
        deflate: node.websocket_deflate(),
    };
    let tracker = node.connections.clone();
    let forwarded = node.proxies.kept_headers(request.headers());
    rfc6455::accept(request, limits, &tracker, move |reader, writer| {
        serve(node, codec, reader, writer, (forwarded, remote.map(Box::new)))
    })
}

/// The subprotocol protobuf clients offer (centrifuge-js's protobuf build,
/// the Swift, Java and Dart SDKs).
const PROTOBUF_PROTOCOL: &str = "centrifuge-protobuf";

/// The wire format a client asks for, as Centrifugo reads it: the
/// `centrifuge-protobuf` subprotocol, or `format=protobuf` /
/// `cf_protocol=protobuf` in the query; JSON otherwise.
fn format(request: &Request) -> Codec {
    let query = request.uri().query().unwrap_or_default();
    let by_query = query
        .split('&')
        .any(|pair| matches!(pair.split_once('='), Some(("format" | "cf_protocol", "protobuf"))));
    if by_query || rfc6455::offers_protocol(request.headers(), PROTOBUF_PROTOCOL) {
        Codec::Protobuf
    } else {
        Codec::Json
    }
}

/// Sends `d` as a close frame.
async fn close(writer: &mut Writer, d: &Disconnect) {
    let _ = writer.close(d.code as u16, &d.reason).await;
}

/// Phase 1 of a connection: until connected, only a connect command is
/// acceptable, and only within `stale_close_delay` of the upgrade (3502
/// stale after). The client's queue once connected; `None` when the
/// connection ended (closed with its reason) before.
async fn connect(
    node: &Arc<Node>,
    codec: Codec,
    session: &mut Session,
    reader: &mut Reader,
    writer: &mut Writer,
) -> Option<ClientReceiver> {
    let cfg = &node.config.client;
    let stale = tokio::time::sleep(cfg.stale_close_delay);
    tokio::pin!(stale);
    loop {
        let msg = tokio::select! {
            m = reader.next() => Ok(m),
            _ = &mut stale => {
                close(writer, &Disconnect::STALE).await;
                return None;
            }
            _ = node.shutdown.cancelled() => {
                close(writer, &Disconnect::SHUTDOWN).await;
                return None;
            }
        };
        let text = match read(msg) {
            Read::Frame(bytes) => bytes,
            Read::Skip => continue,
            Read::Answer(control) => {
                if writer.control(control).await.is_err() {
                    return None;
                }
                continue;
            }
            Read::Last(control) => {
                let _ = writer.control(control).await;
                return None;
            }
            Read::Gone => return None,
            Read::Fail(d) => {
                close(writer, &d).await;
                return None;
            }
        };
        let mut commands = codec.decode(&text);
        let Some(first) = commands.next() else { continue };
        let outcome = match first {
            Ok(cmd) => {
                let id = cmd.id;
                match cmd.into_request() {
                    Ok(Command::Connect(req)) => session.connect(id, req).await,
                    Ok(_) | Err(_) => Err(Refusal::Disconnect(Disconnect::BAD_REQUEST)),
                }
            }
            Err(e) => Err(Refusal::Disconnect(
                e.disconnect().unwrap_or(Disconnect::BAD_REQUEST),
            )),
        };
        match outcome {
            Ok((reply, rx)) => {
                if writer.messages(codec.binary(), &mut vec![reply]).await.is_err() {
                    session.close(&Disconnect::CONNECTION_CLOSED);
                    return None;
                }
                // Commands that followed connect in the same frame.
                for cmd in commands {
                    let result = match cmd {
                        Ok(c) => session.handle(c).await,
                        Err(e) => Err(e.disconnect().unwrap_or(Disconnect::BAD_REQUEST)),
                    };
                    if let Err(d) = result {
                        session.close(&d);
                    }
                }
                return Some(rx);
            }
            Err(Refusal::Reply(bytes)) => {
                if writer.messages(codec.binary(), &mut vec![bytes]).await.is_err() {
                    return None;
                }
            }
            Err(Refusal::Disconnect(d)) => {
                close(writer, &d).await;
                return None;
            }
        }
    }
}

/// Serves one WebSocket connection until it closes.
///
/// A function returning an `async move` block, not an `async fn`: rustc
/// keeps an async fn's arguments twice in its state (as arguments and as
/// locals), and this future is every connection's for its whole life.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn serve(
    node: Arc<Node>,
    codec: Codec,
    mut reader: Reader,
    mut writer: Writer,
    (forwarded, remote): (Option<Box<axum::http::HeaderMap>>, Option<Box<SocketAddr>>),
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let mut session = Session::new(node.clone(), codec, Transport::WebSocket, remote);
        if let Some(headers) = forwarded {
            session.set_http_headers(*headers);
        }
        let cfg = &node.config.client;
        // A client that sends nothing for a ping interval plus the pong timeout
        // is gone (it must answer every server ping).
        let idle = cfg.ping_interval + cfg.pong_timeout;

        // Phase 1, boxed: its futures (connect, replies, the stale timer) are
        // needed only until connect, and must not size every connection's
        // task for its whole life.
        let Some(rx) = Box::pin(connect(&node, codec, &mut session, &mut reader, &mut writer)).await else {
            return;
        };

        // Counted from connect until this task ends.
        let _connection = node.metrics.connection(Transport::WebSocket);

        // Phase 2: a writer task drains the client's queue; this task reads.
        let shared = Arc::new(Between::default());
        let (controls, drained) = (&shared.controls, &shared.drained);
        let mut writing = tokio::spawn(write(
            node.clone(),
            codec,
            writer,
            rx,
            cfg.ping_interval,
            shared.clone(),
        ));
        // The timer for lapsing tokens, boxed and only while a token can lapse:
        // most connections have none, and every byte here is per connection.
        let mut expiry: Option<(SystemTime, std::pin::Pin<Box<tokio::time::Sleep>>)> = None;
        loop {
            // Connection or subscription tokens lapsing (refresh and sub_refresh
            // move the deadline; it is recomputed on every pass).
            let deadline = session.deadline();
            if expiry.as_ref().map(|(t, _)| *t) != deadline {
                expiry = deadline.map(|t| {
                    let wait = t.duration_since(SystemTime::now()).unwrap_or_default();
                    (t, Box::pin(tokio::time::sleep(wait)))
                });
            }
            let expired = async {
                match expiry.as_mut() {
                    Some((_, sleep)) => sleep.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            let msg = tokio::select! {
                m = tokio::time::timeout(idle, reader.next()) => m,
                _ = expired => {
                    expiry = None;
                    // Boxed: a refresh proxy call must not size every task.
                    if let Err(d) = Box::pin(session.expire()).await {
                        session.close(&d);
                        break;
                    }
                    continue;
                }
                ended = &mut writing => {
                    // The hub closed the queue (slow, shutdown, API disconnect)
                    // or the socket failed: the writer already said goodbye.
                    writer_gone(&mut session, ended.ok().flatten());
                    return;
                }
            };
            match read(msg) {
                // Boxed: the commands' state (a decoded command is over 500
                // bytes) lives only while a frame is handled, not in every
                // idle connection's task.
                Read::Frame(text) => {
                    match Box::pin(commands(&node, codec, &mut session, &text, drained, &mut writing)).await {
                        AfterFrame::Continue => {}
                        AfterFrame::Closed => break,
                        AfterFrame::WriterGone(by_hub) => {
                            writer_gone(&mut session, by_hub);
                            return;
                        }
                    }
                }
                Read::Skip => {}
                Read::Answer(control) => controls.send(control),
                Read::Last(control) => {
                    // The writer sends this close and ends; only then is the
                    // client removed, so its queue closing (3000) cannot race
                    // the close code the client must see (1002, or its echo).
                    controls.send(control);
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut writing).await;
                    session.close(&Disconnect::CONNECTION_CLOSED);
                    return;
                }
                Read::Gone => {
                    session.close(&Disconnect::CONNECTION_CLOSED);
                    break;
                }
                Read::Fail(d) => {
                    session.close(&d);
                    break;
                }
            }
        }
        // Let the writer flush the close frame, but not forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), writing).await;
    }
}

/// Ends the session once its writer has ended: with the hub's close when
/// the hub closed the queue (logged as the server's decision, with the
/// client's user and address), else as a connection gone.
fn writer_gone(session: &mut Session, by_hub: Option<Disconnect>) {
    match by_hub {
        Some(d) => session.closed_by_hub(&d),
        None => session.close(&Disconnect::CONNECTION_CLOSED),
    }
}

/// What handling one frame of commands left the connection to do.
enum AfterFrame {
    /// Read on.
    Continue,
    /// The session ended (a command asked for a disconnect).
    Closed,
    /// The writer task ended: the hub closed the queue (with this) or the
    /// socket failed.
    WriterGone(Option<Disconnect>),
}

/// Hands one frame's commands to the session, in order, waiting for the
/// writer whenever the client's queue is over half full.
async fn commands(
    node: &Node,
    codec: Codec,
    session: &mut Session,
    text: &[u8],
    drained: &tokio::sync::Notify,
    writing: &mut tokio::task::JoinHandle<Option<Disconnect>>,
) -> AfterFrame {
    let max = node.config.client.max_commands_per_frame;
    for (n, cmd) in codec.decode(text).enumerate() {
        let result = match cmd {
            _ if max > 0 && n >= max => {
                node.metrics.refused("max_commands_per_frame");
                Err(Disconnect::BAD_REQUEST)
            }
            Ok(c) => session.handle(c).await,
            Err(e) => Err(e.disconnect().unwrap_or(Disconnect::BAD_REQUEST)),
        };
        if let Err(d) = result {
            session.close(&d);
            return AfterFrame::Closed;
        }
        // Replies queue behind what the writer has not sent: a client
        // pipelining faster than it reads waits here (and so does its
        // socket) instead of overflowing its own queue and being dropped
        // as slow (3008).
        while session.client_id().is_some_and(|id| node.hub.backlogged(id)) {
            tokio::select! {
                _ = drained.notified() => {}
                ended = &mut *writing => return AfterFrame::WriterGone(ended.ok().flatten()),
            }
        }
    }
    if session.client_id().is_none() {
        AfterFrame::Closed
    } else {
        AfterFrame::Continue
    }
}

enum Read {
    Frame(Bytes),
    Skip,
    /// Send this (a pong), then go on reading.
    Answer(Control),
    /// Send this (a close), then end.
    Last(Control),
    Gone,
    Fail(Disconnect),
}

/// What one incoming frame means for the connection.
fn read(msg: Result<Result<Incoming, ReadError>, tokio::time::error::Elapsed>) -> Read {
    match msg {
        Err(_) => Read::Fail(Disconnect::NO_PONG),
        Ok(Ok(Incoming::Data(bytes))) => Read::Frame(bytes),
        Ok(Ok(Incoming::Ping(payload))) => Read::Answer(Control::Pong(payload)),
        Ok(Ok(Incoming::Pong)) => Read::Skip,
        // Echo the close (RFC 6455 §5.5.1); the session ends either way.
        Ok(Ok(Incoming::Close(code))) => Read::Last(Control::Close(code.unwrap_or(1000), "")),
        // An oversized message is the client's fault: tell it plainly.
        Ok(Err(ReadError::TooLong { .. })) => Read::Fail(Disconnect::BAD_REQUEST),
        Ok(Err(ReadError::Protocol(why))) => Read::Last(Control::Close(1002, why)),
        Ok(Err(ReadError::InvalidUtf8)) => Read::Last(Control::Close(1007, "text message is not UTF-8")),
        Ok(Err(ReadError::Io(_))) => Read::Gone,
    }
}

/// Drains the client's queue into one text frame per wake-up, pings on the
/// interval, and closes with the hub's reason when the queue closes. That
/// reason, when the hub closed the queue.
///
/// Every connection holds this future for its whole life, so it holds
/// little: an `async move` block (an async fn would keep its arguments
/// twice), a frame that fits the socket is written at once without a
/// future (`Writer::try_write`), and what waits — the rest of a frame a
/// slow client has not taken, pings, pongs, the close — waits boxed.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn write(
    node: Arc<Node>,
    codec: Codec,
    mut writer: Writer,
    mut rx: ClientReceiver,
    ping_every: Duration,
    shared: Arc<Between>,
) -> impl std::future::Future<Output = Option<Disconnect>> + Send {
    async move {
        let (controls, drained) = (&shared.controls, &shared.drained);
        // While this task waits, the hub writes a delivery that finds the
        // queue empty straight to the socket, from the pushing thread: no
        // wake-up, no poll (plain TCP without compression).
        let now = writer.direct(codec.binary()).map(|direct| {
            Arc::new(Now {
                direct,
                codec,
                node: node.clone(),
            })
        });
        if let Some(now) = &now {
            rx.write_now(now.clone());
        }
        let mut items = Vec::new();
        let mut batch = Vec::new();
        let mut frames = Vec::new();
        // Whether the last frame carried more than one message.
        let mut loaded = false;
        // Boxed, as tokio's `Interval` boxes its own: reset after each ping.
        let mut ping = Box::pin(tokio::time::sleep(ping_every));
        loop {
            // Polled by hand, not with `select!`: a wake-up from the queue
            // (once per delivery at low rates) checks the control flag and
            // drains the queue, creates no future and takes no lock beyond
            // the queue's.
            let wake = std::future::poll_fn(|cx| {
                if controls.poll_ready(cx).is_ready() {
                    return Poll::Ready(Wake::Controls);
                }
                if let Poll::Ready(r) = rx.poll_drain(cx, &mut items) {
                    return Poll::Ready(Wake::Queue(r));
                }
                // Only when about to wait: while the queue keeps the writer
                // busy, the deadline is checked after each frame instead.
                ping.as_mut().poll(cx).map(|()| Wake::Ping)
            })
            .await;
            let outcome = match wake {
                Wake::Queue(r) => r,
                Wake::Ping => {
                    rx.hold();
                    if rest(&mut writer, &now).await.is_err()
                        || Box::pin(send_ping(&mut writer, codec, &mut ping, ping_every))
                            .await
                            .is_err()
                    {
                        return None;
                    }
                    rx.written(false);
                    continue;
                }
                Wake::Controls => {
                    rx.hold();
                    if rest(&mut writer, &now).await.is_err()
                        || Box::pin(answer(&mut writer, controls)).await.is_err()
                    {
                        return None;
                    }
                    rx.written(false);
                    continue;
                }
            };
            // The drain made this task the socket's writer: what a write at
            // once left behind goes first.
            if rest(&mut writer, &now).await.is_err() {
                return gone(&node, &mut rx, &mut items);
            }
            match outcome {
                // A write at once's rest was all there was.
                Ok(_) if items.is_empty() => rx.written(false),
                Ok(_) => {
                    // Under load (the last frame carried more than one
                    // message, or several wait now), let the publisher that
                    // woke us finish its fan-out round first: whatever it
                    // queues meanwhile joins this frame. One extra poll per
                    // frame; under load, about twice the messages per frame
                    // (docs/benchmarks.md). At low rates every frame carries
                    // one message and the extra poll would only cost.
                    if loaded || items.len() > 1 {
                        tokio::task::yield_now().await;
                        let _ = rx.try_drain(&mut items);
                    }
                    let messages = items.len();
                    loaded = messages > 1;
                    // Delivery latency for the admin UI: from the publish of
                    // the oldest event in this write to now (measured before
                    // the write, so nothing is held across it).
                    if node.metrics.live_on() {
                        if let Some(created) = items.iter().find_map(|i| match i {
                            crier_core::Outbound::Event(e) => Some(e.created()),
                            crier_core::Outbound::Raw(_) => None,
                        }) {
                            node.metrics.delivered(created.elapsed());
                        }
                    }
                    let mut out = match writer.deflate() {
                        // Compressed: a frame per message, so a shared event is
                        // compressed once for all its subscribers.
                        Some(d) => {
                            frames.extend(items.drain(..).map(|item| codec.outbound_deflated(&item, d)));
                            Writer::frames_frame(codec.binary(), &mut frames)
                        }
                        // The shared encodings themselves go out: no copy.
                        None => {
                            batch.extend(items.drain(..).map(|item| codec.outbound(&item)));
                            writer.message_frame(codec.binary(), &mut batch)
                        }
                    };
                    let sent = match writer.try_write(&mut out) {
                        Ok(true) => Ok(()),
                        Ok(false) => Box::pin(writer.finish(out)).await,
                        Err(e) => Err(e),
                    };
                    if sent.is_err() {
                        return gone(&node, &mut rx, &mut items);
                    }
                    drained.notify_one();
                    // A client the queue keeps busy still gets its pings.
                    if ping.deadline() <= tokio::time::Instant::now()
                        && Box::pin(send_ping(&mut writer, codec, &mut ping, ping_every))
                            .await
                            .is_err()
                    {
                        return None;
                    }
                    rx.written(messages > 1);
                    // A burst must not leave its high-water mark behind, and
                    // a client sent one message at a time (most of them, most
                    // of the time) keeps no buffers while idle: about 220
                    // bytes per connection, for two small allocations per
                    // frame.
                    if messages <= 1 || items.capacity() > KEEP_ITEMS {
                        items = Vec::new();
                        batch = Vec::new();
                        frames = Vec::new();
                    }
                }
                Err(reason) => {
                    let d = closed_by_hub(&node, &reason);
                    Box::pin(close(&mut writer, &d)).await;
                    return Some(d);
                }
            }
        }
    }
}

/// The writer's socket failed: a client that stopped reading. If the hub
/// dropped it meanwhile (its queue overflowed: 3008), that close is counted
/// even though no frame can reach it.
fn gone(node: &Node, rx: &mut ClientReceiver, items: &mut Vec<crier_core::Outbound>) -> Option<Disconnect> {
    rx.try_drain(items)
        .err()
        .map(|reason| closed_by_hub(node, &reason))
}

/// Sends what a write at once left behind, if it did.
async fn rest(writer: &mut Writer, now: &Option<Arc<Now>>) -> std::io::Result<()> {
    match now {
        Some(now) if now.direct.has_rest() => Box::pin(writer.finish_direct(&now.direct)).await,
        _ => Ok(()),
    }
}

/// The hub's writes at once to one connection (`crier_core::WriteNow`):
/// a delivery's shared encoding as one frame, one `sendmsg`.
struct Now {
    direct: rfc6455::Direct,
    codec: Codec,
    node: Arc<Node>,
}

impl crier_core::WriteNow for Now {
    fn write_now(&self, item: &crier_core::Outbound) -> bool {
        if self.node.metrics.live_on() {
            if let crier_core::Outbound::Event(e) = item {
                self.node.metrics.delivered(e.created().elapsed());
            }
        }
        self.direct.send(&self.codec.outbound(item))
    }
}

/// Sends a ping and sets the next one `every` from now.
async fn send_ping(
    writer: &mut Writer,
    codec: Codec,
    next: &mut std::pin::Pin<Box<tokio::time::Sleep>>,
    every: Duration,
) -> std::io::Result<()> {
    writer.messages(codec.binary(), &mut vec![codec.ping()]).await?;
    next.as_mut().reset(tokio::time::Instant::now() + every);
    Ok(())
}

/// What a connection's reader and writer tasks share, in one allocation.
#[derive(Default)]
struct Between {
    /// The pongs and the close the reader asks the writer to send.
    controls: Controls,
    /// Signalled after each frame the writer sends, for the reader's
    /// backpressure (a stored permit, so a signal is never lost).
    drained: tokio::sync::Notify,
}

/// What woke the writer.
enum Wake {
    /// The queue: items drained, or the reason it closed.
    Queue(Result<usize, crier_core::DisconnectReason>),
    /// The ping interval passed.
    Ping,
    /// The reader queued a pong or a close.
    Controls,
}

/// Sends the control frames the reader asked for (pongs, a close). `Err`
/// when the writer must end: the socket failed, or the close went out.
async fn answer(writer: &mut Writer, controls: &Controls) -> Result<(), ()> {
    for control in controls.take_now() {
        let last = matches!(control, Control::Close(..));
        if writer.control(control).await.is_err() || last {
            return Err(());
        }
    }
    Ok(())
}

/// The hub closed the client's queue with `reason` (slow, shutdown, an API
/// disconnect): counted here; the reader logs it with the session's
/// client, user and address. The close to send, when the socket still
/// takes one.
fn closed_by_hub(node: &Node, reason: &crier_core::DisconnectReason) -> Disconnect {
    let d = disconnect_of(reason);
    node.metrics.disconnect(d.code);
    d
}

/// Batch capacity a writer keeps between frames.
const KEEP_ITEMS: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    async fn halves() -> (Reader, Writer, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let (rd, wr) = server.into_split();
        (
            Reader::new(rd, Bytes::new(), 1024),
            Writer::new(wr, Duration::from_secs(1)),
            client,
        )
    }

    /// Every connection keeps these two tasks for its whole life, so their
    /// futures are what each idle connection costs beyond the hub's entry.
    /// A command handler held inline once made `serve` 13 KiB (14 KiB per
    /// idle connection, unnoticed until a benchmark; docs/benchmarks.md):
    /// growing past these budgets fails here, not in production.
    #[tokio::test]
    async fn connection_tasks_stay_within_their_memory_budget() {
        let node = Node::new(crate::config::Config::default()).expect("node");
        let (reader, writer, _c1) = halves().await;
        let serving = serve(node.clone(), Codec::Json, reader, writer, (None, None));
        let (_, writer, _c2) = halves().await;
        let (_, rx) = node.hub.connect("u", None);
        let writing = write(
            node.clone(),
            Codec::Json,
            writer,
            rx,
            Duration::from_secs(25),
            Arc::default(),
        );
        let (serve_size, write_size) = (std::mem::size_of_val(&serving), std::mem::size_of_val(&writing));
        assert!(
            serve_size <= 800,
            "the reader task's future is {serve_size} bytes (budget 800)"
        );
        assert!(
            write_size <= 500,
            "the writer task's future is {write_size} bytes (budget 500)"
        );
    }
}
