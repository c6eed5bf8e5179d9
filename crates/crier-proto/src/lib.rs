//! Wire formats of crier, compatible with Centrifugo's client protocol v2
//! (JSON) and its server HTTP API (v5/v6).
//!
//! This crate owns the bytes that cross the network and nothing else: it has
//! no sockets, no runtime, no HTTP types. The server reads a frame, hands it
//! here, gets typed values back, and asks here for the bytes to send.
//!
//! Map of the modules:
//!
//! - [`codes`]: error, unsubscribe and disconnect codes with their public
//!   messages, and the reconnect/resubscribe rules the client SDKs apply.
//! - [`client`]: the bidirectional client protocol. [`client::Command`] and the
//!   requests it carries (parsed from a WebSocket frame that may hold several
//!   newline-separated commands), [`client::Reply`], [`client::Push`] and every
//!   result type, serialized the way Centrifugo does (zero values omitted).
//! - [`encode`]: hand-written encoders for the frames that go to many clients
//!   at once (publication, join, leave, message, unsubscribe, disconnect
//!   pushes), for bidirectional and unidirectional transports.
//! - [`api`]: the server HTTP API (`POST /api/<method>`): requests, results,
//!   the `{"result": ...}` / `{"error": ...}` envelope and batches.
//!
//! Errors that can reach the wire are values of [`Error`], and each variant
//! maps onto exactly one protocol code.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod client;
pub mod codes;
pub mod depth;
pub mod encode;
mod error;
pub mod protobuf;

pub use error::Error;
