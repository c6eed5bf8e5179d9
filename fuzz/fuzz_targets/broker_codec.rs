//! Bytes read back from Redis or NATS (`broker::codec`): a stored
//! publication, a Redis pub/sub message, a client's info, a control
//! message between nodes. What decodes encodes, and decodes back equal
//! (decode-encode-decode); a control message re-encodes to a fixed point.
#![no_main]

use bytes::Bytes;
use crier_server::broker::{decode_info, encode_info};
use crier_server::fuzzing::{broker_decode, broker_decode_message, broker_encode, control_reencode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(p) = broker_decode(bytes.clone(), 7) {
        let again = broker_decode(Bytes::from(broker_encode(&p)), 7).expect("an encoded publication decodes");
        assert_eq!(again, p);
    }
    if let Ok((offset, _epoch, p)) = broker_decode_message(data) {
        assert_eq!(p.offset, offset);
        let again = broker_decode(Bytes::from(broker_encode(&p)), offset).expect("decodes");
        assert_eq!(again, p);
    }
    if let Ok(info) = decode_info(bytes) {
        let again = decode_info(Bytes::from(encode_info(&info))).expect("an encoded info decodes");
        assert_eq!(again, info);
    }
    if let Some(once) = control_reencode(data) {
        assert_eq!(
            control_reencode(&once),
            Some(once.clone()),
            "a control message is a fixed point"
        );
    }
});
