//! `crier subscribe`: the smallest useful client protocol v2 (JSON) client.
//! Connects, subscribes to one channel, answers pings, and prints every
//! publication as one JSON line on stdout, flushed, so it works in pipes.
//! Status (subscribed, errors, disconnects) goes to stderr.
//!
//! Frames are read as maps of raw JSON values, so publication data is
//! printed byte for byte as the server sent it. An unsubscribe push with a
//! code of 2500 or more (the server lost state, or the subscription
//! expired) is answered as the SDKs do: a new subscribe that recovers from
//! the last offset seen, so nothing is missed or printed twice. A
//! disconnect with a reconnect code (or a lost connection) reconnects with
//! backoff and recovers the same way; a terminal one ends the command,
//! non-zero (`--no-reconnect` ends it on any disconnect).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::print_line;

/// Subscribe to CHANNEL and print each publication as a JSON line.
///
/// Each line on stdout is {"channel":"...","offset":N,"data":...}; once the
/// subscription is confirmed, "subscribed to CHANNEL" is printed on stderr.
/// Like the SDKs, it reconnects after a disconnect with a reconnect code
/// (3000–3499) or a lost connection, with backoff (0.5 s doubling to 10 s),
/// and recovers from the last offset it printed, so nothing is missed or
/// printed twice when the channel keeps history. Exits non-zero when the
/// server refuses or disconnects for good (3500–3999), 0 on Ctrl-C.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The channel to subscribe to.
    channel: String,
    /// The server's WebSocket endpoint.
    #[arg(
        long,
        value_name = "URL",
        default_value = "ws://127.0.0.1:8000/connection/websocket"
    )]
    url: String,
    /// Connection token (see `crier token`); not needed when the server
    /// runs with --dev or client.insecure.
    #[arg(long, value_name = "T", env = "CRIER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Subscription token for CHANNEL (see `crier token --channel`), for
    /// channels that do not let every connection subscribe.
    #[arg(long, value_name = "T")]
    sub_token: Option<String>,
    /// Exit on a disconnect an SDK would reconnect after (3000–3499, a lost
    /// connection), instead of reconnecting with backoff and recovering.
    #[arg(long)]
    no_reconnect: bool,
}

/// One JSON message of a frame, one level deep; values stay raw.
type Fields<'a> = BTreeMap<String, &'a RawValue>;

const CONNECT_ID: u64 = 1;
const SUBSCRIBE_ID: u64 = 2;

pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(subscribe(args))
}

/// How one connection ended.
enum End {
    /// Ctrl-C: exit 0.
    Interrupted,
    /// Exit with this error (refused, terminal disconnect, a first connect
    /// that failed).
    Fail(anyhow::Error),
    /// Lost, or closed with a code an SDK reconnects after: reconnect
    /// (unless --no-reconnect) and recover from the last offset.
    Retry(anyhow::Error),
}

