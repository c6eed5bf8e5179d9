//! Unidirectional transports: `/connection/uni_sse` (EventSource; GET with
//! a `cf_connect` query, or POST body), `/connection/uni_http_stream`
//! (POST, newline-delimited JSON) and `/connection/uni_websocket` (connect
//! request as the first message, or `cf_connect`). The server sends bare
//! pushes: a `connect` push first, then publications, `{}` as ping, and a
//! `disconnect` push before closing. Clients only listen; their channels
//! come from the token (server-side subscriptions) and the connect
//! request's `subs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use crier_core::{ClientId, ClientReceiver, DisconnectReason, Hook};
use crier_proto::client::{ConnectRequest, ConnectResult, Push};
use crier_proto::codes::{Disconnect, ErrorCode};
use crier_proto::encode::{self, Envelope, PING};

use crate::admission::Peer;
use crate::config::UniTransportConfig;
use crate::metrics::Transport;
use crate::net::rfc6455::{self, Incoming, Reader, Writer};
use crate::net::stream::Framing;
use crate::net::Remote;
use crate::node::Node;
use crate::session::{Opened, Refused, Session};
use crate::wire::frames::{encode_event_into, UNI_JSON};
use crate::wire::{disconnect_of, Codec};

fn connect_push(result: ConnectResult) -> Bytes {
    let mut buf = BytesMut::new();
    encode::push(
        &mut buf,
        Envelope::Bare,
        &Push {
            connect: Some(result),
            ..Default::default()
        },
    );
    buf.freeze()
}

fn disconnect_push(d: &Disconnect) -> Bytes {
    let mut buf = BytesMut::new();
    encode::disconnect_push(&mut buf, Envelope::Bare, d);
    buf.freeze()
}

/// A refused connect as the disconnect a uni client is told.
fn refusal(r: Refused) -> Disconnect {
    match r {
        // A uni client cannot retry within the connection: an expired
        // token means "reconnect with a fresh one".
        Refused::Error(ErrorCode::TokenExpired | ErrorCode::Expired) => Disconnect::EXPIRED,
        // The connect proxy failed: as Centrifugo, 3004 (reconnect).
        Refused::Error(ErrorCode::Internal) | Refused::Custom(_) => Disconnect::SERVER_ERROR,
        Refused::Error(_) => Disconnect::BAD_REQUEST,
        Refused::Disconnect(d) => d,
    }
}

fn parse_connect(bytes: &[u8], limit: usize) -> Result<ConnectRequest, Disconnect> {
    if bytes.len() > limit {
        return Err(Disconnect::BAD_REQUEST);
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Disconnect::BAD_REQUEST)?
        .trim();
    if text.is_empty() {
        return Ok(ConnectRequest::default());
    }
    if !crier_proto::depth::within(text.as_bytes(), crier_proto::depth::MAX_DEPTH) {
        return Err(Disconnect::BAD_REQUEST);
    }
    serde_json::from_str(text).map_err(|_| Disconnect::BAD_REQUEST)
}

fn origin_allowed(node: &Node, peer: Peer, headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    node.origin_allowed(peer, origin, host)
}

// Forgets the client when the HTTP stream is dropped (the peer went away).
struct Registration {
    node: Arc<Node>,
    id: ClientId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.node.hub.disconnect(self.id, DisconnectReason::Removed);
    }
}

/// Everything one uni connection's writer needs.
struct Outgoing {
    node: Arc<Node>,
    rx: ClientReceiver,
    id: ClientId,
    // When the connection expires, if it does (boxed: most never do).
    expiry: Option<Box<Expiry>>,
    items: Vec<crier_core::Outbound>,
}

/// When a uni connection expires: closed as expired then (its
/// credentials plus `client.expired_close_delay`, as on every transport),
/// or, with a refresh hook (the refresh proxy), the backend is asked then
/// to prolong it, through the session kept for that.
struct Expiry {
    at: std::time::SystemTime,
    refresher: Option<Session>,
}

