//! Protocol codes: client errors (100–112), unsubscribe advices (2000–2999)
//! and disconnect advices (3000–4999), with the exact public strings
//! Centrifugo sends and the rules SDKs derive from the numbers.
//!
//! This module owns numbers and their meaning. It must never decide *when* a
//! code is sent (that is the server's policy) and must never invent strings
//! that differ from Centrifugo's: SDKs, dashboards and log parsers match on
//! them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A client error returned in a reply to a command, or in a server API
/// response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100: something went wrong on the server; the client may retry.
    Internal,
    /// 101: the request is not authorized.
    Unauthorized,
    /// 102: the channel's namespace does not exist.
    UnknownChannel,
    /// 103: the client may not do this.
    PermissionDenied,
    /// 104: the command names no method the server knows.
    MethodNotFound,
    /// 105: the connection is already subscribed to the channel.
    AlreadySubscribed,
    /// 106: some configured limit was reached.
    LimitExceeded,
    /// 107: the request is malformed; retrying will not help.
    BadRequest,
    /// 108: the feature (history, presence, ...) is off for this channel.
    NotAvailable,
    /// 109: the connection token expired; SDKs fetch a new one.
    TokenExpired,
    /// 110: the connection expired (no token involved).
    Expired,
    /// 111: rate limited; the client may retry later.
    TooManyRequests,
    /// 112: the stream no longer holds the requested position.
    UnrecoverablePosition,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::Internal,
        ErrorCode::Unauthorized,
        ErrorCode::UnknownChannel,
        ErrorCode::PermissionDenied,
        ErrorCode::MethodNotFound,
        ErrorCode::AlreadySubscribed,
        ErrorCode::LimitExceeded,
        ErrorCode::BadRequest,
        ErrorCode::NotAvailable,
        ErrorCode::TokenExpired,
        ErrorCode::Expired,
        ErrorCode::TooManyRequests,
        ErrorCode::UnrecoverablePosition,
    ];

    /// The number on the wire.
    pub const fn code(self) -> u32 {
        match self {
            ErrorCode::Internal => 100,
            ErrorCode::Unauthorized => 101,
            ErrorCode::UnknownChannel => 102,
            ErrorCode::PermissionDenied => 103,
            ErrorCode::MethodNotFound => 104,
            ErrorCode::AlreadySubscribed => 105,
            ErrorCode::LimitExceeded => 106,
            ErrorCode::BadRequest => 107,
            ErrorCode::NotAvailable => 108,
            ErrorCode::TokenExpired => 109,
            ErrorCode::Expired => 110,
            ErrorCode::TooManyRequests => 111,
            ErrorCode::UnrecoverablePosition => 112,
        }
    }

    /// The message Centrifugo sends with the code.
    pub const fn message(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal server error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownChannel => "unknown channel",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::MethodNotFound => "method not found",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotAvailable => "not available",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::Expired => "expired",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::UnrecoverablePosition => "unrecoverable position",
        }
    }

    /// Whether the client should treat the error as transient and retry;
    /// sent as `"temporary": true` in the client protocol.
    pub const fn temporary(self) -> bool {
        matches!(self, ErrorCode::Internal | ErrorCode::TooManyRequests)
    }

    /// The code with this number, if it is one of Centrifugo's built-in codes.
    pub fn from_code(code: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// Why the server removed a subscription, sent in an `unsubscribe` push.
///
/// Codes are in 2000–2999; a client resubscribes on codes ≥ 2500 and stays
/// unsubscribed below that.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// The unsubscribe code.
    pub code: u32,
    /// A short reason for humans and logs; omitted on the wire when empty.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub reason: Cow<'static, str>,
}

impl Unsubscribe {
    /// 2000: unsubscribed through the server API; no resubscribe.
    pub const SERVER: Unsubscribe = Unsubscribe::of(2000, "server unsubscribe");
    /// 2500: the server detected a gap in the channel stream; the client
    /// resubscribes and recovers from its last position.
    pub const INSUFFICIENT_STATE: Unsubscribe = Unsubscribe::of(2500, "insufficient state");
    /// 2501: the subscription token expired; the client resubscribes with a
    /// fresh token.
    pub const EXPIRED: Unsubscribe = Unsubscribe::of(2501, "subscription expired");

