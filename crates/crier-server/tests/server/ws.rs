//! The WebSocket client protocol over a real socket: every command, push,
//! error and disconnect path a client can hit.

use serde_json::json;

use super::support::*;

#[tokio::test]
async fn connect_with_token_returns_client_and_ping_settings() {
    let s = TestServer::start(config("")).await;
    let mut c = Client::open(&s.ws_url()).await;
    let reply = c
        .request(json!({"connect": {"token": token("alice"), "name": "test"}}))
        .await;
    let r = &reply["connect"];
    assert!(r["client"].as_str().is_some_and(|id| !id.is_empty()), "{reply}");
    assert_eq!(r["ping"], 25);
    assert_eq!(r["pong"], true);
    assert_eq!(r["expires"], true, "token with exp makes the connection expire");
    assert!(r["ttl"].as_u64().unwrap() > 3500);
    s.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_documented_codes() {
    let s = TestServer::start(config("")).await;
    // No token and anonymous not allowed: 3500 invalid token.
    let mut c = Client::open(&s.ws_url()).await;
    c.send_text(r#"{"id":1,"connect":{}}"#).await;
    assert_eq!(c.closed().await.code, 3500);
    // Wrong signature: 3500.
    let forged = crier_server::auth::TokenBuilder::new()
        .user("eve")
        .sign_hs256("another-secret-of-some-length");
    let mut c = Client::open(&s.ws_url()).await;
    c.send_text(&json!({"id":1,"connect":{"token": forged}}).to_string())
        .await;
    assert_eq!(c.closed().await.code, 3500);
    // Garbage token: 3500.
    let mut c = Client::open(&s.ws_url()).await;
    c.send_text(r#"{"id":1,"connect":{"token":"not.a.jwt"}}"#).await;
    assert_eq!(c.closed().await.code, 3500);
    // Expired: error 109, the connection stays open for a retry.
    let expired = crier_server::auth::TokenBuilder::new()
        .user("bob")
        .exp(unix_now() - 10)
        .sign_hs256(SECRET);
    let mut c = Client::open(&s.ws_url()).await;
    let reply = c.request(json!({"connect": {"token": expired}})).await;
    assert_eq!(reply["error"]["code"], 109, "{reply}");
    let reply = c.request(json!({"connect": {"token": token("bob")}})).await;
    assert!(
        reply["connect"]["client"].is_string(),
        "retry with a fresh token works: {reply}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn malformed_input_disconnects_only_that_client() {
    let s = TestServer::start(config("")).await;
    let mut good = Client::connect(&s.ws_url(), &token("good")).await;
    good.request(json!({"subscribe": {"channel": "news"}})).await;

    let cases: [(&str, &str); 5] = [
        ("not json at all", "invalid JSON"),
        (
            r#"{"id":1,"subscribe":{"channel":"news"}}"#,
            "subscribe before connect",
        ),
        ("[1,2,3]", "not an object"),
        (r#"{"id":7}"#, "command without a request"),
        (r#"{"connect":{}}"#, "connect without id"),
    ];
    for (text, why) in cases {
        let mut bad = Client::open(&s.ws_url()).await;
        bad.send_text(text).await;
        assert_eq!(bad.closed().await.code, 3501, "{why}");
    }
    // After connect, invalid JSON also disconnects with 3501.
    let mut bad = Client::connect(&s.ws_url(), &token("bad")).await;
    bad.send_text("{broken").await;
    assert_eq!(bad.closed().await.code, 3501);

    let (status, body) = s
        .api("publish", json!({"channel": "news", "data": {"n": 1}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let p = good.next_pub().await;
    assert_eq!(
        p["pub"]["data"],
        json!({"n": 1}),
        "the well-behaved client is still served"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn oversized_frame_is_refused_with_bad_request() {
    let s = TestServer::start(config("[websocket]\nmessage_size_limit = 1024")).await;
    let mut c = Client::connect(&s.ws_url(), &token("big")).await;
    let huge = format!(
        r#"{{"id":2,"publish":{{"channel":"news","data":"{}"}}}}"#,
        "x".repeat(4096)
    );
    c.send_text(&huge).await;
    assert_eq!(c.closed().await.code, 3501);
    let mut other = Client::connect(&s.ws_url(), &token("small")).await;
    let reply = other.request(json!({"subscribe": {"channel": "news"}})).await;
    assert!(
        reply["subscribe"].is_object(),
        "server still serves others: {reply}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_command_much_larger_than_the_read_buffer_arrives_whole() {
    // The server reads 1 KiB at a time (ws::READ_BUFFER); a publish of
    // almost the whole 64 KiB message limit must still arrive intact.
    let s = TestServer::start(config("")).await;
    let mut sub = Client::connect(&s.ws_url(), &token("reader")).await;
    let r = sub.request(json!({"subscribe": {"channel": "chat:big"}})).await;
    assert!(r["subscribe"].is_object(), "{r}");
    let mut publisher = Client::connect(&s.ws_url(), &token("writer")).await;
    let text: String = (0..60_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let r = publisher
        .request(json!({"publish": {"channel": "chat:big", "data": {"text": text}}}))
        .await;
    assert!(r["publish"].is_object(), "{r}");
    let push = sub.next_pub().await;
    assert_eq!(push["pub"]["data"]["text"].as_str(), Some(text.as_str()));
    s.shutdown().await;
}

#[tokio::test]
async fn subscribe_errors_unknown_channel_permission_already_subscribed() {
    let s = TestServer::start(config("")).await;
    let mut c = Client::connect(&s.ws_url(), &token("u")).await;
    let r = c.request(json!({"subscribe": {"channel": "nope:1"}})).await;
    assert_eq!(r["error"]["code"], 102, "{r}");
    let r = c.request(json!({"subscribe": {"channel": "closed:1"}})).await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = c.request(json!({"subscribe": {"channel": "news"}})).await;
    assert!(r["subscribe"].is_object(), "{r}");
    let r = c.request(json!({"subscribe": {"channel": "news"}})).await;
    assert_eq!(r["error"]["code"], 105, "{r}");
    let r = c
        .request(json!({"publish": {"channel": "closed:1", "data": {}}}))
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = c.request(json!({"history": {"channel": "closed:1"}})).await;
    assert_eq!(r["error"]["code"], 108, "no history in that namespace: {r}");
    let r = c.request(json!({"rpc": {"method": "x", "data": {}}})).await;
    assert_eq!(r["error"]["code"], 104, "{r}");
    let r = c.request(json!({"ping": {}})).await;
    assert!(r["ping"].is_object(), "{r}");
    s.shutdown().await;
}

#[tokio::test]
async fn publications_reach_subscribers_in_order_and_exclude_self_works() {
    let s = TestServer::start(config("")).await;
    let mut a = Client::connect(&s.ws_url(), &token("a")).await;
    let mut b = Client::connect(&s.ws_url(), &token("b")).await;
    for c in [&mut a, &mut b] {
        let r = c.request(json!({"subscribe": {"channel": "chat:1"}})).await;
        assert_eq!(r["subscribe"]["recoverable"], true, "{r}");
    }
    let _ = a.next().await; // b's join
                            // a publishes excluding itself, then normally.
    let r = a
        .request(json!({"publish": {"channel": "chat:1", "data": {"t": "only b"}, "exclude_self": true}}))
        .await;
    assert!(r["publish"].is_object(), "{r}");
    let r = a
        .request(json!({"publish": {"channel": "chat:1", "data": {"t": "both"}}}))
        .await;
    assert!(r["publish"].is_object(), "{r}");
    let p1 = b.next_pub().await;
    let p2 = b.next_pub().await;
    assert_eq!(p1["pub"]["data"]["t"], "only b");
    assert_eq!(p2["pub"]["data"]["t"], "both");
    assert_eq!(
        p1["pub"]["offset"].as_u64().unwrap() + 1,
        p2["pub"]["offset"].as_u64().unwrap()
    );
    assert_eq!(p1["pub"]["info"]["user"], "a", "publisher info rides along");
    let first_for_a = a.next_pub().await;
    assert_eq!(
        first_for_a["pub"]["data"]["t"], "both",
        "a never got its own excluded publication"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn api_publish_can_exclude_a_client() {
    let s = TestServer::start(config("")).await;
    let mut a = Client::connect(&s.ws_url(), &token("a")).await;
    let mut b = Client::connect(&s.ws_url(), &token("b")).await;
    for c in [&mut a, &mut b] {
        c.request(json!({"subscribe": {"channel": "news"}})).await;
    }
    let (_, body) = s
        .api(
            "publish",
            json!({"channel": "news", "data": 1, "exclude_clients": [a.id]}),
        )
        .await;
    assert_eq!(body["result"]["offset"], 1, "{body}");
    s.api("publish", json!({"channel": "news", "data": 2})).await;
    assert_eq!(b.next_pub().await["pub"]["data"], 1);
    assert_eq!(b.next_pub().await["pub"]["data"], 2);
    assert_eq!(
        a.next_pub().await["pub"]["data"],
        2,
        "the excluded client skipped publication 1"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn history_and_recovery_after_reconnect() {
    let s = TestServer::start(config("")).await;
    let mut a = Client::connect(&s.ws_url(), &token("a")).await;
    let r = a
        .request(json!({"subscribe": {"channel": "news", "recoverable": true}}))
        .await;
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        s.api("publish", json!({"channel": "news", "data": {"i": i}}))
            .await;
    }
    let last = a.next_pub().await["pub"]["offset"].as_u64().unwrap();
    assert_eq!(last, 1);
    drop(a); // vanishes after offset 1
    for i in 4..=5 {
        s.api("publish", json!({"channel": "news", "data": {"i": i}}))
            .await;
    }
    let mut a2 = Client::connect(&s.ws_url(), &token("a")).await;
    let r = a2
        .request(json!({"subscribe": {"channel": "news", "recover": true, "recoverable": true, "offset": last, "epoch": epoch}}))
        .await;
    let sub = &r["subscribe"];
    assert_eq!(sub["recovered"], true, "{r}");
    assert_eq!(sub["was_recovering"], true);
    let offsets: Vec<u64> = sub["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![2, 3, 4, 5], "exactly the missed publications");
    s.api("publish", json!({"channel": "news", "data": {"i": 6}}))
        .await;
    assert_eq!(
        a2.next_pub().await["pub"]["offset"],
        6,
        "then live, no gap, no duplicate"
    );

    let h = a2
        .request(json!({"history": {"channel": "news", "limit": 2, "reverse": true}}))
        .await;
    let offs: Vec<u64> = h["history"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offs, vec![6, 5]);
    assert_eq!(h["history"]["epoch"], epoch.as_str());
    // A stale epoch is not recoverable: told plainly.
    let r = a2
        .request(json!({"subscribe": {"channel": "chat:x", "recover": true, "recoverable": true, "offset": 3, "epoch": "bogus"}}))
        .await;
    assert_eq!(
        r["subscribe"]["recovered"],
        json!(null),
        "recovered is false (omitted): {r}"
    );
    assert_eq!(r["subscribe"]["was_recovering"], true);
    s.shutdown().await;
}

#[tokio::test]
async fn presence_and_join_leave() {
    let s = TestServer::start(config("")).await;
    let mut a = Client::connect(&s.ws_url(), &token("alice")).await;
    a.request(json!({"subscribe": {"channel": "chat:room"}})).await;
    let mut b = Client::connect(&s.ws_url(), &token("bob")).await;
    b.request(json!({"subscribe": {"channel": "chat:room"}})).await;
    let join = a.next().await;
    assert_eq!(join["push"]["join"]["info"]["user"], "bob", "{join}");
    let p = a.request(json!({"presence": {"channel": "chat:room"}})).await;
    let present = p["presence"]["presence"].as_object().unwrap();
    assert_eq!(present.len(), 2);
    assert!(present.values().any(|i| i["user"] == "bob"));
    let st = a
        .request(json!({"presence_stats": {"channel": "chat:room"}}))
        .await;
    assert_eq!(st["presence_stats"], json!({"num_clients": 2, "num_users": 2}));
    b.request(json!({"unsubscribe": {"channel": "chat:room"}})).await;
    let leave = a.next().await;
    assert_eq!(leave["push"]["leave"]["info"]["user"], "bob", "{leave}");
    let r = a.request(json!({"presence": {"channel": "news"}})).await;
    assert_eq!(r["error"]["code"], 108, "presence is off outside chat: {r}");
    s.shutdown().await;
}

#[tokio::test]
async fn server_side_subscriptions_from_token_channels() {
    let s = TestServer::start(config("")).await;
    let t = crier_server::auth::TokenBuilder::new()
        .user("srv")
        .exp(unix_now() + 600)
        .channels(["news", "chat:2"])
        .sign_hs256(SECRET);
    let mut c = Client::open(&s.ws_url()).await;
    let reply = c.request(json!({"connect": {"token": t}})).await;
    let subs = reply["connect"]["subs"]
        .as_object()
        .unwrap_or_else(|| panic!("no subs: {reply}"));
    assert!(
        subs.contains_key("news") && subs.contains_key("chat:2"),
        "{reply}"
    );
    s.api("publish", json!({"channel": "chat:2", "data": "server-side"}))
        .await;
    let p = c.next_pub().await;
    assert_eq!(p["channel"], "chat:2");
    assert_eq!(p["pub"]["data"], "server-side");
    s.shutdown().await;
}

#[tokio::test]
async fn several_commands_in_one_frame() {
    let s = TestServer::start(config("")).await;
    let mut c = Client::open(&s.ws_url()).await;
    let frame = format!(
        "{}\n{}\n{}",
        json!({"id": 1, "connect": {"token": token("multi")}}),
        json!({"id": 2, "subscribe": {"channel": "news"}}),
        json!({"id": 3, "subscribe": {"channel": "chat:9"}})
    );
    c.send_text(&frame).await;
    assert!(c.reply(1).await["connect"].is_object());
    assert!(c.reply(2).await["subscribe"].is_object());
    assert!(c.reply(3).await["subscribe"].is_object());
    s.shutdown().await;
}

#[tokio::test]
async fn refresh_extends_and_sub_token_subscribes_private_channel() {
    let s = TestServer::start(config("")).await;
    let mut c = Client::connect(&s.ws_url(), &token("ref")).await;
    let fresh = crier_server::auth::TokenBuilder::new()
        .user("ref")
        .exp(unix_now() + 7200)
        .sign_hs256(SECRET);
    let r = c.request(json!({"refresh": {"token": fresh}})).await;
    assert!(r["refresh"]["ttl"].as_u64().unwrap() > 7000, "{r}");
    let other = crier_server::auth::TokenBuilder::new()
        .user("someone-else")
        .sign_hs256(SECRET);
    // A private channel needs a subscription token for this user.
    let r = c.request(json!({"subscribe": {"channel": "$secret"}})).await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let sub = crier_server::auth::TokenBuilder::new()
        .user("ref")
        .channel("$secret")
        .sign_hs256(SECRET);
    let r = c
        .request(json!({"subscribe": {"channel": "$secret", "token": sub}}))
        .await;
    assert!(r["subscribe"].is_object(), "{r}");
    // A refresh for another user is an invalid token: disconnect 3500.
    c.send_text(&json!({"id": 99, "refresh": {"token": other}}).to_string())
        .await;
    assert_eq!(c.closed().await.code, 3500);
    s.shutdown().await;
}

/// A client that answers no ping is closed with 3012 once it has sent
/// nothing for the ping interval plus the pong timeout: one pong timeout
/// after the unanswered ping, not at the next ping (4 s later here).
#[tokio::test]
async fn missing_pong_disconnects_with_3012() {
    let s = TestServer::start(config("[client]\nping_interval = \"4s\"\npong_timeout = \"1s\"")).await;
    let mut c = Client::connect(&s.ws_url(), &token("quiet")).await;
    // Our test client answers pings inside next(); read without answering
    // so the ping goes unanswered.
    let mut pinged = None;
    let closed = loop {
        match c.next_without_pong().await {
            Ok(lines) if lines.contains(&json!({})) => pinged = Some(std::time::Instant::now()),
            Ok(_) => {}
            Err(closed) => break closed,
        }
    };
    assert_eq!(closed.code, 3012, "{closed:?}");
    let after = pinged.expect("pinged before the close").elapsed();
    assert!(
        after < std::time::Duration::from_secs(3),
        "closed {after:?} after the ping: at the next ping, not after the pong timeout"
    );
    s.shutdown().await;
}

/// Publishes to `news` from a thread, always up to 200 publications ahead
/// of what the client has `received`, until `stop` (how many it sent) or
/// for at most 20 s (`None`).
fn publish_ahead(
    s: &TestServer,
    received: &std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Option<u64>> {
    use std::sync::atomic::Ordering::Relaxed;
    let (hub, received, stop) = (s.node.hub.clone(), received.clone(), stop.clone());
    std::thread::spawn(move || {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut sent = 0u64;
        while !stop.load(Relaxed) {
            if std::time::Instant::now() > until {
                return None;
            }
            if sent - received.load(Relaxed) < 200 {
                hub.publish("news", format!("{sent}"), Default::default())
                    .unwrap();
                sent += 1;
            } else {
                std::thread::yield_now();
            }
        }
        Some(sent)
    })
}

/// A connection its queue keeps busy still gets its pings: the writer
/// checks the ping deadline after each frame, not only while it waits. The
/// test client sends nothing but pongs, so without pings the server would
/// close it after ping_interval + pong_timeout (2 s here) with 3012.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_kept_busy_by_publications_still_gets_its_pings() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let s = TestServer::start(config("[client]\nping_interval = \"1s\"\npong_timeout = \"1s\"")).await;
    let mut c = Client::connect(&s.ws_url(), &token("busy")).await;
    c.request(json!({"subscribe": {"channel": "news"}})).await;
    // A publisher always up to 200 publications ahead of the client, so the
    // writer nearly always finds its queue non-empty.
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_ahead(&s, &received, &stop);
    let until = std::time::Instant::now() + std::time::Duration::from_millis(3500);
    let mut n = 0u64;
    while std::time::Instant::now() < until {
        let p = c.next_pub().await;
        assert_eq!(p["pub"]["data"], json!(n), "in order, none lost");
        n += 1;
        received.store(n, Relaxed);
    }
    stop.store(true, Relaxed);
    let sent = publisher
        .join()
        .expect("publisher")
        .expect("stopped, not given up");
    assert!(n > 1000, "the connection was busy: {n} publications in 3.5 s");
    for k in n..sent {
        assert_eq!(c.next_pub().await["pub"]["data"], json!(k));
    }
    // Still connected after 3.5 s of answering pings only.
    let r = c.request(json!({"subscribe": {"channel": "other"}})).await;
    assert!(r["subscribe"].is_object(), "{r}");
    s.shutdown().await;
}

/// A connection publications keep busy is still closed with 3012 when its
/// client answers no pings. The publisher keeps it busy for up to 20 s;
/// the close must come long before that (ping interval plus pong timeout:
/// 2 s here). Which of the writer's two checks of the client's silence
/// fires (its timer, polled whenever the queue is momentarily empty, or
/// the check after each frame) this does not pin down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_kept_busy_that_never_answers_pings_is_closed_with_3012() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let s = TestServer::start(config("[client]\nping_interval = \"1s\"\npong_timeout = \"1s\"")).await;
    let mut c = Client::connect(&s.ws_url(), &token("deaf")).await;
    c.request(json!({"subscribe": {"channel": "news"}})).await;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = publish_ahead(&s, &received, &stop);
    let closed = loop {
        match c.next_without_pong().await {
            Ok(lines) => {
                let n = lines.iter().filter(|l| l.pointer("/push/pub").is_some()).count();
                received.fetch_add(n as u64, Relaxed);
            }
            Err(closed) => break closed,
        }
    };
    stop.store(true, Relaxed);
    let busy_at_close = publisher.join().expect("publisher").is_some();
    assert_eq!(closed.code, 3012, "{closed:?}");
    assert!(busy_at_close, "closed only once the publisher gave up after 20 s");
    assert!(received.load(Relaxed) > 1000, "the connection was busy");
    s.shutdown().await;
}

#[tokio::test]
async fn slow_client_is_disconnected_with_3008_others_unaffected() {
    let s = TestServer::start(config("[client]\nqueue_max_size = 65536")).await;
    let mut slow = Client::connect(&s.ws_url(), &token("slow")).await;
    slow.request(json!({"subscribe": {"channel": "news"}})).await;
    let mut fast = Client::connect(&s.ws_url(), &token("fast")).await;
    fast.request(json!({"subscribe": {"channel": "news"}})).await;
    // `slow` stops reading; publish far more than socket buffers and its
    // queue can hold, while `fast` keeps reading.
    let payload = format!("\"{}\"", "y".repeat(16 * 1024));
    let hub = s.node.hub.clone();
    let mut received = 0;
    for _ in 0..2000 {
        hub.publish("news", payload.clone(), Default::default()).unwrap();
        fast.next_pub().await;
        received += 1;
        if hub.stats().dropped_slow > 0 {
            break;
        }
    }
    assert_eq!(
        hub.stats().dropped_slow,
        1,
        "slow client dropped after {received} publications"
    );
    assert_eq!(slow.closed().await.code, 3008);
    hub.publish("news", "\"after\"", Default::default()).unwrap();
    assert_eq!(fast.next_pub().await["pub"]["data"], "after");
    s.shutdown().await;
}

/// A small fan-out writes to quiet connections at once from the
/// publishing thread. A message larger than the socket takes at once
/// leaves its rest to the connection's writer, and what is published
/// meanwhile must wait behind that rest: every publication, whole and in
/// order, on both the subscriber that paused reading and the one that
/// did not.
#[tokio::test]
async fn what_a_write_at_once_leaves_behind_goes_out_before_anything_later() {
    let s = TestServer::start(config("[client]\nqueue_max_size = 67108864")).await;
    let mut paused = Client::connect(&s.ws_url(), &token("paused")).await;
    paused.request(json!({"subscribe": {"channel": "news"}})).await;
    let mut reading = Client::connect(&s.ws_url(), &token("reading")).await;
    reading.request(json!({"subscribe": {"channel": "news"}})).await;
    let hub = s.node.hub.clone();
    // 6 MiB: far more than one send takes on loopback.
    let big = "b".repeat(6 << 20);
    hub.publish(
        "news",
        format!("{{\"k\":0,\"pad\":\"{big}\"}}"),
        Default::default(),
    )
    .unwrap();
    let n = 50;
    for k in 1..n {
        hub.publish("news", format!("{{\"k\":{k}}}"), Default::default())
            .unwrap();
    }
    for c in [&mut reading, &mut paused] {
        for k in 0..n {
            let p = c.next_pub().await;
            assert_eq!(p["pub"]["data"]["k"], json!(k), "publication {k}");
        }
    }
    hub.publish("news", "\"after\"", Default::default()).unwrap();
    assert_eq!(paused.next_pub().await["pub"]["data"], "after");
    assert_eq!(hub.stats().dropped_slow, 0);
    s.shutdown().await;
}

/// A fan-out to more clients than one thread writes to in turn (128) is
/// written by flushes spread over the runtime's threads while the
/// subscribers' own writers may take over: whatever does the writing,
/// every subscriber gets every publication once, in order. Publications
/// come one at a time (each read by everyone before the next, so the
/// clients are quiet and flushes write) and in bursts (so pushes queue
/// behind what a flush holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_spread_over_threads_reaches_every_subscriber_once_in_order() {
    let s = TestServer::start(config("")).await;
    let mut clients = Vec::new();
    for i in 0..150 {
        let mut c = Client::connect(&s.ws_url(), &token(&format!("u{i}"))).await;
        c.request(json!({"subscribe": {"channel": "news"}})).await;
        clients.push(c);
    }
    let hub = s.node.hub.clone();
    let mut k = 0;
    for burst in [1, 1, 1, 5, 1, 20, 1, 1, 50, 1] {
        let first = k;
        for _ in 0..burst {
            hub.publish("news", format!("{{\"k\":{k}}}"), Default::default())
                .unwrap();
            k += 1;
        }
        for c in &mut clients {
            for want in first..k {
                assert_eq!(c.next_pub().await["pub"]["data"]["k"], json!(want));
            }
        }
    }
    assert_eq!(hub.stats().deliveries, 150 * k as u64);
    assert_eq!(hub.stats().dropped_slow, 0);
    s.shutdown().await;
}

/// One frame of many publishes to 300 subscribers: what that read
/// queues for the subscribers whose writers wait is written when it
/// ends, 128 of them from the publisher's thread and the rest by
/// flushes on other threads (`crier_core::defer_wakes`); each subscriber
/// gets every publication once, in order, frame after frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_frame_of_publishes_to_300_subscribers_reaches_each_whole_and_in_order() {
    let s = TestServer::start(config("")).await;
    let mut clients = Vec::new();
    for i in 0..300 {
        let mut c = Client::connect(&s.ws_url(), &token(&format!("u{i}"))).await;
        let r = c.request(json!({"subscribe": {"channel": "chat:many"}})).await;
        assert!(r["error"].is_null(), "{r}");
        clients.push(c);
    }
    let mut publisher = Client::connect(&s.ws_url(), &token("publisher")).await;
    let n = 40;
    for round in 0..3 {
        let first = round * n;
        let frame: Vec<String> = (first..first + n)
            .map(|k| {
                json!({"id": 1000 + k, "publish": {"channel": "chat:many", "data": {"k": k}}}).to_string()
            })
            .collect();
        publisher.send_text(&frame.join("\n")).await;
        for (i, c) in clients.iter_mut().enumerate() {
            for k in first..first + n {
                assert_eq!(c.next_pub().await["pub"]["data"]["k"], json!(k), "subscriber {i}");
            }
        }
    }
    assert_eq!(s.node.hub.stats().dropped_slow, 0);
    s.shutdown().await;
}

/// A client that takes frames of at most 1 MiB (as Apple's
/// `URLSessionWebSocketTask` and Python's `websockets` do by default)
/// falls behind while far more than that is queued for it (a raised
/// `client.queue_max_size`): when it reads again it gets every
/// publication, in order, in frames it accepts (the writer joins at most
/// 64 KiB per frame), instead of one frame of everything queued.
#[tokio::test]
async fn a_client_back_from_a_pause_gets_everything_in_frames_within_1_mib() {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    let s = TestServer::start(config("[client]\nqueue_max_size = 67108864")).await;
    let limit = WebSocketConfig::default()
        .max_frame_size(Some(1 << 20))
        .max_message_size(Some(1 << 20));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(s.ws_url(), Some(limit), false)
        .await
        .unwrap();
    let mut c = Client::from_stream(ws);
    c.request(json!({"connect": {"token": token("paused")}})).await;
    c.request(json!({"subscribe": {"channel": "news"}})).await;
    // 32 MiB while the client reads nothing: more than the socket
    // buffers hold, so most of it waits in the client's queue.
    let pad = "p".repeat(10 * 1024);
    let hub = s.node.hub.clone();
    let n = 3200;
    for k in 0..n {
        hub.publish(
            "news",
            format!("{{\"k\":{k},\"pad\":\"{pad}\"}}"),
            Default::default(),
        )
        .unwrap();
    }
    for k in 0..n {
        let p = c.next_pub().await;
        assert_eq!(p["pub"]["data"]["k"], json!(k), "publication {k}");
    }
    assert_eq!(hub.stats().dropped_slow, 0);
    s.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_tells_clients_3001() {
    let s = TestServer::start(config("")).await;
    let mut c = Client::connect(&s.ws_url(), &token("bye")).await;
    let mut pre = Client::open(&s.ws_url()).await; // never connects
    s.node.shutdown.cancel();
    assert_eq!(c.closed().await.code, 3001);
    assert_eq!(pre.closed().await.code, 3001);
    s.shutdown().await;
}

#[tokio::test]
async fn origin_check_rejects_cross_site() {
    let s = TestServer::start(config("[client]\nallowed_origins = [\"https://good.example\"]")).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = s.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req)
        .await
        .expect_err("cross-site origin refused");
    assert!(err.to_string().contains("403"), "{err}");
    let mut req = s.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://good.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    s.shutdown().await;
}

#[tokio::test]
async fn connection_expires_without_refresh_3005() {
    let mut cfg = config("");
    cfg.client.expired_close_delay = std::time::Duration::from_millis(200);
    let s = TestServer::start(cfg).await;
    let mut w = watcher(&s).await;
    let short = crier_server::auth::TokenBuilder::new()
        .user("brief")
        .exp(unix_now() + 1)
        .sign_hs256(SECRET);
    let mut c = Client::connect(&s.ws_url(), &short).await;
    c.request(json!({"subscribe": {"channel": "news"}})).await;
    assert_eq!(
        c.closed().await.code,
        3005,
        "no refresh before exp (+ expired_close_delay): connection expired"
    );
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn limits_channel_and_connection() {
    let mut cfg = config("");
    cfg.client.channel_limit = 1;
    cfg.client.connection_limit = 1;
    let s = TestServer::start(cfg).await;
    let mut c = Client::connect(&s.ws_url(), &token("limited")).await;
    let r = c.request(json!({"subscribe": {"channel": "news"}})).await;
    assert!(r["subscribe"].is_object(), "{r}");
    let r = c.request(json!({"subscribe": {"channel": "chat:1"}})).await;
    assert_eq!(r["error"]["code"], 106, "channel limit: {r}");
    let mut second = Client::open(&s.ws_url()).await;
    second
        .send_text(&json!({"id": 1, "connect": {"token": token("other")}}).to_string())
        .await;
    assert_eq!(second.closed().await.code, 3504, "connection limit");
    s.shutdown().await;
}

#[tokio::test]
async fn send_is_accepted_without_reply_and_sub_refresh_answers() {
    let s = TestServer::start(config("")).await;
    let mut c = Client::connect(&s.ws_url(), &token("sender")).await;
    c.send_text(r#"{"send":{"data":{"x":1}}}"#).await;
    let r = c
        .request(json!({"sub_refresh": {"channel": "news", "token": "x"}}))
        .await;
    assert_eq!(r["error"]["code"], 103, "only a live subscription refreshes: {r}");
    c.request(json!({"subscribe": {"channel": "news"}})).await;
    let sub = crier_server::auth::TokenBuilder::new()
        .user("sender")
        .channel("news")
        .exp(unix_now() + 600)
        .sign_hs256(SECRET);
    // `send` did not disconnect: the next command is answered.
    let r = c
        .request(json!({"sub_refresh": {"channel": "news", "token": sub}}))
        .await;
    assert_eq!(r["sub_refresh"]["expires"], true, "{r}");
    let wrong_channel = crier_server::auth::TokenBuilder::new()
        .user("sender")
        .channel("other")
        .sign_hs256(SECRET);
    c.send_text(&json!({"id": 9, "sub_refresh": {"channel": "news", "token": wrong_channel}}).to_string())
        .await;
    assert_eq!(
        c.closed().await.code,
        3500,
        "a token for another channel is invalid"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn unknown_command_after_connect_closes_3501() {
    let s = TestServer::start(config("")).await;
    let mut w = watcher(&s).await;
    let mut c = Client::connect(&s.ws_url(), &token("curious")).await;
    // An id but no request field crier knows: Centrifugo's bad request.
    c.send_text(r#"{"id":5,"frobnicate":{"channel":"news"}}"#).await;
    assert_eq!(c.closed().await.code, 3501, "unknown command");
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn history_since_another_epoch_is_error_112() {
    let s = TestServer::start(config("")).await;
    let mut w = watcher(&s).await;
    s.api("publish", json!({"channel": "news", "data": {"n": 1}}))
        .await;
    let r = w
        .request(json!({"history": {"channel": "news", "limit": 10, "since": {"offset": 1, "epoch": "not-this-one"}}}))
        .await;
    assert_eq!(r["error"]["code"], 112, "unrecoverable position: {r}");
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn past_expire_at_claim_is_error_110() {
    let s = TestServer::start(config("")).await;
    let mut w = watcher(&s).await;
    // `exp` is fine, `expire_at` has passed: 110 expired, not 109.
    let lapsed = crier_server::auth::TokenBuilder::new()
        .user("late")
        .exp(unix_now() + 600)
        .expire_at(unix_now() - 5)
        .sign_hs256(SECRET);
    let mut c = Client::open(&s.ws_url()).await;
    let r = c.request(json!({"connect": {"token": lapsed}})).await;
    assert_eq!(r["error"]["code"], 110, "connect: {r}");
    let r = c.request(json!({"connect": {"token": token("late")}})).await;
    assert!(r["connect"]["client"].is_string(), "the socket stays usable: {r}");
    let sub = crier_server::auth::TokenBuilder::new()
        .user("late")
        .channel("$private")
        .exp(unix_now() + 600)
        .expire_at(unix_now() - 5)
        .sign_hs256(SECRET);
    let r = c
        .request(json!({"subscribe": {"channel": "$private", "token": sub}}))
        .await;
    assert_eq!(r["error"]["code"], 110, "subscribe: {r}");
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn direct_message_is_a_message_push_to_that_client_only() {
    let s = TestServer::start(config("")).await;
    let mut w = watcher(&s).await;
    let mut c = Client::connect(&s.ws_url(), &token("dm")).await;
    let id = crier_core::ClientId(c.id.parse().expect("numeric client id"));
    s.node
        .hub
        .publisher()
        .send(id, r#"{"hello":"you"}"#)
        .expect("client is connected");
    let m = c.next().await;
    assert_eq!(m["push"]["message"]["data"], json!({"hello": "you"}), "{m}");
    // The watcher got nothing but its own publications meanwhile.
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn no_connect_within_stale_close_delay_closes_3502() {
    let mut cfg = config("");
    cfg.client.stale_close_delay = std::time::Duration::from_millis(200);
    let s = TestServer::start(cfg).await;
    let mut w = watcher(&s).await;
    let mut idle = Client::open(&s.ws_url()).await;
    assert_eq!(idle.closed_without_pong().await.code, 3502, "stale");
    // The connected watcher is past the stale delay too, and unaffected.
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn server_side_subscriptions_over_channel_limit_close_3505() {
    let mut cfg = config("");
    cfg.client.channel_limit = 1;
    let s = TestServer::start(cfg).await;
    let mut w = watcher(&s).await;
    let greedy = crier_server::auth::TokenBuilder::new()
        .user("greedy")
        .exp(unix_now() + 600)
        .channels(["news", "chat:1"])
        .sign_hs256(SECRET);
    let mut c = Client::open(&s.ws_url()).await;
    c.send_text(&json!({"id": 1, "connect": {"token": greedy}}).to_string())
        .await;
    assert_eq!(c.closed().await.code, 3505, "channel limit");
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn user_connection_limit_closes_3504_per_user() {
    let mut cfg = config("");
    cfg.client.user_connection_limit = 1;
    cfg.client.allow_anonymous_connect_without_token = true;
    let s = TestServer::start(cfg).await;
    let mut w = watcher(&s).await;
    let _first = Client::connect(&s.ws_url(), &token("uma")).await;
    let mut second = Client::open(&s.ws_url()).await;
    second
        .send_text(&json!({"id": 1, "connect": {"token": token("uma")}}).to_string())
        .await;
    assert_eq!(second.closed().await.code, 3504, "second connection of uma");
    // Other users, and anonymous connections (not tracked), still connect.
    let _other = Client::connect(&s.ws_url(), &token("ulf")).await;
    let _anon1 = Client::connect(&s.ws_url(), "").await;
    let _anon2 = Client::connect(&s.ws_url(), "").await;
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}

#[tokio::test]
async fn subscription_token_expiry_unsubscribes_2501_unless_refreshed() {
    let mut cfg = config("");
    cfg.client.expired_sub_close_delay = std::time::Duration::from_millis(100);
    let s = TestServer::start(cfg).await;
    let sub_token = |user: &str, ttl: i64| {
        crier_server::auth::TokenBuilder::new()
            .user(user)
            .channel("$feed")
            .exp(unix_now() + ttl)
            .sign_hs256(SECRET)
    };
    let mut lapsing = Client::connect(&s.ws_url(), &token("lapsing")).await;
    let r = lapsing
        .request(json!({"subscribe": {"channel": "$feed", "token": sub_token("lapsing", 2)}}))
        .await;
    assert_eq!(r["subscribe"]["expires"], true, "{r}");
    let mut keeper = Client::connect(&s.ws_url(), &token("keeper")).await;
    keeper
        .request(json!({"subscribe": {"channel": "$feed", "token": sub_token("keeper", 2)}}))
        .await;
    let r = keeper
        .request(json!({"sub_refresh": {"channel": "$feed", "token": sub_token("keeper", 600)}}))
        .await;
    assert!(r["sub_refresh"]["ttl"].as_u64().unwrap() > 500, "{r}");

    let push = loop {
        let m = lapsing.next().await;
        if !m["push"]["unsubscribe"].is_null() {
            break m["push"].clone();
        }
    };
    assert_eq!(push["channel"], "$feed");
    assert_eq!(push["unsubscribe"]["code"], 2501, "subscription expired: {push}");
    // The connection itself stays: a command is still answered.
    let r = lapsing.request(json!({"ping": {}})).await;
    assert!(r["error"].is_null(), "{r}");

    // The refreshed subscriber still gets the channel; the lapsed one not:
    // a reply queued after the publish would follow its push.
    s.api("publish", json!({"channel": "$feed", "data": {"n": 1}}))
        .await;
    assert_eq!(keeper.next_pub().await["pub"]["data"], json!({"n": 1}));
    lapsing.request(json!({"ping": {}})).await;
    assert!(
        lapsing.queued().all(|m| m["push"]["pub"].is_null()),
        "no publication after the unsubscribe push"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn websocket_pings_get_pongs_and_protocol_violations_close_with_1002() {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;

    let s = TestServer::start(config("")).await;
    // A client-side WebSocket ping (python `websockets` sends one every
    // 20 s and drops the connection without a pong) is answered in kind.
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url()).await.unwrap();
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("a pong within 5 s");
    assert!(
        matches!(&pong, Some(Ok(Message::Pong(p))) if &p[..] == b"are you there"),
        "{pong:?}"
    );

    // An unmasked frame breaks RFC 6455: close 1002, nothing else.
    let mut raw = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    raw.write_all(
        b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    raw.write_all(&[0x81, 0x02, b'{', b'}']).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), raw.read_to_end(&mut answer))
        .await
        .expect("the server closes within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
    let close = answer.windows(4).position(|w| w == [0x88, w[1], 0x03, 0xEA]);
    assert!(close.is_some(), "a close frame with 1002: {answer:?}");

    // A request that is not an upgrade is refused plainly.
    let mut plain = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    plain
        .write_all(b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), plain.read_to_end(&mut answer))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");

    let mut other = Client::connect(&s.ws_url(), &token("still")).await;
    let r = other.request(json!({"subscribe": {"channel": "news"}})).await;
    assert!(r["subscribe"].is_object(), "server still serves others: {r}");
    s.shutdown().await;
}

#[tokio::test]
async fn two_nodes_never_hand_out_the_same_client_id() {
    // Each node tags its client ids (random 24 bits), so an exclusion by
    // client id names one client across a cluster; the first client of
    // each node would both be "1" otherwise.
    let (a, b) = (
        TestServer::start(config("")).await,
        TestServer::start(config("")).await,
    );
    let ca = Client::connect(&a.ws_url(), &token("x")).await;
    let cb = Client::connect(&b.ws_url(), &token("x")).await;
    assert_ne!(ca.id, cb.id);
    // The low 40 bits count that node's clients from 1.
    let id: u64 = ca.id.parse().expect("a client id is a decimal u64");
    assert_eq!(id & ((1 << 40) - 1), 1, "{id}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn dev_mode_lets_pages_from_this_machine_connect_and_no_one_else() {
    let mut c = config("");
    c.crier.dev = true;
    let s = TestServer::start(c).await;
    let status = |origin: &'static str| {
        let addr = s.addr;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut t = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "GET /connection/websocket HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            );
            t.write_all(head.as_bytes()).await.unwrap();
            let mut buf = [0u8; 12];
            t.read_exact(&mut buf).await.unwrap();
            String::from_utf8_lossy(&buf[9..12]).into_owned()
        }
    };
    assert_eq!(status("http://localhost:3000").await, "101");
    assert_eq!(status("http://127.0.0.1:5173").await, "101");
    assert_eq!(status("http://evil.example").await, "403");
    s.shutdown().await;
}
