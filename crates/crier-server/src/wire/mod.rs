//! Where crier-core meets client protocol v2: core publications, client
//! infos and positions in wire form, hub errors and disconnect reasons as
//! protocol codes, and the encoded frames a transport writes (`frames`,
//! with the table of encoding slots). No I/O, no decisions about who gets
//! what.

pub(crate) mod frames;

use bytes::{Bytes, BytesMut};
use crier_core::Outbound;
use crier_core::{
    Catchup, ClientInfo, DisconnectReason, EngineError, HistoryPage, HistoryQuery, HubError, StreamPosition,
    Subscribed,
};
use crier_proto::client::{self as wire, Payload, Reply};
use crier_proto::codes::{Disconnect, ErrorCode, Unsubscribe};
use crier_proto::encode::{self, Envelope};
use crier_proto::protobuf;

use crate::net::deflate::{self, Deflate};

use crate::config::ChannelOptions;

/// A wire format of client protocol v2: how a connection's frames decode
/// into commands, and how replies and pushes for that connection encode,
/// with the slot its shared event encodings use. The session and the
/// transports only go through this, so the formats share one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    /// JSON in text frames, messages joined with `\n`.
    Json,
    /// Protobuf in binary frames, varint-length-delimited messages one
    /// after another.
    Protobuf,
}

/// The commands of one frame, whichever the format.
pub(crate) enum Commands<J, P> {
    Json(J),
    Protobuf(P),
}

impl<J, P> Iterator for Commands<J, P>
where
    J: Iterator<Item = Result<wire::Command, crier_proto::Error>>,
    P: Iterator<Item = Result<wire::Command, crier_proto::Error>>,
{
    type Item = Result<wire::Command, crier_proto::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Commands::Json(j) => j.next(),
            Commands::Protobuf(p) => p.next(),
        }
    }
}

impl Codec {
    /// The commands in one frame, in order; each may fail on its own.
    pub(crate) fn decode(
        self,
        frame: &[u8],
    ) -> impl Iterator<Item = Result<wire::Command, crier_proto::Error>> + '_ {
        match self {
            Codec::Json => Commands::Json(wire::parse_frame(frame)),
            Codec::Protobuf => Commands::Protobuf(protobuf::parse_frame(frame)),
        }
    }

    /// One reply.
    pub(crate) fn reply(self, reply: &Reply) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            Codec::Json => encode::reply(&mut buf, reply),
            Codec::Protobuf => protobuf::reply(&mut buf, reply),
        }
        buf.freeze()
    }

    /// An error reply to command `id`.
    pub(crate) fn error(self, id: u32, code: ErrorCode) -> Bytes {
        self.reply(&Reply::error(id, code))
    }

    /// An unsubscribe push for `channel`.
    pub(crate) fn unsubscribe(self, channel: &str, u: &Unsubscribe) -> Bytes {
        match self {
            Codec::Json => unsubscribe_push(channel, u),
            Codec::Protobuf => {
                let mut buf = BytesMut::new();
                protobuf::unsubscribe_push(&mut buf, channel, u);
                buf.freeze()
            }
        }
    }

    /// One queued item as this format's message (bidirectional): a shared
    /// event's cached encoding in this format's slot (made by the first
    /// writer that needs it), or the client's own bytes.
    pub(crate) fn outbound(self, item: &Outbound) -> &Bytes {
        match self {
            Codec::Json => frames::encoded(item, frames::BIDI_JSON, Envelope::Reply),
            Codec::Protobuf => match item {
                Outbound::Raw(bytes) => bytes,
                Outbound::Event(ev) => ev.encoded(frames::BIDI_PROTOBUF, frames::encode_protobuf),
            },
        }
    }

    /// One queued item as a frame of its own, for a connection that agreed
    /// on compression `d`: compressed unless shorter than its minimum, and
    /// for a shared event compressed once (in this format's compressed
    /// slot) for every subscriber. The bytes, and whether compressed.
    pub(crate) fn outbound_deflated(self, item: &Outbound, d: Deflate) -> (Bytes, bool) {
        let plain = self.outbound(item);
        if plain.len() < d.min_size {
            return (plain.clone(), false);
        }
        let compressed = match item {
            Outbound::Event(ev) => {
                let slot = match self {
                    Codec::Json => frames::BIDI_JSON_DEFLATE,
                    Codec::Protobuf => frames::BIDI_PROTOBUF_DEFLATE,
                };
                ev.encoded(slot, |_| deflate::compress(plain, d.level)).clone()
            }
            Outbound::Raw(_) => deflate::compress(plain, d.level),
        };
        (compressed, true)
    }

    /// The server's ping: `{}` in JSON, an empty reply in protobuf.
    pub(crate) fn ping(self) -> Bytes {
        Bytes::from_static(match self {
            Codec::Json => encode::PING,
            Codec::Protobuf => protobuf::PING,
        })
    }

    /// Whether frames of this format are binary (else text).
    pub(crate) fn binary(self) -> bool {
        self == Codec::Protobuf
    }

    /// The name of the format, for logs and metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Protobuf => "protobuf",
        }
    }
}

pub(crate) fn code_of(code: u32) -> ErrorCode {
    ErrorCode::from_code(code).unwrap_or(ErrorCode::Internal)
}