enum Step {
    /// Nothing to send (a refresh moved the expiry).
    Nothing,
    Frame(Vec<Bytes>),
    Ping,
    Close(Disconnect),
}

impl Outgoing {
    /// Waits for the next thing to send.
    async fn next(&mut self, ping: &mut tokio::time::Interval) -> Step {
        let expiry = self.expiry.as_ref().map(|e| crate::clock::until(e.at));
        let expired = async {
            match expiry {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let drained = tokio::select! {
            r = self.rx.drain(&mut self.items) => r,
            _ = ping.tick() => return Step::Ping,
            _ = expired => {
                if let Some(Expiry { at, refresher: Some(session) }) = self.expiry.as_deref_mut() {
                    // The backend prolongs the connection, or ends it.
                    match Box::pin(session.expire()).await {
                        Ok(()) => {
                            match session.deadline() {
                                Some(next) => *at = next,
                                None => self.expiry = None,
                            }
                            return Step::Nothing;
                        }
                        Err(d) => {
                            self.node.hub.disconnect(self.id, DisconnectReason::Removed);
                            return Step::Close(d);
                        }
                    }
                }
                self.node.hub.disconnect(self.id, DisconnectReason::Removed);
                return Step::Close(Disconnect::EXPIRED);
            }
        };
        match drained {
            Ok(_) => {
                let mut messages = Vec::with_capacity(self.items.len());
                for item in self.items.drain(..) {
                    messages.push(match item {
                        crier_core::Outbound::Raw(b) => *b,
                        crier_core::Outbound::Event(ev) => ev
                            .encoded(UNI_JSON, |ev| {
                                let mut buf = BytesMut::new();
                                encode_event_into(&mut buf, ev, Envelope::Bare);
                                buf.freeze()
                            })
                            .clone(),
                    });
                }
                Step::Frame(messages)
            }
            Err(reason) => Step::Close(disconnect_of(&reason)),
        }
    }
}

/// Opens a session for a uni client; the connect push comes first.
async fn open(
    node: &Arc<Node>,
    peer: Peer,
    req: ConnectRequest,
    forwarded: HeaderMap,
) -> Result<(Bytes, Outgoing), Disconnect> {
    let mut session = Session::new(node.clone(), Codec::Json, peer.transport, peer.remote);
    session.set_http_headers(forwarded);
    let Opened { result, rx, id } = Box::pin(session.open(req, true)).await.map_err(refusal)?;
    // Only a connection with an expiry that a hook prolongs keeps its
    // session (subscription expiries of uni clients are not refreshed).
    let expiry = session.deadline().map(|at| {
        let refresher = node.hooks.decides(Hook::Refresh).then_some(session);
        Box::new(Expiry { at, refresher })
    });
    Ok((
        connect_push(result),
        Outgoing {
            node: node.clone(),
            rx,
            id,
            expiry,
            items: Vec::new(),
        },
    ))
}

// The answer for a transport that is switched off, if it is.
fn disabled(cfg: &UniTransportConfig) -> Option<Response> {
    (!cfg.enabled).then(|| (StatusCode::NOT_FOUND, "transport not enabled\n").into_response())
}

/// `GET /connection/uni_sse?cf_connect={...}`
pub async fn sse_get(
    State(node): State<Arc<Node>>,
    Query(query): Query<HashMap<String, String>>,
    Remote(remote): Remote,
    headers: HeaderMap,
) -> Response {
    let connect = query
        .get("cf_connect")
        .map(String::as_bytes)
        .unwrap_or_default()
        .to_vec();
    stream_response(node, (remote, headers), &connect, Framing::Sse).await
}

/// `POST /connection/uni_sse` with the connect request as the body.
pub async fn sse_post(
    State(node): State<Arc<Node>>,
    Remote(remote): Remote,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stream_response(node, (remote, headers), &body, Framing::Sse).await
}

/// `POST /connection/uni_http_stream` with the connect request as the body.
pub async fn http_stream(
    State(node): State<Arc<Node>>,
    Remote(remote): Remote,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stream_response(node, (remote, headers), &body, Framing::Lines).await
}

async fn stream_response(
    node: Arc<Node>,
    (remote, headers): (Option<SocketAddr>, HeaderMap),
    connect: &[u8],
    framing: Framing,
) -> Response {
    // The uni streams are JSON: SSE events or lines (never binary).
    let (cfg, transport, content_type) = match framing {
        Framing::Sse => (&node.config.uni_sse, Transport::UniSse, "text/event-stream"),
        Framing::Lines | Framing::Binary => (
            &node.config.uni_http_stream,
            Transport::UniHttpStream,
            "application/x-ndjson",
        ),
    };
    if let Some(r) = disabled(cfg) {
        return r;
    }
    let peer = Peer { transport, remote };
    if !origin_allowed(&node, peer, &headers) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let req = match parse_connect(connect, cfg.max_request_body_size) {
        Ok(r) => r,
        Err(_) => return (StatusCode::BAD_REQUEST, "invalid connect request\n").into_response(),
    };
    let mut first = BytesMut::new();
    let body = match open(&node, peer, req, node.proxies.forwarded_headers(&headers)).await {
        Err(d) => {
            // Say why in the stream itself, then end it.
            framing.put(&mut first, &disconnect_push(&d));
            Body::from(first.freeze())
        }
        Ok((connect, out)) => {
            framing.put(&mut first, &connect);
            let registration = Registration {
                node: node.clone(),
                id: out.id,
            };
            // Both guards live in the stream's state: when the body is
            // dropped the client is forgotten and no longer counted.
            let registration = (registration, node.metrics.connection(transport));
            let ping = tokio::time::interval_at(
                tokio::time::Instant::now() + node.config.client.ping_interval,
                node.config.client.ping_interval,
            );
            let state = (Some(first.freeze()), out, ping, registration, false);
            let stream = futures_util::stream::unfold(
                state,
                move |(first, mut out, mut ping, reg, done)| async move {
                    if done {
                        return None;
                    }
                    if let Some(first) = first {
                        return Some((
                            Ok::<_, std::convert::Infallible>(first),
                            (None, out, ping, reg, false),
                        ));
                    }
                    let mut buf = BytesMut::new();
                    let step = loop {
                        match out.next(&mut ping).await {
                            Step::Nothing => continue,
                            step => break step,
                        }
                    };
                    let done = match step {
                        Step::Nothing => false,
                        Step::Frame(messages) => {
                            for m in &messages {
                                framing.put(&mut buf, m);
                            }
                            false
                        }
                        Step::Ping => {
                            framing.put(&mut buf, PING);
                            false
                        }
                        Step::Close(d) => {
                            out.node.metrics.disconnect(d.code);
                            framing.put(&mut buf, &disconnect_push(&d));
                            true
                        }
                    };
                    Some((Ok(buf.freeze()), (None, out, ping, reg, done)))
                },
            );
            Body::from_stream(stream)
        }
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(origin) = headers.get(header::ORIGIN) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    response
}

/// `GET /connection/uni_websocket`: the connect request comes as the first
/// message, or in `cf_connect`.
pub async fn websocket(
    State(node): State<Arc<Node>>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    if let Some(r) = disabled(&node.config.uni_websocket) {
        return r;
    }
    let peer = Peer {
        transport: Transport::UniWebSocket,
        remote: crate::net::remote(request.extensions()),
    };
    if !origin_allowed(&node, peer, request.headers()) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let limits = rfc6455::Limits {
        message_size: node.config.uni_websocket.max_request_body_size,
        write_timeout: node.config.websocket.write_timeout,
        protocol: None,
        deflate: node.websocket_deflate(),
    };
    let preset = query.get("cf_connect").cloned();
    let tracker = node.connections.clone();
    let headers = node.proxies.kept_headers(request.headers());
    rfc6455::accept(request, limits, &tracker, move |reader, writer| {
        serve_websocket(node, reader, writer, preset, (headers, peer.remote.map(Box::new)))
    })
}

async fn serve_websocket(
    node: Arc<Node>,
    mut reader: Reader,
    mut writer: Writer,
    preset: Option<String>,
    (headers, remote): (Option<Box<HeaderMap>>, Option<Box<SocketAddr>>),
) {
    let cfg = &node.config.client;
    let limit = node.config.uni_websocket.max_request_body_size;
    let connect_bytes: Bytes = match preset {
        Some(q) => q.into(),
        None => {
            let first = tokio::select! {
                m = tokio::time::timeout(cfg.ping_interval + cfg.pong_timeout, reader.next()) => m,
                _ = node.shutdown.cancelled() => return close(&mut writer, &Disconnect::SHUTDOWN).await,
            };
            match first {
                Ok(Ok(Incoming::Data(bytes))) => bytes,
                Err(_) => return close(&mut writer, &Disconnect::STALE).await,
                _ => return close(&mut writer, &Disconnect::BAD_REQUEST).await,
            }
        }
    };
    let req = match parse_connect(&connect_bytes, limit) {
        Ok(r) => r,
        Err(d) => return close(&mut writer, &d).await,
    };
    // Boxed: connecting is done once, and must not size the task for good.
    let forwarded = headers.map(|h| *h).unwrap_or_default();
    let peer = Peer {
        transport: Transport::UniWebSocket,
        remote: remote.as_deref().copied(),
    };
    let (connect, mut out) = match Box::pin(open(&node, peer, req, forwarded)).await {
        Ok(x) => x,
        Err(d) => {
            let _ = writer.text(&mut vec![disconnect_push(&d)]).await;
            return close(&mut writer, &d).await;
        }
    };
    let _registration = Registration {
        node: node.clone(),
        id: out.id,
    };
    let _connection = node.metrics.connection(Transport::UniWebSocket);
    if writer.text(&mut vec![connect]).await.is_err() {
        return;
    }
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + cfg.ping_interval, cfg.ping_interval);
    loop {
        let step = tokio::select! {
            s = out.next(&mut ping) => s,
            incoming = reader.next() => match incoming {
                // The client only listens; anything it sends is ignored
                // (pings answered), but its close or a broken socket ends
                // the connection.
                Ok(Incoming::Ping(payload)) => match writer.pong(payload).await {
                    Ok(()) => continue,
                    Err(_) => return,
                },
                Ok(Incoming::Data(_) | Incoming::Pong) => continue,
                Ok(Incoming::Close(code)) => {
                    let _ = writer.close(code.unwrap_or(1000), "").await;
                    return;
                }
                Err(_) => return,
            },
        };
        let sent = match step {
            Step::Nothing => Ok(()),
            Step::Frame(mut messages) => writer.text(&mut messages).await,
            Step::Ping => writer.text(&mut vec![Bytes::from_static(PING)]).await,
            Step::Close(d) => {
                node.metrics.disconnect(d.code);
                let _ = writer.text(&mut vec![disconnect_push(&d)]).await;
                return close(&mut writer, &d).await;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Sends `d` as a close frame.
async fn close(writer: &mut Writer, d: &Disconnect) {
    let _ = writer.close(d.code as u16, &d.reason).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// A uni WebSocket connection keeps this task for its whole life; see
    /// `transport::websocket`'s budget test for why it is checked.
    #[tokio::test]
    async fn the_uni_websocket_task_stays_within_its_memory_budget() {
        let node = Node::new(crate::config::Config::default()).expect("node");
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let (rd, wr) = crate::net::halves::split_tcp(server);
        let reader = Reader::new(rd, Bytes::new(), 1024);
        let writer = Writer::new(wr, std::time::Duration::from_secs(1));
        let serving = serve_websocket(node, reader, writer, None, (None, None));
        let size = std::mem::size_of_val(&serving);
        assert!(
            size <= 1_600,
            "the uni_websocket task's future is {size} bytes (budget 1,600)"
        );
    }
}
