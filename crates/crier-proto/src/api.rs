//! The server HTTP API: `POST /api/<method>` with a JSON body, answered with
//! `{"result": ...}` or `{"error": {"code", "message"}}`, as in Centrifugo
//! v5/v6 (field names from its `apiproto/api.proto`).
//!
//! Owns the request and result shapes, the method names, the per-method
//! checks Centrifugo makes before acting (a channel is required, ...) and the
//! batch envelope. Requests ignore unknown fields and accept `null` wherever
//! a field is optional, as Go's decoder does, so existing API client
//! libraries work unchanged.
//!
//! This module must never know about HTTP itself (routes, headers, status
//! codes beyond the documented error-code mapping) nor execute anything; the
//! server does that with the typed [`Request`] it gets from
//! [`Request::parse`].
//!
//! crier extension: `publish` and `broadcast` take optional
//! `exclude_clients` and `exclude_users` lists.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::client::{is_false, is_zero_i32, is_zero_u32, is_zero_u64, RawJson};
use crate::codes::{Disconnect, ErrorCode};
use crate::Error;

pub use crate::client::{
    ClientInfo, HistoryResult, PresenceResult, PresenceStatsResult, Publication, StreamPosition,
};

/// A server API method, named by the last segment of `/api/<method>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `publish`: one publication into one channel.
    Publish,
    /// `broadcast`: the same publication into many channels.
    Broadcast,
    /// `subscribe`: subscribe a user's live connections to a channel.
    Subscribe,
    /// `unsubscribe`: remove a user's subscription.
    Unsubscribe,
    /// `disconnect`: close a user's connections.
    Disconnect,
    /// `refresh`: extend or expire a user's connections.
    Refresh,
    /// `presence`: who is in a channel.
    Presence,
    /// `presence_stats`: how many are in a channel.
    PresenceStats,
    /// `history`: a channel's recent publications.
    History,
    /// `history_remove`: drop a channel's publications, keeping its position.
    HistoryRemove,
    /// `channels`: active channels.
    Channels,
    /// `info`: the nodes of the cluster.
    Info,
    /// `batch`: several of the above in one call.
    Batch,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 13] = [
        Method::Publish,
        Method::Broadcast,
        Method::Subscribe,
        Method::Unsubscribe,
        Method::Disconnect,
        Method::Refresh,
        Method::Presence,
        Method::PresenceStats,
        Method::History,
        Method::HistoryRemove,
        Method::Channels,
        Method::Info,
        Method::Batch,
    ];

    /// The name in the URL path and in batch commands.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Publish => "publish",
            Method::Broadcast => "broadcast",
            Method::Subscribe => "subscribe",
            Method::Unsubscribe => "unsubscribe",
            Method::Disconnect => "disconnect",
            Method::Refresh => "refresh",
            Method::Presence => "presence",
            Method::PresenceStats => "presence_stats",
            Method::History => "history",
            Method::HistoryRemove => "history_remove",
            Method::Channels => "channels",
            Method::Info => "info",
            Method::Batch => "batch",
        }
    }

    /// The method with this name; `None` for methods crier does not serve
    /// (Centrifugo PRO methods, `rpc`, typos), which Centrifugo answers with
    /// HTTP 404.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// A parsed and checked API call.
#[derive(Debug, Clone)]
pub enum Request {
    /// See [`PublishRequest`].
    Publish(PublishRequest),
    /// See [`BroadcastRequest`].
    Broadcast(BroadcastRequest),
    /// See [`SubscribeRequest`].
    Subscribe(SubscribeRequest),
    /// See [`UnsubscribeRequest`].
    Unsubscribe(UnsubscribeRequest),
    /// See [`DisconnectRequest`].
    Disconnect(DisconnectRequest),
    /// See [`RefreshRequest`].
    Refresh(RefreshRequest),
    /// See [`PresenceRequest`].
    Presence(PresenceRequest),
    /// See [`PresenceStatsRequest`].
    PresenceStats(PresenceStatsRequest),
    /// See [`HistoryRequest`].
    History(HistoryRequest),
    /// See [`HistoryRemoveRequest`].
    HistoryRemove(HistoryRemoveRequest),
    /// See [`ChannelsRequest`].
    Channels(ChannelsRequest),
    /// `info` takes no parameters.
    Info,
    /// See [`BatchRequest`]. Its commands are checked one by one when taken
    /// out with [`BatchCommand::into_request`], so one bad command fails only
    /// its own reply.
    Batch(BatchRequest),
}

