//! permessage-deflate (`net::deflate`): arbitrary compressed input never
//! inflates past the limit; what crier compresses inflates back to itself
//! at every level, exactly at its length and not one byte under it, also
//! right after a failed inflate (the decompressor is reused per thread).
#![no_main]

use crier_server::fuzzing::{compress, inflate, InflateError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let limit = usize::from(head) * 64;
    if let Ok(out) = inflate(rest, limit) {
        assert!(
            out.len() <= limit,
            "{} bytes inflated under a {limit} limit",
            out.len()
        );
    }
    let level = u32::from(head % 9) + 1;
    let packed = compress(rest, level);
    let back = inflate(&packed, rest.len()).expect("what crier compresses inflates");
    assert_eq!(&back[..], rest, "level {level}");
    if !rest.is_empty() {
        assert_eq!(inflate(&packed, rest.len() - 1), Err(InflateError::TooLong));
    }
});
