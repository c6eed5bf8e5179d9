//! What the cluster engines share: the broker's vocabulary (positions,
//! publications, presence entries, events, errors), the binary encoding of
//! a publication and of a client's info (the same bytes in Redis and in
//! NATS), and [`Broker`], which dispatches to the broker the node runs on.
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

/// The broker a cluster node runs on.
#[derive(Clone, Debug)]
pub enum Broker {
    /// `engine.type = "redis"`.
    #[cfg(feature = "redis")]
    Redis(crate::redis_broker::RedisBroker),
    /// `engine.type = "nats"`.
    #[cfg(feature = "nats")]
    Nats(crate::nats_broker::NatsBroker),
}

/// The subscribe/unsubscribe half of a broker's subscriber.
#[derive(Clone)]
pub enum Subscriptions {
    /// Redis pub/sub.
    #[cfg(feature = "redis")]
    Redis(crate::redis_broker::Subscriptions),
    /// Core NATS subjects.
    #[cfg(feature = "nats")]
    Nats(crate::nats_broker::Subscriptions),
}

/// Calls the same method on whichever broker `$self` is.
macro_rules! dispatch {
    ($self:expr, $b:ident => $call:expr) => {
        match $self {
            #[cfg(feature = "redis")]
            Self::Redis($b) => $call,
            #[cfg(feature = "nats")]
            Self::Nats($b) => $call,
        }
    };
}

impl Subscriptions {
    /// Resolves once the broker confirmed the subscription: every
    /// publication made after it reaches this node while the connection
    /// lives.
    pub async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        dispatch!(self, s => s.subscribe(channel).await)
    }

    /// Stops the channel's publications reaching this node.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError> {
        dispatch!(self, s => s.unsubscribe(channel).await)
    }
}

impl Broker {
    /// Publishes `data` to `channel`: the next offset, kept in history,
    /// sent to every subscribed node.
    pub async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        opts: &PublishOptions,
    ) -> Result<StreamPosition, BrokerError> {
        dispatch!(self, b => b.publish(channel, data, opts).await)
    }

    /// Reads `channel`'s position and history.
    pub async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<(Vec<RemotePublication>, StreamPosition), BrokerError> {
        dispatch!(self, b => b.history(channel, query).await)
    }

    /// Drops `channel`'s history; its offset and epoch stay.
    pub async fn remove_history(&self, channel: &str) -> Result<(), BrokerError> {
        dispatch!(self, b => b.remove_history(channel).await)
    }

    /// Adds or refreshes a presence entry for `ttl`.
    pub async fn add_presence(
        &self,
        channel: &str,
        client: &str,
        user: &str,
        info: Bytes,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        dispatch!(self, b => b.add_presence(channel, client, user, info, ttl).await)
    }

    /// Removes a presence entry.
    pub async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        dispatch!(self, b => b.remove_presence(channel, client).await)
    }

    /// Everyone present in `channel` whose entry has not expired.
    pub async fn presence(&self, channel: &str) -> Result<Vec<PresenceEntry>, BrokerError> {
        dispatch!(self, b => b.presence(channel).await)
    }

    /// `(clients, distinct users)` present in `channel`.
    pub async fn presence_stats(&self, channel: &str) -> Result<(u64, u64), BrokerError> {
        dispatch!(self, b => b.presence_stats(channel).await)
    }

    /// Sends `payload` to every node subscribed to [`CONTROL`]: no offset,
    /// no history.
    pub async fn publish_control(&self, payload: &[u8]) -> Result<(), BrokerError> {
        dispatch!(self, b => b.publish_control(payload).await.map(drop))
    }

    /// Checks that the broker answers.
    pub async fn ping(&self) -> Result<(), BrokerError> {
        dispatch!(self, b => b.ping().await)
    }

    /// `redis at …` / `nats at …`, for the startup banner.
    pub fn describe(&self) -> String {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(b) => format!("redis at {}", b.addresses().join(", ")),
            #[cfg(feature = "nats")]
            Self::Nats(b) => format!("nats at {}", b.addresses().join(", ")),
        }
    }

    /// Which of the broker's independent connections (Redis shard; NATS
    /// has one) serves `channel`, as [`BrokerEvent::Lost`] names them.
    pub fn shard_of(&self, channel: &str) -> usize {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(b) => b.shard_of(channel),
            #[cfg(feature = "nats")]
            Self::Nats(_) => {
                let _ = channel;
                0
            }
        }
    }

    /// Starts a subscriber (within a tokio runtime).
    pub fn subscriptions(&self) -> (Subscriptions, BrokerEvents) {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(b) => {
                let (s, e) = b.subscriptions().split();
                (Subscriptions::Redis(s), e)
            }
            #[cfg(feature = "nats")]
            Self::Nats(b) => {
                let (s, e) = b.subscriptions();
                (Subscriptions::Nats(s), e)
            }
        }
    }
}