impl Request {
    /// Parses the body of `POST /api/<method>` and checks what Centrifugo
    /// checks before acting.
    ///
    /// An empty body counts as `{}`. A body that is not a JSON object of the
    /// right shape is [`Error::MalformedApiRequest`] (Centrifugo: HTTP 400);
    /// one that misses a required value is [`Error::InvalidApiRequest`]
    /// (Centrifugo: error 107 in the response). Both map to 107 bad request.
    pub fn parse(method: Method, body: &[u8]) -> Result<Request, Error> {
        let body = match body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => &b"{}"[..],
            Some(b'{') => body,
            Some(_) => {
                return Err(Error::MalformedApiRequest(serde::de::Error::custom(
                    "the request body must be a JSON object",
                )))
            }
        };
        let request = match method {
            Method::Publish => Request::Publish(from_body(body)?),
            Method::Broadcast => Request::Broadcast(from_body(body)?),
            Method::Subscribe => Request::Subscribe(from_body(body)?),
            Method::Unsubscribe => Request::Unsubscribe(from_body(body)?),
            Method::Disconnect => Request::Disconnect(from_body(body)?),
            Method::Refresh => Request::Refresh(from_body(body)?),
            Method::Presence => Request::Presence(from_body(body)?),
            Method::PresenceStats => Request::PresenceStats(from_body(body)?),
            Method::History => Request::History(from_body(body)?),
            Method::HistoryRemove => Request::HistoryRemove(from_body(body)?),
            Method::Channels => Request::Channels(from_body(body)?),
            Method::Info => {
                from_body::<InfoRequest>(body)?;
                Request::Info
            }
            Method::Batch => Request::Batch(from_body(body)?),
        };
        request.check()?;
        Ok(request)
    }

    /// The method this request is for.
    pub fn method(&self) -> Method {
        match self {
            Request::Publish(_) => Method::Publish,
            Request::Broadcast(_) => Method::Broadcast,
            Request::Subscribe(_) => Method::Subscribe,
            Request::Unsubscribe(_) => Method::Unsubscribe,
            Request::Disconnect(_) => Method::Disconnect,
            Request::Refresh(_) => Method::Refresh,
            Request::Presence(_) => Method::Presence,
            Request::PresenceStats(_) => Method::PresenceStats,
            Request::History(_) => Method::History,
            Request::HistoryRemove(_) => Method::HistoryRemove,
            Request::Channels(_) => Method::Channels,
            Request::Info => Method::Info,
            Request::Batch(_) => Method::Batch,
        }
    }

    /// Centrifugo's pre-checks. Channel names are not checked further here
    /// (namespaces are configuration, the server's business), and blank
    /// channels inside `broadcast.channels` fail only their own response.
    fn check(&self) -> Result<(), Error> {
        let required_channel = |channel: &str| {
            if channel.is_empty() {
                Err(Error::InvalidApiRequest("channel required"))
            } else {
                Ok(())
            }
        };
        match self {
            Request::Publish(r) => {
                required_channel(&r.channel)?;
                required_json_data(&r.data, &r.b64data)
            }
            Request::Broadcast(r) => {
                if r.channels.is_empty() {
                    return Err(Error::InvalidApiRequest("channels required"));
                }
                required_json_data(&r.data, &r.b64data)
            }
            Request::Subscribe(r) => {
                required_channel(&r.channel)?;
                if !r.b64info.is_empty() || !r.b64data.is_empty() {
                    return Err(Error::InvalidApiRequest(
                        "b64info and b64data are not supported: crier carries JSON only",
                    ));
                }
                Ok(())
            }
            Request::Presence(PresenceRequest { channel })
            | Request::PresenceStats(PresenceStatsRequest { channel })
            | Request::HistoryRemove(HistoryRemoveRequest { channel })
            | Request::History(HistoryRequest { channel, .. }) => required_channel(channel),
            Request::Unsubscribe(_)
            | Request::Disconnect(_)
            | Request::Refresh(_)
            | Request::Channels(_)
            | Request::Info
            | Request::Batch(_) => Ok(()),
        }
    }
}

fn required_json_data(data: &Option<RawJson>, b64data: &str) -> Result<(), Error> {
    if !b64data.is_empty() {
        return Err(Error::InvalidApiRequest(
            "b64data is not supported: crier carries JSON only",
        ));
    }
    if data.is_none() {
        return Err(Error::InvalidApiRequest("data required"));
    }
    Ok(())
}

fn from_body<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, Error> {
    if !crate::depth::within(body, crate::depth::MAX_DEPTH) {
        return Err(Error::MalformedApiRequest(serde::de::Error::custom(
            crate::depth::TOO_DEEP,
        )));
    }
    serde_json::from_slice(body).map_err(Error::MalformedApiRequest)
}

/// Reads `null` as the field's default, like Go's JSON decoder does; missing
/// fields are handled by `#[serde(default)]` on the struct.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// `publish`: one publication into one channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishRequest {
    /// Required.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// Required: the JSON payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// Base64 binary payload. Accepted by the parser only to be refused with
    /// a clear message: crier carries JSON only.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub b64data: String,
    /// Do not add this publication to the channel history.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_false")]
    pub skip_history: bool,
    /// Tags delivered with the publication.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Drop a retry of an already accepted publication (per channel).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub idempotency_key: String,
    /// crier extension: connections (client ids) that must not receive it.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub exclude_clients: Vec<String>,
    /// crier extension: users whose connections must not receive it.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub exclude_users: Vec<String>,
}

