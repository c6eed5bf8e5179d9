//! Authentication and authorization, with Centrifugo v5/v6 semantics.
//!
//! Owns:
//! - [`TokenVerifier`]: connection and subscription JWT verification
//!   (HS256/384/512, RS256/384/512, ES256/384) and [`sign_hs256`] /
//!   [`TokenBuilder`] for `crier token` and tests;
//! - [`api_key_matches`] and [`api_key_from_headers`] for the server API;
//! - [`AccessPolicy`]: whether a connection may subscribe, publish, read
//!   history or presence in a channel, from namespace options.
//!
//! Every refusal maps onto a protocol code (see the constants below and
//! [`TokenError::on_connect`], [`TokenError::on_subscribe`],
//! [`Permission::error_code`]). This module must never touch sockets, parse
//! configuration files or read the environment; it takes a loaded
//! [`crate::config::Config`].

mod api_key;
mod permission;
mod token;

pub use api_key::{api_key_from_headers, api_key_matches};
pub use permission::{AccessPolicy, ChannelAction, Permission, Requester};
pub use token::{
    sign_hs256, ChannelOverrides, ConnectClaims, Rejection, SubscribeClaims, SubscriptionOptions,
    TokenBuilder, TokenError, TokenVerifier,
};

/// Protocol error 103: permission denied.
pub const ERROR_PERMISSION_DENIED: u32 = 103;
/// Protocol error 108: not available (feature off in this namespace).
pub const ERROR_NOT_AVAILABLE: u32 = 108;
/// Protocol error 109: token expired (the client gets a fresh token and retries).
pub const ERROR_TOKEN_EXPIRED: u32 = 109;
/// Disconnect 3500: invalid token (terminal, the client does not reconnect).
pub const DISCONNECT_INVALID_TOKEN: u32 = 3500;
