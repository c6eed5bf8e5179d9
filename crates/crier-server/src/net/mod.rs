//! Network plumbing that knows nothing of crier's protocol: HTTP
//! connections with a write deadline, and RFC 6455 WebSocket framing.

pub(crate) mod deadline;
pub(crate) mod websocket;

pub(crate) use deadline::WriteDeadline;
