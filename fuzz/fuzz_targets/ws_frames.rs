//! The WebSocket frame reader (`net::rfc6455::Frames`, the socket-free
//! half of the reader both WebSocket endpoints use).
//!
//! Raw bytes: whatever arrives, the reader answers the same however the
//! bytes are split across reads, never returns a message over the limit or
//! a ping over 125 bytes. Built frames: messages a client sends (masked,
//! fragmented, compressed, with pings between fragments) come out exactly
//! as sent, text or binary, in any split.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use crier_server::fuzzing::{compress, Incoming, WsFrames};
use libfuzzer_sys::fuzz_target;

/// Everything the reader returns for `input` fed in pieces at `cuts`.
fn read_all(
    input: &[u8],
    cuts: &[usize],
    limit: usize,
    inflate: bool,
) -> Vec<Result<(Incoming, bool), String>> {
    let mut frames = WsFrames::new(&[], limit, inflate);
    let mut out = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&input.len())) {
        let to = to.clamp(from, input.len());
        frames.extend(&input[from..to]);
        from = to;
        loop {
            match frames.parse() {
                Ok(Some(incoming)) => out.push(Ok((incoming, frames.last_was_text()))),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

#[derive(Arbitrary, Debug)]
struct Message {
    text: bool,
    payload: Vec<u8>,
    // Fragment sizes; the rest goes in the last frame.
    fragments: Vec<u8>,
    compressed: bool,
    ping_between: bool,
}

fn header(out: &mut Vec<u8>, first: u8, len: usize, mask: [u8; 4]) {
    out.push(first);
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
}

fn frame(out: &mut Vec<u8>, first: u8, payload: &[u8], mask: [u8; 4]) {
    header(out, first, payload.len(), mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

fn built(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let messages: Vec<Message> = u.arbitrary()?;
    let mask: [u8; 4] = u.arbitrary()?;
    let cuts: Vec<usize> = u.arbitrary()?;
    let mut wire = Vec::new();
    let mut want = Vec::new();
    for m in &messages {
        let payload = if m.text {
            String::from_utf8_lossy(&m.payload).into_owned().into_bytes()
        } else {
            m.payload.clone()
        };
        let body = if m.compressed {
            compress(&payload, 1).to_vec()
        } else {
            payload.clone()
        };
        let mut rest = &body[..];
        let mut first = true;
        for &size in &m.fragments {
            let size = usize::from(size).min(rest.len());
            let (piece, tail) = rest.split_at(size);
            let op = if first { u8::from(!m.text) + 1 } else { 0 };
            let rsv1 = if first && m.compressed { 0x40 } else { 0 };
            frame(&mut wire, op | rsv1, piece, mask);
            if m.ping_between {
                frame(&mut wire, 0x89, b"p", mask);
                want.push((Incoming::Ping(bytes::Bytes::from_static(b"p")), None));
            }
            rest = tail;
            first = false;
        }
        let op = if first { u8::from(!m.text) + 1 } else { 0 };
        let rsv1 = if first && m.compressed { 0x40 } else { 0 };
        frame(&mut wire, 0x80 | op | rsv1, rest, mask);
        want.push((Incoming::Data(payload.into()), Some(m.text)));
    }
    let got = read_all(&wire, &cuts, 1 << 20, true);
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, (incoming, text)) in got.into_iter().zip(want) {
        let (g, g_text) = g.expect("a well-formed message is read");
        assert_eq!(g, incoming);
        if let Some(text) = text {
            assert_eq!(g_text, text, "text or binary as sent");
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = built(&mut Unstructured::new(rest));
        return;
    }
    let limit = usize::from(mode >> 1) * 16;
    let inflate = mode & 0x80 != 0;
    let whole = read_all(rest, &[], limit, inflate);
    for r in whole.iter().flatten() {
        match &r.0 {
            Incoming::Data(d) => assert!(d.len() <= limit, "{} bytes under a {limit} limit", d.len()),
            Incoming::Ping(p) => assert!(p.len() <= 125),
            _ => {}
        }
    }
    let cuts: Vec<usize> = (1..rest.len()).step_by(usize::from(mode % 7) + 1).collect();
    assert_eq!(
        whole,
        read_all(rest, &cuts, limit, inflate),
        "the split changed what was read"
    );
});