async fn subscribe(args: Args) -> anyhow::Result<()> {
    let url = websocket_url(&args.url)?;
    let mut state = Session {
        channel: args.channel.clone(),
        sub_token: args.sub_token.clone().filter(|t| !t.is_empty()),
        position: None,
    };
    let mut backoff = RETRY_FIRST;
    let mut attempt = 0u32;
    loop {
        let subscribed_before = state.position.clone();
        match connection(&url, &args, &mut state, attempt == 0).await {
            End::Interrupted => return Ok(()),
            End::Fail(e) => return Err(e),
            End::Retry(e) if args.no_reconnect => return Err(e),
            End::Retry(e) => {
                // A connection that got as far as a new position starts the
                // backoff again.
                if state.position != subscribed_before {
                    backoff = RETRY_FIRST;
                }
                eprintln!("{e:#}; reconnecting in {:.1} s", backoff.as_secs_f64());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
        attempt += 1;
    }
}

/// First wait before reconnecting; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
/// Longest wait between reconnects.
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// One connection: connect, subscribe (recovering from `state`'s position
/// after the first), print publications until it ends.
async fn connection(url: &str, args: &Args, state: &mut Session, first: bool) -> End {
    let socket = match tokio_tungstenite::connect_async(url).await {
        Ok((socket, _)) => socket,
        Err(e) if first => {
            return End::Fail(anyhow::Error::new(e).context(format!("cannot connect to {url}")))
        }
        Err(e) => return End::Retry(anyhow::Error::new(e).context(format!("cannot connect to {url}"))),
    };
    let (mut sink, mut stream) = socket.split();

    let mut connect = serde_json::Map::new();
    if let Some(token) = args.token.as_deref().filter(|t| !t.is_empty()) {
        connect.insert("token".into(), token.into());
    }
    connect.insert("name".into(), "crier".into());
    connect.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    let connect = serde_json::json!({ "id": CONNECT_ID, "connect": connect });
    if let Err(e) = sink.send(Message::text(connect.to_string())).await {
        return End::Retry(anyhow::Error::new(e).context("cannot send the connect command"));
    }
    loop {
        let message = tokio::select! {
            m = stream.next() => m,
            _ = tokio::signal::ctrl_c() => {
                let _ = sink.send(Message::Close(None)).await;
                return End::Interrupted;
            }
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                return End::Fail(anyhow!(
                    "the server sent a binary frame; this client speaks JSON only"
                ))
            }
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(frame) => {
                        let code = u16::from(frame.code);
                        let e = disconnected(code, &frame.reason);
                        if matches!(code, 3000..=3499 | 4000..=4499) {
                            End::Retry(e)
                        } else {
                            End::Fail(e)
                        }
                    }
                    None => End::Retry(anyhow!(
                        "disconnected: the server closed the connection without a code"
                    )),
                };
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return End::Retry(anyhow::Error::new(e).context("connection lost")),
            None => {
                return End::Retry(anyhow!(
                    "connection lost: the server went away without a close frame"
                ))
            }
        };
        for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
            let reply = match state.handle(line) {
                Ok(reply) => reply,
                Err(e) => return End::Fail(e),
            };
            let written = match reply {
                Reply::None => Ok(()),
                Reply::Subscribed(replayed) => {
                    eprintln!("subscribed to {}", state.channel);
                    replayed
                        .iter()
                        .try_for_each(|p| print_line(p).map_err(anyhow::Error::new))
                }
                Reply::Print(publication) => print_line(&publication).map_err(anyhow::Error::new),
                Reply::Send(command) => sink
                    .send(Message::text(command))
                    .await
                    .context("cannot write to the server"),
                Reply::Resubscribe(command, why) => {
                    eprintln!("{why}");
                    sink.send(Message::text(command))
                        .await
                        .context("cannot write to the server")
                }
            };
            if let Err(e) = written {
                return End::Fail(e);
            }
        }
    }
}

/// The WebSocket endpoint for what the user typed: `HOST:PORT` or an
/// `http://` base URL (as `crier serve` prints it) work too.
fn websocket_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim();
    let rest = if let Some(rest) = url.strip_prefix("ws://").or_else(|| url.strip_prefix("http://")) {
        rest
    } else if url.starts_with("wss://") || url.starts_with("https://") {
        bail!("{url}: this crier build speaks plain ws:// only (use a local TLS-terminating proxy)");
    } else if url.contains("://") {
        bail!("{url}: write the URL as ws://HOST:PORT/connection/websocket");
    } else {
        url
    };
    Ok(match rest.split_once('/') {
        Some((host, path)) if !path.is_empty() => format!("ws://{host}/{path}"),
        Some((host, _)) => format!("ws://{host}/connection/websocket"),
        None => format!("ws://{rest}/connection/websocket"),
    })
}

