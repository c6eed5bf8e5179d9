//! Network plumbing that knows nothing of crier's protocol: HTTP
//! connections with a write deadline, RFC 6455 WebSocket framing and its
//! permessage-deflate, and the framing of long HTTP streams.

pub(crate) mod client;
pub(crate) mod deadline;
pub(crate) mod deflate;
pub(crate) mod halves;
pub(crate) mod rfc6455;
pub(crate) mod stream;
pub(crate) mod tls;

pub(crate) use deadline::WriteDeadline;

/// Prepares an accepted client socket: Nagle off (a small frame written
/// while an earlier one is unacknowledged would otherwise wait for the
/// peer's delayed ACK, up to 40 ms; docs/benchmarks.md), and, when
/// `send_buffer` is not 0, the kernel's send buffer capped at that many
/// bytes, so a client that stops reading pins at most that much kernel
/// memory (the kernel doubles the value for its bookkeeping).
pub(crate) fn prepare(stream: &tokio::net::TcpStream, send_buffer: usize) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    if send_buffer > 0 {
        if let Err(error) = socket2::SockRef::from(stream).set_send_buffer_size(send_buffer) {
            tracing::debug!(%error, "cannot set SO_SNDBUF");
        }
    }
}

/// The remote address of the connection a request came on (the HTTP
/// server puts it in every request's extensions), for the logs: the
/// socket's peer, so a reverse proxy's own address when one is in front.
/// `None` for a request served without a socket (a router test).
pub(crate) fn remote(extensions: &axum::http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0)
}

/// [`remote`] as a handler's argument; never refuses a request.
pub(crate) struct Remote(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Remote(remote(&parts.extensions)))
    }
}
