//! The broker a node runs on, Redis or NATS, behind one enum: no trait
//! objects, so the futures stay concrete and `Send`. Above both brokers
//! (it names them), below the cluster that drives it.

use std::time::Duration;

use crate::broker::{HistoryQuery, PublishOptions, StreamPosition};
use bytes::Bytes;

use crate::broker::{BrokerError, BrokerEvents, PresenceEntry, RemotePublication};

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

    /// Records that `node` holds `channel` or no longer does; true when
    /// the channel's holder set went from empty to not empty (or back).
    pub async fn hold(&self, channel: &str, node: &str, held: bool) -> Result<bool, BrokerError> {
        dispatch!(self, b => b.hold(channel, node, held).await)
    }

    /// Keeps `node` alive for `ttl`; true when it had lapsed.
    pub async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<bool, BrokerError> {
        dispatch!(self, b => b.heartbeat(node, ttl).await)
    }

    /// Releases what nodes past their `ttl` held (never `node`'s own);
    /// the channels left without a holder, with the node that held them.
    pub async fn sweep(&self, node: &str, ttl: Duration) -> Result<Vec<(String, String)>, BrokerError> {
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(b) => {
                let _ = ttl; // Redis keeps each node's expiry itself
                b.sweep(node).await
            }
            #[cfg(feature = "nats")]
            Self::Nats(b) => b.sweep(node, ttl).await,
        }
    }

    /// Forgets `node`, which stops holding nothing.
    pub async fn leave(&self, node: &str) -> Result<(), BrokerError> {
        dispatch!(self, b => b.leave(node).await)
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