    const fn of(code: u32, reason: &'static str) -> Unsubscribe {
        Unsubscribe {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    /// An application-defined unsubscribe.
    pub fn new(code: u32, reason: impl Into<Cow<'static, str>>) -> Unsubscribe {
        Unsubscribe {
            code,
            reason: reason.into(),
        }
    }

    /// Whether a client SDK will try to subscribe again.
    pub const fn resubscribe(&self) -> bool {
        self.code >= 2500
    }
}

/// Why the server is closing a connection: sent as the WebSocket close code
/// and reason, or as a `disconnect` push on unidirectional transports.
///
/// Whether the client reconnects follows from the code alone (see
/// [`Disconnect::reconnect`]), so it is not stored: a value can never claim
/// "reconnect" for a terminal code. Centrifugo's v2 protocol does not send the
/// legacy `reconnect` field either; serialization emits `{code, reason}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Disconnect {
    /// The disconnect code, 3000–4999.
    pub code: u32,
    /// A short reason; must fit a WebSocket close frame (at most 123 bytes).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub reason: Cow<'static, str>,
}

impl Disconnect {
    /// 3000: the connection closed without advice from the server.
    pub const CONNECTION_CLOSED: Disconnect = Disconnect::of(3000, "connection closed");
    /// 3001: the node is shutting down.
    pub const SHUTDOWN: Disconnect = Disconnect::of(3001, "shutdown");
    /// 3004: an internal error on the server.
    pub const SERVER_ERROR: Disconnect = Disconnect::of(3004, "internal server error");
    /// 3005: the connection expired and was not refreshed.
    pub const EXPIRED: Disconnect = Disconnect::of(3005, "connection expired");
    /// 3006: a subscription expired and was not refreshed.
    pub const SUB_EXPIRED: Disconnect = Disconnect::of(3006, "subscription expired");
    /// 3008: the client does not read fast enough.
    pub const SLOW: Disconnect = Disconnect::of(3008, "slow");
    /// 3009: writing to the connection failed.
    pub const WRITE_ERROR: Disconnect = Disconnect::of(3009, "write error");
    /// 3010: the client's position in a stream is wrong; reconnecting lets it
    /// recover.
    pub const INSUFFICIENT_STATE: Disconnect = Disconnect::of(3010, "insufficient state");
    /// 3011: the server asks the client to reconnect.
    pub const FORCE_RECONNECT: Disconnect = Disconnect::of(3011, "force reconnect");
    /// 3012: no pong to the server's ping in time.
    pub const NO_PONG: Disconnect = Disconnect::of(3012, "no pong");
    /// 3013: the client sent too many commands.
    pub const TOO_MANY_REQUESTS: Disconnect = Disconnect::of(3013, "too many requests");
    /// 3500: the connection token is invalid.
    pub const INVALID_TOKEN: Disconnect = Disconnect::of(3500, "invalid token");
    /// 3501: the client sent a malformed frame.
    pub const BAD_REQUEST: Disconnect = Disconnect::of(3501, "bad request");
    /// 3502: the connection did not authenticate in time.
    pub const STALE: Disconnect = Disconnect::of(3502, "stale");
    /// 3503: the server disconnects and asks the client not to come back.
    pub const FORCE_DISCONNECT: Disconnect = Disconnect::of(3503, "force disconnect");
    /// 3504: a connection limit was exceeded.
    pub const CONNECTION_LIMIT: Disconnect = Disconnect::of(3504, "connection limit");
    /// 3505: a channel limit was exceeded.
    pub const CHANNEL_LIMIT: Disconnect = Disconnect::of(3505, "channel limit");
    /// 3506: the connection's format cannot carry the data (e.g. binary to a
    /// JSON client).
    pub const INAPPROPRIATE_PROTOCOL: Disconnect = Disconnect::of(3506, "inappropriate protocol");
    /// 3507: the client lacks permission to use the server.
    pub const PERMISSION_DENIED: Disconnect = Disconnect::of(3507, "permission denied");
    /// 3508: what the client asked for is not available as a command.
    pub const NOT_AVAILABLE: Disconnect = Disconnect::of(3508, "not available");
    /// 3509: the client caused too many errors.
    pub const TOO_MANY_ERRORS: Disconnect = Disconnect::of(3509, "too many errors");

