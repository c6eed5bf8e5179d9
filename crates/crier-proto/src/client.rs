//! The bidirectional client protocol v2, JSON flavour, as spoken by
//! Centrifugo's SDKs (centrifuge-js, -go, -dart, ...).
//!
//! Owns the shape of every message in both directions: [`Command`] and its
//! requests (client → server), [`Reply`], [`Push`] and the result types
//! (server → client), and the splitting of a WebSocket frame into commands.
//! Field names follow `client.proto` of `centrifugal/protocol`; `bytes`
//! fields (`data`, `info`, ...) are embedded JSON ([`RawJson`]), as
//! Centrifugo does for JSON clients.
//!
//! Serialization omits zero values (0, `false`, `""`, empty maps and lists,
//! absent objects) exactly where Centrifugo's JSON does; the exceptions it
//! keeps for compatibility are kept here too (`ClientInfo.user`/`client`,
//! `PresenceResult.presence`, `PresenceStatsResult.*`, `HistoryResult.*`).
//!
//! This module must never decide what a request *means* (permissions,
//! channel rules, recovery): it only says what the client sent. Replies must
//! reach the socket through [`crate::encode::reply`], which keeps every frame
//! on one line.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codes::{Disconnect, ErrorCode, Unsubscribe};
use crate::Error;

/// An embedded JSON value (`data`, `info`, ...), kept as the exact text the
/// peer sent and written back verbatim.
pub type RawJson = Box<serde_json::value::RawValue>;

/// The application's bytes in a `bytes` field of the protocol (`data`,
/// `info`, ...). JSON clients send and receive them as embedded JSON;
/// protobuf clients as raw bytes, which need not be JSON at all.
///
/// Serialized to JSON, a payload that is not valid JSON (binary data from a
/// protobuf client or the API's `b64data`) becomes `null`: a JSON client
/// can never receive it, and must not receive a broken frame instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload(Bytes);

impl Payload {
    /// A payload of these bytes.
    pub fn new(bytes: Bytes) -> Self {
        Payload(bytes)
    }

    /// A payload holding this JSON text.
    pub fn json(raw: RawJson) -> Self {
        Payload(Bytes::from(String::from(Box::<str>::from(raw))))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, owned.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The bytes as text, if they are UTF-8 (for tests and logs).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_slice::<&serde_json::value::RawValue>(&self.0) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_unit(),
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawJson::deserialize(d).map(Payload::json)
    }
}

// ---------------------------------------------------------------------------
// Client → server
// ---------------------------------------------------------------------------

/// One command from a client: an `id` and at most one request.
///
/// The protocol has no `oneof`: a command may carry several request fields,
/// and the server acts on the first present in `client.proto` order (see
/// [`Command::method`]). A command with neither id nor request (`{}`) is the
/// client's pong. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Command {
    /// Echoed in the reply so the client can match it; 0 only for `send`
    /// and pongs.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub id: u32,
    /// Authenticate the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectRequest>,
    /// Subscribe to a channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeRequest>,
    /// Unsubscribe from a channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<UnsubscribeRequest>,
    /// Publish into a channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishRequest>,
    /// Ask who is in a channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceRequest>,
    /// Ask how many are in a channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_stats: Option<PresenceStatsRequest>,
    /// Read a channel's history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryRequest>,
    /// Client-initiated ping (distinct from the pong `{}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingRequest>,
    /// Fire-and-forget message to the server; no reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Option<SendRequest>,
    /// Call a server-side RPC method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcRequest>,
    /// Replace an expiring connection token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshRequest>,
    /// Replace an expiring subscription token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_refresh: Option<SubRefreshRequest>,
}

/// The kind of request a command carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `connect`
    Connect,
    /// `subscribe`
    Subscribe,
    /// `unsubscribe`
    Unsubscribe,
    /// `publish`
    Publish,
    /// `presence`
    Presence,
    /// `presence_stats`
    PresenceStats,
    /// `history`
    History,
    /// `ping`
    Ping,
    /// `send`
    Send,
    /// `rpc`
    Rpc,
    /// `refresh`
    Refresh,
    /// `sub_refresh`
    SubRefresh,
}

impl Method {
    /// The field name of the request on the wire (also a good metrics label).
    pub const fn name(self) -> &'static str {
        match self {
            Method::Connect => "connect",
            Method::Subscribe => "subscribe",
            Method::Unsubscribe => "unsubscribe",
            Method::Publish => "publish",
            Method::Presence => "presence",
            Method::PresenceStats => "presence_stats",
            Method::History => "history",
            Method::Ping => "ping",
            Method::Send => "send",
            Method::Rpc => "rpc",
            Method::Refresh => "refresh",
            Method::SubRefresh => "sub_refresh",
        }
    }
}

