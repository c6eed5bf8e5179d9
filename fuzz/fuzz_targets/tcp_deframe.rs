//! The `[[tcp]]` deframers (`transport::tcp`), line and start/end
//! delimited, in UTF-8 and latin-1. Raw bytes: the frames cut are the same
//! however the bytes are split across reads, never longer than
//! `max_frame_size`, never holding the framing. Round trip: the texts a
//! listener writes (what it does not drop) are cut back out exactly.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use crier_server::config::{TcpEncoding, TcpFraming, TcpListenerConfig};
use crier_server::fuzzing::{TcpDeframer, TooLong};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Setup {
    delimited: bool,
    latin1: bool,
    start: String,
    end: String,
    max: u8,
}

fn listener(s: &Setup) -> Option<TcpDeframer> {
    let cfg = TcpListenerConfig {
        listen: "127.0.0.1:0".into(),
        framing: if s.delimited {
            TcpFraming::Delimited
        } else {
            TcpFraming::Line
        },
        start: if s.delimited {
            s.start.clone()
        } else {
            String::new()
        },
        end: if s.delimited { s.end.clone() } else { String::new() },
        encoding: if s.latin1 {
            TcpEncoding::Latin1
        } else {
            TcpEncoding::Utf8
        },
        max_frame_size: usize::from(s.max) + 1,
        ..TcpListenerConfig::default()
    };
    TcpDeframer::new(&cfg).ok()
}

/// The frames cut from `input` fed in pieces at `cuts`, and whether it
/// ended refused.
fn cut_all(mut d: TcpDeframer, input: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, bool) {
    let mut out = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&input.len())) {
        let to = to.clamp(from, input.len());
        d.push(&input[from..to]);
        from = to;
        loop {
            match d.frame() {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(TooLong) => return (out, true),
            }
        }
    }
    (out, false)
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let setup: Setup = u.arbitrary()?;
    let Some(d) = listener(&setup) else {
        return Ok(());
    };
    let max = usize::from(setup.max) + 1;
    if u.arbitrary::<bool>()? {
        // Raw bytes from the network.
        let cuts: Vec<usize> = u.arbitrary()?;
        let input = u.bytes(u.len())?;
        let whole = cut_all(d, input, &[]);
        let split = cut_all(listener(&setup).expect("built once"), input, &cuts);
        assert_eq!(whole, split, "the split changed the frames");
        for f in &whole.0 {
            assert!(f.len() <= max, "a {}-byte frame over {max}", f.len());
            // Only the CR of a line's CRLF is framing: "a\r\r\n" is "a\r".
            if !setup.delimited {
                assert!(!f.contains(&b'\n'), "{f:?}");
            }
        }
        return Ok(());
    }
    // What the listener writes, read back.
    let texts: Vec<String> = u.arbitrary()?;
    let cuts: Vec<usize> = u.arbitrary()?;
    let mut wire = Vec::new();
    let mut want = Vec::new();
    for text in &texts {
        let json = serde_json::to_vec(text).expect("a string encodes");
        let written = d.encode(&json);
        if written.is_empty() {
            continue; // dropped: it holds the framing
        }
        wire.extend_from_slice(&written);
        want.push(if setup.latin1 {
            text.chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect()
        } else {
            text.as_bytes().to_vec()
        });
    }
    let (got, refused) = cut_all(d, &wire, &cuts);
    let fits = want.iter().take_while(|w| w.len() <= max).count();
    assert_eq!(got[..], want[..fits], "frames written are read back");
    assert_eq!(refused, fits < want.len());
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
