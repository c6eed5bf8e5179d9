//! `crier subscribe`: the smallest useful client protocol v2 client, in
//! either wire format (`--format json`, the default, or `protobuf`).
//! Connects, subscribes to one channel, answers pings, and prints every
//! publication as one JSON line on stdout, flushed, so it works in pipes.
//! Status (subscribed, errors, disconnects) goes to stderr.
//!
//! Both formats decode into `crier_proto`'s typed [`Reply`] (JSON lines
//! through serde, binary frames through [`crier_proto::protobuf`]), and one
//! [`Session`] handles them, so the two print the same lines. Publication
//! data is printed byte for byte as the server sent it when it is JSON;
//! bytes that are not (possible only over protobuf) are printed as
//! `"b64data":"<base64>"` in place of `"data"`. An unsubscribe push with a
//! code of 2500 or more (the server lost state, or the subscription
//! expired) is answered as the SDKs do: a new subscribe that recovers from
//! the last offset seen, so nothing is missed or printed twice. A
//! disconnect with a reconnect code (or a lost connection) reconnects with
//! backoff and recovers the same way, and so does an error 100 or a
//! temporary one (a node that lost its broker answers a resubscribe with
//! 100 until it is back); a terminal one ends the command, non-zero
//! (`--no-reconnect` ends it on any disconnect).

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use bytes::BytesMut;
use crier_proto::client::{
    Command, ConnectRequest, Payload, Publication, Push, Reply, ReplyError, SubscribeRequest, SubscribeResult,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::print_line;

/// Subscribe to CHANNEL and print each publication as a JSON line.
///
/// Each line on stdout is {"channel":"...","offset":N,"data":...}; once the
/// subscription is confirmed, "subscribed to CHANNEL" is printed on stderr.
/// With --format protobuf, data that is not JSON is printed as
/// "b64data":"<base64>" instead of "data". Like the SDKs, it reconnects
/// after a disconnect with a reconnect code (3000–3499) or a lost
/// connection, with backoff (0.5 s doubling to 10 s), and recovers from the
/// last offset it printed, so nothing is missed or printed twice when the
/// channel keeps history. Exits non-zero when the server refuses or
/// disconnects for good (3500–3999), 0 on Ctrl-C.
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
    /// The client protocol's wire format: JSON text frames, or binary
    /// protobuf frames (the URL gets `format=protobuf`).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = Format::Json)]
    format: Format,
}

/// The wire format of client protocol v2 on a WebSocket connection; shared
/// with `crier bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text frames of newline-separated JSON messages.
    Json,
    /// Binary frames of varint-length-delimited protobuf messages.
    Protobuf,
}

impl Format {
    /// As in `--format` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Protobuf => "protobuf",
        }
    }

    /// The URL to connect to for this format: protobuf is asked for with
    /// `format=protobuf` in the query.
    pub fn url(self, url: &str) -> String {
        match self {
            Format::Json => url.to_string(),
            Format::Protobuf => {
                let joiner = if url.contains('?') { '&' } else { '?' };
                format!("{url}{joiner}format=protobuf")
            }
        }
    }

    /// One command as a WebSocket message. The empty command is the pong:
    /// `{}`, or the single byte 0.
    pub fn command(self, command: &Command) -> Message {
        match self {
            Format::Json => {
                Message::text(serde_json::to_string(command).expect("a command serializes to JSON"))
            }
            Format::Protobuf => {
                let mut frame = BytesMut::new();
                crier_proto::protobuf::command_frame(&mut frame, command);
                Message::binary(frame.freeze())
            }
        }
    }

    /// The replies and pushes a data frame holds, in order; none for
    /// control frames. A frame of the other format is an error.
    pub fn replies(self, message: &Message) -> anyhow::Result<Vec<Reply>> {
        match (self, message) {
            (Format::Json, Message::Text(text)) => text
                .split('\n')
                .filter(|l| !l.trim().is_empty())
                .map(|line| {
                    serde_json::from_str(line)
                        .with_context(|| format!("the server sent a message this client cannot read: {line}"))
                })
                .collect(),
            (Format::Protobuf, Message::Binary(frame)) => crier_proto::protobuf::parse_replies(frame)
                .map(|reply| reply.context("the server sent a protobuf frame this client cannot read"))
                .collect(),
            (Format::Json, Message::Binary(_)) => {
                bail!("the server sent a binary frame on a JSON connection")
            }
            (Format::Protobuf, Message::Text(_)) => bail!(
                "the server sent a text frame on a protobuf connection (does it speak the protobuf format?)"
            ),
            _ => Ok(Vec::new()),
        }
    }
}

