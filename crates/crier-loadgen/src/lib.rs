//! Load-generation pieces shared by `crier bench` (in the `crier` binary)
//! and the peer load clients (`crates/crier-peers`), so that a comparison
//! of crier with another server measures both the same way:
//!
//! - [`flow`] keeps publishers from running ahead of deliveries by more
//!   than a window, with atomics only on the subscribers' path;
//! - [`payload`] writes the timed publication payload and reads its send
//!   time back without parsing JSON;
//! - [`usage`] reads a process's CPU time, memory and open-file limit from
//!   Linux's `/proc`.
//!
//! Nothing here opens a socket or speaks a protocol: that stays with each
//! load client.
#![forbid(unsafe_code)]

pub mod flow;
pub mod payload;
pub mod usage;
