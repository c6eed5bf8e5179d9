//! One namespace resolver: a configured `channel.namespace_boundary` and
//! `private_prefix` decide a channel's options everywhere (history in the
//! hub, permissions in the server), never a hard-coded `:` or `$`.

use serde_json::json;

use super::support::*;

#[tokio::test]
async fn a_slash_boundary_keeps_the_namespace_history_and_permissions() {
    let mut c = config("");
    c.channel.namespace_boundary = "/".into();
    // Without a namespace nothing is kept: history must come from `chat`.
    c.channel.without_namespace.history_size = 0;
    c.channel.without_namespace.force_recovery = false;
    let s = TestServer::start(c).await;

    for n in 1..=2 {
        let (_, r) = s
            .api("publish", json!({"channel": "chat/1", "data": {"n": n}}))
            .await;
        assert_eq!(r["result"]["offset"], n, "{r}");
    }
    let (_, h) = s.api("history", json!({"channel": "chat/1", "limit": 10})).await;
    let pubs = h["result"]["publications"].as_array().expect("publications");
    assert_eq!(pubs.len(), 2, "chat's history_size applies: {h}");
    let epoch = h["result"]["epoch"].as_str().unwrap().to_owned();

    let mut client = Client::connect(&s.ws_url(), &token("alice")).await;
    let r = client
        .request(json!({"subscribe": {"channel": "chat/1", "recover": true, "recoverable": true, "offset": 1, "epoch": epoch}}))
        .await;
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    assert_eq!(r["subscribe"]["publications"][0]["data"], json!({"n": 2}), "{r}");

    // `closed` grants nothing, whatever the top level allows.
    let r = client
        .request(json!({"subscribe": {"channel": "closed/1"}}))
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = client.request(json!({"subscribe": {"channel": "nope/1"}})).await;
    assert_eq!(r["error"]["code"], 102, "{r}");
    // With `/` as the boundary, `chat:1` has no namespace.
    let (_, r) = s.api("publish", json!({"channel": "chat:1", "data": {}})).await;
    assert!(r["result"].is_object(), "{r}");
    let (_, h) = s.api("history", json!({"channel": "chat:1", "limit": 10})).await;
    assert_eq!(
        h["result"]["publications"].as_array().map_or(0, Vec::len),
        0,
        "{h}"
    );
    s.shutdown().await;
}
