//! One admission path: every rule (token, anonymous rules, limits, expiry
//! with `client.expired_close_delay`) decides the same on every transport
//! that accepts clients.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::support::*;

const ALL: &str = r#"
[uni_sse]
enabled = true
[uni_http_stream]
enabled = true
[uni_websocket]
enabled = true
[[tcp]]
listen = "127.0.0.1:0"
framing = "delimited"
start = "<"
end = ">"
token = true
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    WebSocket,
    UniHttpStream,
    UniSse,
    UniWebSocket,
    Tcp,
}

const TRANSPORTS: [Transport; 5] = [
    Transport::WebSocket,
    Transport::UniHttpStream,
    Transport::UniSse,
    Transport::UniWebSocket,
    Transport::Tcp,
];

/// What the client saw, in one vocabulary for every transport.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Admitted,
    InvalidToken,
    PermissionDenied,
    ConnectionLimit,
    Expired,
    Other(String),
}

fn of_code(code: u64) -> Outcome {
    match code {
        3500 => Outcome::InvalidToken,
        3507 => Outcome::PermissionDenied,
        3504 => Outcome::ConnectionLimit,
        109 | 110 | 3005 => Outcome::Expired,
        c => Outcome::Other(c.to_string()),
    }
}

/// An open connection: kept alive while held.
enum Conn {
    Ws(Client),
    Stream(tokio::io::Lines<BufReader<TcpStream>>),
    UniWs(tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>),
    Tcp(TcpStream),
}

struct Server {
    s: TestServer,
    tcp: std::net::SocketAddr,
}

async fn start(edit: impl FnOnce(&mut crier_server::config::Config)) -> Server {
    let mut c = config(ALL);
    edit(&mut c);
    let (s, tcp) = TestServer::start_with_tcp(c).await;
    Server { s, tcp: tcp[0] }
}

/// Reads HTTP stream lines until the first JSON message.
async fn first_json(lines: &mut tokio::io::Lines<BufReader<TcpStream>>) -> Value {
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("server silent for 5 s")
            .expect("io")
            .expect("stream ended before a message");
        let json = line.strip_prefix("data: ").unwrap_or(&line);
        if json.starts_with('{') && json != "{}" {
            return serde_json::from_str(json).expect("JSON");
        }
    }
}

fn uni_outcome(first: &Value) -> Outcome {
    if first["connect"].is_object() {
        Outcome::Admitted
    } else {
        of_code(first["disconnect"]["code"].as_u64().unwrap_or(0))
    }
}

async fn attempt(srv: &Server, t: Transport, token: &str) -> (Outcome, Option<Conn>) {
    let s = &srv.s;
    match t {
        Transport::WebSocket => {
            let mut c = Client::open(&s.ws_url()).await;
            c.send_text(&json!({"id": 1, "connect": {"token": token}}).to_string())
                .await;
            match c.next_raw().await {
                Ok(v) if v["connect"].is_object() => (Outcome::Admitted, Some(Conn::Ws(c))),
                Ok(v) => (of_code(v["error"]["code"].as_u64().unwrap_or(0)), None),
                Err(closed) => (of_code(u64::from(closed.code)), None),
            }
        }
        Transport::UniHttpStream | Transport::UniSse => {
            let path = if t == Transport::UniSse {
                "/connection/uni_sse"
            } else {
                "/connection/uni_http_stream"
            };
            let body = json!({"token": token}).to_string();
            let mut tcp = TcpStream::connect(s.addr).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            let mut lines = BufReader::new(tcp).lines();
            let first = first_json(&mut lines).await;
            let outcome = uni_outcome(&first);
            let conn = (outcome == Outcome::Admitted).then_some(Conn::Stream(lines));
            (outcome, conn)
        }
        Transport::UniWebSocket => {
            let url = format!("ws://{}/connection/uni_websocket", s.addr);
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            ws.send(Message::text(json!({"token": token}).to_string()))
                .await
                .unwrap();
            let first = loop {
                match tokio::time::timeout(WAIT, ws.next()).await.expect("silent 5 s") {
                    Some(Ok(Message::Text(text))) => {
                        let v: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
                        if v != json!({}) {
                            break v;
                        }
                    }
                    Some(Ok(Message::Close(Some(frame)))) => {
                        break json!({"disconnect": {"code": u16::from(frame.code)}})
                    }
                    Some(Ok(_)) => {}
                    other => panic!("uni_websocket ended: {other:?}"),
                }
            };
            let outcome = uni_outcome(&first);
            let conn = (outcome == Outcome::Admitted).then_some(Conn::UniWs(ws));
            (outcome, conn)
        }
        Transport::Tcp => {
            // A refusal is one error frame, then the close; an admitted
            // client is registered with the hub and hears nothing.
            let user = claimed_user(token).unwrap_or_default();
            let before = s.node.hub.clients_of_user(&user).len();
            let mut tcp = TcpStream::connect(srv.tcp).await.unwrap();
            // An empty frame carries nothing on TCP: a blank one is "no token".
            let frame = if token.is_empty() {
                "< >".to_owned()
            } else {
                format!("<{token}>")
            };
            tcp.write_all(frame.as_bytes()).await.unwrap();
            let mut buf = [0u8; 256];
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                if s.node.hub.clients_of_user(&user).len() > before {
                    return (Outcome::Admitted, Some(Conn::Tcp(tcp)));
                }
                if let Ok(read) = tokio::time::timeout(Duration::from_millis(20), tcp.peek(&mut buf)).await {
                    let n = read.unwrap_or(0);
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let outcome = match text.as_str() {
                        "<error: invalid token>" => Outcome::InvalidToken,
                        "<error: anonymous tokens are not allowed>" => Outcome::PermissionDenied,
                        "<error: connection limit reached>" => Outcome::ConnectionLimit,
                        "<error: token expired>" => Outcome::Expired,
                        t if t.starts_with("<error") && !t.ends_with('>') => continue,
                        other => Outcome::Other(other.to_owned()),
                    };
                    return (outcome, None);
                }
                assert!(tokio::time::Instant::now() < deadline, "tcp: no answer in 5 s");
            }
        }
    }
}

