//! The bidirectional WebSocket transport, `/connection/websocket`: reads
//! frames of newline-separated commands into the [`Session`], and writes
//! everything the hub queued for the client as one frame per drain. Owns the
//! socket, the ping/pong and expiry timers; never decides protocol outcomes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use crier_core::ClientReceiver;
use crier_proto::client::Request as Command;
use crier_proto::codes::Disconnect;
use crier_proto::encode::{Envelope, PING};

use crate::metrics::Transport;
use crate::net::rfc6455::{self, Control, Controls, Incoming, ReadError, Reader, Writer};
use crate::node::Node;
use crate::session::{Refusal, Session};
use crate::wire::frames::encoded;
use crate::wire::{disconnect_of, Codec};

/// Upgrades a request to a WebSocket client connection.
pub async fn upgrade(State(node): State<Arc<Node>>, request: Request) -> Response {
    let headers = request.headers();
    let origin = headers.get("origin").and_then(|v| v.to_str().ok());
    let host = headers.get("host").and_then(|v| v.to_str().ok());
    if !node.origins.allows(origin, host) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let limits = rfc6455::Limits {
        message_size: node.config.websocket.message_size_limit,
        write_timeout: node.config.websocket.write_timeout,
    };
    let tracker = node.connections.clone();
    // The only format for now; the protobuf one will be chosen here from
    // the subprotocol or the query.
    let codec = Codec::Json;
    rfc6455::accept(request, limits, &tracker, move |reader, writer| {
        serve(node, codec, reader, writer)
    })
}

/// Sends `d` as a close frame.
async fn close(writer: &mut Writer, d: &Disconnect) {
    let _ = writer.close(d.code as u16, &d.reason).await;
}

