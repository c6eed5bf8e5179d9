//! The JSON client protocol: a WebSocket text frame split into commands
//! (`crier_proto::client::parse_frame`). Every command decoded encodes, and
//! decodes again to the same encoding (decode-encode-decode); the nesting
//! scan (`depth::within`) agrees with the nesting serde_json sees.
#![no_main]

use crier_proto::client::{parse_command, parse_frame};
use crier_proto::depth;
use libfuzzer_sys::fuzz_target;

/// The deepest nesting of arrays and objects in `v`.
fn nesting(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(nesting).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    for command in parse_frame(data) {
        let Ok(command) = command else { continue };
        let once = serde_json::to_vec(&command).expect("a decoded command encodes");
        let again = parse_command(&once).expect("an encoded command decodes");
        assert_eq!(again.method(), command.method());
        let twice = serde_json::to_vec(&again).expect("encodes again");
        assert_eq!(once, twice, "decode-encode-decode changed the command");
        let _ = again.into_request();
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let deep = nesting(&value);
        assert!(depth::within(data, deep), "{deep} levels refused at {deep}");
        if deep > 0 {
            assert!(
                !depth::within(data, deep - 1),
                "{deep} levels accepted at {}",
                deep - 1
            );
        }
    }
});