/// `broadcast`: the same publication into many channels.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BroadcastRequest {
    /// Required, non-empty. A blank entry fails only its own response.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Required: the JSON payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// Refused, as in [`PublishRequest::b64data`].
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub b64data: String,
    /// Do not add the publications to the channels' history.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_false")]
    pub skip_history: bool,
    /// Tags delivered with each publication.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Drop a retry of an already accepted publication (per channel).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub idempotency_key: String,
    /// crier extension: connections (client ids) that must not receive it.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub exclude_clients: Vec<String>,
    /// crier extension: users whose connections must not receive it.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub exclude_users: Vec<String>,
}

/// `subscribe`: subscribe a user's live connections to a channel
/// (a dynamic server-side subscription).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeRequest {
    /// The user whose connections to subscribe.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Required.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// Only this connection of the user.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Only this session of the user.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// Channel info for presence and join/leave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<RawJson>,
    /// Refused: crier carries JSON only.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub b64info: String,
    /// Data sent to the client in the `subscribe` push.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<RawJson>,
    /// Refused: crier carries JSON only.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub b64data: String,
    /// Recover publications since this position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recover_since: Option<StreamPosition>,
    /// Unix seconds when the subscription expires; 0 for never.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_zero_i64")]
    pub expire_at: i64,
    /// Per-subscription overrides of channel options (`"override"` on the
    /// wire; a Rust keyword).
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    pub overrides: Option<SubscribeOverride>,
}

/// Channel options a server-side subscription may override; an absent field
/// keeps the channel's configured value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeOverride {
    /// Override `presence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<BoolValue>,
    /// Override `join_leave`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_leave: Option<BoolValue>,
    /// Override `force_push_join_leave`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_push_join_leave: Option<BoolValue>,
    /// Override `force_positioning`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_positioning: Option<BoolValue>,
    /// Override `force_recovery`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_recovery: Option<BoolValue>,
}

/// A boolean that can be told apart from "not set": `{"value": true}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BoolValue {
    /// The value.
    #[serde(deserialize_with = "nullable")]
    pub value: bool,
}

/// `unsubscribe`: remove a user's subscription to a channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UnsubscribeRequest {
    /// The user.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The channel.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// Only this connection of the user.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Only this session of the user.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub session: String,
}

/// `disconnect`: close a user's connections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DisconnectRequest {
    /// The user.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Only this connection of the user.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Only this session of the user.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// Client ids to keep connected.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub whitelist: Vec<String>,
    /// Custom code and reason; see [`DisconnectRequest::advice`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<Disconnect>,
}

impl DisconnectRequest {
    /// The disconnect to send: the one in the request, or 3503 force
    /// disconnect (no reconnect) as Centrifugo does when none is given.
    pub fn advice(&self) -> Disconnect {
        self.disconnect.clone().unwrap_or(Disconnect::FORCE_DISCONNECT)
    }
}

/// `refresh`: extend or expire a user's connections (mostly for
/// unidirectional transports, where the client cannot refresh itself).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshRequest {
    /// The user.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Only this connection of the user.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Only this session of the user.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// Expire the connections now (they close with 3005).
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_false")]
    pub expired: bool,
    /// New expiry, Unix seconds; 0 for never.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_zero_i64")]
    pub expire_at: i64,
    /// New connection info.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<RawJson>,
}

/// `presence`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceRequest {
    /// Required.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

/// `presence_stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceStatsRequest {
    /// Required.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

/// `history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryRequest {
    /// Required.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub channel: String,
    /// 0 (or absent) returns only the stream position; negative asks for all.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_zero_i32")]
    pub limit: i32,
    /// Return publications after this position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    /// Newest first.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_false")]
    pub reverse: bool,
}

/// `history_remove`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryRemoveRequest {
    /// Required.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

/// `channels`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelsRequest {
    /// Glob pattern (`*` any run, `?` one character); empty for all.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "String::is_empty")]
    pub pattern: String,
}

/// `info` has no parameters; the body is only checked to be an object.
#[derive(Deserialize)]
struct InfoRequest {}

/// `batch`: several commands in one call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchRequest {
    /// The commands, answered in the same order.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<BatchCommand>,
    /// Commands may run concurrently; replies keep the command order.
    #[serde(deserialize_with = "nullable", skip_serializing_if = "is_false")]
    pub parallel: bool,
}