/// Serves one WebSocket connection until it closes.
async fn serve(node: Arc<Node>, codec: Codec, mut reader: Reader, mut writer: Writer) {
    let mut session = Session::new(node.clone(), codec);
    let cfg = &node.config.client;
    // A client that sends nothing for a ping interval plus the pong timeout
    // is gone (it must answer every server ping).
    let idle = cfg.ping_interval + cfg.pong_timeout;

    // Phase 1: until connected, only a connect command is acceptable, and
    // only within `stale_close_delay` of the upgrade (3502 stale after).
    let stale = tokio::time::sleep(cfg.stale_close_delay);
    tokio::pin!(stale);
    let rx = loop {
        let msg = tokio::select! {
            m = reader.next() => Ok(m),
            _ = &mut stale => return close(&mut writer, &Disconnect::STALE).await,
            _ = node.shutdown.cancelled() => return close(&mut writer, &Disconnect::SHUTDOWN).await,
        };
        let text = match read(msg) {
            Read::Frame(bytes) => bytes,
            Read::Skip => continue,
            Read::Answer(control) => {
                if writer.control(control).await.is_err() {
                    return;
                }
                continue;
            }
            Read::Last(control) => {
                let _ = writer.control(control).await;
                return;
            }
            Read::Gone => return,
            Read::Fail(d) => return close(&mut writer, &d).await,
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
                if writer.text(&mut vec![reply]).await.is_err() {
                    session.close(&Disconnect::CONNECTION_CLOSED);
                    return;
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
                break rx;
            }
            Err(Refusal::Reply(bytes)) => {
                if writer.text(&mut vec![bytes]).await.is_err() {
                    return;
                }
            }
            Err(Refusal::Disconnect(d)) => return close(&mut writer, &d).await,
        }
    };

    // Counted from connect until this task ends.
    let _connection = node.metrics.connection(Transport::WebSocket);

    // Phase 2: a writer task drains the client's queue; this task reads.
    let controls = Arc::new(Controls::default());
    // Signalled after each frame the writer sends, for the backpressure
    // below (a stored permit, so a signal is never lost).
    let drained = Arc::new(tokio::sync::Notify::new());
    let writing = tokio::spawn(write(
        node.clone(),
        codec,
        writer,
        rx,
        cfg.ping_interval,
        (controls.clone(), drained.clone()),
    ));
    tokio::pin!(writing);
    loop {
        // Connection or subscription tokens lapsing (refresh and sub_refresh
        // move the deadline; it is recomputed on every pass).
        let deadline = session.deadline();
        let expired = async {
            match deadline {
                Some(t) => tokio::time::sleep(t.duration_since(SystemTime::now()).unwrap_or_default()).await,
                None => std::future::pending().await,
            }
        };
        let msg = tokio::select! {
            m = tokio::time::timeout(idle, reader.next()) => m,
            _ = expired => {
                if let Err(d) = session.expire() {
                    session.close(&d);
                    break;
                }
                continue;
            }
            _ = &mut writing => {
                // The hub closed the queue (slow, shutdown, API disconnect)
                // or the socket failed: the writer already said goodbye.
                session.close(&Disconnect::CONNECTION_CLOSED);
                return;
            }
        };
        match read(msg) {
            Read::Frame(text) => {
                let max = cfg.max_commands_per_frame;
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
                        break;
                    }
                    // Replies queue behind what the writer has not sent:
                    // a client pipelining faster than it reads waits here
                    // (and so does its socket) instead of overflowing its
                    // own queue and being dropped as slow (3008).
                    while session.client_id().is_some_and(|id| node.hub.backlogged(id)) {
                        tokio::select! {
                            _ = drained.notified() => {}
                            _ = &mut writing => {
                                session.close(&Disconnect::CONNECTION_CLOSED);
                                return;
                            }
                        }
                    }
                }
                if session.client_id().is_none() {
                    break;
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
        Ok(Err(ReadError::Io(_))) => Read::Gone,
    }
}

/// Drains the client's queue into one text frame per wake-up, pings on the
/// interval, and closes with the hub's reason when the queue closes.
async fn write(
    node: Arc<Node>,
    codec: Codec,
    mut writer: Writer,
    mut rx: ClientReceiver,
    ping_every: Duration,
    (controls, drained): (Arc<Controls>, Arc<tokio::sync::Notify>),
) {
    let mut items = Vec::new();
    let mut batch = Vec::new();
    let mut answers = Vec::new();
    let start = tokio::time::Instant::now() + ping_every;
    let mut ping = tokio::time::interval_at(start, ping_every);
    loop {
        let outcome = tokio::select! {
            r = rx.drain(&mut items) => r,
            _ = ping.tick() => {
                if writer.text(&mut vec![Bytes::from_static(PING)]).await.is_err() {
                    return;
                }
                continue;
            }
            _ = controls.take(&mut answers) => {
                for control in answers.drain(..) {
                    let last = matches!(control, Control::Close(..));
                    if writer.control(control).await.is_err() || last {
                        return;
                    }
                }
                continue;
            }
        };
        match outcome {
            Ok(_) => {
                // Let the publisher that woke us finish its fan-out round
                // first: whatever it queues meanwhile joins this frame. One
                // extra poll per frame; under load, about twice the
                // messages per frame (docs/benchmarks.md).
                tokio::task::yield_now().await;
                let _ = rx.try_drain(&mut items);
                // The shared encodings themselves go out: no copy.
                batch.extend(
                    items
                        .drain(..)
                        .map(|item| encoded(&item, codec.events(), Envelope::Reply)),
                );
                if writer.text(&mut batch).await.is_err() {
                    // A client that stopped reading: if the hub dropped it
                    // meanwhile (its queue overflowed: 3008), count that
                    // close even though no frame can reach it.
                    if let Err(reason) = rx.try_drain(&mut items) {
                        node.metrics.disconnect(disconnect_of(&reason).code);
                    }
                    return;
                }
                drained.notify_one();
                // A burst must not leave its high-water mark behind.
                if items.capacity() > KEEP_ITEMS {
                    items = Vec::new();
                    batch = Vec::new();
                }
            }
            Err(reason) => {
                let d = disconnect_of(&reason);
                node.metrics.disconnect(d.code);
                close(&mut writer, &d).await;
                return;
            }
        }
    }
}

/// Batch capacity a writer keeps between frames.
const KEEP_ITEMS: usize = 32;
