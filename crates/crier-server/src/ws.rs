//! The bidirectional WebSocket transport, `/connection/websocket`: reads
//! frames of newline-separated commands into the [`Session`], and writes
//! everything the hub queued for the client as one frame per drain. Owns the
//! socket, the ping/pong and expiry timers; never decides protocol outcomes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use crier_core::ClientReceiver;
use crier_proto::client::{parse_frame, Request};
use crier_proto::codes::Disconnect;
use crier_proto::encode::{Envelope, PING};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};

use crate::frames::{join_batch, BIDI_JSON};
use crate::metrics::Transport;
use crate::node::Node;
use crate::session::{disconnect_of, Refusal, Session};

/// Bytes tungstenite reads per `read(2)` from a WebSocket client, and what
/// it keeps allocated between reads.
pub(crate) const READ_BUFFER: usize = 1024;

/// Upgrades a request to a WebSocket client connection.
pub async fn upgrade(State(node): State<Arc<Node>>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let origin = headers.get("origin").and_then(|v| v.to_str().ok());
    let host = headers.get("host").and_then(|v| v.to_str().ok());
    if !node.origins.allows(origin, host) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let limit = node.config.websocket.message_size_limit;
    let tracker = node.connections.clone();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        // tungstenite keeps this buffer for the connection's whole life:
        // at 4 KiB it was 40 % of an idle connection's memory. Client
        // commands are small; a large one takes more reads, not more
        // memory (docs/benchmarks.md, "Memory per connection").
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| tracker.track_future(serve(node, socket)))
}

type Sink = SplitSink<WebSocket, Message>;

async fn close(sink: &mut Sink, d: &Disconnect) {
    let frame = CloseFrame {
        code: d.code as u16,
        reason: Utf8Bytes::from(d.reason.to_string()),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

/// Serves one WebSocket connection until it closes.
async fn serve(node: Arc<Node>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let mut session = Session::new(node.clone());
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
            m = stream.next() => Ok(m),
            _ = &mut stale => return close(&mut sink, &Disconnect::STALE).await,
            _ = node.shutdown.cancelled() => return close(&mut sink, &Disconnect::SHUTDOWN).await,
        };
        let text = match read(msg) {
            Read::Frame(bytes) => bytes,
            Read::Skip => continue,
            Read::Gone => return,
            Read::Fail(d) => return close(&mut sink, &d).await,
        };
        let mut commands = parse_frame(&text);
        let Some(first) = commands.next() else { continue };
        let outcome = match first {
            Ok(cmd) => {
                let id = cmd.id;
                match cmd.into_request() {
                    Ok(Request::Connect(req)) => session.connect(id, req),
                    Ok(_) | Err(_) => Err(Refusal::Disconnect(Disconnect::BAD_REQUEST)),
                }
            }
            Err(e) => Err(Refusal::Disconnect(
                e.disconnect().unwrap_or(Disconnect::BAD_REQUEST),
            )),
        };
        match outcome {
            Ok((reply, rx)) => {
                if sink.send(Message::Text(text_of(reply))).await.is_err() {
                    session.close(&Disconnect::CONNECTION_CLOSED);
                    return;
                }
                // Commands that followed connect in the same frame.
                for cmd in commands {
                    let result = cmd.map_err(|e| e.disconnect().unwrap_or(Disconnect::BAD_REQUEST));
                    if let Err(d) = result.and_then(|c| session.handle(c)) {
                        session.close(&d);
                    }
                }
                break rx;
            }
            Err(Refusal::Reply(bytes)) => {
                if sink.send(Message::Text(text_of(bytes))).await.is_err() {
                    return;
                }
            }
            Err(Refusal::Disconnect(d)) => return close(&mut sink, &d).await,
        }
    };

    // Counted from connect until this task ends.
    let _connection = node.metrics.connection(Transport::WebSocket);

    // Phase 2: a writer task drains the client's queue; this task reads.
    let writer = tokio::spawn(write(node.clone(), sink, rx, cfg.ping_interval));
    tokio::pin!(writer);
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
            m = tokio::time::timeout(idle, stream.next()) => m,
            _ = expired => {
                if let Err(d) = session.expire() {
                    session.close(&d);
                    break;
                }
                continue;
            }
            _ = &mut writer => {
                // The hub closed the queue (slow, shutdown, API disconnect)
                // or the socket failed: the writer already said goodbye.
                session.close(&Disconnect::CONNECTION_CLOSED);
                return;
            }
        };
        match read(msg) {
            Read::Frame(text) => {
                for cmd in parse_frame(&text) {
                    let result = cmd.map_err(|e| e.disconnect().unwrap_or(Disconnect::BAD_REQUEST));
                    if let Err(d) = result.and_then(|c| session.handle(c)) {
                        session.close(&d);
                        break;
                    }
                }
                if session.client_id().is_none() {
                    break;
                }
            }
            Read::Skip => {}
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
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

enum Read {
    Frame(bytes::Bytes),
    Skip,
    Gone,
    Fail(Disconnect),
}

fn read(msg: Result<Option<Result<Message, axum::Error>>, tokio::time::error::Elapsed>) -> Read {
    match msg {
        Err(_) => Read::Fail(Disconnect::NO_PONG),
        Ok(None) => Read::Gone,
        Ok(Some(Err(e))) => {
            // An oversized frame is the client's fault: tell it plainly.
            let text = e.to_string();
            if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
                Read::Fail(Disconnect::BAD_REQUEST)
            } else {
                Read::Gone
            }
        }
        Ok(Some(Ok(Message::Text(t)))) => Read::Frame(t.into()),
        Ok(Some(Ok(Message::Binary(b)))) => Read::Frame(b),
        Ok(Some(Ok(Message::Close(_)))) => Read::Gone,
        Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => Read::Skip,
    }
}

fn text_of(bytes: bytes::Bytes) -> Utf8Bytes {
    // Everything crier writes is JSON produced from valid UTF-8.
    Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from_static("{}"))
}

/// Drains the client's queue into one text frame per wake-up, pings on the
/// interval, and closes with the hub's reason when the queue closes.
async fn write(node: Arc<Node>, mut sink: Sink, mut rx: ClientReceiver, ping_every: Duration) {
    let mut items = Vec::new();
    let mut frame = BytesMut::new();
    let start = tokio::time::Instant::now() + ping_every;
    let mut ping = tokio::time::interval_at(start, ping_every);
    loop {
        let drained = tokio::select! {
            r = rx.drain(&mut items) => r,
            _ = ping.tick() => {
                if sink.send(Message::Text(Utf8Bytes::from_static(std::str::from_utf8(PING).unwrap_or("{}")))).await.is_err() {
                    return;
                }
                continue;
            }
        };
        match drained {
            Ok(_) => {
                // Let the publisher that woke us finish its fan-out round
                // first: whatever it queues meanwhile joins this frame. One
                // extra poll per frame; under load, about twice the
                // messages per frame (docs/benchmarks.md).
                tokio::task::yield_now().await;
                let _ = rx.try_drain(&mut items);
                join_batch(&items, BIDI_JSON, Envelope::Reply, &mut frame);
                items.clear();
                if sink
                    .send(Message::Text(text_of(frame.split().freeze())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(reason) => {
                let d = disconnect_of(&reason);
                node.metrics.disconnect(d.code);
                close(&mut sink, &d).await;
                return;
            }
        }
    }
}