/// What a command asks for, taken out of the [`Command`] by
/// [`Command::into_request`].
#[derive(Debug, Clone)]
pub enum Request {
    /// The empty command `{}`: the client's answer to a server ping.
    Pong,
    /// See [`ConnectRequest`].
    Connect(ConnectRequest),
    /// See [`SubscribeRequest`].
    Subscribe(SubscribeRequest),
    /// See [`UnsubscribeRequest`].
    Unsubscribe(UnsubscribeRequest),
    /// See [`PublishRequest`].
    Publish(PublishRequest),
    /// See [`PresenceRequest`].
    Presence(PresenceRequest),
    /// See [`PresenceStatsRequest`].
    PresenceStats(PresenceStatsRequest),
    /// See [`HistoryRequest`].
    History(HistoryRequest),
    /// A client-initiated ping; answered with an empty `ping` result.
    Ping,
    /// See [`SendRequest`]. Never answered.
    Send(SendRequest),
    /// See [`RpcRequest`].
    Rpc(RpcRequest),
    /// See [`RefreshRequest`].
    Refresh(RefreshRequest),
    /// See [`SubRefreshRequest`].
    SubRefresh(SubRefreshRequest),
}

impl Request {
    /// The request kind; `None` for a pong.
    pub fn method(&self) -> Option<Method> {
        Some(match self {
            Request::Pong => return None,
            Request::Connect(_) => Method::Connect,
            Request::Subscribe(_) => Method::Subscribe,
            Request::Unsubscribe(_) => Method::Unsubscribe,
            Request::Publish(_) => Method::Publish,
            Request::Presence(_) => Method::Presence,
            Request::PresenceStats(_) => Method::PresenceStats,
            Request::History(_) => Method::History,
            Request::Ping => Method::Ping,
            Request::Send(_) => Method::Send,
            Request::Rpc(_) => Method::Rpc,
            Request::Refresh(_) => Method::Refresh,
            Request::SubRefresh(_) => Method::SubRefresh,
        })
    }
}

impl Command {
    /// The first request present, in `client.proto` field order: connect,
    /// subscribe, unsubscribe, publish, presence, presence_stats, history,
    /// ping, send, rpc, refresh, sub_refresh. `None` if the command carries
    /// no request.
    pub fn method(&self) -> Option<Method> {
        let present = [
            (self.connect.is_some(), Method::Connect),
            (self.subscribe.is_some(), Method::Subscribe),
            (self.unsubscribe.is_some(), Method::Unsubscribe),
            (self.publish.is_some(), Method::Publish),
            (self.presence.is_some(), Method::Presence),
            (self.presence_stats.is_some(), Method::PresenceStats),
            (self.history.is_some(), Method::History),
            (self.ping.is_some(), Method::Ping),
            (self.send.is_some(), Method::Send),
            (self.rpc.is_some(), Method::Rpc),
            (self.refresh.is_some(), Method::Refresh),
            (self.sub_refresh.is_some(), Method::SubRefresh),
        ];
        present.into_iter().find(|(is, _)| *is).map(|(_, m)| m)
    }

    /// Takes out the request the server must act on (the one
    /// [`Command::method`] names), checking the id rules:
    ///
    /// - no request and id 0 (`{}`) is a [`Request::Pong`];
    /// - no request but an id is [`Error::EmptyCommand`];
    /// - any request except `send` without an id is [`Error::MissingId`]
    ///   (the client would wait forever for a reply it cannot match).
    ///
    /// Both errors end the connection with 3501 bad request. Read
    /// [`Command::id`] first if you need it for the reply.
    pub fn into_request(self) -> Result<Request, Error> {
        let id = self.id;
        let request = if let Some(r) = self.connect {
            Request::Connect(r)
        } else if let Some(r) = self.subscribe {
            Request::Subscribe(r)
        } else if let Some(r) = self.unsubscribe {
            Request::Unsubscribe(r)
        } else if let Some(r) = self.publish {
            Request::Publish(r)
        } else if let Some(r) = self.presence {
            Request::Presence(r)
        } else if let Some(r) = self.presence_stats {
            Request::PresenceStats(r)
        } else if let Some(r) = self.history {
            Request::History(r)
        } else if self.ping.is_some() {
            Request::Ping
        } else if let Some(r) = self.send {
            Request::Send(r)
        } else if let Some(r) = self.rpc {
            Request::Rpc(r)
        } else if let Some(r) = self.refresh {
            Request::Refresh(r)
        } else if let Some(r) = self.sub_refresh {
            Request::SubRefresh(r)
        } else if id == 0 {
            return Ok(Request::Pong);
        } else {
            return Err(Error::EmptyCommand { id });
        };
        match request.method() {
            Some(method) if id == 0 && method != Method::Send => Err(Error::MissingId { method }),
            _ => Ok(request),
        }
    }
}