/// What a received message asks of the client.
#[derive(Debug, PartialEq)]
enum Reply {
    /// Nothing: the message is not for this command.
    None,
    /// Print this publication line.
    Print(String),
    /// The subscription is confirmed; print these publications first (the
    /// ones a recovery replayed).
    Subscribed(Vec<String>),
    /// Say this on stderr, then send the command.
    Resubscribe(String, String),
    /// Send this command.
    Send(String),
}

/// The client's protocol state between frames.
struct Session {
    /// The channel asked for on the command line.
    channel: String,
    /// Its subscription token, if one was given.
    sub_token: Option<String>,
    /// Offset and epoch of the last publication seen, when the channel has
    /// a position (history), to recover from after an unsubscribe 2500.
    position: Option<(u64, String)>,
}

impl Session {
    /// Handles one JSON message of a frame: turns publications into output
    /// lines and refusals into errors, and says what to send back.
    fn handle(&mut self, line: &str) -> anyhow::Result<Reply> {
        let fields: Fields<'_> =
            serde_json::from_str(line).with_context(|| format!("the server sent invalid JSON: {line}"))?;
        if fields.is_empty() {
            // A server ping; the pong is an empty command.
            return Ok(Reply::Send("{}".into()));
        }
        let id = match fields.get("id") {
            Some(id) => serde_json::from_str::<u64>(id.get()).unwrap_or(0),
            None => 0,
        };
        if let Some(error) = fields.get("error") {
            let (what, hint) = match id {
                CONNECT_ID => ("connect refused".to_string(), ""),
                SUBSCRIBE_ID if error_code(error) == Some(PERMISSION_DENIED) && self.sub_token.is_none() => (
                    format!("subscribe to {} refused", self.channel),
                    " (give a subscription token with --sub-token, or let the channel's namespace \
                     allow_subscribe_for_client)",
                ),
                SUBSCRIBE_ID => (format!("subscribe to {} refused", self.channel), ""),
                _ => ("the server replied with an error".to_string(), ""),
            };
            bail!("{what}: {}{hint}", describe(error));
        }
        if id == CONNECT_ID && fields.contains_key("connect") {
            return Ok(Reply::Send(self.subscribe_command()));
        }
        if id == SUBSCRIBE_ID {
            if let Some(result) = fields.get("subscribe") {
                return self.subscribed(result.get());
            }
        }
        match fields.get("push") {
            Some(push) => self.push(push.get()),
            None => Ok(Reply::None),
        }
    }

    /// The subscribe command: recovering from the last position seen, if
    /// there is one.
    fn subscribe_command(&self) -> String {
        let mut subscribe = serde_json::Map::new();
        subscribe.insert("channel".into(), self.channel.as_str().into());
        if let Some(token) = &self.sub_token {
            subscribe.insert("token".into(), token.as_str().into());
        }
        if let Some((offset, epoch)) = &self.position {
            subscribe.insert("recover".into(), true.into());
            subscribe.insert("offset".into(), (*offset).into());
            subscribe.insert("epoch".into(), epoch.as_str().into());
        }
        serde_json::json!({ "id": SUBSCRIBE_ID, "subscribe": subscribe }).to_string()
    }

    /// A subscribe reply: its position, and the publications it replayed.
    fn subscribed(&mut self, result: &str) -> anyhow::Result<Reply> {
        let result: Fields<'_> =
            serde_json::from_str(result).context("the server sent an invalid subscribe reply")?;
        let epoch: String = result
            .get("epoch")
            .and_then(|e| serde_json::from_str(e.get()).ok())
            .unwrap_or_default();
        let offset: u64 = result
            .get("offset")
            .and_then(|o| serde_json::from_str(o.get()).ok())
            .unwrap_or(0);
        if !epoch.is_empty() {
            self.position = Some((offset, epoch));
        }
        let publications: Vec<&RawValue> = match result.get("publications") {
            Some(list) => serde_json::from_str(list.get()).context("the server sent invalid publications")?,
            None => Vec::new(),
        };
        let mut replayed = Vec::with_capacity(publications.len());
        for publication in publications {
            replayed.push(self.publication(&serde_json::to_string(&self.channel)?, publication.get())?);
        }
        Ok(Reply::Subscribed(replayed))
    }

