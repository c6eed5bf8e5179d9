//! A Redis broker: channel offsets, epochs, history, presence and pub/sub
//! between crier nodes, kept in Redis so that every node sees the same
//! stream and any node can serve recovery.
//!
//! This is the broker layer only (the hub does not use it yet). It talks to
//! one or more independent Redis servers ("shards"); a channel lives on
//! shard `jump_consistent_hash(fnv1a64(channel), shards)`, so every node
//! picks the same shard.
//!
//! # Guarantees
//!
//! - [`RedisBroker::publish`] is one Lua script: it increments the channel's
//!   offset, creates the epoch if the channel has none, appends to the
//!   history stream (trimmed to `history_size`, expiring after
//!   `history_ttl`), refreshes the meta key's TTL and PUBLISHes the
//!   publication with its offset and epoch, all atomically. Offsets of a
//!   channel start at 1 and grow by one per publication for the life of an
//!   epoch; a new epoch (the meta key was deleted or expired, Redis lost its
//!   data) restarts them and drops the old history.
//! - [`RedisBroker::history`] reads the position and the publications in one
//!   script. A `since` position of another epoch, or beyond the top, is
//!   [`BrokerError::UnrecoverablePosition`] carrying the current position
//!   (Centrifugo's `node.history` answers the same, code 112; as there, a
//!   `since` with an empty epoch matches any epoch). Publications
//!   trimmed or expired are simply absent: a caller recovering from `since`
//!   checks that offsets continue from `since.offset + 1` up to the top.
//! - [`Subscriber::subscribe`] resolves after Redis confirmed the SUBSCRIBE:
//!   every publication made after that reaches this subscriber, in offset
//!   order, once — while the pub/sub connection lives. When it drops the
//!   stream says [`BrokerEvent::Lost`]; the subscriber reconnects with
//!   backoff (100 ms doubling to 5 s), subscribes every channel again, then
//!   says [`BrokerEvent::Restored`]. Publications in between are missed: the
//!   caller recovers them from history.
//! - Requires Redis >= 5 (streams; scripts replicated by effect, so the
//!   presence scripts may read `TIME`).
//! - Failures never panic: Redis unreachable or slow is
//!   [`BrokerError::Unavailable`] (API error 100) within `connect_timeout`
//!   plus `command_timeout`; a reply of the wrong shape is
//!   [`BrokerError::Protocol`].
//!
//! # Keys (a channel's keys share the hash tag `{channel}`, one cluster slot)
//!
//! - `<prefix>:{<channel>}:m` — meta hash: `o` top offset, `e` epoch.
//! - `<prefix>:{<channel>}:s` — history stream; entry id `<offset>-1`, one
//!   field `d` holding the encoded publication.
//! - `<prefix>:{<channel>}:pz` / `:ph` / `:pu` — presence: zset of client ->
//!   expiry (ms, Redis clock), hash client -> info, hash client -> user.
//!   Expired clients are removed by every presence script before it acts.
//! - Pub/sub channel `<prefix>:{<channel>}:c`.
//! - Occupancy, only with occupied/vacated webhooks on a cluster
//!   (`occupancy.rs`): `<prefix>:{<channel>}:n` — set of the node ids
//!   holding the channel; `<prefix>:node:<id>` — set of the channels a
//!   node holds on this shard; `<prefix>:nodes` — zset of node id ->
//!   expiry (ms, Redis clock), one per shard.
//!
//! # Encodings
//!
//! A publication (stream field `d`) is length-prefixed binary; lengths and
//! counts are unsigned LEB128 varints:
//! `0x01` (version), flags (`1` info, `2` tags, `4` exclusion), data,
//! [info], [tag count, (key, value)…], [excluded client count, clients…,
//! excluded user count, users…]. Data is opaque and round-trips byte-exact.
//! A pub/sub message is `<offset>:<epoch length>:<epoch><publication>`.

mod conn;
mod hash;
mod occupancy;
mod pubsub;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::{Script, Value};

use crate::broker::{codec, Epochs};
pub use crate::broker::{
    BrokerError, BrokerEvent, BrokerEvents, HistoryQuery, PresenceEntry, PublishOptions, RemotePublication,
    StreamPosition, CONTROL,
};
use conn::{Request, Shard};
pub use pubsub::{Subscriber, Subscriptions};

