//! All crier-proto integration tests, one binary (a module per area). They
//! use the crate's public API only.

mod protobuf;
