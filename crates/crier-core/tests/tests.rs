//! All crier-core integration tests, one binary (a module per area).

mod hub;
