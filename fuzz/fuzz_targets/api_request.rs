//! The server HTTP API's request bodies (`crier_proto::api::Request::parse`),
//! for every method: a request that parses encodes, and parses again to
//! the same encoding; a batch's commands are taken out one by one.
#![no_main]

use crier_proto::api::{Method, Request};
use libfuzzer_sys::fuzz_target;

/// The body a request would be sent with.
fn encode(request: &Request) -> Vec<u8> {
    let json = match request {
        Request::Publish(r) => serde_json::to_vec(r),
        Request::Broadcast(r) => serde_json::to_vec(r),
        Request::Subscribe(r) => serde_json::to_vec(r),
        Request::Unsubscribe(r) => serde_json::to_vec(r),
        Request::Disconnect(r) => serde_json::to_vec(r),
        Request::Refresh(r) => serde_json::to_vec(r),
        Request::Presence(r) => serde_json::to_vec(r),
        Request::PresenceStats(r) => serde_json::to_vec(r),
        Request::History(r) => serde_json::to_vec(r),
        Request::HistoryRemove(r) => serde_json::to_vec(r),
        Request::Channels(r) => serde_json::to_vec(r),
        Request::Info => Ok(b"{}".to_vec()),
        Request::Batch(r) => serde_json::to_vec(r),
    };
    json.expect("a parsed request encodes")
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let method = Method::ALL[usize::from(pick) % Method::ALL.len()];
    let Ok(request) = Request::parse(method, body) else {
        return;
    };
    assert_eq!(request.method(), method);
    let once = encode(&request);
    let again = Request::parse(method, &once).expect("an encoded request parses");
    let twice = encode(&again);
    assert_eq!(once, twice, "decode-encode-decode changed the request");
    if let Request::Batch(batch) = again {
        for command in batch.commands {
            if let Ok(inner) = command.into_request() {
                let body = encode(&inner);
                let parsed = Request::parse(inner.method(), &body).expect("a batch command parses alone");
                assert_eq!(encode(&parsed), body);
            }
        }
    }
});