fn payload(bytes: &Bytes) -> Option<Payload> {
    (!bytes.is_empty()).then(|| Payload::new(bytes.clone()))
}

/// The protocol error a hub error becomes.
pub(crate) fn hub_error_code(e: &HubError) -> ErrorCode {
    match e {
        HubError::UnknownChannel(_) => ErrorCode::UnknownChannel,
        HubError::InvalidChannel => ErrorCode::BadRequest,
        HubError::AlreadySubscribed => ErrorCode::AlreadySubscribed,
        HubError::Engine(EngineError::UnrecoverablePosition) => ErrorCode::UnrecoverablePosition,
        HubError::UnknownClient(_) | HubError::SlowClient(_) | HubError::Engine(_) => ErrorCode::Internal,
    }
}

/// A core publication in wire form (for catch-up and history replies).
pub(crate) fn wire_publication(p: &crier_core::Publication) -> wire::Publication {
    wire::Publication {
        data: payload(&p.data),
        info: p.info.as_deref().map(wire_client_info),
        offset: p.offset,
        tags: p
            .tags
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A core client info in wire form.
pub(crate) fn wire_client_info(i: &ClientInfo) -> wire::ClientInfo {
    wire::ClientInfo {
        user: i.user.to_string(),
        client: i.client.to_string(),
        conn_info: i.conn_info().and_then(payload),
        chan_info: i.chan_info().and_then(payload),
    }
}

/// The subscribe result for a hub subscription.
pub(crate) fn subscribe_result(
    s: &Subscribed,
    recoverable: bool,
    positioned: bool,
    recover: bool,
) -> wire::SubscribeResult {
    wire::SubscribeResult {
        recoverable,
        positioned: positioned || recoverable,
        epoch: if positioned || recoverable {
            s.position.epoch.to_string()
        } else {
            String::new()
        },
        offset: if positioned || recoverable {
            s.position.offset
        } else {
            0
        },
        publications: s.publications.iter().map(wire_publication).collect(),
        recovered: recover && s.recovered,
        was_recovering: recover,
        ..Default::default()
    }
}

/// How a subscription behaves, from the channel's options and the request.
pub(crate) struct SubscriptionMode {
    /// Subscriber gets offsets/epoch and can recover later.
    pub(crate) recoverable: bool,
    /// Subscriber gets its stream position.
    pub(crate) positioned: bool,
    /// Where the stream starts.
    pub(crate) catchup: Catchup,
}

impl SubscriptionMode {
    /// Decides the mode of a subscription to a channel with `options`.
    pub(crate) fn new(options: &ChannelOptions, req: &wire::SubscribeRequest) -> Self {
        let history = options.history_enabled();
        let recoverable = history && (options.force_recovery || (options.allow_recovery && req.recoverable));
        let positioned = history
            && (recoverable || options.force_positioning || (options.allow_positioning && req.positioned));
        let catchup = if recoverable && req.recover {
            Catchup::Recover(StreamPosition {
                offset: req.offset,
                epoch: req.epoch.as_str().into(),
            })
        } else {
            Catchup::None
        };
        Self {
            recoverable,
            positioned,
            catchup,
        }
    }
}

/// A history query for the client protocol and the server API alike:
/// `limit` as the wire says it (0 = position only, negative = all), capped
/// by `client.history_max_publication_limit` (`max`, 0 = no cap).
pub(crate) fn history_query(
    max: usize,
    limit: i32,
    since: Option<&wire::StreamPosition>,
    reverse: bool,
) -> HistoryQuery {
    let limit = match limit {
        0 => Some(0),
        n if n < 0 => (max > 0).then_some(max),
        n => Some(if max > 0 {
            (n as usize).min(max)
        } else {
            n as usize
        }),
    };
    HistoryQuery {
        since: since.map(|s| StreamPosition {
            offset: s.offset,
            epoch: s.epoch.as_str().into(),
        }),
        limit,
        reverse,
    }
}

/// A history page in wire form.
pub(crate) fn history_result(page: &HistoryPage) -> wire::HistoryResult {
    wire::HistoryResult {
        publications: page.publications.iter().map(wire_publication).collect(),
        epoch: page.position.epoch.to_string(),
        offset: page.position.offset,
    }
}

/// The hub disconnect reason for a protocol disconnect.
pub(crate) fn reason_of(d: &Disconnect) -> DisconnectReason {
    DisconnectReason::Custom {
        code: d.code as u16,
        reason: d.reason.as_ref().into(),
        reconnect: d.reconnect(),
    }
}

/// The protocol disconnect a hub reason becomes on the wire.
pub(crate) fn disconnect_of(reason: &DisconnectReason) -> Disconnect {
    match reason {
        DisconnectReason::Slow => Disconnect::SLOW,
        DisconnectReason::Shutdown => Disconnect::SHUTDOWN,
        DisconnectReason::Removed => Disconnect::CONNECTION_CLOSED,
        DisconnectReason::Custom { code, reason, .. } => {
            Disconnect::new(u32::from(*code), reason.to_string())
        }
    }
}

/// An unsubscribe push for `channel`, as queued by server-side unsubscribe.
pub(crate) fn unsubscribe_push(channel: &str, u: &Unsubscribe) -> Bytes {
    let mut buf = BytesMut::new();
    encode::unsubscribe_push(&mut buf, encode::Envelope::Reply, channel, u);
    buf.freeze()
}
