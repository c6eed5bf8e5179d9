//! The transports that accept clients. Each only adapts its I/O: it hands
//! what a client sent to the one admission path and the session, and
//! writes what the hub queued. They never import each other; what they
//! share lives below them (`net`, `wire`, `session`).

pub(crate) mod emulation;
pub(crate) mod tcp;
pub(crate) mod uni;
pub(crate) mod websocket;
