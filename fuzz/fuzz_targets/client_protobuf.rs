//! The protobuf client protocol (`crier_proto::protobuf`): a binary frame
//! split into length-delimited commands. Every command decoded encodes
//! with the client-side encoder and decodes again to the same bytes; the
//! emulation request and the reply decoder (the CLI's side) never panic.
#![no_main]

use bytes::BytesMut;
use crier_proto::protobuf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = protobuf::emulation_request(data);
    for reply in protobuf::parse_replies(data) {
        let _ = reply;
    }
    for command in protobuf::parse_frame(data) {
        let Ok(command) = command else { break };
        let mut once = BytesMut::new();
        protobuf::command_frame(&mut once, &command);
        let mut decoded = protobuf::parse_frame(&once);
        let again = decoded
            .next()
            .expect("one command")
            .expect("an encoded command decodes");
        assert!(decoded.next().is_none(), "one command encodes as one");
        assert_eq!(again.method(), command.method());
        let mut twice = BytesMut::new();
        protobuf::command_frame(&mut twice, &again);
        assert_eq!(once, twice, "decode-encode-decode changed the command");
    }
});
