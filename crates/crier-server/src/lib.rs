//! crier-server: everything between the network and `crier-core`, in
//! layers whose imports go one way only (down). `ARCHITECTURE.md` has the
//! table; `tests/server/architecture.rs` enforces it.
//!
//! 0. Foundations, importing nothing of the crate: [`config`] (data and
//!    all its validation), `clock` (Unix time), `net` (HTTP write
//!    deadlines, RFC 6455 framing: no protocol knowledge).
//! 1. Vocabulary: `wire` (core ↔ client protocol types, encoded frames,
//!    codes), [`auth`] (tokens, API keys, permissions), [`metrics`] (what a
//!    node counts), `error` ([`ServerError`]).
//! 2. The engine seam: [`broker`] (what Redis and NATS share), then
//!    `redis_broker` / `nats_broker`, then `cluster` (either one behind the
//!    hub, control messages between nodes).
//! 3. [`node`]: shared context only (hub, config, auth, metrics, cluster).
//! 4. Services: `admission` (who may connect), `control` (typed
//!    operations on connections every node applies), then `session` (the
//!    client protocol state machine, format-free) and `api` (server API
//!    operations).
//! 5. Edges, which never import each other: `transport::{websocket, uni,
//!    tcp}`, the file source `watch`, the HTTP handlers `http`, and the
//!    admin web UI `admin`.
//! 6. [`server`]: binds, routes, wires control messages, shuts down; the
//!    only module that knows every transport.
//!
//! This crate must never be imported by `crier-core` or `crier-proto`.
#![forbid(unsafe_code)]

// 0. foundations
mod clock;
pub mod config;
mod net;

// 1. vocabulary
pub mod auth;
mod error;
pub mod metrics;
mod wire;

// 2. the engine seam
/// What the Redis and NATS brokers share (feature `redis` or `nats`).
#[cfg(feature = "cluster")]
pub mod broker;
/// The cluster engines: nodes sharing channels through Redis or NATS.
#[cfg(feature = "cluster")]
mod cluster;
/// NATS broker: shared offsets and history in JetStream, presence in a
/// JetStream stream, fan-out over core NATS (feature `nats`).
#[cfg(feature = "nats")]
#[path = "nats/mod.rs"] // named like redis_broker (which must not shadow the `redis` crate)
pub mod nats_broker;
/// The backend's HTTP proxies (connect, subscribe, publish, RPC): the
/// node's `crier_core::Hooks` unless an embedder gives its own.
mod proxy;
/// Redis broker: shared offsets, history, presence and pub/sub (feature `redis`).
#[cfg(feature = "redis")]
#[path = "redis/mod.rs"] // named redis_broker so it does not shadow the `redis` crate
pub mod redis_broker;
/// Lifecycle events POSTed to the backend (`crier.webhooks`).
mod webhooks;

// 3. the node
pub mod node;

// 4. services
mod admission;
mod api;
mod control;
mod session;

// 5. edges
/// The admin web UI and its endpoints (`admin.*`).
mod admin;
mod http;
mod transport;
mod watch;

// 6. the server
pub mod server;

// Parsers exposed to the fuzz targets (fuzz/) and the Autobahn echo example.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use error::ServerError;
pub use node::Node;
pub use proxy::Forwarded;
pub use server::{check_config, Server};
