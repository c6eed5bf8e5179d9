//! How messages go on a long HTTP response (the uni and emulation
//! streams): Server-Sent Events, newline-delimited lines, or binary
//! messages back to back (each carries its own length). Knows nothing of
//! what the messages say.

use bytes::{Bytes, BytesMut};

/// The framing of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `data: {...}\n\n` (Server-Sent Events).
    Sse,
    /// `{...}\n` (HTTP streaming, JSON).
    Lines,
    /// Length-delimited binary messages, back to back.
    Binary,
}

impl Framing {
    /// Appends `message`, framed, to `buf`.
    pub(crate) fn put(self, buf: &mut BytesMut, message: &[u8]) {
        match self {
            Framing::Sse => {
                buf.extend_from_slice(b"data: ");
                buf.extend_from_slice(message);
                buf.extend_from_slice(b"\n\n");
            }
            Framing::Lines => {
                buf.extend_from_slice(message);
                buf.extend_from_slice(b"\n");
            }
            Framing::Binary => buf.extend_from_slice(message),
        }
    }

    /// `message`, framed.
    pub(crate) fn framed(self, message: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        self.put(&mut buf, message);
        buf.freeze()
    }
}
