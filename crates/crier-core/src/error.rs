//! The hub's errors. Each variant names the protocol code it becomes where
//! it meets the wire (the server does that mapping).

use crate::engine::EngineError;
use crate::event::ClientId;

/// Why a hub operation failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HubError {
    /// The channel's namespace is not configured (protocol error 102).
    #[error("unknown channel {0:?}: its namespace is not configured")]
    UnknownChannel(String),
    /// The channel name is empty or too long (protocol error 107).
    #[error("invalid channel name")]
    InvalidChannel,
    /// No connected client has this id.
    #[error("unknown client {0}")]
    UnknownClient(ClientId),
    /// The client is already subscribed to the channel (protocol error 105).
    #[error("already subscribed")]
    AlreadySubscribed,
    /// The client's queue overflowed; it was disconnected as slow (3008).
    #[error("client {0} is too slow and was disconnected")]
    SlowClient(ClientId),
    /// The engine failed (protocol error 100, or 112 for a bad position).
    #[error(transparent)]
    Engine(#[from] EngineError),
}
