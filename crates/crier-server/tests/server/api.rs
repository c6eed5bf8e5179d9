//! The server HTTP API over a real socket: auth, every method, errors.

use serde_json::json;

use super::support::*;

#[tokio::test]
async fn api_key_is_required_and_checked() {
    let s = TestServer::start(config("")).await;
    let body = json!({"channel": "news", "data": {}}).to_string();
    let (status, _) = s.api_with("publish", body.clone(), None).await;
    assert_eq!(status, 401, "no key");
    let (status, _) = s
        .api_with("publish", body.clone(), Some(("X-API-Key", "wrong".into())))
        .await;
    assert_eq!(status, 401, "wrong key");
    let (status, resp) = s
        .api_with(
            "publish",
            body.clone(),
            Some(("Authorization", format!("apikey {API_KEY}"))),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["result"]["offset"], 1);
    s.shutdown().await;
}

#[tokio::test]
async fn errors_come_as_documented() {
    let s = TestServer::start(config("")).await;
    let (status, resp) = s.api("publish", json!({"channel": "nope:1", "data": {}})).await;
    assert_eq!(
        (status, resp["error"]["code"].clone()),
        (200, json!(102)),
        "{resp}"
    );
    let (status, resp) = s.api("no_such_method", json!({})).await;
    assert_eq!(
        (status, resp["error"]["code"].clone()),
        (200, json!(104)),
        "{resp}"
    );
    let (status, resp) = s.api("publish", json!({"data": {}})).await;
    assert_eq!(
        (status, resp["error"]["code"].clone()),
        (200, json!(107)),
        "missing channel: {resp}"
    );
    let (status, _) = s
        .api_with("publish", "{not json".into(), Some(("X-API-Key", API_KEY.into())))
        .await;
    assert_eq!(status, 400, "undecodable body");
    s.shutdown().await;

    let mut transport = config("");
    transport.http_api.error_mode = crier_server::config::ApiErrorMode::Transport;
    let s = TestServer::start(transport).await;
    let (status, resp) = s.api("publish", json!({"channel": "nope:1", "data": {}})).await;
    assert_eq!(
        (status, resp["error"]["code"].clone()),
        (404, json!(102)),
        "transport mode: {resp}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn publish_broadcast_history_channels_info_batch() {
    let s = TestServer::start(config("")).await;
    let mut c = Client::connect(&s.ws_url(), &token("u1")).await;
    c.request(json!({"subscribe": {"channel": "chat:a"}})).await;
    c.request(json!({"subscribe": {"channel": "news"}})).await;

    let (_, r) = s
        .api(
            "broadcast",
            json!({"channels": ["chat:a", "news", "nope:x"], "data": {"b": 1}}),
        )
        .await;
    let responses = r["result"]["responses"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(responses[0]["result"]["offset"], 1);
    assert_eq!(responses[1]["result"]["offset"], 1);
    assert_eq!(responses[2]["error"]["code"], 102);
    assert_eq!(c.next_pub().await["channel"], "chat:a");
    assert_eq!(c.next_pub().await["channel"], "news");

    let (_, r) = s.api("history", json!({"channel": "news", "limit": -1})).await;
    assert_eq!(r["result"]["publications"][0]["data"], json!({"b": 1}), "{r}");
    assert_eq!(r["result"]["offset"], 1);
    let (_, r) = s.api("history_remove", json!({"channel": "news"})).await;
    assert!(r["result"].is_object(), "{r}");
    let (_, r) = s.api("history", json!({"channel": "news", "limit": -1})).await;
    assert_eq!(r["result"]["publications"], json!([]), "{r}");
    assert_eq!(r["result"]["offset"], 1, "position survives history removal");

    let (_, r) = s.api("channels", json!({"pattern": "chat:*"})).await;
    assert_eq!(
        r["result"]["channels"],
        json!({"chat:a": {"num_clients": 1}}),
        "{r}"
    );
    let (_, r) = s.api("presence_stats", json!({"channel": "chat:a"})).await;
    assert_eq!(r["result"], json!({"num_clients": 1, "num_users": 1}), "{r}");
    let (_, r) = s.api("presence", json!({"channel": "chat:a"})).await;
    assert_eq!(r["result"]["presence"][&c.id]["user"], "u1", "{r}");
    let (_, r) = s.api("info", json!({})).await;
    assert_eq!(r["result"]["nodes"][0]["num_clients"], 1, "{r}");
    assert_eq!(r["result"]["nodes"][0]["num_subs"], 2, "{r}");

    let (_, r) = s
        .api(
            "batch",
            json!({"commands": [
                {"publish": {"channel": "news", "data": 2}},
                {"publish": {"channel": "nope:1", "data": 3}},
                {"info": {}}
            ]}),
        )
        .await;
    let replies = r["replies"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(replies[0]["publish"]["offset"], 2, "{r}");
    assert_eq!(replies[1]["error"]["code"], 102);
    assert!(replies[2]["info"]["nodes"].is_array());
    assert_eq!(c.next_pub().await["pub"]["data"], 2);
    s.shutdown().await;
}

#[tokio::test]
async fn server_side_subscribe_unsubscribe_disconnect() {
    let s = TestServer::start(config("")).await;
    let mut c = Client::connect(&s.ws_url(), &token("target")).await;
    let (_, r) = s
        .api("subscribe", json!({"user": "target", "channel": "chat:srv"}))
        .await;
    assert!(r["result"].is_object(), "{r}");
    let push = c.next().await;
    assert_eq!(push["push"]["channel"], "chat:srv", "{push}");
    assert!(
        push["push"]["subscribe"].is_object(),
        "a subscribe push tells the client: {push}"
    );
    s.api("publish", json!({"channel": "chat:srv", "data": "hello"}))
        .await;
    assert_eq!(c.next_pub().await["pub"]["data"], "hello");

    let (_, r) = s
        .api("unsubscribe", json!({"user": "target", "channel": "chat:srv"}))
        .await;
    assert!(r["result"].is_object(), "{r}");
    let push = c.next().await;
    assert_eq!(push["push"]["unsubscribe"]["code"], 2000, "{push}");

    let (_, r) = s
        .api(
            "disconnect",
            json!({"user": "target", "disconnect": {"code": 4500, "reason": "bye"}}),
        )
        .await;
    assert!(r["result"].is_object(), "{r}");
    let closed = c.closed().await;
    assert_eq!((closed.code, closed.reason.as_str()), (4500, "bye"));
    s.shutdown().await;
}