/// Parses one command from one line of a frame.
///
/// The line must hold a JSON object; surrounding whitespace (including a
/// trailing `\r`) is allowed.
pub fn parse_command(line: &[u8]) -> Result<Command, Error> {
    // serde would also accept a JSON array as a struct (fields by position),
    // which would turn `[]` into a pong. Centrifugo only accepts objects.
    match line.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') if !crate::depth::within(line, crate::depth::MAX_DEPTH) => Err(Error::MalformedCommand(
            serde::de::Error::custom(crate::depth::TOO_DEEP),
        )),
        Some(b'{') => serde_json::from_slice(line).map_err(Error::MalformedCommand),
        _ => Err(Error::MalformedCommand(serde::de::Error::custom(
            "a command must be a JSON object",
        ))),
    }
}

/// Splits a WebSocket text frame into commands.
///
/// A frame may carry several commands separated by `\n`; empty (or
/// whitespace-only) lines are skipped. The iterator yields commands in order
/// and an error for each line that is not a command, so the server can act on
/// the commands before a bad line and then disconnect with 3501.
pub fn parse_frame(frame: &[u8]) -> impl Iterator<Item = Result<Command, Error>> + '_ {
    frame
        .split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(parse_command)
}

/// First message of a connection: credentials and initial subscriptions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectRequest {
    /// Connection JWT; empty when a connect proxy or anonymous access is used.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// Custom data for the server (connect proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
    /// Subscriptions the client wants restored with the connection, by
    /// channel; mostly used by unidirectional clients to pass positions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeRequest>,
    /// Application name (at most 16 characters by Centrifugo's rule).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Application version (at most 64 characters).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Headers emulation: values a browser client cannot send as headers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Subscribe to a channel, optionally recovering from a known position.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeRequest {
    /// The channel. (Empty inside `ConnectRequest.subs`, where the map key
    /// names the channel.)
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// Subscription JWT, for private channels.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// Whether the client asks to recover missed publications since
    /// `offset`/`epoch`.
    #[serde(skip_serializing_if = "is_false")]
    pub recover: bool,
    /// Epoch of the stream the client last saw.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Offset of the last publication the client saw.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Custom data for the server (subscribe proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
    /// The client asks for positioning (gap detection) in this channel.
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    /// The client asks for recovery support in this channel.
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    /// The client asks for join/leave pushes in this channel.
    #[serde(skip_serializing_if = "is_false")]
    pub join_leave: bool,
}

/// Unsubscribe from a channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UnsubscribeRequest {
    /// The channel.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

/// Publish into a channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishRequest {
    /// The channel.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// The payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
    /// crier extension: do not deliver the publication back to the
    /// publishing connection (nor replay it to it on recovery). Centrifugo
    /// clients never send it, so their behaviour is unchanged.
    #[serde(skip_serializing_if = "is_false")]
    pub exclude_self: bool,
}

/// Ask for the clients subscribed to a channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceRequest {
    /// The channel.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

/// Ask for the number of clients and unique users in a channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceStatsRequest {
    /// The channel.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

/// A position in a channel's stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamPosition {
    /// Offset of a publication (1-based; 0 means "before the first").
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Identifies one incarnation of the stream; a change means the history
    /// was lost and offsets restarted.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
}

/// Read a channel's history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryRequest {
    /// The channel.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// How many publications to return: 0 returns only the stream position,
    /// a negative value asks for all (capped by the server).
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub limit: i32,
    /// Return publications after this position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    /// Newest first.
    #[serde(skip_serializing_if = "is_false")]
    pub reverse: bool,
}

/// Client-initiated ping. Has no fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PingRequest {}

/// Fire-and-forget message to the server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SendRequest {
    /// The payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
}

/// Call a server-side method and wait for its result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcRequest {
    /// The payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
    /// The method name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub method: String,
}

/// Replace the connection token before it expires.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshRequest {
    /// The new connection JWT.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
}

/// Replace a subscription token before it expires.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubRefreshRequest {
    /// The channel.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// The new subscription JWT.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
}

