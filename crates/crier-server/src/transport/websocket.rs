//! The bidirectional WebSocket transport, `/connection/websocket`: reads
//! frames of newline-separated commands into the [`Session`], and writes
//! everything the hub queued for the client as one frame per drain. Owns the
//! socket, the ping/pong and expiry timers; never decides protocol outcomes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
use crate::clock::unix_ms;
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
    // The socket lives in the connection's writes at once (`Now`): one
    // allocation, and the socket beside what a write at once reads.
    let own = {
        let node = node.clone();
        move |socket| -> Arc<dyn rfc6455::TcpOwner> {
            Arc::new(Now {
                socket,
                node,
                codec,
                direct: rfc6455::Direct::new(codec.binary()),
            })
        }
    };
    rfc6455::accept_owned(request, limits, &tracker, own, move |reader, writer| {
        serve(node, codec, reader, writer, (forwarded, remote))
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
            m = reader.next() => m,
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
    (forwarded, remote): (Option<Box<axum::http::HeaderMap>>, Option<SocketAddr>),
) -> impl std::future::Future<Output = ()> + Send {
    // Made before the future, which then holds the session alone, not also
    // the arguments it was made from.
    let mut session = Session::new(node.clone(), codec, Transport::WebSocket, remote);
    if let Some(headers) = forwarded {
        session.set_http_headers(*headers);
    }
    async move {
        // Phase 1, boxed: its futures (connect, replies, the stale timer) are
        // needed only until connect, and must not size every connection's
        // task for its whole life.
        let Some(rx) = Box::pin(connect(&node, codec, &mut session, &mut reader, &mut writer)).await else {
            return;
        };

        // Counted from connect until this task ends.
        let _connection = node.metrics.connection(Transport::WebSocket);

        // Phase 2: one task reads and writes. Its two halves are two futures
        // polled in turn by this one (the writer first, so the reader sees
        // what the writer's last poll decided): no second task, and what they
        // share lives here, not in an allocation of its own.
        let between = Between::new();
        let closed_by_client = Halves {
            writing: write(node.clone(), codec, &mut writer, rx, &between),
            reading: read_commands(&mut session, &mut reader, &between),
            between: &between,
            read: None,
            flush: None,
        }
        .await;
        if closed_by_client {
            // The writer has sent the close (or had 5 seconds to): only
            // now is the client removed, so its queue closing (3000)
            // cannot race the close code the client must see (1002, or
            // its echo).
            session.close(&Disconnect::CONNECTION_CLOSED);
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's two halves, polled in turn by its one task: the
    /// writer first (so the reader sees what the writer's last poll
    /// decided), until the reader ends; then the writer alone, to send
    /// the close, for 5 seconds at most. A future of its own rather than
    /// `poll_fn` over two pinned locals: no references to them, nor a
    /// closure, in every connection's task.
    struct Halves<'a, W, R> {
        #[pin]
        writing: W,
        #[pin]
        reading: R,
        between: &'a Between,
        // The reader's end, once it has ended: whether the client closed.
        read: Option<bool>,
        // The writer's deadline once the reader has ended (boxed: the
        // timer would size every connection's task).
        flush: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<W, R> std::future::Future for Halves<'_, W, R>
where
    W: std::future::Future<Output = Option<Disconnect>>,
    R: std::future::Future<Output = bool>,
{
    /// Whether the client closed (the reader's end).
    type Output = bool;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<bool> {
        let mut this = self.project();
        let between: &Between = this.between;
        let write = |writing: std::pin::Pin<&mut W>, cx: &mut std::task::Context<'_>| {
            if between.ended.get().is_none() {
                if let Poll::Ready(ended) = writing.poll(cx) {
                    let _ = between.ended.set(ended.map(Box::new));
                }
            }
        };
        write(this.writing.as_mut(), cx);
        let closed = match *this.read {
            Some(closed) => closed,
            None => {
                let queued = between.controls.is_queued();
                // What the client's commands publish wakes the writers of
                // the clients it reaches once this poll is done: each
                // writer then joins all of it into one frame.
                let read = crier_core::defer_wakes(|| this.reading.poll(cx));
                // The reader queued a pong or a close: the writer, polled
                // only when this task is woken, sends it on the next poll.
                if !queued && between.controls.is_queued() {
                    cx.waker().wake_by_ref();
                }
                let Poll::Ready(closed) = read else {
                    return Poll::Pending;
                };
                *this.read = Some(closed);
                // The writer goes on at once: the close it was asked to send.
                write(this.writing.as_mut(), cx);
                closed
            }
        };
        if between.ended.get().is_some() {
            return Poll::Ready(closed);
        }
        this.flush
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_secs(5))))
            .as_mut()
            .poll(cx)
            .map(|()| closed)
    }
}

