//! The protobuf client protocol on `/connection/websocket`, from a client
//! that speaks it byte by byte (crier-proto's client-side encoder and reply
//! decoder): how a client selects it, the pushes only the server sends
//! (server-side subscribe, unsubscribe), a channel shared with JSON
//! clients, and frames that do not decode.

use bytes::{Bytes, BytesMut};
use crier_proto::client::{Command, ConnectRequest, Payload, PublishRequest, Reply, SubscribeRequest};
use crier_proto::protobuf::{command_frame, parse_replies};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::support::*;

struct ProtoClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: std::collections::VecDeque<Reply>,
    next_id: u32,
    /// The subprotocol the server answered with.
    protocol: Option<String>,
    id: String,
}

impl ProtoClient {
    /// Opens `url` offering `subprotocol` (if any); nothing sent yet.
    async fn open(url: &str, subprotocol: Option<&str>) -> Self {
        let mut request = url.into_client_request().expect("request");
        if let Some(p) = subprotocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().expect("header"));
        }
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket opens");
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        Self {
            ws,
            pending: Default::default(),
            next_id: 1,
            protocol,
            id: String::new(),
        }
    }

    async fn connect(url: &str, subprotocol: Option<&str>, token: &str) -> Self {
        let mut c = Self::open(url, subprotocol).await;
        let reply = c
            .request(Command {
                connect: Some(ConnectRequest {
                    token: token.to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        let Some(result) = reply.connect else {
            panic!("connect failed: {:?}", reply.error)
        };
        c.id = result.client;
        c
    }

    async fn send(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    async fn request(&mut self, mut command: Command) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        command.id = id;
        let mut buf = BytesMut::new();
        command_frame(&mut buf, &command);
        self.send(buf.to_vec()).await;
        // Pushes that arrive meanwhile stay queued for `next`.
        let mut skipped = std::collections::VecDeque::new();
        loop {
            let r = self
                .next()
                .await
                .unwrap_or_else(|c| panic!("closed awaiting {id}: {c:?}"));
            if r.id == id {
                skipped.extend(self.pending.drain(..));
                self.pending = skipped;
                return r;
            }
            skipped.push_back(r);
        }
    }

    async fn subscribe(&mut self, channel: &str) {
        let r = self
            .request(Command {
                subscribe: Some(SubscribeRequest {
                    channel: channel.to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        assert!(r.subscribe.is_some(), "subscribe to {channel}: {r:?}");
    }

    /// The next reply or push (pings answered), or how the server closed.
    async fn next(&mut self) -> Result<Reply, Closed> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Ok(r);
            }
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the server said nothing for 5 s");
            match msg {
                Some(Ok(Message::Binary(b))) => {
                    for r in parse_replies(&b) {
                        let r = r.expect("the server sends valid protobuf");
                        if r.id == 0 && r.push.is_none() {
                            self.send(vec![0]).await; // pong
                            continue;
                        }
                        self.pending.push_back(r);
                    }
                }
                Some(Ok(Message::Text(t))) => panic!("a text frame on a protobuf connection: {t}"),
                other => {
                    if let Some(closed) = Closed::ending(other) {
                        return Err(closed);
                    }
                }
            }
        }
    }

    /// The next push that is not a join or leave (replies skipped).
    async fn next_push(&mut self) -> crier_proto::client::Push {
        loop {
            let r = self.next().await.unwrap_or_else(|c| panic!("closed: {c:?}"));
            match r.push {
                Some(p) if p.join.is_none() && p.leave.is_none() => return p,
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn a_client_selects_protobuf_by_subprotocol_or_query_and_json_stays_the_default() {
    let s = TestServer::start(config("")).await;
    let url = s.ws_url();
    let by_protocol = ProtoClient::connect(&url, Some("centrifuge-protobuf"), &token("a")).await;
    assert_eq!(by_protocol.protocol.as_deref(), Some("centrifuge-protobuf"));
    for query in ["format=protobuf", "cf_protocol=protobuf"] {
        let c = ProtoClient::connect(&format!("{url}?{query}"), None, &token("b")).await;
        assert!(!c.id.is_empty(), "{query}");
        assert_eq!(c.protocol, None, "{query}: no subprotocol was offered");
    }
    // Without either, the same endpoint speaks JSON.
    let json_client = Client::connect(&url, &token("c")).await;
    assert!(!json_client.id.is_empty());
    s.shutdown().await;
}

/// Subscribers of every kind on one channel: JSON, protobuf, compressed
/// JSON (permessage-deflate) and emulated (HTTP streaming), each also with
/// an excluded twin. Every publication reaches every kind once, in offset
/// order; the exclusion holds for all four.
#[tokio::test]
async fn one_channel_feeds_every_kind_of_subscriber_in_order_with_exclusions() {
    use super::compression::{compressing, RawWs, OFFER};
    use super::emulation::{batch, connected, next, post};
    let mut cfg = compressing(0);
    cfg.http_stream.enabled = true;
    let s = TestServer::start(cfg).await;
    let url = s.ws_url();
    let channel = "chat:mixed";
    let mut pb = ProtoClient::connect(&url, Some("centrifuge-protobuf"), &token("pb")).await;
    let mut pb_excluded = ProtoClient::connect(&url, Some("centrifuge-protobuf"), &token("pb-x")).await;
    let mut js = Client::connect(&url, &token("js")).await;
    let mut js_excluded = Client::connect(&url, &token("js-x")).await;
    pb.subscribe(channel).await;
    pb_excluded.subscribe(channel).await;
    for c in [&mut js, &mut js_excluded] {
        let r = c.request(json!({"subscribe": {"channel": channel}})).await;
        assert!(r["error"].is_null(), "{r}");
    }
    // Compressed JSON over a raw socket.
    let mut zipped = Vec::new();
    for user in ["zip", "zip-x"] {
        let mut c = RawWs::open(&s, Some(OFFER)).await;
        assert!(c.extensions.is_some(), "compression agreed");
        c.send_json(json!({"id": 1, "connect": {"token": token(user)}}))
            .await;
        let (reply, _) = c.messages().await;
        let id = reply[0]["connect"]["client"].as_str().expect("client").to_owned();
        c.send_json(json!({"id": 2, "subscribe": {"channel": channel}}))
            .await;
        let (reply, _) = c.messages().await;
        assert!(
            reply
                .iter()
                .any(|r| r["id"] == json!(2) && r["subscribe"].is_object()),
            "{reply:?}"
        );
        zipped.push((c, id));
    }
    // Emulated, commands through /emulation.
    let mut emulated = Vec::new();
    for user in ["emu", "emu-x"] {
        let (stream, session, node, id) = connected(&s, user).await;
        let sub = json!({"id": 2, "subscribe": {"channel": channel}});
        assert_eq!(
            post(&s, batch(&node, &session, &[sub]), "application/json").await,
            204
        );
        let (stream, reply) = next(stream).await;
        assert!(
            reply.as_ref().is_some_and(|r| r["subscribe"].is_object()),
            "{reply:?}"
        );
        emulated.push((stream, id));
    }
    let excluded = json!([pb_excluded.id, js_excluded.id, zipped[1].1, emulated[1].1]);
    for n in 1..=20 {
        let (status, body) = s
            .api(
                "publish",
                json!({"channel": channel, "data": {"n": n}, "exclude_clients": excluded}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // A marker everyone gets, so the excluded ones show they got nothing
    // before it.
    s.api("publish", json!({"channel": channel, "data": {"n": 0}}))
        .await;
    let is_pub = |v: &Value| v["push"]["pub"].is_object();
    let mut offsets = Vec::new();
    for n in 1..=20 {
        let p = pb.next_push().await;
        let publication = p.publication.expect("a publication");
        let got: Value =
            serde_json::from_slice(publication.data.as_ref().expect("data").as_bytes()).expect("JSON");
        assert_eq!(got, json!({"n": n}), "protobuf subscriber, publication {n}");
        let j = js.next_pub().await;
        assert_eq!(
            j["pub"]["data"],
            json!({"n": n}),
            "JSON subscriber, publication {n}"
        );
        assert_eq!(j["pub"]["offset"], json!(publication.offset));
        offsets.push(publication.offset);
    }
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "offsets {offsets:?}"
    );
    // The compressed subscriber: the same offsets, in order.
    let mut got = Vec::new();
    while got.len() < 21 {
        let (messages, _) = zipped[0].0.messages().await;
        got.extend(messages.into_iter().filter(|m| is_pub(m)));
    }
    let zipped_offsets: Vec<u64> = got[..20]
        .iter()
        .map(|m| m["push"]["pub"]["offset"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(zipped_offsets, offsets, "compressed subscriber");
    assert_eq!(got[20]["push"]["pub"]["data"], json!({"n": 0}));
    // The emulated subscriber: the same.
    let (mut stream, _) = emulated.remove(0);
    let mut got = Vec::new();
    while got.len() < 21 {
        let (rest, v) = next(stream).await;
        stream = rest;
        let v = v.expect("the stream goes on");
        if is_pub(&v) {
            got.push(v);
        }
    }
    let emulated_offsets: Vec<u64> = got[..20]
        .iter()
        .map(|m| m["push"]["pub"]["offset"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(emulated_offsets, offsets, "emulated subscriber");
    // Every excluded twin's first publication is the marker.
    let first = pb_excluded.next_push().await.publication.expect("publication");
    assert_eq!(
        first.data.as_ref().map(Payload::as_bytes),
        Some(&br#"{"n":0}"#[..])
    );
    let first = js_excluded.next_pub().await;
    assert_eq!(first["pub"]["data"], json!({"n": 0}));
    let first = loop {
        let (messages, _) = zipped[1].0.messages().await;
        if let Some(m) = messages.into_iter().find(|m| is_pub(m)) {
            break m;
        }
    };
    assert_eq!(
        first["push"]["pub"]["data"],
        json!({"n": 0}),
        "compressed, excluded"
    );
    let (mut stream, _) = emulated.remove(0);
    let first = loop {
        let (rest, v) = next(stream).await;
        stream = rest;
        let v = v.expect("the stream goes on");
        if is_pub(&v) {
            break v;
        }
    };
    assert_eq!(
        first["push"]["pub"]["data"],
        json!({"n": 0}),
        "emulated, excluded"
    );
    s.shutdown().await;
}

/// A client that publishes many times in one frame: what that read
/// publishes reaches each subscriber whose writer waits in one write at
/// the read's end, from the publisher's thread (`crier_core::defer_wakes`),
/// in JSON and in protobuf frames alike. Every subscriber gets every
/// publication once, in order; the publisher, subscribed too, gets its
/// own publications and its replies, each in order.
#[tokio::test]
async fn what_one_frame_of_publishes_reaches_json_and_protobuf_subscribers_whole_and_in_order() {
    let s = TestServer::start(config("")).await;
    let url = s.ws_url();
    let channel = "chat:corked";
    let mut pbs = Vec::new();
    let mut jss = Vec::new();
    for i in 0..3 {
        let mut pb = ProtoClient::connect(&url, Some("centrifuge-protobuf"), &token(&format!("pb{i}"))).await;
        pb.subscribe(channel).await;
        pbs.push(pb);
        let mut js = Client::connect(&url, &token(&format!("js{i}"))).await;
        let r = js.request(json!({"subscribe": {"channel": channel}})).await;
        assert!(r["error"].is_null(), "{r}");
        jss.push(js);
    }
    let mut publisher = Client::connect(&url, &token("publisher")).await;
    let r = publisher
        .request(json!({"subscribe": {"channel": channel}}))
        .await;
    assert!(r["error"].is_null(), "{r}");
    let n = 300;
    for round in 0..3 {
        let first = round * n;
        let frame: Vec<String> = (first..first + n)
            .map(|k| json!({"id": 1000 + k, "publish": {"channel": channel, "data": {"k": k}}}).to_string())
            .collect();
        publisher.send_text(&frame.join("\n")).await;
        for (i, pb) in pbs.iter_mut().enumerate() {
            for k in first..first + n {
                let p = pb.next_push().await.publication.expect("a publication");
                let got: Value =
                    serde_json::from_slice(p.data.as_ref().expect("data").as_bytes()).expect("JSON");
                assert_eq!(got, json!({"k": k}), "protobuf subscriber {i}");
            }
        }
        for (i, js) in jss.iter_mut().enumerate() {
            for k in first..first + n {
                assert_eq!(
                    js.next_pub().await["pub"]["data"],
                    json!({"k": k}),
                    "JSON subscriber {i}"
                );
            }
        }
        let (mut pubs, mut replies) = (Vec::new(), Vec::new());
        while pubs.len() < n || replies.len() < n {
            let m = publisher.next().await;
            if m["push"]["pub"].is_object() {
                pubs.push(m["push"]["pub"]["data"]["k"].as_u64().expect("k"));
            } else {
                assert!(m["publish"].is_object(), "{m}");
                replies.push(m["id"].as_u64().expect("id"));
            }
        }
        let range = first as u64..(first + n) as u64;
        assert_eq!(
            pubs,
            range.clone().collect::<Vec<_>>(),
            "the publisher's own publications"
        );
        assert_eq!(
            replies,
            range.map(|k| 1000 + k).collect::<Vec<_>>(),
            "the replies"
        );
    }
    assert_eq!(s.node.hub.stats().dropped_slow, 0);
    s.shutdown().await;
}

#[tokio::test]
async fn binary_data_reaches_protobuf_clients_as_is_and_json_clients_as_null() {
    let s = TestServer::start(config("")).await;
    let url = s.ws_url();
    let mut publisher = ProtoClient::connect(&format!("{url}?format=protobuf"), None, &token("pub")).await;
    let mut js = Client::connect(&url, &token("js")).await;
    let channel = "chat:binary";
    publisher.subscribe(channel).await;
    let r = js.request(json!({"subscribe": {"channel": channel}})).await;
    assert!(r["error"].is_null(), "{r}");
    let binary = [0u8, 0xff, b'\n', b'{', 0x80];
    let r = publisher
        .request(Command {
            publish: Some(PublishRequest {
                channel: channel.to_owned(),
                data: Some(Payload::new(Bytes::copy_from_slice(&binary))),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert!(r.publish.is_some() && r.error.is_none(), "{r:?}");
    let got = publisher.next_push().await.publication.expect("publication");
    assert_eq!(got.data.as_ref().map(Payload::as_bytes), Some(&binary[..]));
    assert_eq!(
        got.info.as_ref().map(|i| i.client.as_str()),
        Some(publisher.id.as_str())
    );
    let j = js.next_pub().await;
    assert_eq!(j["pub"]["data"], json!(null), "{j}");
    assert_eq!(j["pub"]["offset"], json!(got.offset));
    // The API's history holds the bytes; its JSON answer shows `null` too.
    let (_, history) = s.api("history", json!({"channel": channel, "limit": 10})).await;
    let first = &history["result"]["publications"][0];
    assert_eq!(first["offset"], json!(got.offset), "{history}");
    assert_eq!(first["data"], json!(null), "{history}");
    s.shutdown().await;
}

#[tokio::test]
async fn server_side_subscribe_and_unsubscribe_pushes_come_in_protobuf() {
    let s = TestServer::start(config("")).await;
    let mut pb = ProtoClient::connect(&format!("{}?format=protobuf", s.ws_url()), None, &token("srv")).await;
    let mut js = Client::connect(&s.ws_url(), &token("srv")).await;
    // No namespace: no join/leave pushes in between.
    let channel = "server-side";
    let (status, body) = s
        .api(
            "subscribe",
            json!({"user": "srv", "channel": channel, "data": {"why": "api"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let push = pb.next_push().await;
    assert_eq!(push.channel, channel);
    let sub = push.subscribe.expect("a subscribe push");
    assert_eq!(
        sub.data.as_ref().and_then(Payload::as_str),
        Some(r#"{"why":"api"}"#)
    );
    let j = js.next().await;
    assert_eq!(j["push"]["subscribe"]["data"], json!({"why": "api"}), "{j}");
    s.api("unsubscribe", json!({"user": "srv", "channel": channel}))
        .await;
    let push = pb.next_push().await;
    assert_eq!(push.unsubscribe.map(|u| u.code), Some(2000));
    let j = js.next().await;
    assert_eq!(j["push"]["unsubscribe"]["code"], json!(2000), "{j}");
    s.shutdown().await;
}

#[tokio::test]
async fn frames_that_do_not_decode_close_with_3501_and_others_stay_served() {
    let s = TestServer::start(config("")).await;
    let mut w = watcher(&s).await;
    let url = format!("{}?format=protobuf", s.ws_url());
    let ping = {
        let mut b = BytesMut::new();
        command_frame(
            &mut b,
            &Command {
                id: 2,
                ping: Some(Default::default()),
                ..Default::default()
            },
        );
        b.to_vec()
    };
    let cases: [(&str, Vec<u8>); 5] = [
        ("a truncated varint", vec![0x80]),
        ("a length beyond the frame", vec![0x05, 0x08, 0x01]),
        ("a 10 MB length prefix", vec![0x80, 0xad, 0xe2, 0x04, 0x08, 0x01]),
        ("an id of the wrong wire type", vec![0x03, 0x0a, 0x01, 0x41]),
        (
            "a good command, then garbage",
            [ping.clone(), vec![0x02, 0x2a, 0x05]].concat(),
        ),
    ];
    for (what, frame) in cases {
        let mut c = ProtoClient::connect(&url, None, &token("bad")).await;
        c.send(frame).await;
        let mut replies = Vec::new();
        let closed = loop {
            match c.next().await {
                Ok(r) => replies.push(r),
                Err(closed) => break closed,
            }
        };
        assert_eq!(closed.code, 3501, "{what}: {closed:?}");
        if what.starts_with("a good command") {
            assert!(
                replies.iter().any(|r| r.id == 2 && r.ping.is_some()),
                "{what}: {replies:?}"
            );
        }
        assert_still_served(&s, &mut w).await;
    }
    // Before connect too: a bad first frame.
    let mut c = ProtoClient::open(&url, None).await;
    c.send(vec![0xff]).await;
    assert_eq!(c.next().await.map(|r| r.id).unwrap_err().code, 3501);
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;
}