/// Where and how to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// One address per shard, `redis://host:port[/db]` (or `host:port`).
    pub addresses: Vec<String>,
    /// Prefix of every key and pub/sub channel (no braces).
    pub prefix: String,
    /// Bound on making a connection.
    pub connect_timeout: Duration,
    /// Bound on one command's round trip.
    pub command_timeout: Duration,
    /// How often an idle pub/sub connection is pinged, so that a Redis
    /// that stopped answering (rather than closed the socket) is noticed.
    pub pubsub_ping_interval: Duration,
    /// First reconnect delay of a pub/sub connection; doubles per failure.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            addresses: vec!["redis://127.0.0.1:6379".into()],
            prefix: "crier".into(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(4),
            pubsub_ping_interval: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

struct Scripts {
    publish: Script,
    history: Script,
    presence_add: Script,
    presence_remove: Script,
    presence_get: Script,
    presence_stats: Script,
    hold: Script,
    heartbeat: Script,
    sweep: Script,
}

pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) shards: Vec<Arc<Shard>>,
    scripts: Scripts,
    epochs: Epochs,
}

/// A connection to Redis for one node; cheap to clone.
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("addresses", &self.inner.config.addresses)
            .field("prefix", &self.inner.config.prefix)
            .finish()
    }
}

fn millis(d: Duration) -> u64 {
    // A non-zero duration below 1 ms still expires: round up.
    let ms = d.as_millis().min(u128::from(u64::MAX)) as u64;
    if ms == 0 && !d.is_zero() {
        1
    } else {
        ms
    }
}

fn protocol(what: impl std::fmt::Display) -> BrokerError {
    BrokerError::Protocol(format!("unexpected reply: {what}"))
}

fn as_u64(v: &Value) -> Result<u64, BrokerError> {
    match v {
        Value::Int(n) if *n >= 0 => Ok(*n as u64),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| protocol("not a number")),
        Value::SimpleString(s) => s.parse().map_err(|_| protocol("not a number")),
        _ => Err(protocol(format!("{v:?} is not a number"))),
    }
}

fn as_bytes(v: Value) -> Result<Vec<u8>, BrokerError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(protocol(format!("{other:?} is not a string"))),
    }
}

fn as_string(v: Value) -> Result<String, BrokerError> {
    String::from_utf8(as_bytes(v)?).map_err(|_| protocol("string not UTF-8"))
}

fn as_array(v: Value) -> Result<Vec<Value>, BrokerError> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(protocol(format!("{other:?} is not an array"))),
    }
}

/// `[top, epoch, ...]` at the head of a script's reply.
fn position(items: &mut std::vec::IntoIter<Value>) -> Result<StreamPosition, BrokerError> {
    let offset = as_u64(&items.next().ok_or_else(|| protocol("no offset"))?)?;
    let epoch = as_string(items.next().ok_or_else(|| protocol("no epoch"))?)?;
    Ok(StreamPosition { offset, epoch })
}

/// One XRANGE entry `[id, [field, value, ...]]` -> a publication.
fn stream_entry(v: Value) -> Result<RemotePublication, BrokerError> {
    let mut parts = as_array(v)?.into_iter();
    let id = as_string(parts.next().ok_or_else(|| protocol("entry without id"))?)?;
    let offset = id
        .split_once('-')
        .and_then(|(o, _)| o.parse::<u64>().ok())
        .ok_or_else(|| protocol(format!("stream id {id:?}")))?;
    let mut fields = as_array(parts.next().ok_or_else(|| protocol("entry without fields"))?)?.into_iter();
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        if as_bytes(k)? == b"d" {
            return codec::decode(Bytes::from(as_bytes(v)?), offset);
        }
    }
    Err(protocol(format!("stream entry {id} without field d")))
}

impl RedisBroker {
    /// Checks the configuration and prepares one shard per address. Connects
    /// lazily: the first command to a shard opens its connection, so a
    /// Redis that is down now is an `Unavailable` error later, not here.
    pub fn connect(config: RedisConfig) -> Result<RedisBroker, BrokerError> {
        if config.addresses.is_empty() {
            return Err(BrokerError::InvalidConfig("no Redis address".into()));
        }
        if config.prefix.is_empty() || config.prefix.contains(['{', '}']) {
            return Err(BrokerError::InvalidConfig(format!(
                "prefix {:?} must be non-empty and without braces",
                config.prefix
            )));
        }
        if config.connect_timeout.is_zero() || config.command_timeout.is_zero() {
            return Err(BrokerError::InvalidConfig("timeouts must be above zero".into()));
        }
        let mut shards = Vec::with_capacity(config.addresses.len());
        for (index, address) in config.addresses.iter().enumerate() {
            let url = if address.contains("://") {
                address.clone()
            } else {
                format!("redis://{address}")
            };
            let client = redis::Client::open(url.as_str())
                .map_err(|e| BrokerError::InvalidConfig(format!("address {address:?}: {e}")))?;
            shards.push(Arc::new(Shard::new(
                index,
                address.clone(),
                client,
                config.connect_timeout,
                config.command_timeout,
            )));
        }
        Ok(RedisBroker {
            inner: Arc::new(Inner {
                config,
                shards,
                scripts: Scripts {
                    publish: Script::new(scripts::PUBLISH),
                    history: Script::new(scripts::HISTORY),
                    presence_add: Script::new(&scripts::presence_add()),
                    presence_remove: Script::new(&scripts::presence_remove()),
                    presence_get: Script::new(&scripts::presence_get()),
                    presence_stats: Script::new(&scripts::presence_stats()),
                    hold: Script::new(scripts::OCCUPANCY_HOLD),
                    heartbeat: Script::new(scripts::OCCUPANCY_HEARTBEAT),
                    sweep: Script::new(scripts::OCCUPANCY_SWEEP),
                },
                epochs: Epochs::default(),
            }),
        })
    }