/// The reading half of a connected client: reads frames of commands into
/// the session until the connection ends, then closes the session (or, when
/// the writer ended first, ends it with the writer's reason).
///
/// It sees the writer's end (and the writer's timer's verdict on a silent
/// client) only where it waits for the client, never in the middle of a
/// command.
#[allow(clippy::manual_async_fn)] // on purpose: see `serve`
fn read_commands<'a>(
    session: &'a mut Session,
    reader: &'a mut Reader,
    between: &'a Between,
) -> impl std::future::Future<Output = bool> + Send + 'a {
    async move {
        // The timer for lapsing tokens, boxed and only while a token can lapse:
        // most connections have none, and every byte here is per connection.
        // Its deadline is kept in Unix milliseconds (8 bytes, not 16).
        let mut expiry: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let mut expiry_at = 0u64;
        loop {
            // Connection or subscription tokens lapsing (refresh and sub_refresh
            // move the deadline; it is recomputed on every pass).
            rearm(session, &mut expiry, &mut expiry_at);
            // What waits next. Decided in a block of its own, so that what was
            // heard is not kept across the wait: every byte this future holds
            // while it waits, each idle connection holds.
            let next = {
                let heard = std::future::poll_fn(|cx| {
                    if let Some(sleep) = expiry.as_mut() {
                        if sleep.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(None);
                        }
                    }
                    between.poll_read(reader, cx).map(Some)
                })
                .await;
                match heard {
                    None => {
                        expiry = None;
                        Next::Expire
                    }
                    // The hub closed the queue (slow, shutdown, API
                    // disconnect) or the socket failed: the writer already
                    // said goodbye.
                    Some(Heard::Writer(by_hub)) => {
                        writer_gone(session, by_hub);
                        return false;
                    }
                    Some(Heard::Nothing) => {
                        session.close(&Disconnect::NO_PONG);
                        return false;
                    }
                    Some(Heard::Client(m)) => match read(m) {
                        Read::Frame(text) => Next::Frame(text),
                        Read::Skip => continue,
                        Read::Answer(control) => {
                            between.controls.send(control);
                            continue;
                        }
                        // The session ends once the writer has sent the
                        // close (`serve`).
                        Read::Last(control) => {
                            between.controls.send(control);
                            return true;
                        }
                        Read::Gone => {
                            session.close(&Disconnect::CONNECTION_CLOSED);
                            return false;
                        }
                        Read::Fail(d) => {
                            session.close(&d);
                            return false;
                        }
                    },
                }
            };
            // Boxed: a refresh proxy call, or the commands' state (a
            // decoded command is over 500 bytes), lives only while it runs,
            // not in every idle connection's task; one wait for both, so
            // that `next` is kept across one wait only (a value kept across
            // several is kept in every state of the future).
            if !Box::pin(act(session, between, next)).await {
                return false;
            }
        }
    }
}

/// Does what the reader heard asks for; false when the session has ended.
async fn act(session: &mut Session, between: &Between, next: Next) -> bool {
    match next {
        Next::Expire => match session.expire().await {
            Ok(()) => true,
            Err(d) => {
                session.close(&d);
                false
            }
        },
        Next::Frame(text) => match commands(session, text, between).await {
            AfterFrame::Continue => true,
            AfterFrame::Closed => false,
            AfterFrame::WriterGone(by_hub) => {
                writer_gone(session, by_hub);
                false
            }
        },
    }
}