/// One command of a batch: `{"<method>": {...params}}`. The first method
/// present (in the order of the fields below, which is Centrifugo's) is the
/// one executed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchCommand {
    /// `publish` params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishRequest>,
    /// `broadcast` params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<BroadcastRequest>,
    /// `subscribe` params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeRequest>,
    /// `unsubscribe` params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<UnsubscribeRequest>,
    /// `disconnect` params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<DisconnectRequest>,
    /// `presence` params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceRequest>,
    /// `presence_stats` params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_stats: Option<PresenceStatsRequest>,
    /// `history` params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryRequest>,
    /// `history_remove` params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_remove: Option<HistoryRemoveRequest>,
    /// `info` (no params: `{"info": {}}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<EmptyParams>,
    /// `refresh` params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshRequest>,
    /// `channels` params.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<ChannelsRequest>,
}

/// The params of a method that takes none: `{}`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct EmptyParams {}

impl BatchCommand {
    /// Takes out the command's request and checks it like [`Request::parse`].
    /// A command naming no method crier serves is
    /// [`Error::UnknownApiMethod`] (104); the server answers each error in
    /// that command's reply and carries on with the rest of the batch.
    pub fn into_request(self) -> Result<Request, Error> {
        let request = if let Some(r) = self.publish {
            Request::Publish(r)
        } else if let Some(r) = self.broadcast {
            Request::Broadcast(r)
        } else if let Some(r) = self.subscribe {
            Request::Subscribe(r)
        } else if let Some(r) = self.unsubscribe {
            Request::Unsubscribe(r)
        } else if let Some(r) = self.disconnect {
            Request::Disconnect(r)
        } else if let Some(r) = self.presence {
            Request::Presence(r)
        } else if let Some(r) = self.presence_stats {
            Request::PresenceStats(r)
        } else if let Some(r) = self.history {
            Request::History(r)
        } else if let Some(r) = self.history_remove {
            Request::HistoryRemove(r)
        } else if self.info.is_some() {
            Request::Info
        } else if let Some(r) = self.refresh {
            Request::Refresh(r)
        } else if let Some(r) = self.channels {
            Request::Channels(r)
        } else {
            return Err(Error::UnknownApiMethod);
        };
        request.check()?;
        Ok(request)
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// An API error: `{"code": 107, "message": "bad request"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// See [`ErrorCode`].
    pub code: u32,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub message: Cow<'static, str>,
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> ApiError {
        ApiError {
            code: code.code(),
            message: Cow::Borrowed(code.message()),
        }
    }
}

impl ApiError {
    /// The HTTP status Centrifugo's "transport" error mode (header
    /// `X-Centrifugo-Error-Mode: transport`) answers this error with:
    /// 100 → 500, 102/104 → 404, 107/108 → 400, 112 → 416, others → 500.
    pub fn transport_status(&self) -> u16 {
        match self.code {
            102 | 104 => 404,
            107 | 108 => 400,
            112 => 416,
            _ => 500,
        }
    }
}

/// The envelope of every single-method response: `{"result": ...}` on
/// success, `{"error": {...}}` on failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response<T> {
    /// Set on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// Set on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
}

impl<T> Response<T> {
    /// A successful response.
    pub fn ok(result: T) -> Response<T> {
        Response {
            error: None,
            result: Some(result),
        }
    }

    /// A failed response.
    pub fn error(error: impl Into<ApiError>) -> Response<T> {
        Response {
            error: Some(error.into()),
            result: None,
        }
    }
}

impl<T> From<Result<T, ApiError>> for Response<T> {
    fn from(outcome: Result<T, ApiError>) -> Response<T> {
        match outcome {
            Ok(result) => Response::ok(result),
            Err(error) => Response::error(error),
        }
    }
}

/// Result of `publish`: the publication's stream position (both omitted when
/// the channel keeps no history).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishResult {
    /// Offset of the publication.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Epoch of the stream.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
}

/// Result of `broadcast`: one response per channel, in request order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BroadcastResult {
    /// `{"result": {offset, epoch}}` or `{"error": {...}}` per channel.
    pub responses: Vec<Response<PublishResult>>,
}

/// Result of `subscribe`: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscribeResult {}

/// Result of `unsubscribe`: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UnsubscribeResult {}

/// Result of `disconnect`: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DisconnectResult {}

/// Result of `refresh`: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshResult {}

/// Result of `history_remove`: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryRemoveResult {}

/// Result of `channels`. `channels` is always present.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelsResult {
    /// Active channels by name.
    pub channels: BTreeMap<String, ChannelInfo>,
}

/// One active channel in a `channels` result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelInfo {
    /// Connections subscribed to the channel.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub num_clients: u32,
}

/// Result of `info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InfoResult {
    /// Every node of the cluster.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeResult>,
}

