//! The timed publication payload: `{"t":<unix nanos>,"s":<seq>,"p":"xx…"}`,
//! padded to the requested size. The send time comes first, so a subscriber
//! finds it by its opening bytes and never parses JSON.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// How every timed payload begins.
pub const SEND_TIME: &str = "{\"t\":";

/// Longer than any latency worth resolving; larger values are clamped.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// Appends one payload to `out`: send time `sent` (unix nanos), sequence
/// number `seq`, padded with `x` to `size` bytes when it can be.
pub fn write(out: &mut String, sent: u64, seq: u64, size: usize) {
    let at = out.len();
    let _ = write!(out, "{{\"t\":{sent},\"s\":{seq},\"p\":\"");
    let pad = size.saturating_sub(out.len() - at + 2);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
}

/// The send time a payload carries, or None when it is not a timed payload
/// (a warm-up probe, or someone else's message on the subject).
pub fn send_time(payload: &[u8]) -> Option<u64> {
    digits(payload.strip_prefix(SEND_TIME.as_bytes())?)
}

/// The decimal number at the start of `digits` (the bytes after
/// [`SEND_TIME`]), or None when there is none or it cannot be a send time.
pub fn digits(digits: &[u8]) -> Option<u64> {
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 19 {
        return None;
    }
    Some(
        digits[..len]
            .iter()
            .fold(0u64, |n, b| n * 10 + u64::from(b - b'0')),
    )
}

/// Publish-to-delivery latency in microseconds, clamped to
/// [0, MAX_LATENCY_US]: a send time from the future counts as zero.
pub fn latency_us(sent: u64, now_nanos: u64) -> u64 {
    (now_nanos.saturating_sub(sent) / 1_000).min(MAX_LATENCY_US)
}

/// Wall-clock time as payloads carry it. Publishers and subscribers live in
/// this one process, so the clocks agree.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_payload_reads_back() {
        let mut out = String::new();
        write(&mut out, 1_700_000_000_123_456_789, 42, 64);
        assert_eq!(out.len(), 64);
        assert!(
            out.starts_with(r#"{"t":1700000000123456789,"s":42,"p":"xx"#),
            "{out}"
        );
        assert!(out.ends_with("x\"}"));
        assert_eq!(send_time(out.as_bytes()), Some(1_700_000_000_123_456_789));
        // Too small to pad: written whole, never truncated.
        out.clear();
        write(&mut out, 7, 1, 4);
        assert_eq!(out, r#"{"t":7,"s":1,"p":""}"#);
        assert_eq!(send_time(out.as_bytes()), Some(7));
    }

    #[test]
    fn other_payloads_carry_no_send_time() {
        assert_eq!(send_time(b"warmup"), None);
        assert_eq!(send_time(b"{\"t\":"), None);
        assert_eq!(send_time(b"{\"t\":x}"), None);
        assert_eq!(send_time(b" {\"t\":1}"), None);
        assert_eq!(send_time(b"{\"t\":99999999999999999999}"), None);
    }

    #[test]
    fn latency_is_clamped() {
        assert_eq!(latency_us(1_000_000, 3_500_000), 2_500);
        assert_eq!(latency_us(5_000, 1_000), 0);
        assert_eq!(latency_us(0, u64::MAX), MAX_LATENCY_US);
    }
}