    /// The index of the shard holding `channel`.
    pub fn shard_of(&self, channel: &str) -> usize {
        hash::shard_of(channel, self.inner.shards.len())
    }

    fn shard(&self, channel: &str) -> &Shard {
        &self.inner.shards[self.shard_of(channel)]
    }

    fn key(&self, channel: &str, suffix: &str) -> String {
        key(&self.inner.config.prefix, channel, suffix)
    }

    fn new_epoch(&self) -> String {
        self.inner.epochs.next()
    }

    /// Publishes `data` to `channel` (see the module documentation).
    pub async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        opts: &PublishOptions,
    ) -> Result<StreamPosition, BrokerError> {
        let payload = codec::encode(&codec::PublicationRef {
            data: &data,
            info: opts.info.as_deref(),
            tags: &opts.tags,
            exclude_clients: &opts.exclude_clients,
            exclude_users: &opts.exclude_users,
        });
        let mut inv = self.inner.scripts.publish.key(self.key(channel, "m"));
        inv.key(self.key(channel, "s"))
            .arg(payload)
            .arg(opts.history_size)
            .arg(millis(opts.history_ttl))
            .arg(millis(opts.meta_ttl))
            .arg(self.new_epoch())
            .arg(self.key(channel, "c"));
        let reply = self.shard(channel).run(Request::Script(&inv), false).await?;
        position(&mut as_array(reply)?.into_iter())
    }

    /// Reads `channel`'s position and history (see [`HistoryQuery`]).
    pub async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<(Vec<RemotePublication>, StreamPosition), BrokerError> {
        let (since, since_epoch) = match &query.since {
            Some(p) => (p.offset.to_string(), p.epoch.clone()),
            None => (String::new(), String::new()),
        };
        let mut inv = self.inner.scripts.history.key(self.key(channel, "m"));
        inv.key(self.key(channel, "s"))
            .arg(since)
            .arg(since_epoch)
            .arg(query.limit.map(|l| l.to_string()).unwrap_or_default())
            .arg(if query.reverse { "1" } else { "0" })
            .arg(millis(query.meta_ttl))
            .arg(self.new_epoch());
        let reply = self.shard(channel).run(Request::Script(&inv), true).await?;
        let mut items = as_array(reply)?.into_iter();
        let current = position(&mut items)?;
        let served = as_u64(&items.next().ok_or_else(|| protocol("no status"))?)?;
        if served == 0 {
            return Err(BrokerError::UnrecoverablePosition { current });
        }
        let entries = as_array(items.next().unwrap_or(Value::Nil))?;
        let publications = entries
            .into_iter()
            .map(stream_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((publications, current))
    }

    /// Sends `payload` to every node's [`Subscriber`] that subscribed to the
    /// control channel [`CONTROL`]: a plain PUBLISH, no offset, no history.
    /// Returns how many Redis pub/sub connections received it.
    pub async fn publish_control(&self, payload: &[u8]) -> Result<u64, BrokerError> {
        let mut msg = b"0:0:".to_vec();
        msg.extend(codec::encode(&codec::PublicationRef {
            data: payload,
            info: None,
            tags: &[],
            exclude_clients: &[],
            exclude_users: &[],
        }));
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.key(CONTROL, "c")).arg(msg);
        let reply = self.shard(CONTROL).run(Request::Cmd(&cmd), false).await?;
        as_u64(&reply)
    }

    /// PINGs every shard; the first that does not answer, with why.
    pub async fn ping(&self) -> Result<(), BrokerError> {
        for shard in &self.inner.shards {
            let cmd = redis::cmd("PING");
            shard.run(Request::Cmd(&cmd), true).await?;
        }
        Ok(())
    }

    /// The configured addresses, one per shard.
    pub fn addresses(&self) -> &[String] {
        &self.inner.config.addresses
    }

    /// Deletes `channel`'s history; its offset and epoch stay.
    pub async fn remove_history(&self, channel: &str) -> Result<(), BrokerError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(channel, "s"));
        self.shard(channel).run(Request::Cmd(&cmd), true).await?;
        Ok(())
    }

    fn presence_keys<'a>(&self, script: &'a Script, channel: &str) -> redis::ScriptInvocation<'a> {
        let mut inv = script.key(self.key(channel, "pz"));
        inv.key(self.key(channel, "ph")).key(self.key(channel, "pu"));
        inv
    }

    /// Adds (or refreshes) `client` of `user` in `channel`'s presence for
    /// `ttl`; a node calls it again before `ttl` passes to keep it there.
    pub async fn add_presence(
        &self,
        channel: &str,
        client: &str,
        user: &str,
        info: Bytes,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let mut inv = self.presence_keys(&self.inner.scripts.presence_add, channel);
        inv.arg(client)
            .arg(user)
            .arg(info.as_ref())
            .arg(millis(ttl).max(1));
        self.shard(channel).run(Request::Script(&inv), true).await?;
        Ok(())
    }

    /// Removes `client` from `channel`'s presence.
    pub async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        let mut inv = self.presence_keys(&self.inner.scripts.presence_remove, channel);
        inv.arg(client);
        self.shard(channel).run(Request::Script(&inv), true).await?;
        Ok(())
    }

    /// Everyone present in `channel` whose entry has not expired.
    pub async fn presence(&self, channel: &str) -> Result<Vec<PresenceEntry>, BrokerError> {
        let inv = self.presence_keys(&self.inner.scripts.presence_get, channel);
        let reply = self.shard(channel).run(Request::Script(&inv), true).await?;
        let mut items = as_array(reply)?.into_iter();
        let mut out = Vec::new();
        while let Some(client) = items.next() {
            let (Some(user), Some(info)) = (items.next(), items.next()) else {
                return Err(protocol("presence reply not in triples"));
            };
            out.push(PresenceEntry {
                client: as_string(client)?,
                user: as_string(user)?,
                info: Bytes::from(as_bytes(info)?),
            });
        }
        Ok(out)
    }

    /// `(clients, distinct users)` present in `channel`.
    pub async fn presence_stats(&self, channel: &str) -> Result<(u64, u64), BrokerError> {
        let inv = self.presence_keys(&self.inner.scripts.presence_stats, channel);
        let reply = self.shard(channel).run(Request::Script(&inv), true).await?;
        let items = as_array(reply)?;
        match items.as_slice() {
            [clients, users] => Ok((as_u64(clients)?, as_u64(users)?)),
            _ => Err(protocol("presence stats not a pair")),
        }
    }

    /// A new pub/sub subscriber: one connection per shard, opened now in the
    /// background. Must be called within a tokio runtime.
    pub fn subscriptions(&self) -> Subscriber {
        pubsub::start(self.inner.clone())
    }
}

