//! All crier-server integration tests, one binary: real sockets on port 0.

mod server;
