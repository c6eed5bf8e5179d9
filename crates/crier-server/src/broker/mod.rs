//! What the cluster engines share: the broker's vocabulary (positions,
//! publications, presence entries, events, errors), the binary encoding of
//! a publication and of a client's info (the same bytes in Redis and in
//! NATS). `cluster::dispatch` puts the two brokers behind one enum.
//!
//! A broker gives every node the same per-channel stream: offsets that
//! start at 1 and grow by one per publication within an epoch, history for
//! recovery, presence with expiry, and pub/sub of the stream's
//! publications to the nodes that subscribed to the channel, in offset
//! order, while their connection lives ([`BrokerEvent::Lost`] when it
//! does not).

pub(crate) mod codec;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;

pub use codec::{decode_info, encode_info, InfoParts};

/// The control channel: the empty name, which is never a valid crier
/// channel, so no user channel can share its pub/sub subject. Its messages
/// come out of a subscriber as publications with offset 0.
pub const CONTROL: &str = "";

/// What can go wrong talking to the broker (Redis or NATS).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker refused the connection, did not answer in time, or is
    /// not serving (loading, read-only…). Temporary: API error 100.
    #[error("{0}")]
    Unavailable(String),
    /// The `since` position is of another epoch or beyond the top of the
    /// stream (protocol error 112); `current` is the stream's position now.
    #[error("unrecoverable position")]
    UnrecoverablePosition {
        /// The stream's current position.
        current: StreamPosition,
    },
    /// The broker answered something unexpected (a script error, a reply
    /// of the wrong shape, a malformed stored publication).
    #[error("broker protocol error: {0}")]
    Protocol(String),
    /// The configuration cannot work (no address, a bad URL or prefix).
    #[error("invalid engine configuration: {0}")]
    InvalidConfig(String),
}

/// A place in a channel's stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// Offset of the latest publication (0 before the first).
    pub offset: u64,
    /// The stream's incarnation.
    pub epoch: String,
}

/// How to publish.
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    /// Publications kept in history; 0 keeps none (the offset still grows).
    pub history_size: usize,
    /// How long history lives after the last publication; zero = forever.
    pub history_ttl: Duration,
    /// How long the channel's offset and epoch live after its last
    /// publication or history read; zero = forever.
    pub meta_ttl: Duration,
    /// Opaque publisher info (the hub's encoding of a client).
    pub info: Option<Bytes>,
    /// Key/value tags.
    pub tags: Vec<(String, String)>,
    /// Connections that must not receive it.
    pub exclude_clients: Vec<String>,
    /// Users none of whose connections may receive it.
    pub exclude_users: Vec<String>,
}

/// Which part of a channel's history to read.
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    /// After this position (before it when `reverse`); its epoch must match
    /// the stream's, unless empty (any epoch, as Centrifugo accepts).
    pub since: Option<StreamPosition>,
    /// At most this many; `None` = all, `Some(0)` = only the position.
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
    /// Refreshes the meta key's TTL (zero = leave it).
    pub meta_ttl: Duration,
    /// The channel's history size and TTL, for a broker that applies them
    /// when reading (NATS keeps a fixed number per channel); Redis trims
    /// when publishing and ignores these.
    pub history_size: usize,
    /// See `history_size`; zero = forever.
    pub history_ttl: Duration,
}

/// A publication as stored in, or received from, the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotePublication {
    /// Its offset in the channel's stream.
    pub offset: u64,
    /// The payload, byte-exact as published.
    pub data: Bytes,
    /// Publisher info, as published.
    pub info: Option<Bytes>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// Connections that must not receive it.
    pub exclude_clients: Vec<String>,
    /// Users none of whose connections may receive it.
    pub exclude_users: Vec<String>,
}

/// One client in a channel's presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The client id (node-unique, given by the caller).
    pub client: String,
    /// Its user; empty for anonymous.
    pub user: String,
    /// Opaque info, as added.
    pub info: Bytes,
}

/// What a node hears from its broker subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerEvent {
    /// A publication in a subscribed channel, from any node.
    Publication {
        /// The channel.
        channel: Arc<str>,
        /// Its offset.
        offset: u64,
        /// The stream's epoch when it was published.
        epoch: String,
        /// The publication.
        publication: RemotePublication,
    },
    /// The pub/sub connection to shard `shard` is down (or its first
    /// connection attempt failed): publications of its channels may be
    /// missed from now until [`BrokerEvent::Restored`].
    Lost {
        /// Index of the Redis shard in `engine.redis.address` (0 for NATS).
        shard: usize,
    },
    /// Shard `shard` is back and every channel subscribed on it is
    /// subscribed again.
    Restored {
        /// Index of the Redis shard in `engine.redis.address` (0 for NATS).
        shard: usize,
    },
}

/// Makes epochs: 16 hex digits, random per process, never repeated in it.
#[derive(Debug, Default)]
pub(crate) struct Epochs {
    seed: RandomState,
    counter: AtomicU64,
}

impl Epochs {
    /// A fresh epoch.
    pub(crate) fn next(&self) -> String {
        let mut h = self.seed.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        format!("{:016x}", h.finish())
    }
}

/// The receiving half of a subscriber: what the node hears from the broker.
pub struct BrokerEvents {
    rx: mpsc::Receiver<BrokerEvent>,
}

impl BrokerEvents {
    pub(crate) fn new(rx: mpsc::Receiver<BrokerEvent>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the subscriber stopped.
    pub async fn recv(&mut self) -> Option<BrokerEvent> {
        self.rx.recv().await
    }
}