// ---------------------------------------------------------------------------
// Server → client
// ---------------------------------------------------------------------------

/// One message from the server: the reply to a command (`id` > 0, one result
/// or `error`) or an asynchronous push (`id` 0, `push` set).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Reply {
    /// The id of the command answered; 0 for pushes.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub id: u32,
    /// Set when the command failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ReplyError>,
    /// An asynchronous message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<Push>,
    /// Result of `connect`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectResult>,
    /// Result of `subscribe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeResult>,
    /// Result of `unsubscribe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<UnsubscribeResult>,
    /// Result of `publish`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishResult>,
    /// Result of `presence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceResult>,
    /// Result of `presence_stats`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_stats: Option<PresenceStatsResult>,
    /// Result of `history`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryResult>,
    /// Result of `ping`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingResult>,
    /// Result of `rpc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcResult>,
    /// Result of `refresh`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshResult>,
    /// Result of `sub_refresh`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_refresh: Option<SubRefreshResult>,
}

impl Reply {
    /// A failed command's reply.
    pub fn error(id: u32, error: impl Into<ReplyError>) -> Reply {
        Reply {
            id,
            error: Some(error.into()),
            ..Reply::default()
        }
    }

    /// An asynchronous push wrapped for a bidirectional transport.
    pub fn push(push: Push) -> Reply {
        Reply {
            push: Some(push),
            ..Reply::default()
        }
    }
}

/// The error of a failed command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError {
    /// See [`ErrorCode`]; applications may use their own codes.
    pub code: u32,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub message: Cow<'static, str>,
    /// Whether the client may retry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub temporary: bool,
}

impl From<ErrorCode> for ReplyError {
    fn from(code: ErrorCode) -> ReplyError {
        ReplyError {
            code: code.code(),
            message: Cow::Borrowed(code.message()),
            temporary: code.temporary(),
        }
    }
}

/// Result of `connect`; also the body of the `connect` push that opens a
/// unidirectional stream (the proto's `Connect` has the same fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectResult {
    /// The id the server gave this connection.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Server version string.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Whether the connection expires and must be refreshed.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until expiry, when `expires`.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    /// Custom data from the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
    /// Server-side subscriptions, by channel.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeResult>,
    /// Seconds between server pings; the client expects one in this time.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ping: u32,
    /// Whether the client must answer pings with a pong `{}`.
    #[serde(skip_serializing_if = "is_false")]
    pub pong: bool,
    /// Unique id of this connection session.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// Name of the node serving the connection.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
}

/// Result of `subscribe`, also the value of `ConnectResult.subs` entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeResult {
    /// Whether the subscription expires and must be refreshed.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until expiry, when `expires`.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    /// Whether the channel keeps history the client can recover from.
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    /// Current stream epoch.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Publications replayed on recovery, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    /// Whether the whole gap was replayed.
    #[serde(skip_serializing_if = "is_false")]
    pub recovered: bool,
    /// Current stream top offset.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Whether the server tracks the client's position (gap detection).
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    /// Custom data from the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
    /// Whether the client asked to recover (so `recovered: false` means the
    /// attempt failed).
    #[serde(skip_serializing_if = "is_false")]
    pub was_recovering: bool,
}

/// Result of `unsubscribe`: always `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UnsubscribeResult {}

/// Result of `publish`: always `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishResult {}

/// Result of `ping`: always `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PingResult {}

/// Result of `presence`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceResult {
    /// Subscribed clients by client id. Always present, even when empty.
    pub presence: BTreeMap<String, ClientInfo>,
}

/// Result of `presence_stats`. Both counts are always present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceStatsResult {
    /// Subscribed connections.
    pub num_clients: u32,
    /// Distinct users among them.
    pub num_users: u32,
}

/// Result of `history`. All fields are always present.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryResult {
    /// The publications asked for.
    pub publications: Vec<Publication>,
    /// Current stream epoch.
    pub epoch: String,
    /// Current stream top offset.
    pub offset: u64,
}

/// Result of `rpc`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcResult {
    /// The method's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
}

/// Result of `refresh`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshResult {
    /// The connection's id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Server version string.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Whether the connection still expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until the new expiry.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// Result of `sub_refresh`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubRefreshResult {
    /// Whether the subscription still expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until the new expiry.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// A message published into a channel, as delivered and as kept in history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Publication {
    /// The payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
    /// The publisher, when it was a client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    /// Position in the channel stream; 0 when the channel keeps no history.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Free-form tags set by the publisher.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// Who a connection is. `user` and `client` are always sent, even empty
