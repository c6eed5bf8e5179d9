//! Counters a metrics exporter reads: cheap relaxed atomics, bumped once per
//! operation (never once per delivery inside the fan-out loop).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) clients: AtomicU64,
    pub(crate) channels: AtomicU64,
    pub(crate) subscriptions: AtomicU64,
    pub(crate) publications: AtomicU64,
    pub(crate) deliveries: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) dropped_slow: AtomicU64,
    pub(crate) dropped_closed: AtomicU64,
    pub(crate) disconnected: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> HubStats {
        HubStats {
            clients: self.clients.load(Relaxed),
            channels: self.channels.load(Relaxed),
            subscriptions: self.subscriptions.load(Relaxed),
            publications: self.publications.load(Relaxed),
            deliveries: self.deliveries.load(Relaxed),
            messages: self.messages.load(Relaxed),
            dropped_slow: self.dropped_slow.load(Relaxed),
            dropped_closed: self.dropped_closed.load(Relaxed),
            disconnected: self.disconnected.load(Relaxed),
        }
    }
}

/// A snapshot of the hub's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Connected clients now.
    pub clients: u64,
    /// Channels with at least one local subscriber now.
    pub channels: u64,
    /// Client subscriptions now.
    pub subscriptions: u64,
    /// Publications accepted since start.
    pub publications: u64,
    /// Channel events enqueued to clients since start.
    pub deliveries: u64,
    /// Direct messages enqueued to clients since start.
    pub messages: u64,
    /// Clients dropped because their queue overflowed (code 3008).
    pub dropped_slow: u64,
    /// Clients forgotten because their receiver was gone.
    pub dropped_closed: u64,
    /// Clients disconnected on request (by the embedder, API or shutdown).
    pub disconnected: u64,
}
