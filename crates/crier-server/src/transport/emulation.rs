//! Bidirectional emulation, for clients that cannot open a WebSocket
//! (centrifuge-js falls back to it): the server → client half is a long
//! HTTP response — `POST /connection/http_stream` (JSON lines, or protobuf
//! replies back to back) or `GET /connection/sse` (`data:` events, JSON)
//! —, and the client → server half is one `POST /emulation` per command
//! batch, naming the session (and the node) from the connect result.
//!
//! The session lives in a task that owns it, fed by the stream's connect
//! command and then by the commands `/emulation` hands over, on this node
//! or, without sticky sessions, through the engine's control channel from
//! another node ([`control::emulate`]). Everything else (commands, codes,
//! limits, recovery) is the bidirectional protocol of the WebSocket.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use crier_core::ClientReceiver;
use crier_proto::client::{Command, Push, Reply, Request};
use crier_proto::codes::Disconnect;
use tokio::sync::mpsc;

use crate::admission::Peer;
use crate::control::{self, Emulated};
use crate::metrics::Transport;
use crate::net::stream::Framing;
use crate::net::Remote;
use crate::node::Node;
use crate::session::{Refusal, Session};
use crate::wire::{disconnect_of, Codec};

/// Command batches that may wait for one emulated session; a POST beyond
/// them is answered 429.
const QUEUED_BATCHES: usize = 16;

/// The `Content-Type` of a stream with `framing`.
fn content_type(framing: Framing) -> &'static str {
    match framing {
        Framing::Sse => "text/event-stream",
        Framing::Lines => "application/json",
        Framing::Binary => "application/octet-stream",
    }
}

fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"))
}

fn origin_allowed(node: &Node, peer: Peer, headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    node.origin_allowed(peer, origin, host)
}