/// (an anonymous user has `""`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientInfo {
    /// User id; empty for anonymous connections.
    pub user: String,
    /// Connection id.
    pub client: String,
    /// Connection-level info from the token or connect proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn_info: Option<Payload>,
    /// Channel-level info from the subscription token or subscribe proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chan_info: Option<Payload>,
}

/// An asynchronous message: at most one of the fields below `channel` is set.
/// Sent inside [`Reply::push`] on bidirectional transports and bare on
/// unidirectional ones. A push with nothing set (`{}`) is a server ping on
/// unidirectional transports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Push {
    /// The channel the push is about, for channel pushes.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// A publication (`"pub"` on the wire).
    #[serde(rename = "pub", skip_serializing_if = "Option::is_none")]
    pub publication: Option<Publication>,
    /// Someone subscribed to the channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
    /// Someone unsubscribed from the channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leave: Option<Leave>,
    /// The server removed this connection's subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<Unsubscribe>,
    /// A message sent to this connection only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// The server subscribed this connection (server-side subscription).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    /// First push of a unidirectional connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectResult>,
    /// The server is closing the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<Disconnect>,
    /// The server refreshed the connection's credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,
}

/// Body of a `join` push.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Join {
    /// Who joined.
    pub info: ClientInfo,
}

/// Body of a `leave` push.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Leave {
    /// Who left.
    pub info: ClientInfo,
}

/// Body of a `message` push.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Message {
    /// The payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
}

/// Body of a `subscribe` push (server-side subscription made after connect).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Subscribe {
    /// Whether the channel supports recovery.
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    /// Current stream epoch.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Current stream top offset.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Whether the server tracks the position.
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    /// Custom data from the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
}

/// Body of a `refresh` push.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Refresh {
    /// Whether the connection still expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until the new expiry.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