/// What the reader waits for after what it heard.
enum Next {
    /// A token lapsed: the session checks (or refreshes) them.
    Expire,
    /// A frame of commands to handle.
    Frame(Bytes),
}

/// Keeps the timer for lapsing tokens at the session's deadline (`at`, in
/// Unix milliseconds, as it was armed): a new timer only when the deadline
/// moved, none while no token can lapse.
fn rearm(session: &Session, expiry: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>, at: &mut u64) {
    let deadline = session.deadline();
    let ms = deadline.map_or(0, unix_ms);
    if ms != *at || deadline.is_some() != expiry.is_some() {
        *at = ms;
        *expiry = deadline.map(|t| {
            let wait = t.duration_since(SystemTime::now()).unwrap_or_default();
            Box::pin(tokio::time::sleep(wait))
        });
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
async fn commands(session: &mut Session, text: Bytes, between: &Between) -> AfterFrame {
    let (node, codec) = (session.node().clone(), session.codec());
    let max = node.config.client.max_commands_per_frame;
    for (n, cmd) in codec.decode(&text).enumerate() {
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
        loop {
            // Counted before the check: a frame sent after it is seen.
            let sent = between.frames.load(Ordering::Relaxed);
            if !session.client_id().is_some_and(|id| node.hub.backlogged(id)) {
                break;
            }
            if let Some(by_hub) = between.next_frame(sent).await {
                return AfterFrame::WriterGone(by_hub);
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
fn read(msg: Result<Incoming, ReadError>) -> Read {
    match msg {
        Ok(Incoming::Data(bytes)) => Read::Frame(bytes),
        Ok(Incoming::Ping(payload)) => Read::Answer(Control::Pong(payload)),
        Ok(Incoming::Pong) => Read::Skip,
        // Echo the close (RFC 6455 §5.5.1); the session ends either way.
        Ok(Incoming::Close(code)) => Read::Last(Control::Close(code.unwrap_or(1000), "")),
        // An oversized message is the client's fault: tell it plainly.
        Err(ReadError::TooLong { .. }) => Read::Fail(Disconnect::BAD_REQUEST),
        Err(ReadError::Protocol(why)) => Read::Last(Control::Close(1002, why)),
        Err(ReadError::InvalidUtf8) => Read::Last(Control::Close(1007, "text message is not UTF-8")),
        Err(ReadError::Io(_)) => Read::Gone,
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
fn write<'a>(
    node: Arc<Node>,
    codec: Codec,
    writer: &'a mut Writer,
    mut rx: ClientReceiver,
    between: &'a Between,
) -> impl std::future::Future<Output = Option<Disconnect>> + Send + 'a {
    async move {
        // While this task waits, the hub writes a delivery that finds the
        // queue empty straight to the socket, from the pushing thread: no
        // wake-up, no poll (plain TCP without compression; the socket
        // lives in `Now`, see `upgrade`).
        let now = writer.owner().and_then(|owner| {
            let owner: Arc<dyn std::any::Any + Send + Sync> = owner.clone();
            owner.downcast::<Now>().ok()
        });
        if let Some(now) = &now {
            rx.write_now(now.clone());
        }
        let mut items = Vec::new();
        // Whether the last frame carried more than one message.
        let mut loaded = false;
        // One timer for both deadlines: the next ping, and the client's
        // silence (nothing heard for `idle`, which the reader then ends with
        // 3012). It fires at the earlier; the silence deadline it sees is
        // the one of its last reset, so a client heard since only costs a
        // reset.
        let timer = tokio::time::sleep(node.config.client.ping_interval);
        tokio::pin!(timer);
        // In milliseconds of `epoch` (8 bytes, not 16).
        let mut ping_at = since_epoch(timer.deadline());
        'frames: loop {
            // Each step in a block of its own, so that what it decided is
            // not kept across the later waits: every byte this future holds
            // while it waits, each idle connection holds.
            {
                // What woke the writer: a drain (or the hub's close), or a
                // chore (a ping due, control frames to send) done here. One
                // wait for either chore, in a block: what woke the writer is
                // not kept across the other waits below.
                let drained = 'woke: {
                    // Polled by hand, not with `select!`: a wake-up from the
                    // queue (once per delivery at low rates) checks the
                    // control flag and drains the queue, creates no future
                    // and takes no lock beyond the queue's.
                    let (timer_at, ping) = match std::future::poll_fn(|cx| {
                        if between.controls.is_queued() {
                            return Poll::Ready(Wake::Controls);
                        }
                        if let Poll::Ready(r) = rx.poll_drain(cx, &mut items) {
                            return Poll::Ready(Wake::Queue(r));
                        }
                        // Only when about to wait: while the queue keeps the
                        // writer busy, the deadline is checked after each
                        // frame instead.
                        timer.as_mut().poll(cx).map(|()| Wake::Timer)
                    })
                    .await
                    {
                        Wake::Queue(r) => break 'woke r,
                        Wake::Timer => {
                            let at = tokio::time::Instant::now();
                            (Some(at), between.ping_due(at, ping_at, &node))
                        }
                        Wake::Controls => (None, false),
                    };
                    if ping || timer_at.is_none() {
                        rx.hold();
                        let sending: std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> = if ping {
                            Box::pin(async { send_ping(writer, &now, codec).await.is_ok() })
                        } else {
                            Box::pin(async { answer(writer, &now, &between.controls).await.is_ok() })
                        };
                        if !sending.await {
                            return None;
                        }
                        rx.written(false);
                    }
                    if let Some(at) = timer_at {
                        if ping {
                            ping_at = since_epoch(at + node.config.client.ping_interval);
                        }
                        // A silent client's session ends through the
                        // reader; until then the timer waits for the next
                        // ping.
                        let next = if between.is_silent() {
                            at + node.config.client.ping_interval
                        } else {
                            at_epoch(ping_at).min(between.silent_at(idle(&node)))
                        };
                        timer.as_mut().reset(next.max(at + MIN_TICK));
                    }
                    continue 'frames;
                };
                if let Err(reason) = drained {
                    return Box::pin(close_after_rest(&node, writer, &now, &mut rx, &mut items, reason))
                        .await;
                }
            }
            // The drain made this task the socket's writer: what a write at
            // once left behind goes first.
            if let Some(direct) = rest(&now) {
                if Box::pin(writer.finish_direct(direct)).await.is_err() {
                    return gone(&node, &mut rx, &mut items);
                }
            }
            // A write at once's rest was all there was.
            if items.is_empty() {
                rx.written(false);
                continue;
            }
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
            loaded = items.len() > 1;
            // Measured before the write, so nothing is held across it.
            delivered(&node, &items);
            // The frame, in a block: what the socket leaves is kept only
            // while it waits.
            {
                let waiting = match match writer.deflate() {
                    // Compressed: a frame per message, so a shared event is
                    // compressed once for all its subscribers.
                    Some(d) => {
                        let mut frames: Vec<_> = items
                            .drain(..)
                            .map(|item| codec.outbound_deflated(&item, d))
                            .collect();
                        let mut out = Writer::frames_frame(codec.binary(), &mut frames);
                        writer.try_write(&mut out).map(|all| (!all).then_some(out))
                    }
                    // The shared encodings themselves go out, borrowed:
                    // no copy, and no reference taken unless the socket
                    // leaves some for later.
                    None => {
                        let rest = writer.try_write_messages(
                            codec.binary(),
                            items.iter().map(|item| codec.outbound(item)),
                        );
                        items.clear();
                        rest
                    }
                } {
                    // What the socket did not take waits, owned.
                    Ok(waiting) => waiting,
                    Err(_) => return gone(&node, &mut rx, &mut items),
                };
                if let Some(out) = waiting {
                    if Box::pin(writer.finish(out)).await.is_err() {
                        return gone(&node, &mut rx, &mut items);
                    }
                }
            }
            between.frames.fetch_add(1, Ordering::Relaxed);
            // A client the queue keeps busy still gets its pings, and is
            // still found silent.
            let at = tokio::time::Instant::now();
            if between.ping_due(at, ping_at, &node) {
                // (Nothing a write at once left: this task wrote last.)
                if Box::pin(send_ping(writer, &None, codec)).await.is_err() {
                    return None;
                }
                ping_at = since_epoch(at + node.config.client.ping_interval);
            }
            rx.written(loaded);
            // A burst must not leave its high-water mark behind, and a
            // client sent one message at a time (most of them, most of the
            // time) keeps no buffer while idle, for one small allocation per
            // frame.
            if !loaded || items.capacity() > KEEP_ITEMS {
                items = Vec::new();
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

/// The connection's writes at once, if one left something to send before
/// anything else.
fn rest(now: &Option<Arc<Now>>) -> Option<&rfc6455::Direct> {
    now.as_deref()
        .map(|now| &now.direct)
        .filter(|direct| direct.has_rest())
}

/// Sends what a write at once left behind, if it did.
async fn send_rest(writer: &mut Writer, now: &Option<Arc<Now>>) -> std::io::Result<()> {
    match rest(now) {
        Some(direct) => writer.finish_direct(direct).await,
        None => Ok(()),
    }
}

/// The hub's writes at once to one connection (`crier_core::WriteNow`):
/// a delivery's shared encoding as one frame, one `sendmsg`. Holds the
/// connection's socket itself (`rfc6455::TcpOwner`): a write at once reads
/// the socket's descriptor, the node and the codec from one allocation,
/// laid out first in that order (`repr(C)`), where a socket of its own
/// was one more pointer to follow per delivery and one more allocation
/// per connection (docs/benchmarks.md, "The socket inside its writes at
/// once").
#[repr(C)]
struct Now {
    socket: tokio::net::TcpStream,
    node: Arc<Node>,
    codec: Codec,
    direct: rfc6455::Direct,
}

impl rfc6455::TcpOwner for Now {
    fn tcp(&self) -> &tokio::net::TcpStream {
        &self.socket
    }
}

impl crier_core::WriteNow for Now {
    fn write_now(&self, item: &crier_core::Outbound) -> bool {
        delivered(&self.node, std::slice::from_ref(item));
        self.direct.send(&self.socket, self.codec.outbound(item))
    }

    fn write_all_now(&self, items: &[crier_core::Outbound]) -> bool {
        delivered(&self.node, items);
        self.direct
            .send_all(&self.socket, items.iter().map(|item| self.codec.outbound(item)))
    }

    fn spread(&self) -> Option<&dyn crier_core::Spread> {
        self.node.hub.spread()
    }
}

/// Delivery latency for the admin UI, when it is watched: from the
/// publish of the oldest event among `items`, about to be written, to now.
fn delivered(node: &Node, items: &[crier_core::Outbound]) {
    if node.metrics.live_on() {
        if let Some(created) = items.iter().find_map(|i| match i {
            crier_core::Outbound::Event(e) => Some(e.created()),
            crier_core::Outbound::Raw(_) => None,
        }) {
            node.metrics.delivered(created.elapsed());
        }
    }
}

/// Sends a ping, after what a write at once left behind.
async fn send_ping(writer: &mut Writer, now: &Option<Arc<Now>>, codec: Codec) -> std::io::Result<()> {
    send_rest(writer, now).await?;
    writer.messages(codec.binary(), &mut vec![codec.ping()]).await
}

/// How long a client may send nothing before it is closed with 3012 no
/// pong: it must answer every server ping.
fn idle(node: &Node) -> Duration {
    node.config.client.ping_interval + node.config.client.pong_timeout
}

/// What a connection's reading and writing halves share: both are futures
/// of the connection's one task, so this lives in that task's future.
struct Between {
    /// The pongs and the close the reader asks the writer to send.
    controls: Controls,
    /// Counts the frames the writer sent (wrapping), for the reader's
    /// backpressure: a reader that read the count before it found the
    /// queue backlogged waits for it to change (no waker: the writer is
    /// polled by the same task, just before the reader).
    frames: AtomicU32,
    /// When the client last sent anything, in milliseconds of [`epoch`];
    /// [`SILENT`] once the writer found it silent for longer than the ping
    /// interval plus the pong timeout (the reader then ends the session with
    /// 3012).
    heard: AtomicU64,
    /// Set when the writer has ended: the hub's close, when the hub closed
    /// the queue (boxed: 16 bytes in every connection's task, not 40).
    ended: OnceLock<Option<Box<Disconnect>>>,
}

impl Between {
    fn new() -> Self {
        Between {
            controls: Controls::default(),
            frames: AtomicU32::new(0),
            heard: AtomicU64::new(since_epoch(tokio::time::Instant::now())),
            ended: OnceLock::new(),
        }
    }

    /// When the client, heard last when it was, will have been silent for
    /// `idle` (not yet found silent).
    fn silent_at(&self, idle: Duration) -> tokio::time::Instant {
        at_epoch(self.heard.load(Ordering::Relaxed)) + idle
    }

    /// Whether the client has been silent for `idle` at `at`; if so, marks
    /// it for the reader.
    fn silent(&self, at: tokio::time::Instant, idle: Duration) -> bool {
        if !self.is_silent() && at >= self.silent_at(idle) {
            self.heard.store(SILENT, Ordering::Relaxed);
        }
        self.is_silent()
    }

    /// Whether a ping is due at `at` (the next one was due at `ping_at`,
    /// in ms of [`epoch`]): not to a client found silent, which this
    /// checks first (and marks, for the reader) whether or not a ping is due.
    fn ping_due(&self, at: tokio::time::Instant, ping_at: u64, node: &Node) -> bool {
        !self.silent(at, idle(node)) && since_epoch(at) >= ping_at
    }

    fn is_silent(&self) -> bool {
        self.heard.load(Ordering::Relaxed) == SILENT
    }

    /// The reader's wait: the writer's end, the client found silent, or the
    /// client's next frame (which counts as hearing from it: any frame is a
    /// pong).
    fn poll_read(&self, reader: &mut Reader, cx: &mut std::task::Context<'_>) -> Poll<Heard> {
        if let Some(by_hub) = self.ended.get() {
            return Poll::Ready(Heard::Writer(by_hub.as_deref().cloned()));
        }
        if self.is_silent() {
            return Poll::Ready(Heard::Nothing);
        }
        let msg = std::task::ready!(reader.poll_next(cx));
        self.heard
            .store(since_epoch(tokio::time::Instant::now()), Ordering::Relaxed);
        Poll::Ready(Heard::Client(msg))
    }

    /// Ready when the writer has sent a frame since it had sent `sent`
    /// (with `None`), or has ended (with its end). Registers no waker:
    /// the writer is polled in the same task, just before the reader.
    fn next_frame(&self, sent: u32) -> impl std::future::Future<Output = Option<Option<Disconnect>>> + '_ {
        std::future::poll_fn(move |_| match self.ended.get() {
            Some(by_hub) => Poll::Ready(Some(by_hub.as_deref().cloned())),
            None if self.frames.load(Ordering::Relaxed) != sent => Poll::Ready(None),
            None => Poll::Pending,
        })
    }
}

/// The moment connections count the time they last heard from their
/// client from: one for the process, so a connection keeps 8 bytes for it.
fn epoch() -> tokio::time::Instant {
    static EPOCH: OnceLock<tokio::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(tokio::time::Instant::now)
}

/// `ms` milliseconds after [`epoch`].
fn at_epoch(ms: u64) -> tokio::time::Instant {
    epoch() + Duration::from_millis(ms)
}

/// Milliseconds from [`epoch`] to `at`.
fn since_epoch(at: tokio::time::Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

/// What the reader's wait ended with.
enum Heard {
    /// A frame from the client, or why none can come.
    Client(Result<Incoming, ReadError>),
    /// Nothing from the client for the ping interval plus the pong timeout.
    Nothing,
    /// The writer ended: the hub closed the queue (with this) or the socket
    /// failed.
    Writer(Option<Disconnect>),
}

/// [`Between::heard`] of a client found silent.
const SILENT: u64 = u64::MAX;

/// The shortest wait the writer's timer is set to, so a deadline passed
/// while it was busy does not spin it.
const MIN_TICK: Duration = Duration::from_millis(1);

/// What woke the writer.
enum Wake {
    /// The queue: items drained, or the reason it closed.
    Queue(Result<usize, crier_core::DisconnectReason>),
    /// The timer: a ping is due, or the client may have been silent too
    /// long.
    Timer,
    /// The reader queued a pong or a close.
    Controls,
}

/// Sends the control frames the reader asked for (pongs, a close). `Err`
/// when the writer must end: the socket failed, or the close went out.
async fn answer(writer: &mut Writer, now: &Option<Arc<Now>>, controls: &Controls) -> Result<(), ()> {
    send_rest(writer, now).await.map_err(|_| ())?;
    for control in controls.take_now() {
        let last = matches!(control, Control::Close(..));
        if writer.control(control).await.is_err() || last {
            return Err(());
        }
    }
    Ok(())
}

/// The hub closed the client's queue with `reason`: after what a write at
/// once left behind, the close.
async fn close_after_rest(
    node: &Node,
    writer: &mut Writer,
    now: &Option<Arc<Now>>,
    rx: &mut ClientReceiver,
    items: &mut Vec<crier_core::Outbound>,
    reason: crier_core::DisconnectReason,
) -> Option<Disconnect> {
    if send_rest(writer, now).await.is_err() {
        return gone(node, rx, items);
    }
    Some(close_by_hub(node, writer, reason).await)
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

/// Closes the connection with the hub's `reason`, counted (see
/// [`closed_by_hub`]); the close sent.
async fn close_by_hub(node: &Node, writer: &mut Writer, reason: crier_core::DisconnectReason) -> Disconnect {
    let d = closed_by_hub(node, &reason);
    close(writer, &d).await;
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
        let (rd, wr) = crate::net::halves::split_tcp(server);
        (
            Reader::new(rd, Bytes::new(), 1024),
            Writer::new(wr, Duration::from_secs(1)),
            client,
        )
    }

    /// Every connection keeps this task for its whole life, so its future
    /// is what each idle connection costs beyond the hub's entry. A command
    /// handler held inline once made it 13 KiB (14 KiB per idle connection,
    /// unnoticed until a benchmark; docs/benchmarks.md): growing past this
    /// budget fails here, not in production. The budget is a step: tokio
    /// allocates a task in 128-byte cache lines, the future plus 112 bytes
    /// (its header, trailer and the task tracker's token), so up to 656
    /// bytes the task takes six (768 bytes) and one byte more takes seven.
    /// The reader and the writer keep across their waits only what the
    /// wait needs: what was heard, what woke the writer, what a frame
    /// left, is decided in a block of its own, and the writer's chores
    /// (a ping, control frames) and the reader's (a frame's commands, a
    /// lapsed token) each share one wait (a value kept across
    /// two waits is kept in every state of the future: one cost 128 bytes
    /// here); what few connections use (a fragmented message, subscription
    /// expiries, connection info, the writer's end reason, a command rate
    /// limit) is boxed; the halves share no waker (`Halves` polls both).
    #[tokio::test]
    async fn a_connection_task_stays_within_its_memory_budget() {
        let node = Node::new(crate::config::Config::default()).expect("node");
        let (reader, writer, _c1) = halves().await;
        let serving = serve(node.clone(), Codec::Json, reader, writer, (None, None));
        let size = std::mem::size_of_val(&serving);
        assert!(
            size <= 656,
            "the connection task's future is {size} bytes (budget 656)"
        );
        // The socket and the writes at once, one allocation for the
        // connection's life (a frame's rest inline once made the writes
        // at once 72 bytes; with the socket beside them, 56 and 40 bytes
        // were two allocations).
        let now = std::mem::size_of::<Now>();
        assert!(now <= 88, "a connection's `Now` is {now} bytes (budget 88)");
    }
}