    const fn of(code: u32, reason: &'static str) -> Disconnect {
        Disconnect {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    /// An application-defined disconnect (codes 4000–4999 are reserved for
    /// applications).
    pub fn new(code: u32, reason: impl Into<Cow<'static, str>>) -> Disconnect {
        Disconnect {
            code,
            reason: reason.into(),
        }
    }

    /// Whether a client SDK reconnects after this disconnect: it does for
    /// 3000–3499 and 4000–4499 and gives up for 3500–3999 and 4500–4999.
    /// Codes outside 3000–4999 are transport-level closes, after which SDKs
    /// reconnect too.
    pub const fn reconnect(&self) -> bool {
        !matches!(self.code, 3500..=3999 | 4500..=4999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_carry_centrifugo_numbers_and_messages() {
        let table = [
            (100, "internal server error", true),
            (101, "unauthorized", false),
            (102, "unknown channel", false),
            (103, "permission denied", false),
            (104, "method not found", false),
            (105, "already subscribed", false),
            (106, "limit exceeded", false),
            (107, "bad request", false),
            (108, "not available", false),
            (109, "token expired", false),
            (110, "expired", false),
            (111, "too many requests", true),
            (112, "unrecoverable position", false),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len());
        for (code, (num, message, temporary)) in ErrorCode::ALL.into_iter().zip(table) {
            assert_eq!(code.code(), num);
            assert_eq!(code.message(), message);
            assert_eq!(code.temporary(), temporary, "{code:?}");
            assert_eq!(ErrorCode::from_code(num), Some(code));
        }
        assert_eq!(ErrorCode::from_code(113), None);
        assert_eq!(ErrorCode::from_code(0), None);
    }

    #[test]
    fn disconnect_reconnect_follows_the_code_ranges() {
        let reconnecting = [
            Disconnect::CONNECTION_CLOSED,
            Disconnect::SHUTDOWN,
            Disconnect::SERVER_ERROR,
            Disconnect::EXPIRED,
            Disconnect::SUB_EXPIRED,
            Disconnect::SLOW,
            Disconnect::WRITE_ERROR,
            Disconnect::INSUFFICIENT_STATE,
            Disconnect::FORCE_RECONNECT,
            Disconnect::NO_PONG,
            Disconnect::TOO_MANY_REQUESTS,
        ];
        let terminal = [
            Disconnect::INVALID_TOKEN,
            Disconnect::BAD_REQUEST,
            Disconnect::STALE,
            Disconnect::FORCE_DISCONNECT,
            Disconnect::CONNECTION_LIMIT,
            Disconnect::CHANNEL_LIMIT,
            Disconnect::INAPPROPRIATE_PROTOCOL,
            Disconnect::PERMISSION_DENIED,
            Disconnect::NOT_AVAILABLE,
            Disconnect::TOO_MANY_ERRORS,
        ];
        for d in &reconnecting {
            assert!((3000..3500).contains(&d.code), "{d:?}");
            assert!(d.reconnect(), "{d:?}");
        }
        for d in &terminal {
            assert!((3500..4000).contains(&d.code), "{d:?}");
            assert!(!d.reconnect(), "{d:?}");
        }
        // Application ranges.
        assert!(Disconnect::new(4000, "app").reconnect());
        assert!(Disconnect::new(4499, "app").reconnect());
        assert!(!Disconnect::new(4500, "app").reconnect());
        assert!(!Disconnect::new(4999, "app").reconnect());
        // Every built-in reason fits a WebSocket close frame.
        for d in reconnecting.iter().chain(&terminal) {
            assert!(d.reason.len() <= 123);
        }
    }

    #[test]
    fn disconnect_strings_match_centrifugo() {
        assert_eq!(Disconnect::SERVER_ERROR.reason, "internal server error");
        assert_eq!(Disconnect::EXPIRED.reason, "connection expired");
        assert_eq!(Disconnect::SUB_EXPIRED.reason, "subscription expired");
        assert_eq!(Disconnect::FORCE_DISCONNECT.reason, "force disconnect");
        assert_eq!(Disconnect::NO_PONG.code, 3012);
        assert_eq!(Disconnect::TOO_MANY_ERRORS.code, 3509);
    }

    #[test]
    fn unsubscribe_codes_and_resubscribe_rule() {
        assert_eq!(
            (Unsubscribe::SERVER.code, &*Unsubscribe::SERVER.reason),
            (2000, "server unsubscribe")
        );
        assert_eq!(
            (
                Unsubscribe::INSUFFICIENT_STATE.code,
                &*Unsubscribe::INSUFFICIENT_STATE.reason
            ),
            (2500, "insufficient state")
        );
        assert_eq!(
            (Unsubscribe::EXPIRED.code, &*Unsubscribe::EXPIRED.reason),
            (2501, "subscription expired")
        );
        assert!(!Unsubscribe::SERVER.resubscribe());
        assert!(Unsubscribe::INSUFFICIENT_STATE.resubscribe());
        assert!(Unsubscribe::EXPIRED.resubscribe());
    }

    #[test]
    fn disconnect_serializes_without_legacy_reconnect_field() {
        let json = serde_json::to_value(Disconnect::SHUTDOWN).unwrap();
        assert_eq!(json, serde_json::json!({"code": 3001, "reason": "shutdown"}));
        let json = serde_json::to_value(Disconnect::new(4001, "")).unwrap();
        assert_eq!(json, serde_json::json!({"code": 4001}));
        let parsed: Disconnect = serde_json::from_str(r#"{"code":4500}"#).unwrap();
        assert_eq!(parsed, Disconnect::new(4500, ""));
    }
}
