//! Deliveries in protobuf frames (`--format protobuf`), found the way the
//! JSON path finds them in text: without decoding a message per delivery.
//!
//! A frame is a run of varint-length-delimited `Reply` messages. Each is
//! walked in place, field by field, down to `Reply.push(4)` →
//! `Push.pub(4)` → `Publication.data(4)`, and the send time is read from
//! the data's first bytes ([`payload::SEND_TIME`], as the JSON path reads
//! it after `"data":`). Nothing is allocated for a delivery. An empty
//! message is the server's ping. The rare pushes that end a subscription
//! (unsubscribe, disconnect) are decoded whole by `crier_proto` and told as
//! JSON, as the JSON path tells them.

use crier_loadgen::payload;
use hdrhistogram::Histogram;

use super::subscriber::Scan;

/// `Reply.push`, `Push.pub` and `Publication.data`: all field 4.
const PUSH: u64 = 4;
const PUBLICATION: u64 = 4;
const DATA: u64 = 4;
/// `Push.unsubscribe` and `Push.disconnect`.
const UNSUBSCRIBE: u64 = 7;
const DISCONNECT: u64 = 11;

/// Scans a binary frame of replies for publications of the payload
/// `crier bench` sends, recording `now - t` for each. A malformed frame is
/// scanned up to its first bad byte.
pub fn scan(frame: &[u8], now_nanos: u64, latency: &mut Histogram<u32>) -> Scan {
    let mut found = Scan::default();
    let mut rest = frame;
    while !rest.is_empty() {
        let whole = rest;
        let Some(message) = delimited(&mut rest) else {
            break;
        };
        if message.is_empty() {
            found.ping = true;
            continue;
        }
        let Some(push) = field(message, PUSH) else {
            continue;
        };
        if let Some(publication) = field(push, PUBLICATION) {
            let data = field(publication, DATA).unwrap_or_default();
            if let Some(after) = data.strip_prefix(payload::SEND_TIME.as_bytes()) {
                // A mangled send time still counts as a delivery, at the
                // largest latency, as in the JSON path.
                let sent = payload::digits(after).unwrap_or(0);
                let _ = latency.record(payload::latency_us(sent, now_nanos));
                found.deliveries += 1;
            }
        } else if field(push, UNSUBSCRIBE).is_some() && found.unsubscribed.is_none() {
            found.unsubscribed = Some(as_json(&whole[..whole.len() - rest.len()]));
        } else if field(push, DISCONNECT).is_some() && found.disconnected.is_none() {
            found.disconnected = Some(as_json(&whole[..whole.len() - rest.len()]));
        }
    }
    found
}

/// One length-delimited reply (its length prefix included) as JSON text,
/// for a report line.
fn as_json(delimited: &[u8]) -> String {
    match crier_proto::protobuf::parse_replies(delimited).next() {
        Some(Ok(reply)) => serde_json::to_string(&reply).unwrap_or_default(),
        Some(Err(e)) => format!("(a malformed protobuf reply: {e})"),
        None => String::new(),
    }
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *b = &b[i + 1..];
            return Some(value);
        }
    }
    None
}

/// Takes one length-delimited value off the front of `rest`.
fn delimited<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(varint(rest)?).ok()?;
    if len > rest.len() {
        return None;
    }
    let (value, tail) = rest.split_at(len);
    *rest = tail;
    Some(value)
}

/// The first length-delimited field `number` of `message`, the others
/// skipped; None when it is missing or the message is malformed.
fn field(mut message: &[u8], number: u64) -> Option<&[u8]> {
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match key & 7 {
            0 => {
                varint(&mut message)?;
            }
            1 => message = message.get(8..)?,
            2 => {
                let value = delimited(&mut message)?;
                if key >> 3 == number {
                    return Some(value);
                }
            }
            5 => message = message.get(4..)?,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use crier_proto::codes::Unsubscribe;
    use crier_proto::encode::{ClientInfoRef, PublicationRef};
    use crier_proto::protobuf::{publication_push, unsubscribe_push, PING};

    use super::*;

    fn push(frame: &mut BytesMut, data: &[u8], offset: u64) {
        let tags = [("k".into(), "v".into())];
        publication_push(
            frame,
            "bench0",
            &PublicationRef {
                data,
                offset,
                // The fields around `data` are skipped, whatever they hold.
                info: Some(ClientInfoRef {
                    user: "u",
                    client: "c",
                    conn_info: b"{\"t\":1}",
                    chan_info: b"",
                }),
                tags: &tags,
            },
        );
    }

    #[test]
    fn a_joined_frame_counts_every_publication_and_the_ping() {
        let mut latency = Histogram::new(2).unwrap();
        let mut frame = BytesMut::new();
        push(&mut frame, br#"{"t":100000,"s":0,"p":"xx"}"#, 1);
        // A long one: its lengths take more than one varint byte.
        let long = format!(r#"{{"t":200000,"s":1,"p":"{}"}}"#, "x".repeat(300));
        push(&mut frame, long.as_bytes(), 300);
        frame.extend_from_slice(PING);
        // Someone else's publication is no delivery.
        push(&mut frame, b"\"crier-bench-probe\"", 3);
        let found = scan(&frame, 300_000, &mut latency);
        assert_eq!(
            found,
            Scan {
                deliveries: 2,
                ping: true,
                unsubscribed: None,
                disconnected: None,
            }
        );
        assert_eq!((latency.min(), latency.max()), (100, 200));
    }

    #[test]
    fn an_unsubscribe_push_is_told_as_json() {
        let mut latency = Histogram::new(2).unwrap();
        let mut frame = BytesMut::new();
        unsubscribe_push(&mut frame, "bench0", &Unsubscribe::SERVER);
        let found = scan(&frame, 1, &mut latency);
        assert_eq!(found.deliveries, 0);
        assert_eq!(
            found.unsubscribed.as_deref(),
            Some(
                r#"{"push":{"channel":"bench0","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#
            )
        );
    }

    #[test]
    fn a_truncated_frame_counts_what_came_before_the_cut() {
        let mut latency = Histogram::new(2).unwrap();
        let mut frame = BytesMut::new();
        push(&mut frame, br#"{"t":1,"s":0}"#, 1);
        let whole = frame.len();
        push(&mut frame, br#"{"t":1,"s":1}"#, 2);
        assert_eq!(scan(&frame[..whole + 5], 10_000, &mut latency).deliveries, 1);
    }
}
