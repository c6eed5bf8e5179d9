//! permessage-deflate (RFC 7692) as crier negotiates it: without context
//! takeover in either direction. Every message is compressed and inflated
//! on its own, so a connection keeps no compression state between
//! messages (idle connections cost what they cost without compression),
//! and a message shared by many subscribers can be compressed once.
//!
//! The (de)compressors themselves are per thread and reused: a fresh
//! miniz_oxide compressor is a few hundred KiB to allocate and clear.

use std::cell::RefCell;

use axum::http::{header, HeaderMap};
use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// How a connection compresses what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// 1 (fastest) to 9 (smallest).
    pub level: u32,
    /// Messages shorter than this go out uncompressed.
    pub min_size: usize,
}

/// What the server answers in `Sec-WebSocket-Extensions` when it accepts.
pub const RESPONSE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The four bytes a sync flush ends with, which RFC 7692 §7.2.1 strips
/// from a compressed message and §7.2.2 appends before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Whether the client offers permessage-deflate in a form crier accepts:
/// any offer, unless it limits the server's window below 15 bits (crier
/// compresses with the full window, and without context takeover a
/// smaller one would buy nothing).
pub fn offered(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|offer| {
            let mut parts = offer.split(';').map(str::trim);
            parts.next() == Some("permessage-deflate")
                && parts.all(|p| match p.split_once('=') {
                    Some(("server_max_window_bits", bits)) => bits.trim_matches('"') == "15",
                    _ => true,
                })
        })
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `payload` compressed as one message at `level` (1–9), without the
/// trailing sync-flush bytes.
pub fn compress(payload: &[u8], level: u32) -> Bytes {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let c = match &mut *slot {
            Some((l, c)) if *l == level => {
                c.reset();
                c
            }
            _ => {
                &mut slot
                    .insert((level, Compress::new(Compression::new(level), false)))
                    .1
            }
        };
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            let consumed = c.total_in() as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(64));
            }
            // Raw deflate into memory cannot fail; a status other than Ok
            // only means "give me more room", handled by the loop.
            let _ = c.compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync);
            let done = c.total_in() as usize == payload.len();
            if done && out.ends_with(&TAIL) && out.len() < out.capacity() {
                break;
            }
        }
        out.truncate(out.len() - TAIL.len());
        Bytes::from(out)
    })
}

/// Why a compressed message was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the message size limit (a "zip bomb").
    TooLong,
    /// It is not valid deflate data.
    Invalid,
}

/// A compressed message inflated, refused once it grows past `limit`
/// bytes: the work done is bounded by the limit, not by what the sender
/// claims.
pub fn inflate(payload: &[u8], limit: usize) -> Result<Bytes, InflateError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match &mut *slot {
            Some(d) => {
                d.reset(false);
                d
            }
            None => slot.insert(Decompress::new(false)),
        };
        let mut input = Vec::with_capacity(payload.len() + TAIL.len());
        input.extend_from_slice(payload);
        input.extend_from_slice(&TAIL);
        let mut out = Vec::new();
        loop {
            // Room for at most one byte past the limit: enough to tell.
            let room = (limit + 1).saturating_sub(out.len());
            if room == 0 {
                return Err(InflateError::TooLong);
            }
            out.reserve_exact(room.min(16 * 1024));
            let (before_in, before_out) = (d.total_in(), out.len());
            let status = d
                .decompress_vec(&input[before_in as usize..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            if out.len() > limit {
                return Err(InflateError::TooLong);
            }
            let all_in = d.total_in() as usize == input.len();
            if status == Status::StreamEnd || (all_in && out.len() < out.capacity()) {
                break;
            }
            if d.total_in() == before_in && out.len() == before_out {
                // No progress with room to spare: the data is cut short.
                return Err(InflateError::Invalid);
            }
        }
        Ok(Bytes::from(out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn compressed_messages_round_trip_at_every_level() {
        let text =
            br#"{"push":{"channel":"news","pub":{"data":{"text":"hello hello hello hello"}}}}"#.repeat(40);
        for level in 1..=9 {
            let c = compress(&text, level);
            assert!(c.len() < text.len() / 4, "level {level}: {} bytes", c.len());
            assert_eq!(&inflate(&c, 1 << 20).expect("inflates")[..], &text[..]);
        }
        assert_eq!(&inflate(&compress(b"", 1), 10).expect("empty")[..], b"");
    }

    #[test]
    fn a_message_inflating_past_the_limit_is_refused() {
        let bomb = compress(&vec![b'a'; 10 << 20], 9);
        assert!(bomb.len() < 20_000, "{} bytes", bomb.len());
        assert_eq!(inflate(&bomb, 65_536), Err(InflateError::TooLong));
        // Exactly at the limit is fine.
        let fits = compress(&[b'b'; 1000], 1);
        assert_eq!(inflate(&fits, 1000).map(|b| b.len()), Ok(1000));
        assert_eq!(inflate(&fits, 999), Err(InflateError::TooLong));
    }

    #[test]
    fn garbage_is_invalid() {
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff, 0x00], 1000),
            Err(InflateError::Invalid)
        );
    }

    #[test]
    fn offers_are_read_as_rfc_7692_writes_them() {
        let offer = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static(v));
            offered(&h)
        };
        assert!(offer("permessage-deflate; client_max_window_bits"));
        assert!(offer("x-webkit-deflate-frame, permessage-deflate"));
        assert!(offer("permessage-deflate; server_max_window_bits=15"));
        assert!(!offer("permessage-deflate; server_max_window_bits=10"));
        assert!(offer(
            "permessage-deflate; server_max_window_bits=10, permessage-deflate"
        ));
        assert!(!offer("x-webkit-deflate-frame"));
        assert!(!offered(&HeaderMap::new()));
    }
}
