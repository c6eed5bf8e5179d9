//! The WebSocket upgrade (`net::rfc6455::handshake`, `deflate::offered`,
//! `offers_protocol`) on arbitrary request headers, one `Name: value` per
//! line. The request is accepted (101) exactly when RFC 6455 §4.2.1 says
//! it may be, and then with the right `Sec-WebSocket-Accept`; the
//! compression answer is given exactly when compression was offered.
#![no_main]

use base64::Engine as _;
use crier_server::fuzzing::{
    deflate_offered, offers_protocol, ws_handshake, HeaderMap, HeaderName, HeaderValue,
};
use libfuzzer_sys::fuzz_target;
use sha1::{Digest, Sha1};

fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let _ = offers_protocol(&headers, "centrifuge-protobuf");
    let deflate = deflate_offered(&headers);
    let (status, answer) = ws_handshake(&headers, None, deflate);
    let key = headers.get("sec-websocket-key").map(|k| k.as_bytes());
    let key_ok = key.is_some_and(|k| {
        k.len() == 24
            && base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|d| d.len() == 16)
    });
    let upgrade = has_token(&headers, "connection", "upgrade")
        && has_token(&headers, "upgrade", "websocket")
        && headers.get("sec-websocket-version").map(|v| v.as_bytes()) == Some(&b"13"[..])
        && key_ok;
    assert_eq!(status.as_u16() == 101, upgrade, "status {status} for {headers:?}");
    if upgrade {
        let mut sha = Sha1::new();
        sha.update(key.unwrap_or_default());
        sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let want = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
        assert_eq!(
            answer.get("sec-websocket-accept").map(|v| v.as_bytes()),
            Some(want.as_bytes())
        );
        assert_eq!(answer.contains_key("sec-websocket-extensions"), deflate);
    }
});
