//! Bidirectional emulation (`/connection/http_stream`, `/connection/sse`,
//! `POST /emulation`) from a plain HTTP client: the stream, commands
//! through `/emulation`, and every refusal a client or a stranger can get.
//! (centrifuge-js over both, across three nodes: `interop.rs`.)

use std::io::{BufRead, BufReader};
use std::sync::mpsc;

use serde_json::{json, Value};

use super::support::*;

fn emulating() -> crier_server::config::Config {
    config("[http_stream]\nenabled = true\n[sse]\nenabled = true\n")
}

/// A JSON HTTP stream: its lines arrive on a channel (read by a thread).
pub(super) struct Stream {
    lines: mpsc::Receiver<Value>,
}

impl Stream {
    /// The next message that is not a ping; `None` once the stream ended.
    pub(super) fn next(&self) -> Option<Value> {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(v) if v == json!({}) => {}
                Ok(v) => return Some(v),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("nothing on the stream for 5 s"),
            }
        }
    }
}

/// POSTs `body` to `/emulation`; the HTTP status.
pub(super) async fn post(s: &TestServer, body: String, content_type: &'static str) -> u16 {
    let url = format!("http://{}/emulation", s.addr);
    tokio::task::spawn_blocking(move || {
        let agent = http_agent();
        let resp = agent
            .post(&url)
            .header("Content-Type", content_type)
            .send(body)
            .expect("POST /emulation");
        resp.status().as_u16()
    })
    .await
    .expect("blocking task")
}

/// An emulation request carrying `commands` (JSON lines) for `session`.
pub(super) fn batch(node: &str, session: &str, commands: &[Value]) -> String {
    let data: Vec<String> = commands.iter().map(Value::to_string).collect();
    json!({"node": node, "session": session, "data": data.join("\n")}).to_string()
}

/// Opens a stream and connects as `user`: the stream, session, node and
/// client id.
pub(super) async fn connected(s: &TestServer, user: &str) -> (Stream, String, String, String) {
    let url = format!("http://{}/connection/http_stream", s.addr);
    let connect = json!({"id": 1, "connect": {"token": token(user)}});
    let stream = tokio::task::spawn_blocking(move || open_url(url, connect))
        .await
        .expect("blocking task");
    let (stream, reply) = next(stream).await;
    let reply = reply.expect("a connect reply");
    let result = &reply["connect"];
    let session = result["session"].as_str().expect("a session id").to_owned();
    let node = result["node"].as_str().expect("a node id").to_owned();
    assert_eq!(session.len(), 32, "128 bits of session id: {session}");
    let client = result["client"].as_str().expect("a client id").to_owned();
    (stream, session, node, client)
}

/// Opens `POST url` with the connect command; its JSON lines arrive on a
/// channel, read by a thread.
fn open_url(url: String, connect: Value) -> Stream {
    let (tx, lines) = mpsc::channel();
    let (ready, started) = mpsc::channel();
    std::thread::spawn(move || {
        let agent = http_agent();
        let resp = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(connect.to_string())
            .expect("stream request");
        let _ = ready.send(resp.status().as_u16());
        let reader = BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line).expect("JSON lines");
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    assert_eq!(started.recv_timeout(WAIT), Ok(200), "the stream opens");
    Stream { lines }
}

/// The next message on `stream`, off the async runtime.
pub(super) async fn next(stream: Stream) -> (Stream, Option<Value>) {
    tokio::task::spawn_blocking(move || {
        let v = stream.next();
        (stream, v)
    })
    .await
    .expect("blocking task")
}

#[tokio::test]
async fn commands_posted_to_emulation_reach_the_stream_of_their_session() {
    let s = TestServer::start(emulating()).await;
    let (stream, session, node, _) = connected(&s, "emu").await;
    let sub = json!({"id": 2, "subscribe": {"channel": "news"}});
    assert_eq!(
        post(&s, batch(&node, &session, &[sub]), "application/json").await,
        204
    );
    let (stream, reply) = next(stream).await;
    let reply = reply.expect("a subscribe reply");
    assert_eq!(reply["id"], json!(2), "{reply}");
    assert!(reply["subscribe"].is_object(), "{reply}");
    s.api("publish", json!({"channel": "news", "data": {"n": 1}}))
        .await;
    let (stream, push) = next(stream).await;
    assert_eq!(push.expect("a push")["push"]["pub"]["data"], json!({"n": 1}));
    // A bad command in a batch ends the session with 3501, said on the
    // stream, which then ends.
    let raw = json!({"node": node, "session": session, "data": "{not json"}).to_string();
    assert_eq!(post(&s, raw, "application/json").await, 204);
    let mut stream = stream;
    let mut seen = Vec::new();
    let ended = loop {
        let (s2, v) = next(stream).await;
        stream = s2;
        match v {
            Some(v) if v["push"]["disconnect"].is_object() => break v,
            Some(v) => seen.push(v),
            None => panic!("the stream ended without a disconnect push: {seen:?}"),
        }
    };
    assert_eq!(ended["push"]["disconnect"]["code"], json!(3501), "{ended}");
    assert_eq!(next(stream).await.1, None, "the stream ends after the disconnect");
    // The session is gone: its POSTs now get 404, so the client reconnects.
    let ping = json!({"id": 4, "ping": {}});
    assert_eq!(
        post(&s, batch(&node, &session, &[ping]), "application/json").await,
        404
    );
    s.shutdown().await;
}

#[tokio::test]
async fn emulation_refuses_strangers_garbage_and_oversized_batches() {
    let s = TestServer::start(emulating()).await;
    let mut w = watcher(&s).await;
    let (_stream, session, node, _) = connected(&s, "emu-refusals").await;
    let ping = json!({"id": 2, "ping": {}});
    // A session id nobody was given (one character off a real one).
    let mut guessed = session.clone();
    guessed.replace_range(0..1, if session.starts_with('0') { "1" } else { "0" });
    assert_eq!(
        post(
            &s,
            batch(&node, &guessed, std::slice::from_ref(&ping)),
            "application/json"
        )
        .await,
        404
    );
    assert_eq!(
        post(
            &s,
            batch(&node, "", std::slice::from_ref(&ping)),
            "application/json"
        )
        .await,
        404
    );
    assert_eq!(post(&s, "{\"session\":".into(), "application/json").await, 400);
    assert_eq!(
        post(&s, "\u{80}\u{ff}".into(), "application/octet-stream").await,
        400
    );
    let huge = batch(
        &node,
        &session,
        &[json!({"id": 3, "publish": {"channel": "news", "data": "x".repeat(70_000)}})],
    );
    assert_eq!(post(&s, huge, "application/json").await, 413);
    assert_still_served(&s, &mut w).await;
    s.shutdown().await;

    // Without http_stream and sse, no emulation endpoint either.
    let off = TestServer::start(config("")).await;
    assert_eq!(
        post(&off, batch("n", "s", &[json!({})]), "application/json").await,
        404
    );
    off.shutdown().await;
}

#[tokio::test]
async fn a_refused_connect_is_said_on_the_stream_which_then_ends() {
    let s = TestServer::start(emulating()).await;
    let url = format!("http://{}/connection/http_stream", s.addr);
    let stream = tokio::task::spawn_blocking(move || {
        open_url(url, json!({"id": 1, "connect": {"token": "not.a.token"}}))
    })
    .await
    .expect("blocking task");
    let (stream, first) = next(stream).await;
    let first = first.expect("an answer");
    assert_eq!(first["push"]["disconnect"]["code"], json!(3500), "{first}");
    assert_eq!(next(stream).await.1, None);
    s.shutdown().await;
}
