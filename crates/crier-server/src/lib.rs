//! crier-server: everything between the network and `crier-core`.
//!
//! - [`config`] reads the server configuration (Centrifugo v6 key names,
//!   TOML / JSON / YAML, `CRIER_*` environment overrides) and validates it.
//! - [`auth`] verifies connection and subscription JWTs, checks server API
//!   keys, and decides channel permissions from namespace options.
//! - [`node`] is one running node: hub, config, verifier, shutdown signal.
//! - [`session`] is the client protocol state machine of one connection,
//!   transport-agnostic; [`ws`] is the bidirectional WebSocket transport,
//!   over [`websocket`] (handshake, client frame reader, vectored writer);
//!   [`uni`] the unidirectional ones (uni WebSocket, SSE, HTTP streaming);
//!   [`frames`] encodes queued events into JSON frames.
//! - [`api`] is the server HTTP API (`POST /api/<method>`).
//! - [`tcp`] plain TCP listeners; [`watch`] file sources.
//! - [`metrics`] counts for Prometheus and serves `GET /metrics`.
//! - [`server`] binds, routes and shuts down gracefully.
//! - `redis_broker` (feature `redis`) and `nats_broker` (feature `nats`):
//!   offsets, history, presence and pub/sub between nodes, in Redis or in
//!   NATS JetStream; `broker` is what they share, and `cluster` puts
//!   either behind the hub when `engine.type` is `"redis"` or `"nats"`.
//!
//! This crate must never be imported by `crier-core` or `crier-proto`.
#![forbid(unsafe_code)]

mod admission;
pub(crate) mod api;
pub mod auth;
/// What the Redis and NATS brokers share (feature `redis` or `nats`).
#[cfg(feature = "cluster")]
pub mod broker;
mod clock;
/// The cluster engines: nodes sharing channels through Redis or NATS.
#[cfg(feature = "cluster")]
pub(crate) mod cluster;
pub mod config;
pub(crate) mod frames;
pub mod metrics;
/// NATS broker: shared offsets and history in JetStream, presence in a
/// JetStream stream, fan-out over core NATS (feature `nats`).
#[cfg(feature = "nats")]
#[path = "nats/mod.rs"] // named nats_broker so it does not shadow the `async_nats` crate's users
pub mod nats_broker;
pub mod node;
/// Redis broker: shared offsets, history, presence and pub/sub (feature `redis`).
#[cfg(feature = "redis")]
#[path = "redis/mod.rs"] // named redis_broker so it does not shadow the `redis` crate
pub mod redis_broker;
pub mod server;
pub(crate) mod session;
pub(crate) mod tcp;
pub(crate) mod uni;
pub(crate) mod watch;
pub(crate) mod websocket;
pub(crate) mod ws;

pub use node::Node;
pub use server::{Server, ServerError};