/// One node in an `info` result. Everything but `uptime` is always present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeResult {
    /// Unique id of the node process.
    pub uid: String,
    /// Node name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Connections on the node.
    pub num_clients: u32,
    /// Distinct users on the node.
    pub num_users: u32,
    /// Channels with subscribers on the node.
    pub num_channels: u32,
    /// Seconds since the node started.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub uptime: u32,
    /// Subscriptions on the node.
    pub num_subs: u32,
}

/// The result of any method but `batch`, for servers that dispatch
/// generically. Serializes as the inner result, so `Response<ApiResult>`
/// gives `{"result": {...}}`; inside a batch, [`BatchReply`] adds the method
/// name.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ApiResult {
    /// See [`PublishResult`].
    Publish(PublishResult),
    /// See [`BroadcastResult`].
    Broadcast(BroadcastResult),
    /// See [`SubscribeResult`].
    Subscribe(SubscribeResult),
    /// See [`UnsubscribeResult`].
    Unsubscribe(UnsubscribeResult),
    /// See [`DisconnectResult`].
    Disconnect(DisconnectResult),
    /// See [`RefreshResult`].
    Refresh(RefreshResult),
    /// See [`PresenceResult`].
    Presence(PresenceResult),
    /// See [`PresenceStatsResult`].
    PresenceStats(PresenceStatsResult),
    /// See [`HistoryResult`].
    History(HistoryResult),
    /// See [`HistoryRemoveResult`].
    HistoryRemove(HistoryRemoveResult),
    /// See [`ChannelsResult`].
    Channels(ChannelsResult),
    /// See [`InfoResult`].
    Info(InfoResult),
}

impl ApiResult {
    /// The method this is a result of.
    pub fn method(&self) -> Method {
        match self {
            ApiResult::Publish(_) => Method::Publish,
            ApiResult::Broadcast(_) => Method::Broadcast,
            ApiResult::Subscribe(_) => Method::Subscribe,
            ApiResult::Unsubscribe(_) => Method::Unsubscribe,
            ApiResult::Disconnect(_) => Method::Disconnect,
            ApiResult::Refresh(_) => Method::Refresh,
            ApiResult::Presence(_) => Method::Presence,
            ApiResult::PresenceStats(_) => Method::PresenceStats,
            ApiResult::History(_) => Method::History,
            ApiResult::HistoryRemove(_) => Method::HistoryRemove,
            ApiResult::Channels(_) => Method::Channels,
            ApiResult::Info(_) => Method::Info,
        }
    }
}

/// One reply of a batch: `{"publish": {...}}` (the method name as key) or
/// `{"error": {...}}`.
#[derive(Debug, Clone)]
pub struct BatchReply(pub Result<ApiResult, ApiError>);

impl Serialize for BatchReply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        match &self.0 {
            Ok(result) => map.serialize_entry(result.method().name(), result)?,
            Err(error) => map.serialize_entry("error", error)?,
        }
        map.end()
    }
}