    /// One publication as an output line; its offset becomes the position.
    fn publication(&mut self, channel: &str, publication: &str) -> anyhow::Result<String> {
        let publication: Fields<'_> =
            serde_json::from_str(publication).context("the server sent an invalid publication")?;
        // Offset 0 is omitted on the wire.
        let offset = publication.get("offset").map_or("0", |o| o.get());
        if let (Some((position, _)), Ok(n)) = (self.position.as_mut(), offset.parse::<u64>()) {
            *position = n;
        }
        let data = publication.get("data").map_or("null", |d| d.get());
        Ok(format!(
            "{{\"channel\":{channel},\"offset\":{offset},\"data\":{data}}}"
        ))
    }

    fn push(&mut self, push: &str) -> anyhow::Result<Reply> {
        let push: Fields<'_> = serde_json::from_str(push).context("the server sent an invalid push")?;
        let channel = push.get("channel").map_or("\"\"", |c| c.get());
        if let Some(publication) = push.get("pub") {
            return Ok(Reply::Print(self.publication(channel, publication.get())?));
        }
        if let Some(unsubscribe) = push.get("unsubscribe") {
            // 2500 and up: the server lost state or the subscription
            // expired; an SDK resubscribes, recovering from its position.
            if error_code(unsubscribe).is_some_and(|c| c >= 2500) {
                let why = format!(
                    "unsubscribed from {channel} by the server ({}): resubscribing{}",
                    describe(unsubscribe),
                    match &self.position {
                        Some((offset, _)) => format!(" and recovering from offset {offset}"),
                        None => String::new(),
                    }
                );
                return Ok(Reply::Resubscribe(self.subscribe_command(), why));
            }
            bail!(
                "unsubscribed from {channel} by the server: {}",
                describe(unsubscribe)
            );
        }
        if let Some(disconnect) = push.get("disconnect") {
            bail!("disconnected: {}", describe(disconnect));
        }
        // join, leave, message and other pushes are not this command's output.
        Ok(Reply::None)
    }
}

/// Protocol error 103.
const PERMISSION_DENIED: u64 = 103;

fn error_code(raw: &RawValue) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    value.get("code")?.as_u64()
}