/// `<prefix>:{<channel>}:<suffix>`.
pub(crate) fn key(prefix: &str, channel: &str, suffix: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + channel.len() + suffix.len() + 4);
    k.push_str(prefix);
    k.push_str(":{");
    k.push_str(channel);
    k.push_str("}:");
    k.push_str(suffix);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_hash_tag() {
        assert_eq!(key("crier", "chat:1", "s"), "crier:{chat:1}:s");
        assert_eq!(key("crier", "chat:1", "m"), "crier:{chat:1}:m");
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = |f: fn(&mut RedisConfig)| {
            let mut c = RedisConfig::default();
            f(&mut c);
            matches!(RedisBroker::connect(c), Err(BrokerError::InvalidConfig(_)))
        };
        assert!(bad(|c| c.addresses.clear()));
        assert!(bad(|c| c.prefix = "a{b".into()));
        assert!(bad(|c| c.prefix.clear()));
        assert!(bad(|c| c.addresses = vec!["nope://x".into()]));
        assert!(bad(|c| c.command_timeout = Duration::ZERO));
        assert!(RedisBroker::connect(RedisConfig::default()).is_ok());
    }

    #[test]
    fn epochs_differ() {
        let b = RedisBroker::connect(RedisConfig::default()).unwrap();
        let (e1, e2) = (b.new_epoch(), b.new_epoch());
        assert_ne!(e1, e2);
        assert_eq!(e1.len(), 16);
    }

    /// The hub will call the broker from spawned tasks: every future must
    /// be `Send`.
    #[allow(dead_code)]
    fn futures_are_send(b: RedisBroker, s: Subscriptions, mut e: BrokerEvents) {
        fn send<T: Send>(_: T) {}
        let opts = PublishOptions::default();
        send(b.publish("c", Bytes::new(), &opts));
        send(b.history("c", &HistoryQuery::default()));
        send(b.remove_history("c"));
        send(b.add_presence("c", "1", "u", Bytes::new(), Duration::from_secs(1)));
        send(b.remove_presence("c", "1"));
        send(b.presence("c"));
        send(b.presence_stats("c"));
        send(s.subscribe("c"));
        send(s.unsubscribe("c"));
        send(e.recv());
        send(b.clone());
        send(s.clone());
    }

    #[test]
    fn millis_rounds_sub_millisecond_up() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_micros(10)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
    }
}