// Predicates for `skip_serializing_if`; serde passes a reference.
pub(crate) fn is_false(v: &bool) -> bool {
    !*v
}
pub(crate) fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
pub(crate) fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
pub(crate) fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn command(line: &str) -> Command {
        parse_command(line.as_bytes()).expect("valid command")
    }

    fn raw(json: &str) -> Payload {
        Payload::json(serde_json::value::RawValue::from_string(json.to_owned()).expect("valid JSON"))
    }

    fn to_value<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).expect("serializable")
    }

    #[test]
    fn parses_connect_with_token_data_subs_name_version() {
        let cmd = command(
            r#"{"id":1,"connect":{"token":"eyJ.x.y","data":{"hello":"world"},"name":"js","version":"1.2.3",
                "subs":{"user#2694":{"recover":true,"offset":12,"epoch":"xD5R"}}}}"#,
        );
        assert_eq!(cmd.id, 1);
        assert_eq!(cmd.method(), Some(Method::Connect));
        let Ok(Request::Connect(req)) = cmd.into_request() else {
            panic!("not a connect")
        };
        assert_eq!(req.token, "eyJ.x.y");
        assert_eq!(
            req.data.as_ref().and_then(Payload::as_str),
            Some(r#"{"hello":"world"}"#)
        );
        assert_eq!((req.name.as_str(), req.version.as_str()), ("js", "1.2.3"));
        let sub = &req.subs["user#2694"];
        assert!(sub.recover);
        assert_eq!((sub.offset, sub.epoch.as_str()), (12, "xD5R"));
    }

    #[test]
    fn parses_subscribe_with_recovery_position_and_flags() {
        let cmd = command(
            r#"{"id":2,"subscribe":{"channel":"news","token":"t","recover":true,"epoch":"abcd",
                "offset":18446744073709551615,"positioned":true,"recoverable":true,"join_leave":true,
                "data":[1,2]}}"#,
        );
        let Ok(Request::Subscribe(req)) = cmd.into_request() else {
            panic!("not a subscribe")
        };
        assert_eq!(req.channel, "news");
        assert_eq!(req.token, "t");
        assert!(req.recover && req.positioned && req.recoverable && req.join_leave);
        assert_eq!(req.epoch, "abcd");
        assert_eq!(req.offset, u64::MAX, "offsets are full u64 JSON numbers");
        assert_eq!(req.data.as_ref().and_then(Payload::as_str), Some("[1,2]"));
    }

    #[test]
    fn parses_every_other_request_kind() {
        let cases: [(&str, Method); 10] = [
            (
                r#"{"id":3,"unsubscribe":{"channel":"news"}}"#,
                Method::Unsubscribe,
            ),
            (
                r#"{"id":4,"publish":{"channel":"chat","data":{"text":"hi"}}}"#,
                Method::Publish,
            ),
            (r#"{"id":5,"presence":{"channel":"chat"}}"#, Method::Presence),
            (
                r#"{"id":6,"presence_stats":{"channel":"chat"}}"#,
                Method::PresenceStats,
            ),
            (
                r#"{"id":7,"history":{"channel":"chat","limit":10,"since":{"offset":5,"epoch":"e"},"reverse":true}}"#,
                Method::History,
            ),
            (r#"{"id":8,"ping":{}}"#, Method::Ping),
            (r#"{"send":{"data":{"async":true}}}"#, Method::Send),
            (r#"{"id":9,"rpc":{"method":"sum","data":{"a":1}}}"#, Method::Rpc),
            (r#"{"id":10,"refresh":{"token":"new"}}"#, Method::Refresh),
            (
                r#"{"id":11,"sub_refresh":{"channel":"$private","token":"sub"}}"#,
                Method::SubRefresh,
            ),
        ];
        for (line, method) in cases {
            let cmd = command(line);
            assert_eq!(cmd.method(), Some(method), "{line}");
            let request = cmd.into_request().expect(line);
            assert_eq!(request.method(), Some(method), "{line}");
            match request {
                Request::Publish(p) => {
                    assert_eq!(p.channel, "chat");
                    assert_eq!(
                        p.data.as_ref().and_then(Payload::as_str),
                        Some(r#"{"text":"hi"}"#)
                    );
                    assert!(!p.exclude_self);
                }
                Request::History(h) => {
                    assert_eq!((h.channel.as_str(), h.limit, h.reverse), ("chat", 10, true));
                    assert_eq!(
                        h.since,
                        Some(StreamPosition {
                            offset: 5,
                            epoch: "e".into()
                        })
                    );
                }
                Request::Rpc(r) => assert_eq!(r.method, "sum"),
                Request::SubRefresh(r) => {
                    assert_eq!((r.channel.as_str(), r.token.as_str()), ("$private", "sub"))
                }
                _ => {}
            }
        }
    }

    #[test]
    fn publish_accepts_crier_exclude_self_extension() {
        let cmd = command(r#"{"id":4,"publish":{"channel":"c","data":1,"exclude_self":true}}"#);
        let Ok(Request::Publish(p)) = cmd.into_request() else {
            panic!("not a publish")
        };
        assert!(p.exclude_self);
    }

    #[test]
    fn method_is_the_first_request_field_in_proto_order() {
        // JSON key order must not matter, proto field order does.
        let cmd = command(
            r#"{"id":1,"sub_refresh":{"channel":"a"},"publish":{"channel":"b"},"subscribe":{"channel":"c"}}"#,
        );
        assert_eq!(cmd.method(), Some(Method::Subscribe));
        let Ok(Request::Subscribe(s)) = cmd.into_request() else {
            panic!("subscribe must win")
        };
        assert_eq!(s.channel, "c");

        let cmd = command(r#"{"id":1,"rpc":{},"ping":{},"history":{"channel":"h"}}"#);
        assert_eq!(cmd.method(), Some(Method::History));
        let cmd = command(r#"{"id":1,"rpc":{},"ping":{}}"#);
        assert_eq!(cmd.method(), Some(Method::Ping));
        let cmd = command(r#"{"id":1,"sub_refresh":{},"connect":{}}"#);
        assert_eq!(cmd.method(), Some(Method::Connect));
    }

    #[test]
    fn method_and_into_request_agree_for_every_single_field() {
        for method in [
            Method::Connect,
            Method::Subscribe,
            Method::Unsubscribe,
            Method::Publish,
            Method::Presence,
            Method::PresenceStats,
            Method::History,
            Method::Ping,
            Method::Send,
            Method::Rpc,
            Method::Refresh,
            Method::SubRefresh,
        ] {
            let line = format!(r#"{{"id":7,"{}":{{}}}}"#, method.name());
            let cmd = command(&line);
            assert_eq!(cmd.method(), Some(method), "{line}");
            assert_eq!(cmd.into_request().expect(&line).method(), Some(method));
        }
    }

    #[test]
    fn empty_command_is_a_pong_and_id_rules_hold() {
        assert!(matches!(command("{}").into_request(), Ok(Request::Pong)));
        assert!(matches!(command(r#"{"id":0}"#).into_request(), Ok(Request::Pong)));
        assert!(matches!(
            command(r#"{"id":5}"#).into_request(),
            Err(Error::EmptyCommand { id: 5 })
        ));
        assert!(matches!(
            command(r#"{"subscribe":{"channel":"x"}}"#).into_request(),
            Err(Error::MissingId {
                method: Method::Subscribe
            })
        ));
        // send is the one request without id, and it may also carry one.
        assert!(matches!(
            command(r#"{"send":{}}"#).into_request(),
            Ok(Request::Send(_))
        ));
        assert!(matches!(
            command(r#"{"id":3,"send":{}}"#).into_request(),
            Ok(Request::Send(_))
        ));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let cmd = command(
            r#"{"id":1,"future":{"x":1},"subscribe":{"channel":"c","delta":"fossil","tf":{"op":"and"},"flag":3}}"#,
        );
        assert_eq!(cmd.method(), Some(Method::Subscribe));
    }

    #[test]
    fn frame_with_several_commands_and_blank_lines() {
        let frame = b"{\"id\":1,\"subscribe\":{\"channel\":\"ch1\"}}\n\n{\"id\":2,\"subscribe\":{\"channel\":\"ch2\"}}\r\n  \n{}\n";
        let commands: Vec<Command> = parse_frame(frame).collect::<Result<_, _>>().expect("all valid");
        assert_eq!(commands.len(), 3);
        assert_eq!(commands[0].id, 1);
        assert_eq!(
            commands[1].subscribe.as_ref().map(|s| s.channel.as_str()),
            Some("ch2")
        );
        assert_eq!(commands[2].method(), None);
        assert_eq!(parse_frame(b"").count(), 0);
        assert_eq!(parse_frame(b"\n\n").count(), 0);
    }

    #[test]
    fn invalid_json_in_any_line_is_a_bad_request_after_the_good_ones() {
        let frame = b"{\"id\":1,\"ping\":{}}\n{\"id\":2,\"subscribe\":\n{\"id\":3,\"ping\":{}}";
        let results: Vec<_> = parse_frame(frame).collect();
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok());
        let err = results[1].as_ref().expect_err("truncated line");
        assert_eq!(err.disconnect(), Some(Disconnect::BAD_REQUEST));
        assert!(results[2].is_ok());
    }

    #[test]
    fn non_objects_and_wrong_types_are_rejected() {
        for line in [
            "[]",
            "[1]",
            "42",
            "\"x\"",
            "null",
            "{\"id\":-1}",
            "{\"id\":\"1\"}",
            "{\"id\":4294967296}",
            "{\"id\":1,\"subscribe\":{\"channel\":5}}",
            "{\"id\":1,\"subscribe\":{\"offset\":-1}}",
            "{\"id\":1,\"id\":2}",
            "{\"id\":1} trailing",
        ] {
            let err = parse_command(line.as_bytes()).expect_err(line);
            assert!(matches!(err, Error::MalformedCommand(_)), "{line}");
        }
    }

    #[test]
    fn reply_omits_zero_values_like_centrifugo() {
        let reply = Reply {
            id: 1,
            subscribe: Some(SubscribeResult::default()),
            ..Reply::default()
        };
        assert_eq!(to_value(&reply), json!({"id": 1, "subscribe": {}}));

        let reply = Reply {
            id: 2,
            publish: Some(PublishResult {}),
            ..Reply::default()
        };
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"id":2,"publish":{}}"#);

        let reply = Reply {
            id: 3,
            connect: Some(ConnectResult {
                client: "c1".into(),
                version: "0.1.0".into(),
                ping: 25,
                pong: true,
                session: "s1".into(),
                ..ConnectResult::default()
            }),
            ..Reply::default()
        };
        assert_eq!(
            to_value(&reply),
            json!({"id": 3, "connect": {"client": "c1", "version": "0.1.0", "ping": 25, "pong": true, "session": "s1"}})
        );

        let reply = Reply {
            id: 4,
            subscribe: Some(SubscribeResult {
                recoverable: true,
                epoch: "ep".into(),
                offset: 9_007_199_254_740_993,
                positioned: true,
                recovered: true,
                was_recovering: true,
                publications: vec![Publication {
                    data: Some(raw(r#"{"n":1}"#)),
                    offset: 9_007_199_254_740_993,
                    ..Publication::default()
                }],
                ..SubscribeResult::default()
            }),
            ..Reply::default()
        };
        let text = serde_json::to_string(&reply).unwrap();
        assert!(
            text.contains(r#""offset":9007199254740993"#),
            "offset must be a JSON number, got {text}"
        );
        assert_eq!(
            to_value(&reply),
            json!({"id": 4, "subscribe": {"recoverable": true, "epoch": "ep", "offset": 9_007_199_254_740_993_u64,
                "positioned": true, "recovered": true, "was_recovering": true,
                "publications": [{"data": {"n": 1}, "offset": 9_007_199_254_740_993_u64}]}})
        );
    }

    #[test]
    fn error_reply_has_code_message_and_temporary_only_when_true() {
        let reply = Reply::error(7, ErrorCode::Internal);
        assert_eq!(
            to_value(&reply),
            json!({"id": 7, "error": {"code": 100, "message": "internal server error", "temporary": true}})
        );
        let reply = Reply::error(8, ErrorCode::PermissionDenied);
        assert_eq!(
            to_value(&reply),
            json!({"id": 8, "error": {"code": 103, "message": "permission denied"}})
        );
    }

    #[test]
    fn compatibility_fields_are_kept_even_when_empty() {
        let reply = Reply {
            id: 1,
            presence_stats: Some(PresenceStatsResult::default()),
            ..Reply::default()
        };
        assert_eq!(
            to_value(&reply),
            json!({"id": 1, "presence_stats": {"num_clients": 0, "num_users": 0}})
        );

        let reply = Reply {
            id: 2,
            history: Some(HistoryResult::default()),
            ..Reply::default()
        };
        assert_eq!(
            to_value(&reply),
            json!({"id": 2, "history": {"publications": [], "epoch": "", "offset": 0}})
        );

        let mut presence = BTreeMap::new();
        presence.insert(
            "c1".to_owned(),
            ClientInfo {
                client: "c1".into(),
                ..ClientInfo::default()
            },
        );
        let reply = Reply {
            id: 3,
            presence: Some(PresenceResult { presence }),
            ..Reply::default()
        };
        assert_eq!(
            to_value(&reply),
            json!({"id": 3, "presence": {"presence": {"c1": {"user": "", "client": "c1"}}}})
        );
        let empty = Reply {
            id: 4,
            presence: Some(PresenceResult::default()),
            ..Reply::default()
        };
        assert_eq!(to_value(&empty), json!({"id": 4, "presence": {"presence": {}}}));
    }

    #[test]
    fn push_uses_pub_key_and_omits_empty_channel() {
        let push = Push {
            channel: "news".into(),
            publication: Some(Publication {
                data: Some(raw(r#"{"input":1}"#)),
                offset: 1,
                ..Publication::default()
            }),
            ..Push::default()
        };
        assert_eq!(
            to_value(&Reply::push(push)),
            json!({"push": {"channel": "news", "pub": {"data": {"input": 1}, "offset": 1}}})
        );

        let push = Push {
            disconnect: Some(Disconnect::SHUTDOWN),
            ..Push::default()
        };
        assert_eq!(
            to_value(&push),
            json!({"disconnect": {"code": 3001, "reason": "shutdown"}})
        );
        assert_eq!(to_value(&Push::default()), json!({}));
    }

    #[test]
    fn replies_and_commands_round_trip() {
        let line = r#"{"id":9,"publish":{"channel":"c","data":{"a":[1,2,{"b":null}]},"exclude_self":true}}"#;
        let cmd = command(line);
        assert_eq!(serde_json::to_string(&cmd).unwrap(), line);

        let text =
            r#"{"push":{"channel":"c","join":{"info":{"user":"u","client":"k","conn_info":{"x":1}}}}}"#;
        let reply: Reply = serde_json::from_str(text).unwrap();
        let info = &reply.push.as_ref().unwrap().join.as_ref().unwrap().info;
        assert_eq!(info.user, "u");
        assert_eq!(serde_json::to_string(&reply).unwrap(), text);
    }

    #[test]
    fn a_payload_gives_its_bytes_back() {
        let p = Payload::new(Bytes::from_static(b"\x00binary"));
        assert_eq!(p.as_bytes(), b"\x00binary");
        assert_eq!(p.as_str(), Some("\u{0}binary"));
        assert_eq!(p.into_bytes(), Bytes::from_static(b"\x00binary"));
        assert_eq!(Payload::new(Bytes::from_static(b"\xff")).as_str(), None);
    }

    #[test]
    fn a_history_limit_of_zero_is_omitted_and_any_other_kept() {
        let mut c = Command {
            id: 1,
            history: Some(HistoryRequest {
                channel: "c".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"id":1,"history":{"channel":"c"}}"#
        );
        c.history.as_mut().unwrap().limit = -1;
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"id":1,"history":{"channel":"c","limit":-1}}"#
        );
    }
}