/// `{"code":N,"message":"..."}` or `{"code":N,"reason":"..."}` as `N text`.
fn describe(raw: &RawValue) -> String {
    let value: serde_json::Value = serde_json::from_str(raw.get()).unwrap_or_default();
    let code = error_code(raw).unwrap_or(0);
    let text = value
        .get("message")
        .or_else(|| value.get("reason"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    format!("{code} {text}")
}

/// The error for a close frame, saying whether a client SDK would retry.
fn disconnected(code: u16, reason: &str) -> anyhow::Error {
    let advice = match code {
        3000..=3499 | 4000..=4499 => "a client SDK would reconnect",
        3500..=3999 | 4500..=4999 => "terminal: a client SDK would not reconnect",
        _ => match CloseCode::from(code) {
            CloseCode::Normal | CloseCode::Away => "the server closed the connection",
            _ => "transport-level close",
        },
    };
    anyhow!("disconnected: {code} {reason} ({advice})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            channel: "news".into(),
            sub_token: None,
            position: None,
        }
    }

    #[test]
    fn websocket_url_forms() {
        let full = "ws://127.0.0.1:8000/connection/websocket";
        for typed in [
            full,
            "127.0.0.1:8000",
            "http://127.0.0.1:8000/",
            "ws://127.0.0.1:8000",
        ] {
            assert_eq!(websocket_url(typed).unwrap(), full, "{typed}");
        }
        assert_eq!(websocket_url("ws://h:1/other").unwrap(), "ws://h:1/other");
        assert!(websocket_url("wss://h/connection/websocket").is_err());
    }

    #[test]
    fn ping_gets_an_empty_pong() {
        assert_eq!(session().handle("{}").unwrap(), Reply::Send("{}".into()));
    }

    #[test]
    fn connect_reply_leads_to_subscribe() {
        let reply = session()
            .handle(r#"{"id":1,"connect":{"client":"c","version":"0.1.0","ping":25,"pong":true}}"#)
            .unwrap();
        assert_eq!(
            reply,
            Reply::Send(r#"{"id":2,"subscribe":{"channel":"news"}}"#.into())
        );
    }

    #[test]
    fn subscription_token_goes_with_subscribe() {
        let mut s = Session {
            channel: "news".into(),
            sub_token: Some("T".into()),
            position: None,
        };
        let reply = s.handle(r#"{"id":1,"connect":{}}"#).unwrap();
        assert_eq!(
            reply,
            Reply::Send(r#"{"id":2,"subscribe":{"channel":"news","token":"T"}}"#.into())
        );
    }

    #[test]
    fn subscribe_reply_confirms() {
        assert_eq!(
            session().handle(r#"{"id":2,"subscribe":{}}"#).unwrap(),
            Reply::Subscribed(vec![])
        );
    }

    #[test]
    fn publications_of_a_batch_are_handled_one_line_at_a_time() {
        let mut s = session();
        let frame = "{\"push\":{\"channel\":\"news\",\"pub\":{\"data\":{\"b\":1,\"a\":2},\"offset\":7}}}\n{}";
        let replies: Vec<Reply> = frame.split('\n').map(|l| s.handle(l).unwrap()).collect();
        let line = r#"{"channel":"news","offset":7,"data":{"b":1,"a":2}}"#;
        assert_eq!(replies, [Reply::Print(line.into()), Reply::Send("{}".into())]);
    }

    #[test]
    fn refusals_are_errors_naming_code_and_message() {
        let e = session()
            .handle(r#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("subscribe to news refused: 103 permission denied"),
            "{e}"
        );
        let e = session()
            .handle(
                r#"{"push":{"channel":"news","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#,
            )
            .unwrap_err();
        assert!(e.to_string().contains("2000 server unsubscribe"), "{e}");
    }

    #[test]
    fn an_unsubscribe_2500_resubscribes_recovering_from_the_last_offset() {
        let mut s = session();
        let r = s
            .handle(r#"{"id":2,"subscribe":{"recoverable":true,"epoch":"e1","offset":4,"positioned":true}}"#)
            .unwrap();
        assert_eq!(r, Reply::Subscribed(vec![]));
        s.handle(r#"{"push":{"channel":"news","pub":{"data":1,"offset":5}}}"#)
            .unwrap();
        let r = s
            .handle(
                r#"{"push":{"channel":"news","unsubscribe":{"code":2500,"reason":"insufficient state"}}}"#,
            )
            .unwrap();
        let Reply::Resubscribe(command, why) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            command,
            r#"{"id":2,"subscribe":{"channel":"news","epoch":"e1","offset":5,"recover":true}}"#
        );
        assert!(why.contains("recovering from offset 5"), "{why}");
        // The recovery's replayed publications are printed, in order.
        let r = s
            .handle(r#"{"id":2,"subscribe":{"recovered":true,"epoch":"e1","offset":7,"publications":[{"data":"a","offset":6},{"data":"b","offset":7}]}}"#)
            .unwrap();
        assert_eq!(
            r,
            Reply::Subscribed(vec![
                r#"{"channel":"news","offset":6,"data":"a"}"#.into(),
                r#"{"channel":"news","offset":7,"data":"b"}"#.into()
            ])
        );
    }

    #[test]
    fn terminal_and_reconnect_disconnects_are_told_apart() {
        assert!(disconnected(3500, "invalid token")
            .to_string()
            .contains("terminal"));
        assert!(disconnected(3001, "shutdown")
            .to_string()
            .contains("would reconnect"));
    }
}
