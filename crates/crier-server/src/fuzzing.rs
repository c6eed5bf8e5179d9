//! Thin public wrappers over the crate's internal parsers, for the fuzz
//! targets in `fuzz/` and the Autobahn echo example
//! (`examples/ws_echo.rs`); compiled only with the `fuzzing` feature.
//!
//! This module must never hold logic of its own beyond adapting types: a
//! target that needs a property checks it on what the production code
//! returns, so what is fuzzed is what runs.

use std::future::Future;

use bytes::Bytes;

use crate::config::{Config, ConfigError, TcpListenerConfig};
use crate::net::rfc6455;
use crate::transport::tcp;

pub use crate::net::deflate::{compress, inflate, offered as deflate_offered, Deflate, InflateError};
pub use crate::net::rfc6455::{offers_protocol, Frames as WsFrames, Incoming, ReadError};
pub use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The answer to a WebSocket upgrade request with `headers`: its status
/// and headers (`101` and the `Sec-WebSocket-*` answers when accepted).
pub fn ws_handshake(
    headers: &HeaderMap,
    protocol: Option<&'static str>,
    deflate: bool,
) -> (StatusCode, HeaderMap) {
    let response = match rfc6455::handshake(headers, protocol, deflate) {
        Ok(r) | Err(r) => r,
    };
    (response.status(), response.headers().clone())
}

/// A `[[tcp]]` listener's deframer, fed by hand instead of by a socket.
pub struct TcpDeframer {
    endpoint: tcp::Endpoint,
    deframer: tcp::Deframer,
}

/// A TCP frame, or the rest of the input, was longer than `max_frame_size`:
/// the connection would be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

impl TcpDeframer {
    /// The listener `cfg` describes, checked as `crier serve` checks it
    /// (with the default configuration around it).
    pub fn new(cfg: &TcpListenerConfig) -> Result<Self, ConfigError> {
        Ok(TcpDeframer {
            endpoint: tcp::Endpoint::from_config(&Config::default(), "tcp[0]", cfg)?,
            deframer: tcp::Deframer::new(),
        })
    }

    /// Bytes as one read would deliver them.
    pub fn push(&mut self, bytes: &[u8]) {
        self.deframer.push(bytes);
    }

    /// The next complete frame's payload, if one is there; as the
    /// connection's reader does, the buffer is compacted when none is.
    pub fn frame(&mut self) -> Result<Option<Vec<u8>>, TooLong> {
        match self.deframer.cut(&self.endpoint) {
            Ok(Some(range)) => Ok(Some(self.deframer.bytes(range).to_vec())),
            Ok(None) => {
                self.deframer.compact();
                Ok(None)
            }
            Err(_) => Err(TooLong),
        }
    }

    /// What the listener writes for a publication of `data` (JSON): empty
    /// when the listener drops it.
    pub fn encode(&self, data: &[u8]) -> Bytes {
        let publication = crier_core::Publication::new(Bytes::copy_from_slice(data));
        let event = crier_core::Event::new(None, crier_core::EventKind::Publication(publication));
        self.endpoint.encode(&event)
    }
}

/// A `[[watch]]` `tail_channel` template parsed, then written back
/// (`{stem}`, `{name}` and the text between them); the parser's error
/// otherwise.
pub fn channel_template(template: &str) -> Result<String, String> {
    let parts = crate::watch::parse_template(template)?;
    Ok(parts
        .iter()
        .map(|p| match p {
            crate::watch::Part::Text(t) => t.as_str(),
            crate::watch::Part::Stem => "{stem}",
            crate::watch::Part::Name => "{name}",
        })
        .collect())
}

/// A publication as the broker stores it: what `broker::codec::decode`
/// reads back from Redis or NATS.
#[cfg(feature = "cluster")]
pub fn broker_decode(
    src: Bytes,
    offset: u64,
) -> Result<crate::broker::RemotePublication, crate::broker::BrokerError> {
    crate::broker::codec::decode(src, offset)
}

/// The bytes `broker::codec::encode` writes for `p` (its offset aside).
#[cfg(feature = "cluster")]
pub fn broker_encode(p: &crate::broker::RemotePublication) -> Vec<u8> {
    crate::broker::codec::encode(&crate::broker::codec::PublicationRef {
        data: &p.data,
        info: p.info.as_deref(),
        tags: &p.tags,
        exclude_clients: &p.exclude_clients,
        exclude_users: &p.exclude_users,
    })
}

/// A Redis pub/sub message split into offset, epoch and publication.
#[cfg(feature = "redis")]
pub fn broker_decode_message(
    msg: &[u8],
) -> Result<(u64, String, crate::broker::RemotePublication), crate::broker::BrokerError> {
    crate::broker::codec::decode_message(msg)
}

/// A control message from another node decoded and encoded again, as a
/// node would forward it; `None` when it is not one.
#[cfg(feature = "cluster")]
pub fn control_reencode(bytes: &[u8]) -> Option<Vec<u8>> {
    crate::control::Control::decode(bytes).map(|c| c.encode())
}

/// What the echo endpoint allows a connection.
#[derive(Debug, Clone, Copy)]
pub struct EchoLimits {
    /// Largest incoming message, in bytes.
    pub message_size: usize,
    /// permessage-deflate, accepted when the client offers it.
    pub deflate: Option<Deflate>,
}

/// Serves a WebSocket echo on `listener`, every path, with crier's own
/// upgrade, framing and compression (for the Autobahn conformance run):
/// each message comes back as it came (text or binary), pings are
/// answered, a close is echoed, a protocol error closes with 1002, invalid
/// UTF-8 in a text message with 1007 and an oversized message with 1009.
/// Runs until `stop` completes.
pub async fn ws_echo(listener: tokio::net::TcpListener, limits: EchoLimits, stop: impl Future<Output = ()>) {
    let tracker = tokio_util::task::TaskTracker::new();
    let route_tracker = tracker.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let limits = rfc6455::Limits {
            message_size: limits.message_size,
            write_timeout: std::time::Duration::from_secs(30),
            protocol: None,
            deflate: limits.deflate,
        };
        let response = rfc6455::accept(request, limits, &route_tracker, echo);
        async move { response }
    });
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            () = &mut stop => break,
        };
        crate::net::prepare(&stream, 0);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let io = hyper_util::rt::TokioIo::new(crate::net::WriteDeadline::new(
            stream,
            std::time::Duration::from_secs(30),
        ));
        let conn = http.serve_connection(io, service).with_upgrades();
        tokio::spawn(conn);
    }
    tracker.close();
}

/// One echo connection.
async fn echo(mut reader: rfc6455::Reader, mut writer: rfc6455::Writer) {
    loop {
        let sent = match reader.next().await {
            Ok(Incoming::Data(bytes)) => {
                let binary = !reader.last_was_text();
                writer.messages(binary, &mut vec![bytes]).await
            }
            Ok(Incoming::Ping(payload)) => writer.pong(payload).await,
            Ok(Incoming::Pong) => Ok(()),
            Ok(Incoming::Close(code)) => {
                let _ = writer.close(code.unwrap_or(1000), "").await;
                return;
            }
            Err(ReadError::Protocol(why)) => {
                let _ = writer.close(1002, why).await;
                return;
            }
            Err(ReadError::InvalidUtf8) => {
                let _ = writer.close(1007, "text message is not UTF-8").await;
                return;
            }
            Err(ReadError::TooLong { .. }) => {
                let _ = writer.close(1009, "message too long").await;
                return;
            }
            Err(ReadError::Io(_)) => return,
        };
        if sent.is_err() {
            return;
        }
    }
}