/// Whether a reply is the server's ping (`{}`, or an empty protobuf
/// message): no id, no error, no push, no result; the server sends nothing
/// else without an id.
pub fn is_ping(reply: &Reply) -> bool {
    reply.id == 0
        && reply.error.is_none()
        && reply.push.is_none()
        && reply.connect.is_none()
        && reply.subscribe.is_none()
}

/// The pong: the empty command.
pub fn pong() -> Command {
    Command::default()
}

const CONNECT_ID: u32 = 1;
const SUBSCRIBE_ID: u32 = 2;

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
    let url = args.format.url(&websocket_url(&args.url)?);
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
    let format = args.format;

    let connect = Command {
        id: CONNECT_ID,
        connect: Some(ConnectRequest {
            token: args.token.clone().unwrap_or_default(),
            name: "crier".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..ConnectRequest::default()
        }),
        ..Command::default()
    };
    if let Err(e) = sink.send(format.command(&connect)).await {
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
        let replies = match message {
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
            Some(Ok(message)) => match format.replies(&message) {
                Ok(replies) => replies,
                Err(e) => return End::Fail(e),
            },
            Some(Err(e)) => return End::Retry(anyhow::Error::new(e).context("connection lost")),
            None => {
                return End::Retry(anyhow!(
                    "connection lost: the server went away without a close frame"
                ))
            }
        };
        for reply in &replies {
            let action = match state.handle(reply) {
                Ok(action) => action,
                Err(e) => return End::Fail(e),
            };
            let written = match action {
                Action::None => Ok(()),
                Action::Subscribed(replayed) => {
                    eprintln!("subscribed to {}", state.channel);
                    replayed
                        .iter()
                        .try_for_each(|p| print_line(p).map_err(anyhow::Error::new))
                }
                Action::Print(publication) => print_line(&publication).map_err(anyhow::Error::new),
                Action::Reconnect(e) => return End::Retry(e),
                Action::Send(command) => sink
                    .send(format.command(&command))
                    .await
                    .context("cannot write to the server"),
                Action::Resubscribe(command, why) => {
                    eprintln!("{why}");
                    sink.send(format.command(&command))
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
#[derive(Debug)]
enum Action {
    /// Nothing: the message is not for this command.
    None,
    /// Print this publication line.
    Print(String),
    /// The subscription is confirmed; print these publications first (the
    /// ones a recovery replayed).
    Subscribed(Vec<String>),
    /// Say this on stderr, then send the command.
    Resubscribe(Command, String),
    /// Send this command.
    Send(Command),
    /// The server failed for now (error 100, or one marked temporary, as
    /// when it lost its broker): reconnect after the backoff and recover,
    /// as the SDKs retry such errors.
    Reconnect(anyhow::Error),
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
    /// Handles one message of a frame, whichever its format: turns
    /// publications into output lines and refusals into errors, and says
    /// what to send back.
    fn handle(&mut self, reply: &Reply) -> anyhow::Result<Action> {
        if is_ping(reply) {
            return Ok(Action::Send(pong()));
        }
        if let Some(error) = &reply.error {
            if error.temporary || error.code == INTERNAL {
                let what = match reply.id {
                    CONNECT_ID => "connect".to_string(),
                    _ => format!("subscribe to {}", self.channel),
                };
                return Ok(Action::Reconnect(anyhow!(
                    "{what} failed for now: {}",
                    describe_error(error)
                )));
            }
            let (what, hint) = match reply.id {
                CONNECT_ID => ("connect refused".to_string(), ""),
                SUBSCRIBE_ID if error.code == PERMISSION_DENIED && self.sub_token.is_none() => (
                    format!("subscribe to {} refused", self.channel),
                    " (give a subscription token with --sub-token, or let the channel's namespace \
                     allow_subscribe_for_client)",
                ),
                SUBSCRIBE_ID => (format!("subscribe to {} refused", self.channel), ""),
                _ => ("the server replied with an error".to_string(), ""),
            };
            bail!("{what}: {}{hint}", describe_error(error));
        }
        if reply.id == CONNECT_ID && reply.connect.is_some() {
            return Ok(Action::Send(self.subscribe_command()));
        }
        if reply.id == SUBSCRIBE_ID {
            if let Some(result) = &reply.subscribe {
                return self.subscribed(result);
            }
        }
        match &reply.push {
            Some(push) => self.push(push),
            None => Ok(Action::None),
        }
    }

    /// The subscribe command: recovering from the last position seen, if
    /// there is one.
    fn subscribe_command(&self) -> Command {
        let mut subscribe = SubscribeRequest {
            channel: self.channel.clone(),
            token: self.sub_token.clone().unwrap_or_default(),
            ..SubscribeRequest::default()
        };
        if let Some((offset, epoch)) = &self.position {
            subscribe.recover = true;
            subscribe.offset = *offset;
            subscribe.epoch = epoch.clone();
        }
        Command {
            id: SUBSCRIBE_ID,
            subscribe: Some(subscribe),
            ..Command::default()
        }
    }

    /// A subscribe reply: its position, and the publications it replayed.
    fn subscribed(&mut self, result: &SubscribeResult) -> anyhow::Result<Action> {
        if !result.epoch.is_empty() {
            self.position = Some((result.offset, result.epoch.clone()));
        }
        let channel = self.channel.clone();
        let replayed = result
            .publications
            .iter()
            .map(|publication| self.publication(&channel, publication))
            .collect();
        Ok(Action::Subscribed(replayed))
    }

    /// One publication as an output line; its offset becomes the position.
    fn publication(&mut self, channel: &str, publication: &Publication) -> String {
        if let Some((position, _)) = self.position.as_mut() {
            *position = publication.offset;
        }
        format!(
            "{{\"channel\":{},\"offset\":{},{}}}",
            serde_json::Value::from(channel),
            publication.offset,
            data_field(publication.data.as_ref())
        )
    }

    fn push(&mut self, push: &Push) -> anyhow::Result<Action> {
        let channel = push.channel.as_str();
        if let Some(publication) = &push.publication {
            return Ok(Action::Print(self.publication(channel, publication)));
        }
        if let Some(unsubscribe) = &push.unsubscribe {
            let described = format!("{} {}", unsubscribe.code, unsubscribe.reason);
            // 2500 and up: the server lost state or the subscription
            // expired; an SDK resubscribes, recovering from its position.
            if unsubscribe.code >= 2500 {
                let why = format!(
                    "unsubscribed from {} by the server ({described}): resubscribing{}",
                    serde_json::Value::from(channel),
                    match &self.position {
                        Some((offset, _)) => format!(" and recovering from offset {offset}"),
                        None => String::new(),
                    }
                );
                return Ok(Action::Resubscribe(self.subscribe_command(), why));
            }
            bail!(
                "unsubscribed from {} by the server: {described}",
                serde_json::Value::from(channel)
            );
        }
        if let Some(disconnect) = &push.disconnect {
            bail!("disconnected: {} {}", disconnect.code, disconnect.reason);
        }
        // join, leave, message and other pushes are not this command's output.
        Ok(Action::None)
    }
}

/// A publication's data as a field of the output line: `"data":<JSON>` as
/// the server sent it, `"b64data":"<base64>"` for bytes that are not JSON
/// (only a protobuf connection can receive those), `"data":null` for none.
fn data_field(data: Option<&Payload>) -> String {
    let Some(data) = data else {
        return "\"data\":null".into();
    };
    match serde_json::from_slice::<&RawValue>(data.as_bytes()) {
        // Raw CR/LF in valid JSON can only be whitespace: flattened, as the
        // server does for JSON clients, the line stays one line and the same
        // in both formats.
        Ok(json) => format!("\"data\":{}", json.get().replace(['\n', '\r'], " ")),
        Err(_) => format!(
            "\"b64data\":\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(data.as_bytes())
        ),
    }
}

/// Protocol error 103.
const PERMISSION_DENIED: u32 = 103;
/// Protocol error 100: the server failed (its broker did not answer), not
/// the client; worth retrying.
const INTERNAL: u32 = 100;

/// An error reply as `N message`.
fn describe_error(error: &ReplyError) -> String {
    format!("{} {}", error.code, error.message)
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
    use crier_proto::encode::PublicationRef;

    fn session() -> Session {
        Session {
            channel: "news".into(),
            sub_token: None,
            position: None,
        }
    }

    /// Handles one JSON message, as it would arrive in a text frame.
    fn handle(s: &mut Session, line: &str) -> anyhow::Result<Action> {
        let replies = Format::Json.replies(&Message::text(line))?;
        assert_eq!(replies.len(), 1, "{line}");
        s.handle(&replies[0])
    }

    /// A command as JSON text.
    fn json(command: &Command) -> String {
        serde_json::to_string(command).unwrap()
    }

    /// What to send, as JSON text, when the action is to send something.
    fn sent(action: &Action) -> String {
        match action {
            Action::Send(command) | Action::Resubscribe(command, _) => json(command),
            other => panic!("nothing to send: {other:?}"),
        }
    }

    fn printed(action: Action) -> String {
        match action {
            Action::Print(line) => line,
            other => panic!("nothing printed: {other:?}"),
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
    fn protobuf_is_asked_for_in_the_query() {
        let url = "ws://h:1/connection/websocket";
        assert_eq!(Format::Json.url(url), url);
        assert_eq!(
            Format::Protobuf.url(url),
            "ws://h:1/connection/websocket?format=protobuf"
        );
        assert_eq!(
            Format::Protobuf.url("ws://h:1/c?x=1"),
            "ws://h:1/c?x=1&format=protobuf"
        );
    }

    #[test]
    fn ping_gets_an_empty_pong_in_either_format() {
        assert_eq!(sent(&handle(&mut session(), "{}").unwrap()), "{}");
        assert_eq!(Format::Json.command(&pong()), Message::text("{}"));
        let replies = Format::Protobuf.replies(&Message::binary(vec![0u8])).unwrap();
        assert_eq!(replies.len(), 1);
        let action = session().handle(&replies[0]).unwrap();
        let Action::Send(command) = action else {
            panic!("{action:?}")
        };
        assert_eq!(Format::Protobuf.command(&command), Message::binary(vec![0u8]));
    }

    #[test]
    fn a_frame_of_the_other_format_is_an_error() {
        assert!(Format::Json.replies(&Message::binary(vec![0u8])).is_err());
        assert!(Format::Protobuf.replies(&Message::text("{}")).is_err());
    }

    #[test]
    fn connect_reply_leads_to_subscribe() {
        let reply = handle(
            &mut session(),
            r#"{"id":1,"connect":{"client":"c","version":"0.1.0","ping":25,"pong":true}}"#,
        )
        .unwrap();
        assert_eq!(sent(&reply), r#"{"id":2,"subscribe":{"channel":"news"}}"#);
    }

    #[test]
    fn subscription_token_goes_with_subscribe() {
        let mut s = Session {
            channel: "news".into(),
            sub_token: Some("T".into()),
            position: None,
        };
        let reply = handle(&mut s, r#"{"id":1,"connect":{}}"#).unwrap();
        assert_eq!(
            sent(&reply),
            r#"{"id":2,"subscribe":{"channel":"news","token":"T"}}"#
        );
    }

    #[test]
    fn subscribe_reply_confirms() {
        let r = handle(&mut session(), r#"{"id":2,"subscribe":{}}"#).unwrap();
        assert!(
            matches!(&r, Action::Subscribed(replayed) if replayed.is_empty()),
            "{r:?}"
        );
    }

    #[test]
    fn publications_of_a_batch_are_handled_one_message_at_a_time() {
        let mut s = session();
        let frame = "{\"push\":{\"channel\":\"news\",\"pub\":{\"data\":{\"b\":1,\"a\":2},\"offset\":7}}}\n{}";
        let replies = Format::Json.replies(&Message::text(frame)).unwrap();
        let mut actions = replies.iter().map(|r| s.handle(r).unwrap());
        let line = r#"{"channel":"news","offset":7,"data":{"b":1,"a":2}}"#;
        assert_eq!(printed(actions.next().unwrap()), line);
        assert_eq!(sent(&actions.next().unwrap()), "{}");
        assert!(actions.next().is_none());
    }

    #[test]
    fn a_protobuf_publication_prints_the_same_line_as_a_json_one() {
        let data = br#"{"b":1,"a":2}"#;
        let mut frame = BytesMut::new();
        crier_proto::protobuf::publication_push(
            &mut frame,
            "news",
            &PublicationRef {
                data,
                offset: 7,
                info: None,
                tags: &[],
            },
        );
        // A ping joined to it, as the server may batch them.
        frame.extend_from_slice(crier_proto::protobuf::PING);
        let replies = Format::Protobuf
            .replies(&Message::binary(frame.freeze()))
            .unwrap();
        let mut s = session();
        let mut actions = replies.iter().map(|r| s.handle(r).unwrap());
        assert_eq!(
            printed(actions.next().unwrap()),
            r#"{"channel":"news","offset":7,"data":{"b":1,"a":2}}"#
        );
        assert_eq!(sent(&actions.next().unwrap()), "{}");
    }

    #[test]
    fn data_that_is_not_json_is_printed_as_b64data() {
        let publication = |data: &'static [u8]| Publication {
            data: Some(Payload::new(bytes::Bytes::from_static(data))),
            offset: 3,
            ..Publication::default()
        };
        assert_eq!(
            session().publication("news", &publication(&[0, 1, 0xfe])),
            r#"{"channel":"news","offset":3,"b64data":"AAH+"}"#
        );
        assert_eq!(
            session().publication("news", &publication(b"\"text\"")),
            r#"{"channel":"news","offset":3,"data":"text"}"#
        );
        assert_eq!(
            session().publication("news", &publication(b"{\"a\":\r\n [1,\n2]}")),
            r#"{"channel":"news","offset":3,"data":{"a":   [1, 2]}}"#
        );
        assert_eq!(
            session().publication("news", &Publication::default()),
            r#"{"channel":"news","offset":0,"data":null}"#
        );
    }

    #[test]
    fn commands_encode_in_either_format() {
        let mut s = session();
        s.position = Some((5, "e1".into()));
        let command = s.subscribe_command();
        let Message::Binary(frame) = Format::Protobuf.command(&command) else {
            panic!("a protobuf command is a binary frame")
        };
        // What the server reads back is what was meant.
        let decoded: Vec<Command> = crier_proto::protobuf::parse_frame(&frame)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(json(&decoded[0]), json(&command));
        assert_eq!(
            json(&command),
            r#"{"id":2,"subscribe":{"channel":"news","recover":true,"epoch":"e1","offset":5}}"#
        );
    }

    #[test]
    fn refusals_are_errors_naming_code_and_message() {
        let e = handle(
            &mut session(),
            r#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("subscribe to news refused: 103 permission denied"),
            "{e}"
        );
        let e = handle(
            &mut session(),
            r#"{"push":{"channel":"news","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("2000 server unsubscribe"), "{e}");
    }

    /// Error 100 or a temporary error (a node that lost its broker answers
    /// a resubscribe with 100) is retried, not fatal.
    #[test]
    fn a_temporary_or_internal_error_reconnects_instead_of_failing() {
        for reply in [
            r#"{"id":2,"error":{"code":100,"message":"internal server error"}}"#,
            r#"{"id":2,"error":{"code":111,"message":"too many requests","temporary":true}}"#,
            r#"{"id":1,"error":{"code":100,"message":"internal server error"}}"#,
        ] {
            match handle(&mut session(), reply) {
                Ok(Action::Reconnect(e)) => assert!(e.to_string().contains("failed for now"), "{e}"),
                other => panic!("{reply}: {:?}", other.map(|_| "another action")),
            }
        }
    }

    #[test]
    fn an_unsubscribe_2500_resubscribes_recovering_from_the_last_offset() {
        let mut s = session();
        let r = handle(
            &mut s,
            r#"{"id":2,"subscribe":{"recoverable":true,"epoch":"e1","offset":4,"positioned":true}}"#,
        )
        .unwrap();
        assert!(
            matches!(&r, Action::Subscribed(replayed) if replayed.is_empty()),
            "{r:?}"
        );
        handle(
            &mut s,
            r#"{"push":{"channel":"news","pub":{"data":1,"offset":5}}}"#,
        )
        .unwrap();
        let r = handle(
            &mut s,
            r#"{"push":{"channel":"news","unsubscribe":{"code":2500,"reason":"insufficient state"}}}"#,
        )
        .unwrap();
        let Action::Resubscribe(command, why) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            json(&command),
            r#"{"id":2,"subscribe":{"channel":"news","recover":true,"epoch":"e1","offset":5}}"#
        );
        assert!(why.contains("recovering from offset 5"), "{why}");
        // The recovery's replayed publications are printed, in order.
        let r = handle(&mut s, r#"{"id":2,"subscribe":{"recovered":true,"epoch":"e1","offset":7,"publications":[{"data":"a","offset":6},{"data":"b","offset":7}]}}"#)
            .unwrap();
        let Action::Subscribed(replayed) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            replayed,
            [
                r#"{"channel":"news","offset":6,"data":"a"}"#,
                r#"{"channel":"news","offset":7,"data":"b"}"#
            ]
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