fn claimed_user(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v["sub"].as_str().filter(|u| !u.is_empty()).map(str::to_owned)
}

fn signed(user: &str, exp: i64) -> String {
    crier_server::auth::TokenBuilder::new()
        .user(user)
        .exp(exp)
        .sign_hs256(SECRET)
}

#[tokio::test]
async fn every_admission_rule_decides_alike_on_every_transport() {
    // (what the rule is, config change, token for a user, expected outcome)
    type Edit = fn(&mut crier_server::config::Config);
    type Case = (&'static str, Edit, fn(&str) -> String, Outcome);
    // Each token is made for one user per transport, so one transport's
    // connections never count for another's.
    let cases: [Case; 6] = [
        ("a valid token", |_| {}, token, Outcome::Admitted),
        (
            "a bad token",
            |_| {},
            |_| "not-a-jwt".into(),
            Outcome::InvalidToken,
        ),
        (
            "no token, anonymous not allowed",
            |_| {},
            |_| String::new(),
            Outcome::InvalidToken,
        ),
        (
            "no token, allow_anonymous_connect_without_token",
            |c| c.client.allow_anonymous_connect_without_token = true,
            |_| String::new(),
            Outcome::Admitted,
        ),
        (
            "an empty sub with disallow_anonymous_connection_tokens",
            |c| c.client.disallow_anonymous_connection_tokens = true,
            |_| token(""),
            Outcome::PermissionDenied,
        ),
        (
            "an exp in the past",
            |_| {},
            |u| signed(u, unix_now() - 10),
            Outcome::Expired,
        ),
    ];
    for (rule, edit, make_token, want) in cases {
        let srv = start(edit).await;
        // Held to the end: a closing connection would still count.
        let mut open = Vec::new();
        for t in TRANSPORTS {
            let (got, conn) = attempt(&srv, t, &make_token(&format!("user-{t:?}"))).await;
            assert_eq!(got, want, "{rule} on {t:?}");
            open.extend(conn);
        }
        srv.s.shutdown().await;
    }
}

#[tokio::test]
async fn user_connection_limit_applies_on_every_transport() {
    let srv = start(|c| c.client.user_connection_limit = 1).await;
    for t in TRANSPORTS {
        let user = format!("limited-{t:?}");
        let (first, _kept) = attempt(&srv, t, &token(&user)).await;
        assert_eq!(first, Outcome::Admitted, "{t:?}");
        let (second, _) = attempt(&srv, t, &token(&user)).await;
        assert_eq!(second, Outcome::ConnectionLimit, "{t:?}");
    }
    srv.s.shutdown().await;
}

#[tokio::test]
async fn an_expiring_connection_closes_after_expired_close_delay_on_every_transport() {
    let delay = Duration::from_secs(2);
    let srv = start(|c| c.client.expired_close_delay = delay).await;
    // Far enough ahead that every transport connects before it, even on
    // a loaded machine (whole seconds: 1 s once left only a few ms).
    let exp = unix_now() + 3;
    let mut open = Vec::new();
    for t in TRANSPORTS {
        let (outcome, conn) = attempt(&srv, t, &signed(&format!("exp-{t:?}"), exp)).await;
        assert_eq!(outcome, Outcome::Admitted, "{t:?}");
        open.push((t, conn.expect("admitted")));
    }
    let earliest = UNIX_EPOCH + Duration::from_secs(exp as u64) + delay - Duration::from_millis(50);
    for (t, conn) in open {
        match conn {
            Conn::Ws(mut c) => assert_eq!(c.closed().await.code, 3005, "{t:?}"),
            Conn::Stream(mut lines) => loop {
                match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
                    Ok(Ok(Some(line))) if line.contains("3005") => break,
                    Ok(Ok(Some(_))) => {}
                    other => panic!("{t:?}: stream ended without 3005: {other:?}"),
                }
            },
            Conn::UniWs(mut ws) => loop {
                match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Close(Some(f))))) => {
                        assert_eq!(u16::from(f.code), 3005, "{t:?}");
                        break;
                    }
                    Ok(Some(Ok(_))) => {}
                    other => panic!("{t:?}: ended without a close: {other:?}"),
                }
            },
            Conn::Tcp(mut tcp) => {
                let mut buf = [0u8; 64];
                loop {
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
                    )
                    .await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) => {}
                        Err(_) => panic!("{t:?}: still open 10 s later"),
                    }
                }
            }
        }
        assert!(
            SystemTime::now() >= earliest,
            "{t:?} closed before exp + expired_close_delay"
        );
    }
    srv.s.shutdown().await;
}
