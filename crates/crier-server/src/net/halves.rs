//! The two halves of a client connection, plain TCP or TLS: the TCP
//! halves let a reader wait without a buffer (`readable`, then
//! `try_read`) and a writer use `writev`; a TLS stream is read into the
//! caller's buffer and flushed after each write. Used by the WebSocket
//! endpoints and the `[[tcp]]` listeners.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A stream other than plain TCP under a connection (TLS).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The receiving side of a connection: a TCP socket, which the reader
/// waits on without holding a buffer, or another stream (TLS), read into
/// the frame buffer.
pub enum ReadHalf {
    /// Plain TCP.
    Tcp(OwnedReadHalf),
    /// Anything else (TLS).
    Stream(tokio::io::ReadHalf<Box<dyn Stream>>),
}

/// The sending side of a connection: a TCP socket (`writev`), or another
/// stream (TLS, flushed after each write).
pub enum WriteHalf {
    /// Plain TCP.
    Tcp(OwnedWriteHalf),
    /// Anything else (TLS).
    Stream(tokio::io::WriteHalf<Box<dyn Stream>>),
}

impl From<OwnedReadHalf> for ReadHalf {
    fn from(half: OwnedReadHalf) -> Self {
        ReadHalf::Tcp(half)
    }
}

impl From<OwnedWriteHalf> for WriteHalf {
    fn from(half: OwnedWriteHalf) -> Self {
        WriteHalf::Tcp(half)
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
    let (rd, wr) = stream.into_split();
    (ReadHalf::Tcp(rd), WriteHalf::Tcp(wr))
}

impl WriteHalf {
    /// Writes all of `bytes` (flushed, on a stream that buffers).
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            WriteHalf::Tcp(half) => half.write_all(bytes).await,
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
            WriteHalf::Tcp(half) => half.shutdown().await,
            WriteHalf::Stream(stream) => stream.shutdown().await,
        }
    }
}
