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