/// The CORS answer for an allowed cross-origin request (the emulation
/// requests carry credentials, so the origin is echoed, never `*`).
fn cors(response: &mut Response, request: &HeaderMap) {
    let h = response.headers_mut();
    if let Some(origin) = request.get(header::ORIGIN) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

/// `OPTIONS` on the emulation endpoints: the browser's preflight before a
/// cross-origin POST with a JSON or binary body.
pub async fn preflight(
    State(node): State<Arc<Node>>,
    Remote(remote): Remote,
    headers: HeaderMap,
) -> Response {
    let peer = Peer {
        transport: Transport::HttpStream,
        remote,
    };
    if !origin_allowed(&node, peer, &headers) {
        return plain(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    cors(&mut r, &headers);
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    r
}

/// `POST /connection/http_stream`: the body holds the connect command
/// (JSON, or protobuf with `Content-Type: application/octet-stream`).
pub async fn http_stream(
    State(node): State<Arc<Node>>,
    Remote(remote): Remote,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cfg = &node.config.http_stream;
    if !cfg.enabled {
        return plain(StatusCode::NOT_FOUND, "transport not enabled\n");
    }
    if body.len() > cfg.max_request_body_size {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "connect request larger than http_stream.max_request_body_size\n",
        );
    }
    let (codec, framing) = match is_protobuf(&headers) {
        true => (Codec::Protobuf, Framing::Binary),
        false => (Codec::Json, Framing::Lines),
    };
    let peer = Peer {
        transport: Transport::HttpStream,
        remote,
    };
    open(node, headers, peer, codec, framing, body).await
}

/// `GET /connection/sse?cf_connect=...`: the connect command (JSON) in
/// the query.
pub async fn sse(
    State(node): State<Arc<Node>>,
    Query(query): Query<HashMap<String, String>>,
    Remote(remote): Remote,
    headers: HeaderMap,
) -> Response {
    let cfg = &node.config.sse;
    if !cfg.enabled {
        return plain(StatusCode::NOT_FOUND, "transport not enabled\n");
    }
    let connect = query.get("cf_connect").cloned().unwrap_or_default();
    if connect.len() > cfg.max_request_body_size {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "connect request larger than sse.max_request_body_size\n",
        );
    }
    open(
        node,
        headers,
        Peer {
            transport: Transport::Sse,
            remote,
        },
        Codec::Json,
        Framing::Sse,
        Bytes::from(connect),
    )
    .await
}

/// Connects an emulated session from the stream request's commands and
/// answers with its stream.
async fn open(
    node: Arc<Node>,
    headers: HeaderMap,
    peer: Peer,
    codec: Codec,
    framing: Framing,
    initial: Bytes,
) -> Response {
    if !origin_allowed(&node, peer, &headers) {
        return plain(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let mut commands: Vec<Result<Command, crier_proto::Error>> = codec.decode(&initial).collect();
    if commands.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "the request must hold a connect command\n",
        );
    }
    let (id, req) = match commands.remove(0).map(|c| (c.id, c.into_request())) {
        Ok((id, Ok(Request::Connect(req)))) => (id, req),
        _ => return plain(StatusCode::BAD_REQUEST, "the first command must be a connect\n"),
    };
    let (session_id, queue) = node.emulated_session(QUEUED_BATCHES);
    let mut session = Session::new(node.clone(), codec, peer.transport, peer.remote);
    session.set_emulated(session_id.clone());
    session.set_http_headers(node.proxies.forwarded_headers(&headers));
    let body = match session.connect(id, req).await {
        Ok((reply, rx)) => {
            let (out, body) = mpsc::channel::<Bytes>(8);
            let first = framing.framed(&reply);
            let task = Emulation {
                node: node.clone(),
                codec,
                framing,
                transport: peer.transport,
                session,
                session_id,
                queue,
                out,
            };
            node.connections.spawn(task.run(rx, first, commands));
            Body::from_stream(futures_util::stream::unfold(body, |mut body| async move {
                body.recv().await.map(|b| (Ok::<_, Infallible>(b), body))
            }))
        }
        // An error reply to the connect (the client may retry), or a
        // disconnect push: either way the stream ends after it.
        Err(refusal) => {
            node.end_emulated(&session_id);
            let message = match refusal {
                Refusal::Reply(bytes) => bytes,
                Refusal::Disconnect(d) => disconnect_push(codec, &d),
            };
            Body::from(framing.framed(&message))
        }
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(framing)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    cors(&mut response, &headers);
    response
}

fn disconnect_push(codec: Codec, d: &Disconnect) -> Bytes {
    codec.reply(&Reply::push(Push {
        disconnect: Some(d.clone()),
        ..Default::default()
    }))
}

/// One emulated session: its protocol state and both halves of its
/// traffic.
struct Emulation {
    node: Arc<Node>,
    codec: Codec,
    framing: Framing,
    transport: Transport,
    session: Session,
    session_id: String,
    // Command batches from `/emulation`.
    queue: mpsc::Receiver<Bytes>,
    // The response body.
    out: mpsc::Sender<Bytes>,
}

impl Emulation {
    async fn run(
        mut self,
        mut rx: ClientReceiver,
        first: Bytes,
        rest: Vec<Result<Command, crier_proto::Error>>,
    ) {
        let _connection = self.node.metrics.connection(self.transport);
        let ending = match self.out.send(first).await {
            Err(_) => Some(Disconnect::CONNECTION_CLOSED),
            // Commands that followed the connect in the stream request.
            Ok(()) => self.commands(rest.into_iter()).await.err(),
        };
        let ending = match ending {
            Some(d) => d,
            None => self.serve(&mut rx).await,
        };
        self.session.close(&ending);
        self.node.end_emulated(&self.session_id);
        if ending != Disconnect::CONNECTION_CLOSED {
            let goodbye = self.framing.framed(&disconnect_push(self.codec, &ending));
            let _ = tokio::time::timeout(Duration::from_secs(5), self.out.send(goodbye)).await;
        }
    }

    /// Until the session ends: commands in, queued replies and pushes out,
    /// pings, expiry. The disconnect it ended with.
    async fn serve(&mut self, rx: &mut ClientReceiver) -> Disconnect {
        let cfg = &self.node.config.client;
        // A client that sends nothing (a pong will do) for a ping interval
        // plus the pong timeout is gone, as on a WebSocket.
        let idle = cfg.ping_interval + cfg.pong_timeout;
        let every = cfg.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut heard = tokio::time::Instant::now();
        let mut items = Vec::new();
        loop {
            let deadline = self.session.deadline();
            let expired = async {
                match deadline {
                    Some(t) => {
                        tokio::time::sleep(t.duration_since(SystemTime::now()).unwrap_or_default()).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.out.closed() => return Disconnect::CONNECTION_CLOSED,
                _ = self.node.shutdown.cancelled() => return Disconnect::SHUTDOWN,
                batch = self.queue.recv() => {
                    let Some(batch) = batch else { return Disconnect::CONNECTION_CLOSED };
                    heard = tokio::time::Instant::now();
                    let commands: Vec<_> = self.codec.decode(&batch).collect();
                    if let Err(d) = self.commands(commands.into_iter()).await {
                        return d;
                    }
                }
                drained = rx.drain(&mut items) => match drained {
                    Ok(_) => {
                        let mut buf = BytesMut::new();
                        for item in items.drain(..) {
                            self.framing.put(&mut buf, self.codec.outbound(&item));
                        }
                        if self.out.send(buf.freeze()).await.is_err() {
                            return Disconnect::CONNECTION_CLOSED;
                        }
                    }
                    Err(reason) => {
                        let d = disconnect_of(&reason);
                        self.node.metrics.disconnect(d.code);
                        return d;
                    }
                },
                _ = ping.tick() => {
                    if heard.elapsed() > idle {
                        return Disconnect::NO_PONG;
                    }
                    if self.out.send(self.framing.framed(&self.codec.ping())).await.is_err() {
                        return Disconnect::CONNECTION_CLOSED;
                    }
                }
                _ = expired => {
                    if let Err(d) = Box::pin(self.session.expire()).await {
                        return d;
                    }
                }
            }
        }
    }

    /// Hands commands to the session in order; a bad one ends it (3501).
    async fn commands(
        &mut self,
        commands: impl Iterator<Item = Result<Command, crier_proto::Error>>,
    ) -> Result<(), Disconnect> {
        let max = self.node.config.client.max_commands_per_frame;
        for (n, cmd) in commands.enumerate() {
            if max > 0 && n >= max {
                self.node.metrics.refused("max_commands_per_frame");
                return Err(Disconnect::BAD_REQUEST);
            }
            match cmd {
                Ok(c) => self.session.handle(c).await?,
                Err(e) => return Err(e.disconnect().unwrap_or(Disconnect::BAD_REQUEST)),
            }
        }
        Ok(())
    }
}

/// A JSON `EmulationRequest`: `data` is the commands' text, as a string.
#[derive(serde::Deserialize)]
struct JsonEmulation {
    #[serde(default)]
    node: String,
    session: String,
    data: String,
}

/// `POST /emulation`: one batch of commands for an emulated session. 204
/// once handed to the session here or sent through the engine to the
/// node named; 404 for a session no node can be asked about (the client
/// then reconnects); 429 while the session has too many batches waiting;
/// 400 for a body that is not an emulation request.
pub async fn emulation(
    State(node): State<Arc<Node>>,
    Remote(remote): Remote,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !node.config.http_stream.enabled && !node.config.sse.enabled {
        return plain(
            StatusCode::NOT_FOUND,
            "emulation not enabled (http_stream, sse)\n",
        );
    }
    let peer = Peer {
        transport: Transport::HttpStream,
        remote,
    };
    if !origin_allowed(&node, peer, &headers) {
        return plain(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    if body.len() > node.config.emulation.max_request_body_size {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than emulation.max_request_body_size\n",
        );
    }
    let parsed = if is_protobuf(&headers) {
        crier_proto::protobuf::emulation_request(&body).ok()
    } else {
        serde_json::from_slice::<JsonEmulation>(&body)
            .ok()
            .map(|r| (r.node, r.session, Bytes::from(r.data)))
    };
    let Some((target, session, commands)) = parsed else {
        return plain(StatusCode::BAD_REQUEST, "not an emulation request\n");
    };
    let mut response = match control::emulate(&node, &target, &session, commands).await {
        Emulated::Delivered | Emulated::Forwarded => StatusCode::NO_CONTENT.into_response(),
        Emulated::Busy => plain(
            StatusCode::TOO_MANY_REQUESTS,
            "too many command batches waiting\n",
        ),
        Emulated::Failed => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine cannot reach the session's node\n",
        ),
        Emulated::Unknown => plain(StatusCode::NOT_FOUND, "no such session\n"),
    };
    cors(&mut response, &headers);
    response
}