/// Response of `batch`: `{"replies": [...]}`, one per command in order. It is
/// the whole body, not wrapped in `result` (Centrifugo sends it this way).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchResponse {
    /// The replies.
    pub replies: Vec<BatchReply>,
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(method: Method, body: &str) -> Result<Request, Error> {
        Request::parse(method, body.as_bytes())
    }

    fn to_value<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).expect("serializable")
    }

    #[test]
    fn method_names_round_trip() {
        for method in Method::ALL {
            assert_eq!(Method::from_name(method.name()), Some(method));
        }
        assert_eq!(Method::from_name("presence_stats"), Some(Method::PresenceStats));
        assert_eq!(Method::from_name("rpc"), None);
        assert_eq!(Method::from_name("Publish"), None);
    }

    #[test]
    fn publish_from_the_docs_example() {
        let Ok(Request::Publish(req)) = parse(
            Method::Publish,
            r#"{"channel": "chat", "data": {"text": "hello"}}"#,
        ) else {
            panic!("not a publish")
        };
        assert_eq!(req.channel, "chat");
        assert_eq!(req.data.as_deref().map(|r| r.get()), Some(r#"{"text": "hello"}"#));
        assert!(!req.skip_history);
        assert!(req.exclude_clients.is_empty() && req.exclude_users.is_empty());
    }

    #[test]
    fn publish_with_every_option_and_crier_extensions() {
        let Ok(Request::Publish(req)) = parse(
            Method::Publish,
            r#"{"channel":"news","data":[1],"skip_history":true,"tags":{"k":"v"},
                "idempotency_key":"abc","exclude_clients":["c1"],"exclude_users":["u1","u2"],
                "delta":true,"version":3,"version_epoch":"x"}"#,
        ) else {
            panic!("not a publish")
        };
        assert!(req.skip_history);
        assert_eq!(req.tags.get("k").map(String::as_str), Some("v"));
        assert_eq!(req.idempotency_key, "abc");
        assert_eq!(req.exclude_clients, ["c1"]);
        assert_eq!(req.exclude_users, ["u1", "u2"]);
    }

    #[test]
    fn nulls_read_as_absent_like_go() {
        let Ok(Request::Publish(req)) = parse(
            Method::Publish,
            r#"{"channel":"c","data":{},"tags":null,"idempotency_key":null,"skip_history":null,"exclude_users":null}"#,
        ) else {
            panic!("not a publish")
        };
        assert!(req.tags.is_empty());
        assert!(req.idempotency_key.is_empty());
        let Ok(Request::History(req)) = parse(
            Method::History,
            r#"{"channel":"c","limit":null,"since":null,"reverse":null}"#,
        ) else {
            panic!("not a history")
        };
        assert_eq!((req.limit, req.since, req.reverse), (0, None, false));
    }

    #[test]
    fn missing_required_values_are_bad_requests() {
        let cases = [
            (Method::Publish, r#"{}"#, "channel required"),
            (Method::Publish, r#"{"channel":""}"#, "channel required"),
            (Method::Publish, r#"{"channel":"c"}"#, "data required"),
            (Method::Publish, r#"{"channel":"c","data":null}"#, "data required"),
            (
                Method::Publish,
                r#"{"channel":"c","b64data":"aGk="}"#,
                "b64data is not supported: crier carries JSON only",
            ),
            (Method::Broadcast, r#"{"data":1}"#, "channels required"),
            (
                Method::Broadcast,
                r#"{"channels":[],"data":1}"#,
                "channels required",
            ),
            (Method::Broadcast, r#"{"channels":["a"]}"#, "data required"),
            (Method::Subscribe, r#"{"user":"42"}"#, "channel required"),
            (Method::Presence, "", "channel required"),
            (Method::PresenceStats, "{}", "channel required"),
            (Method::History, r#"{"limit":10}"#, "channel required"),
            (Method::HistoryRemove, "{}", "channel required"),
        ];
        for (method, body, message) in cases {
            match parse(method, body) {
                Err(err @ Error::InvalidApiRequest(m)) => {
                    assert_eq!(m, message, "{method:?} {body}");
                    assert_eq!(err.error_code(), Some(ErrorCode::BadRequest));
                }
                other => panic!("{method:?} {body}: expected invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_bodies_are_distinguished_from_invalid_ones() {
        for (method, body) in [
            (Method::Publish, "{"),
            (Method::Publish, "[]"),
            (Method::Publish, "\"x\""),
            (Method::Publish, r#"{"channel":5,"data":1}"#),
            (Method::Broadcast, r#"{"channels":"a","data":1}"#),
            (Method::History, r#"{"channel":"c","since":{"offset":-1}}"#),
            (Method::Info, "nope"),
            (Method::Batch, r#"{"commands":[{"publish":{"channel":1}}]}"#),
        ] {
            let err = parse(method, body).expect_err(body);
            assert!(matches!(err, Error::MalformedApiRequest(_)), "{body}: {err:?}");
            assert_eq!(err.error_code(), Some(ErrorCode::BadRequest));
        }
    }

    #[test]
    fn methods_without_required_values_accept_empty_bodies() {
        assert!(matches!(parse(Method::Info, ""), Ok(Request::Info)));
        assert!(matches!(parse(Method::Info, "{}"), Ok(Request::Info)));
        assert!(matches!(parse(Method::Channels, "{}"), Ok(Request::Channels(_))));
        assert!(matches!(
            parse(Method::Unsubscribe, r#"{"user":"42","channel":"c"}"#),
            Ok(Request::Unsubscribe(_))
        ));
        let Ok(Request::Channels(req)) = parse(Method::Channels, r#"{"pattern":"chat:*"}"#) else {
            panic!("not channels")
        };
        assert_eq!(req.pattern, "chat:*");
    }

    #[test]
    fn subscribe_disconnect_refresh_history_shapes() {
        let Ok(Request::Subscribe(req)) = parse(
            Method::Subscribe,
            r#"{"user":"42","channel":"news","client":"c1","session":"s1","info":{"role":"x"},
                "data":{"welcome":1},"recover_since":{"offset":3,"epoch":"ep"},"expire_at":1700000000,
                "override":{"presence":{"value":false},"join_leave":{"value":true}}}"#,
        ) else {
            panic!("not a subscribe")
        };
        assert_eq!(
            (req.user.as_str(), req.client.as_str(), req.session.as_str()),
            ("42", "c1", "s1")
        );
        assert_eq!(
            req.recover_since,
            Some(StreamPosition {
                offset: 3,
                epoch: "ep".into()
            })
        );
        assert_eq!(req.expire_at, 1_700_000_000);
        let overrides = req.overrides.expect("override parsed");
        assert_eq!(overrides.presence, Some(BoolValue { value: false }));
        assert_eq!(overrides.join_leave, Some(BoolValue { value: true }));
        assert_eq!(overrides.force_recovery, None);

        let Ok(Request::Disconnect(req)) = parse(
            Method::Disconnect,
            r#"{"user":"42","whitelist":["keep"],"disconnect":{"code":4501,"reason":"banned"}}"#,
        ) else {
            panic!("not a disconnect")
        };
        assert_eq!(req.whitelist, ["keep"]);
        assert_eq!(req.advice(), Disconnect::new(4501, "banned"));
        let Ok(Request::Disconnect(req)) = parse(Method::Disconnect, r#"{"user":"42"}"#) else {
            panic!("not a disconnect")
        };
        assert_eq!(req.advice(), Disconnect::FORCE_DISCONNECT);

        let Ok(Request::Refresh(req)) = parse(
            Method::Refresh,
            r#"{"user":"42","client":"c","expired":true,"expire_at":1}"#,
        ) else {
            panic!("not a refresh")
        };
        assert!(req.expired);
        assert_eq!(req.expire_at, 1);

        let Ok(Request::History(req)) = parse(
            Method::History,
            r#"{"channel":"chat","limit":2,"since":{"offset":4,"epoch":"qFhv"},"reverse":true}"#,
        ) else {
            panic!("not a history")
        };
        assert_eq!((req.limit, req.reverse), (2, true));
        assert_eq!(req.since.map(|s| s.offset), Some(4));
    }

    #[test]
    fn batch_from_the_docs_example_and_command_selection() {
        let Ok(Request::Batch(batch)) = parse(
            Method::Batch,
            r#"{"commands": [{"publish": {"channel": "test1", "data": {}}},
                {"publish": {"channel": "x:test2", "data": {}}},
                {"info": {}},
                {"presence": {}},
                {"connections": {"user": "42"}},
                {"channels": {}, "publish": {"channel": "first", "data": 1}}],
                "parallel": true}"#,
        ) else {
            panic!("not a batch")
        };
        assert!(batch.parallel);
        let requests: Vec<_> = batch
            .commands
            .into_iter()
            .map(BatchCommand::into_request)
            .collect();
        assert_eq!(requests.len(), 6);
        assert!(matches!(&requests[0], Ok(Request::Publish(p)) if p.channel == "test1"));
        assert!(matches!(&requests[1], Ok(Request::Publish(p)) if p.channel == "x:test2"));
        assert!(matches!(&requests[2], Ok(Request::Info)));
        assert!(matches!(
            &requests[3],
            Err(Error::InvalidApiRequest("channel required"))
        ));
        let unknown = requests[4].as_ref().expect_err("PRO method");
        assert_eq!(unknown.error_code(), Some(ErrorCode::MethodNotFound));
        assert!(matches!(&requests[5], Ok(Request::Publish(p)) if p.channel == "first"));
    }

    #[test]
    fn responses_use_result_and_error_envelopes() {
        let ok = Response::ok(ApiResult::Publish(PublishResult::default()));
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"result":{}}"#);

        let ok = Response::ok(PublishResult {
            offset: 9_007_199_254_740_993,
            epoch: "qFhv".into(),
        });
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(text, r#"{"result":{"offset":9007199254740993,"epoch":"qFhv"}}"#);

        let err: Response<PublishResult> = Response::error(ErrorCode::UnknownChannel);
        assert_eq!(
            to_value(&err),
            json!({"error": {"code": 102, "message": "unknown channel"}})
        );
        let from: Response<ApiResult> = Err(ApiError::from(ErrorCode::BadRequest)).into();
        assert_eq!(
            to_value(&from),
            json!({"error": {"code": 107, "message": "bad request"}})
        );
    }

    #[test]
    fn results_keep_centrifugo_always_present_fields() {
        let stats = Response::ok(ApiResult::PresenceStats(PresenceStatsResult::default()));
        assert_eq!(
            to_value(&stats),
            json!({"result": {"num_clients": 0, "num_users": 0}})
        );

        let mut presence = BTreeMap::new();
        presence.insert(
            "c54313b2".to_owned(),
            ClientInfo {
                client: "c54313b2".into(),
                user: "42".into(),
                ..ClientInfo::default()
            },
        );
        let presence = Response::ok(ApiResult::Presence(PresenceResult { presence }));
        assert_eq!(
            to_value(&presence),
            json!({"result": {"presence": {"c54313b2": {"client": "c54313b2", "user": "42"}}}})
        );

        let history = Response::ok(ApiResult::History(HistoryResult {
            epoch: "qFhv".into(),
            offset: 4,
            publications: vec![Publication {
                data: serde_json::value::RawValue::from_string(r#"{"text":"hello"}"#.into())
                    .ok()
                    .map(crate::client::Payload::json),
                offset: 2,
                ..Publication::default()
            }],
        }));
        assert_eq!(
            to_value(&history),
            json!({"result": {"epoch": "qFhv", "offset": 4, "publications": [{"data": {"text": "hello"}, "offset": 2}]}})
        );

        let mut channels = BTreeMap::new();
        channels.insert("chat".to_owned(), ChannelInfo { num_clients: 3 });
        let channels = Response::ok(ApiResult::Channels(ChannelsResult { channels }));
        assert_eq!(
            to_value(&channels),
            json!({"result": {"channels": {"chat": {"num_clients": 3}}}})
        );

        let info = Response::ok(ApiResult::Info(InfoResult {
            nodes: vec![NodeResult {
                uid: "f844a2ed".into(),
                name: "node_8000".into(),
                ..NodeResult::default()
            }],
        }));
        assert_eq!(
            to_value(&info),
            json!({"result": {"nodes": [{"uid": "f844a2ed", "name": "node_8000", "version": "",
                "num_clients": 0, "num_users": 0, "num_channels": 0, "num_subs": 0}]}})
        );
    }

    #[test]
    fn broadcast_result_holds_one_response_per_channel() {
        let result = BroadcastResult {
            responses: vec![
                Response::ok(PublishResult {
                    offset: 1,
                    epoch: "e".into(),
                }),
                Response::error(ErrorCode::BadRequest),
                Response::ok(PublishResult::default()),
            ],
        };
        assert_eq!(
            to_value(&Response::ok(ApiResult::Broadcast(result))),
            json!({"result": {"responses": [
                {"result": {"offset": 1, "epoch": "e"}},
                {"error": {"code": 107, "message": "bad request"}},
                {"result": {}}
            ]}})
        );
    }

    #[test]
    fn batch_response_matches_the_docs_example() {
        let response = BatchResponse {
            replies: vec![
                BatchReply(Ok(ApiResult::Publish(PublishResult::default()))),
                BatchReply(Err(ErrorCode::UnknownChannel.into())),
                BatchReply(Ok(ApiResult::PresenceStats(PresenceStatsResult {
                    num_clients: 2,
                    num_users: 1,
                }))),
            ],
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"replies":[{"publish":{}},{"error":{"code":102,"message":"unknown channel"}},{"presence_stats":{"num_clients":2,"num_users":1}}]}"#
        );
    }

    #[test]
    fn transport_error_mode_statuses() {
        let status = |code: ErrorCode| ApiError::from(code).transport_status();
        assert_eq!(status(ErrorCode::Internal), 500);
        assert_eq!(status(ErrorCode::UnknownChannel), 404);
        assert_eq!(status(ErrorCode::MethodNotFound), 404);
        assert_eq!(status(ErrorCode::BadRequest), 400);
        assert_eq!(status(ErrorCode::NotAvailable), 400);
        assert_eq!(status(ErrorCode::UnrecoverablePosition), 416);
        assert_eq!(status(ErrorCode::PermissionDenied), 500);
    }

    #[test]
    fn requests_serialize_for_api_clients() {
        let req = PublishRequest {
            channel: "c".into(),
            data: serde_json::value::RawValue::from_string("{\"a\":1}".into()).ok(),
            exclude_users: vec!["u".into()],
            ..PublishRequest::default()
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"channel":"c","data":{"a":1},"exclude_users":["u"]}"#
        );
    }

    #[test]
    fn subscribe_refuses_b64info_and_b64data_each_on_its_own() {
        let refused = "b64info and b64data are not supported: crier carries JSON only";
        for body in [
            r#"{"user":"u","channel":"c","b64info":"aGk="}"#,
            r#"{"user":"u","channel":"c","b64data":"aGk="}"#,
        ] {
            assert!(
                matches!(parse(Method::Subscribe, body), Err(Error::InvalidApiRequest(m)) if m == refused),
                "{body}"
            );
        }
        assert!(parse(Method::Subscribe, r#"{"user":"u","channel":"c"}"#).is_ok());
    }

    #[test]
    fn zero_expiries_and_limits_are_left_out_of_a_written_request() {
        // Requests are written by clients of the API (the CLI): 0 means
        // "never" or "position only" and is omitted, as Centrifugo's are.
        let mut sub = SubscribeRequest {
            user: "u".into(),
            channel: "c".into(),
            ..Default::default()
        };
        assert_eq!(to_value(&sub), json!({"user": "u", "channel": "c"}));
        sub.expire_at = 1_700_000_000;
        assert_eq!(to_value(&sub)["expire_at"], 1_700_000_000i64);
        let mut refresh = RefreshRequest {
            user: "u".into(),
            ..Default::default()
        };
        assert_eq!(to_value(&refresh), json!({"user": "u"}));
        refresh.expire_at = -1;
        assert_eq!(to_value(&refresh)["expire_at"], -1);
        let mut history = HistoryRequest {
            channel: "c".into(),
            ..Default::default()
        };
        assert_eq!(to_value(&history), json!({"channel": "c"}));
        history.limit = -1;
        assert_eq!(to_value(&history)["limit"], -1);
    }
}
