//! The two halves of a client connection, plain TCP or TLS: the TCP
//! halves let a reader wait without a buffer (`readable`, then
//! `try_read`) and a writer use `sendmsg`; a TLS stream is read into the
//! caller's buffer and flushed after each write. Used by the WebSocket
//! endpoints and the `[[tcp]]` listeners.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A stream other than plain TCP under a connection (TLS).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The receiving side of a connection: a TCP socket, which the reader
/// waits on without holding a buffer, or another stream (TLS), read into
/// the frame buffer.
pub enum ReadHalf {
    /// Plain TCP: the socket, shared with its sending side (every read
    /// takes `&TcpStream`).
    Tcp(Arc<dyn TcpOwner>),
    /// Anything else (TLS).
    Stream(tokio::io::ReadHalf<Box<dyn Stream>>),
}

/// The sending side of a connection: a TCP socket (`sendmsg`), or another
/// stream (TLS, flushed after each write).
pub enum WriteHalf {
    /// Plain TCP.
    Tcp(TcpWrite),
    /// Anything else (TLS).
    Stream(tokio::io::WriteHalf<Box<dyn Stream>>),
}

/// What a connection's plain TCP socket lives in: one allocation shared
/// by its receiving side, its sending side, and its writes at once from
/// other threads; the socket stays open while any of them holds it.
/// Either the socket alone ([`split_tcp`]), or a transport's state for
/// writes at once with the socket inline ([`split_owned`]), so that a
/// write at once finds the socket's descriptor beside that state, not
/// behind a pointer of its own, and the connection takes one allocation
/// less (docs/benchmarks.md, "The socket inside its writes at once").
/// `Any`, so that its transport gets its own type back (an
/// `Arc<dyn TcpOwner>` upcast to `Arc<dyn Any + Send + Sync>`, then
/// `Arc::downcast`).
pub trait TcpOwner: std::any::Any + Send + Sync {
    /// The socket.
    fn tcp(&self) -> &TcpStream;
}

impl TcpOwner for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// The sending side of a TCP socket (every write takes `&TcpStream`).
/// Dropping this shuts the sending side down (a FIN), as tokio's
/// `OwnedWriteHalf` does, without a second allocation for it.
pub struct TcpWrite(Arc<dyn TcpOwner>);

impl TcpWrite {
    /// The socket.
    pub fn socket(&self) -> &TcpStream {
        self.0.tcp()
    }

    /// What the socket lives in.
    pub fn owner(&self) -> &Arc<dyn TcpOwner> {
        &self.0
    }
}

impl Drop for TcpWrite {
    fn drop(&mut self) {
        let _ = shutdown_tcp(self.socket());
    }
}

/// The halves of a TLS (or any other) stream.
pub fn split_stream(stream: impl Stream) -> (ReadHalf, WriteHalf) {
    let stream: Box<dyn Stream> = Box::new(stream);
    let (rd, wr) = tokio::io::split(stream);
    (ReadHalf::Stream(rd), WriteHalf::Stream(wr))
}

/// The halves of a plain TCP stream.
pub fn split_tcp(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    split_owned(Arc::new(stream))
}

/// The halves of the plain TCP stream `owner` holds.
pub fn split_owned(owner: Arc<dyn TcpOwner>) -> (ReadHalf, WriteHalf) {
    (ReadHalf::Tcp(owner.clone()), WriteHalf::Tcp(TcpWrite(owner)))
}

/// Reads from `socket` now with `read`, which reads into a buffer with
/// `room` bytes free and returns how many it read. A read that leaves
/// room drained the socket: it clears tokio's readiness (as tokio's own
/// `poll_read` does; a readiness event that arrived meanwhile is kept),
/// so the next wait for readability registers at once instead of after a
/// `recv` that says EAGAIN: one syscall per incoming burst. `WouldBlock`
/// when nothing was there.
pub fn read_draining(
    socket: &TcpStream,
    room: usize,
    read: impl FnOnce() -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    let mut got = 0;
    let read = socket.try_io(tokio::io::Interest::READABLE, || {
        got = read()?;
        if got > 0 && got < room {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(got)
    });
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        read => read,
    }
}

/// Shuts the sending side of `socket` down (a FIN).
pub fn shutdown_tcp(socket: &TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write)
}

impl WriteHalf {
    /// Writes all of `bytes` (flushed, on a stream that buffers).
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            WriteHalf::Tcp(half) => {
                let socket = half.socket();
                // At once when the socket has room: no future.
                let rest = match socket.try_write(bytes) {
                    Ok(n) if n == bytes.len() => return Ok(()),
                    Ok(n) => &bytes[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => bytes,
                    Err(e) => return Err(e),
                };
                // Waiting, boxed: it must not grow every caller's task.
                Box::pin(async move {
                    let mut rest = rest;
                    while !rest.is_empty() {
                        socket.writable().await?;
                        match socket.try_write(rest) {
                            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                            Ok(n) => rest = &rest[n..],
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                })
                .await
            }
            // Boxed so the rare TLS path does not grow the callers' tasks.
            WriteHalf::Stream(stream) => {
                Box::pin(async move {
                    stream.write_all(bytes).await?;
                    stream.flush().await
                })
                .await
            }
        }
    }

    /// Shuts the sending side down (a FIN; a TLS close_notify first).
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            WriteHalf::Tcp(half) => shutdown_tcp(half.socket()),
            WriteHalf::Stream(stream) => stream.shutdown().await,
        }
    }
}
