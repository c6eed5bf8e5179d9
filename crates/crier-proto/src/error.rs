//! The one error type of this crate.
//!
//! Owns the mapping from "what was wrong with the bytes" to the protocol code
//! the peer sees. It must never carry I/O errors: this crate does no I/O.

use crate::client::Method;
use crate::codes::{Disconnect, ErrorCode};

/// Something a peer sent could not be turned into a request.
///
/// Client-protocol variants end the connection with
/// [`Disconnect::BAD_REQUEST`] (3501), as Centrifugo does for malformed
/// frames; server-API variants become [`ErrorCode::BadRequest`] (107), or
/// [`ErrorCode::MethodNotFound`] (104) for an unknown batch command. Use
/// [`Error::disconnect`] and [`Error::error_code`] rather than matching, so
/// the mapping stays in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A line of a client frame is not a JSON `Command`.
    #[error("malformed command: {0}")]
    MalformedCommand(serde_json::Error),
    /// A binary frame of a protobuf client is not a sequence of
    /// varint-length-delimited `Command`s (truncated varint, a length past
    /// the frame, a field of the wrong wire type, text that is not UTF-8).
    #[error("malformed protobuf command: {0}")]
    MalformedProtobuf(&'static str),
    /// A command has an `id` but no request field, so there is nothing to
    /// reply to. (Without an id it would be a pong.)
    #[error("command {id} carries no request")]
    EmptyCommand {
        /// The id the client sent.
        id: u32,
    },
    /// A request that expects a reply came without an `id`; only `send` may.
    #[error("{method:?} command without id")]
    MissingId {
        /// The request the command carried.
        method: Method,
    },
    /// A server API body is not JSON of the shape the method takes (syntax
    /// error, wrong field type). Centrifugo answers these with HTTP 400.
    #[error("malformed API request: {0}")]
    MalformedApiRequest(serde_json::Error),
    /// A server API body parsed but misses something the method needs, such
    /// as a channel. Centrifugo answers these with `{"error":{"code":107}}`.
    #[error("invalid API request: {0}")]
    InvalidApiRequest(&'static str),
    /// A batch command names no method crier serves (a Centrifugo PRO
    /// method, or nothing at all).
    #[error("unknown API method")]
    UnknownApiMethod,
}

impl Error {
    /// The disconnect to close a client connection with, for errors of the
    /// client protocol; `None` for server API errors.
    pub fn disconnect(&self) -> Option<Disconnect> {
        match self {
            Error::MalformedCommand(_)
            | Error::MalformedProtobuf(_)
            | Error::EmptyCommand { .. }
            | Error::MissingId { .. } => Some(Disconnect::BAD_REQUEST),
            Error::MalformedApiRequest(_) | Error::InvalidApiRequest(_) | Error::UnknownApiMethod => None,
        }
    }

    /// The error code to answer a server API call with; `None` for errors of
    /// the client protocol, which disconnect instead.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Error::MalformedApiRequest(_) | Error::InvalidApiRequest(_) => Some(ErrorCode::BadRequest),
            Error::UnknownApiMethod => Some(ErrorCode::MethodNotFound),
            Error::MalformedCommand(_)
            | Error::MalformedProtobuf(_)
            | Error::EmptyCommand { .. }
            | Error::MissingId { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_disconnect_with_bad_request_and_api_errors_answer_107() {
        let json_err = serde_json::from_str::<u32>("x").unwrap_err();
        let client = Error::MalformedCommand(json_err);
        assert_eq!(client.disconnect().map(|d| d.code), Some(3501));
        assert_eq!(client.error_code(), None);

        let api = Error::InvalidApiRequest("channel required");
        assert_eq!(api.disconnect(), None);
        assert_eq!(api.error_code().map(ErrorCode::code), Some(107));
        assert_eq!(api.to_string(), "invalid API request: channel required");
    }
}
