//! A NATS broker: channel offsets, epochs and history in a JetStream
//! stream, presence in another, and fan-out between crier nodes over core
//! NATS subjects, so every node sees the same stream and any node can
//! serve recovery.
//!
//! # Layout (prefix `crier` by default)
//!
//! - Stream `<prefix>_history`, subjects `<prefix>.h.<token>`: one subject
//!   per channel, `<token>` the channel name in unpadded base64url (any
//!   channel name becomes one valid subject token). Each message is one
//!   publication, payload encoded as in Redis ([`crate::broker::codec`]),
//!   with headers `Crier-Offset` and `Crier-Epoch`; `Crier-Kind: skip`
//!   marks a publication made with `skip_history`, `Crier-Kind: mark` a
//!   position with no publication (a new epoch, or what `remove_history`
//!   leaves). It keeps `max_msgs_per_subject` = the largest history size of
//!   any namespace + 1 and `max_age` = `history_meta_ttl`; a namespace's
//!   own `history_size` and `history_ttl` are applied when reading.
//! - The stream republishes every message it stored to `<prefix>.r.<token>`
//!   (JetStream `republish`, NATS ≥ 2.9): that core subject is the fan-out.
//!   A node subscribes to it (plain core NATS) while it has local
//!   subscribers of the channel. Only stored messages are republished, in
//!   stream order, so what nodes hear is exactly the stream.
//! - Stream `<prefix>_presence` (memory), subjects
//!   `<prefix>.p.<token>.<client>.u<user token>`: one message per present
//!   client, its encoded info, `max_msgs_per_subject` 1 and `max_age` =
//!   `presence_ttl`; the node rewrites it before it ages out, and purges
//!   it on leave. Reads list the subjects (stream info with a subject
//!   filter) and get each one's last message: a consumer over a stream
//!   being rewritten can deliver one client several times and miss
//!   others.
//! - Core subject `<prefix>.control`: control messages between nodes.
//! - Stream `<prefix>_occupancy`, only with occupied/vacated webhooks on
//!   a cluster (`occupancy.rs`): `<prefix>.o.c.<token>` the channel's
//!   holder set (node ids, one per line; changed by compare-and-set on
//!   the subject's last sequence), `<prefix>.o.i.<node>.<token>` one
//!   message per channel a node holds, `<prefix>.o.n.<node>` its
//!   heartbeat.
//!
//! # Guarantees
//!
//! - [`NatsBroker::publish`] reads the subject's last message (cached per
//!   node after its own publishes), then publishes offset + 1 in the same
//!   epoch with `Nats-Expected-Last-Subject-Sequence` set to that
//!   message's stream sequence: JetStream stores it only if no other
//!   publication got there first, else the broker reads again and retries.
//!   So a channel's offsets start at 1 and grow by one per publication,
//!   whichever node publishes. An empty subject (never used, or every
//!   message aged out after `history_meta_ttl`, or a JetStream that lost
//!   its data) starts a new epoch.
//! - [`NatsBroker::history`] reads the position (the subject's last
//!   message) and, when asked for publications, every message of the
//!   subject through a short-lived ordered consumer. A `since` of another
//!   epoch, or beyond the top, is [`BrokerError::UnrecoverablePosition`].
//! - [`Subscriptions::subscribe`] resolves after NATS processed the SUB
//!   (a request round trip after the SUB): every publication stored after that is
//!   republished to this node, in stream order, while the connection
//!   lives. A disconnect, or messages dropped because this node read too
//!   slowly, is [`BrokerEvent::Lost`]; async-nats reconnects with backoff
//!   and resubscribes, then [`BrokerEvent::Restored`].
//! - Failures never panic: NATS unreachable, JetStream missing or slow is
//!   [`BrokerError::Unavailable`] (API error 100) within `request_timeout`.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_nats::{HeaderMap, ServerAddr};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, Mutex};
use tokio::time::timeout;

mod occupancy;

use crate::broker::{
    codec, decode_info, BrokerError, BrokerEvent, BrokerEvents, Epochs, HistoryQuery, PresenceEntry,
    PublishOptions, RemotePublication, StreamPosition, CONTROL,
};

/// How often the node pings NATS: a silent partition is noticed after
/// about three of these (two pings unanswered), and subscribers are told.
const PING_INTERVAL: Duration = Duration::from_secs(5);

const OFFSET: &str = "Crier-Offset";
const EPOCH: &str = "Crier-Epoch";
const KIND: &str = "Crier-Kind";
/// A publication made with `skip_history`: part of the stream, not of history.
const KIND_SKIP: &str = "skip";
/// A position with no publication.
const KIND_MARK: &str = "mark";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// Tries of one publish against other nodes publishing to the same channel.
const PUBLISH_ATTEMPTS: usize = 32;
/// Shards of the per-channel publish state (lock + cached last message).
const PUBLISH_SHARDS: usize = 64;
/// Cached last messages per shard before the cache is dropped.
const CACHE_LIMIT: usize = 4096;
/// Presence entries read at once.
const PRESENCE_READS_IN_FLIGHT: usize = 64;
/// Bound on one fetch of a read that finds nothing more.
const FETCH_WAIT: Duration = Duration::from_millis(200);
/// Messages per fetch when reading a subject.
const FETCH_BATCH: usize = 512;
/// Events buffered for the consumer before the forwarders wait for it.
const EVENT_BUFFER: usize = 16 * 1024;

/// Where and how to reach NATS.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// Servers of one NATS system (`nats://host:port` or `host:port`).
    pub addresses: Vec<String>,
    /// Prefix of subjects and stream names (letters, digits, `-`, `_`).
    pub prefix: String,
    /// Bound on making a connection.
    pub connect_timeout: Duration,
    /// Bound on one request's round trip.
    pub request_timeout: Duration,
    /// Replicas of the two streams.
    pub replicas: usize,
    /// How long a presence entry lives without a refresh.
    pub presence_ttl: Duration,
    /// How long a channel's last message (its offset and epoch) lives.
    pub history_meta_ttl: Duration,
    /// The largest history size of any namespace.
    pub history_cap: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            addresses: vec!["nats://127.0.0.1:4222".into()],
            prefix: "crier".into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(4),
            replicas: 1,
            presence_ttl: Duration::from_secs(60),
            history_meta_ttl: Duration::from_secs(90 * 24 * 3600),
            history_cap: 0,
        }
    }
}

/// A channel's last message: where the next publication goes.
#[derive(Clone, Debug)]
struct Last {
    /// Its stream sequence.
    sequence: u64,
    offset: u64,
    epoch: String,
}

#[derive(Clone)]
struct Streams {
    history: stream::Stream,
    presence: stream::Stream,
}

struct Inner {
    config: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    /// The streams once created or checked; cleared on reconnect (the
    /// server may have come back without them).
    streams: StdMutex<Option<Arc<Streams>>>,
    /// The occupancy stream once created (`occupancy.rs`: only used by
    /// occupied/vacated webhooks); cleared on reconnect like `streams`.
    occupancy: StdMutex<Option<stream::Stream>>,
    ensuring: Mutex<()>,
    publish: Vec<Mutex<HashMap<Arc<str>, Last>>>,
    epochs: Epochs,
    events_tx: mpsc::Sender<BrokerEvent>,
    events_rx: StdMutex<Option<mpsc::Receiver<BrokerEvent>>>,
}

/// A connection to NATS for one node; cheap to clone.
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("addresses", &self.inner.config.addresses)
            .field("prefix", &self.inner.config.prefix)
            .finish()
    }
}

fn unavailable(what: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("nats: {what}"))
}

/// `channel` as one subject token.
fn token(channel: &str) -> String {
    URL_SAFE_NO_PAD.encode(channel.as_bytes())
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|v| v.as_str())
}

/// `(offset, epoch, kind)` of a history message.
fn stamp(headers: Option<&HeaderMap>) -> Result<(u64, String, Option<String>), BrokerError> {
    let bad = |what: &str| BrokerError::Protocol(format!("nats history message without a valid {what}"));
    let offset = header(headers, OFFSET)
        .and_then(|o| o.parse().ok())
        .ok_or_else(|| bad(OFFSET))?;
    let epoch = header(headers, EPOCH).ok_or_else(|| bad(EPOCH))?.to_owned();
    Ok((offset, epoch, header(headers, KIND).map(str::to_owned)))
}

/// Runs `f` within the request timeout; a timeout is `Unavailable`.
async fn bounded<T, E: std::fmt::Display>(
    within: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, BrokerError> {
    match timeout(within, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(format_args!("{what}: {e}"))),
        Err(_) => Err(unavailable(format_args!("{what}: no answer within {within:?}"))),
    }
}

/// What [`NatsBroker::write`] appends.
enum Write {
    /// A publication at the next offset, of this kind.
    Next(Option<&'static str>, Bytes),
    /// A marker at the current position.
    Mark,
    /// A marker starting a new epoch, only if the channel has no message.
    Epoch,
}

/// Runs `f` (already answering broker errors) within `within`; a timeout
/// is `Unavailable(late)`.
async fn within_or<T>(
    within: Duration,
    late: &str,
    f: impl std::future::Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    timeout(within, f)
        .await
        .unwrap_or_else(|_| Err(unavailable(late)))
}

/// A stored message as this broker reads it.
struct Stored {
    payload: Bytes,
    headers: Option<HeaderMap>,
    /// When JetStream stored it, Unix nanoseconds.
    time_nanos: i128,
}

impl NatsBroker {
    /// Checks the configuration and starts connecting in the background
    /// (with retries for ever), so a NATS that is down now is an
    /// `Unavailable` error later, not here. Must be called within a tokio
    /// runtime.
    pub fn connect(config: NatsConfig) -> Result<NatsBroker, BrokerError> {
        if config.addresses.is_empty() {
            return Err(BrokerError::InvalidConfig("no NATS address".into()));
        }
        if config.prefix.is_empty()
            || !config
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(BrokerError::InvalidConfig(format!(
                "prefix {:?} must be non-empty: letters, digits, '-' and '_'",
                config.prefix
            )));
        }
        if config.connect_timeout.is_zero() || config.request_timeout.is_zero() {
            return Err(BrokerError::InvalidConfig("timeouts must be above zero".into()));
        }
        let addresses = config
            .addresses
            .iter()
            .map(|a| {
                a.trim()
                    .parse::<ServerAddr>()
                    .map_err(|e| BrokerError::InvalidConfig(format!("address {a:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
        // Weak: the client's event task holds this, and the broker holds
        // the client.
        let streams_reset: Arc<StdMutex<Weak<Inner>>> = Arc::new(StdMutex::new(Weak::new()));
        let on_event = {
            let tx = events_tx.clone();
            let reset = streams_reset.clone();
            move |event: async_nats::Event| {
                let tx = tx.clone();
                let reset = reset.clone();
                async move {
                    let out = match event {
                        async_nats::Event::Connected => {
                            if let Some(inner) = reset.lock().expect("nats reset lock").upgrade() {
                                *inner.streams.lock().expect("nats streams lock") = None;
                                *inner.occupancy.lock().expect("nats occupancy lock") = None;
                            }
                            BrokerEvent::Restored { shard: 0 }
                        }
                        async_nats::Event::Disconnected => BrokerEvent::Lost { shard: 0 },
                        async_nats::Event::SlowConsumer(sid) => {
                            tracing::warn!(sid, "nats dropped messages for a slow subscription");
                            BrokerEvent::Lost { shard: 0 }
                        }
                        other => {
                            tracing::debug!(event = %other, "nats");
                            return;
                        }
                    };
                    let _ = tx.send(out).await;
                }
            }
        };
        let connecting = async_nats::ConnectOptions::new()
            .name("crier")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.request_timeout))
            // A link that silently stops carrying packets (a partition, not
            // a closed socket) is found by pings alone: async-nats gives up
            // after two unanswered, so its default 60 s meant subscribers
            // were told (2500) only after 180 s (scripts/faults.sh).
            .ping_interval(PING_INTERVAL)
            .reconnect_delay_callback(|attempt| match attempt {
                0 => Duration::ZERO,
                n => Duration::from_millis(100u64.saturating_mul(1 << (n - 1).min(6)).min(5000)),
            })
            .event_callback(on_event)
            .connect(addresses);
        // With retry_on_initial_connect nothing in it waits: the connection
        // is made by a task it spawns.
        let client = connecting
            .now_or_never()
            .ok_or_else(|| BrokerError::InvalidConfig("the NATS client did not start".into()))?
            .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.request_timeout);
        let inner = Arc::new(Inner {
            config,
            client,
            js,
            streams: StdMutex::new(None),
            occupancy: StdMutex::new(None),
            ensuring: Mutex::new(()),
            publish: (0..PUBLISH_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            epochs: Epochs::default(),
            events_tx,
            events_rx: StdMutex::new(Some(events_rx)),
        });
        *streams_reset.lock().expect("nats reset lock") = Arc::downgrade(&inner);
        Ok(NatsBroker { inner })
    }

    /// The configured servers.
    pub fn addresses(&self) -> &[String] {
        &self.inner.config.addresses
    }

    fn prefix(&self) -> &str {
        &self.inner.config.prefix
    }

    fn history_subject(&self, channel: &str) -> String {
        format!("{}.h.{}", self.prefix(), token(channel))
    }

    /// `<prefix>.p.<channel>.<client>.u<user>`: the user is in the subject
    /// so that counting users needs no payload (`u` keeps an anonymous
    /// user's token non-empty).
    fn presence_subject(&self, channel: &str, client: &str, user: &str) -> String {
        format!("{}.p.{}.{client}.u{}", self.prefix(), token(channel), token(user))
    }

    /// Every present client's subject in `channel`, with its user token.
    async fn presence_subjects(
        &self,
        presence: &stream::Stream,
        channel: &str,
    ) -> Result<Vec<String>, BrokerError> {
        let filter = format!("{}.p.{}.*.*", self.prefix(), token(channel));
        let within = self.inner.config.request_timeout;
        let list = async {
            let mut pages = presence
                .info_with_subjects(filter)
                .await
                .map_err(|e| unavailable(format_args!("listing presence: {e}")))?;
            let mut out = Vec::new();
            while let Some(item) = pages.next().await {
                let (subject, _count) =
                    item.map_err(|e| unavailable(format_args!("listing presence: {e}")))?;
                out.push(subject);
            }
            Ok::<_, BrokerError>(out)
        };
        within_or(within, "JetStream did not list presence in time", list).await
    }

    fn connected(&self) -> Result<(), BrokerError> {
        match self.inner.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(unavailable(format_args!("not connected ({other})"))),
        }
    }

    /// Creates crier's two streams, or brings their settings up to date.
    async fn streams(&self) -> Result<Arc<Streams>, BrokerError> {
        if let Some(s) = self.inner.streams.lock().expect("nats streams lock").clone() {
            return Ok(s);
        }
        self.connected()?;
        let _one = self.inner.ensuring.lock().await;
        if let Some(s) = self.inner.streams.lock().expect("nats streams lock").clone() {
            return Ok(s);
        }
        let c = &self.inner.config;
        let p = self.prefix();
        let history = self
            .ensure(stream::Config {
                name: format!("{p}_history"),
                description: Some("crier: channel offsets and history".into()),
                subjects: vec![format!("{p}.h.>")],
                max_messages_per_subject: i64::try_from(c.history_cap.saturating_add(1)).unwrap_or(i64::MAX),
                max_age: c.history_meta_ttl,
                storage: stream::StorageType::File,
                num_replicas: c.replicas,
                republish: Some(stream::Republish {
                    source: format!("{p}.h.>"),
                    destination: format!("{p}.r.>"),
                    headers_only: false,
                }),
                ..Default::default()
            })
            .await?;
        let presence = self
            .ensure(stream::Config {
                name: format!("{p}_presence"),
                description: Some("crier: who is in each channel".into()),
                subjects: vec![format!("{p}.p.>")],
                max_messages_per_subject: 1,
                max_age: c.presence_ttl,
                storage: stream::StorageType::Memory,
                num_replicas: c.replicas,
                ..Default::default()
            })
            .await?;
        let s = Arc::new(Streams { history, presence });
        *self.inner.streams.lock().expect("nats streams lock") = Some(s.clone());
        Ok(s)
    }

    async fn ensure(&self, config: stream::Config) -> Result<stream::Stream, BrokerError> {
        let within = self.inner.config.request_timeout;
        let js = &self.inner.js;
        match timeout(within, js.create_stream(config.clone())).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => tracing::debug!(stream = %config.name, error = %e, "creating; trying an update"),
            Err(_) => return Err(unavailable("JetStream did not answer")),
        }
        bounded(within, "updating a stream", js.update_stream(&config)).await?;
        bounded(within, "reading a stream", js.get_stream(&config.name)).await
    }

    /// Forgets the streams after an error that may mean they are gone.
    fn forget_streams(&self) {
        *self.inner.streams.lock().expect("nats streams lock") = None;
    }

    /// The last message of `subject` in `on`, if it has one.
    async fn last_message(
        &self,
        on: &stream::Stream,
        subject: &str,
    ) -> Result<Option<jetstream::message::StreamMessage>, BrokerError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
        let within = self.inner.config.request_timeout;
        match timeout(within, on.get_last_raw_message_by_subject(subject)).await {
            Err(_) => Err(unavailable("JetStream did not answer a last-message read")),
            Ok(Ok(m)) => Ok(Some(m)),
            Ok(Err(e)) if e.kind() == K::NoMessageFound => Ok(None),
            Ok(Err(e)) => {
                self.forget_streams();
                Err(unavailable(format_args!("reading the last message: {e}")))
            }
        }
    }

    /// The channel subject's last message, as a position, if any.
    async fn last(&self, history: &stream::Stream, subject: &str) -> Result<Option<Last>, BrokerError> {
        let Some(m) = self.last_message(history, subject).await? else {
            return Ok(None);
        };
        let (offset, epoch, _) = stamp(Some(&m.headers))?;
        Ok(Some(Last {
            sequence: m.sequence,
            offset,
            epoch,
        }))
    }

    /// Appends to `subject` after `last` (a new epoch when `None`), or
    /// `Ok(None)` when another publication got there first.
    async fn append(
        &self,
        subject: &str,
        last: Option<&Last>,
        kind: Option<&str>,
        payload: Bytes,
        mark_offset: Option<u64>,
    ) -> Result<Option<Last>, BrokerError> {
        let (offset, epoch) = match last {
            Some(l) => (mark_offset.unwrap_or(l.offset + 1), l.epoch.clone()),
            None => (mark_offset.unwrap_or(1), self.inner.epochs.next()),
        };
        let mut headers = HeaderMap::new();
        headers.insert(OFFSET, offset.to_string().as_str());
        headers.insert(EPOCH, epoch.as_str());
        if let Some(k) = kind {
            headers.insert(KIND, k);
        }
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE,
            last.map_or(0, |l| l.sequence).to_string().as_str(),
        );
        let within = self.inner.config.request_timeout;
        let sent = timeout(within, async {
            self.inner
                .js
                .publish_with_headers(subject.to_owned(), headers, payload)
                .await?
                .await
        })
        .await
        .map_err(|_| unavailable("JetStream did not acknowledge a publication in time"))?;
        match sent {
            Ok(ack) => Ok(Some(Last {
                sequence: ack.sequence,
                offset,
                epoch,
            })),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => {
                if e.kind() == PublishErrorKind::StreamNotFound {
                    self.forget_streams();
                }
                Err(unavailable(format_args!("publishing: {e}")))
            }
        }
    }

    /// Publishes `data` to `channel` (see the module documentation).
    pub async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        opts: &PublishOptions,
    ) -> Result<StreamPosition, BrokerError> {
        let payload = Bytes::from(codec::encode(&codec::PublicationRef {
            data: &data,
            info: opts.info.as_deref(),
            tags: &opts.tags,
            exclude_clients: &opts.exclude_clients,
            exclude_users: &opts.exclude_users,
        }));
        let kind = (opts.history_size == 0).then_some(KIND_SKIP);
        let landed = self.write(channel, Write::Next(kind, payload)).await?;
        Ok(StreamPosition {
            offset: landed.offset,
            epoch: landed.epoch,
        })
    }

    /// Writes one message after the channel's last, retrying against
    /// other nodes' publications (see [`Write`]); the message now last.
    async fn write(&self, channel: &str, what: Write) -> Result<Last, BrokerError> {
        self.connected()?;
        let streams = self.streams().await?;
        let subject = self.history_subject(channel);
        let shard = &self.inner.publish[publish_shard(channel)];
        let mut cache = shard.lock().await;
        // The cache is the last message as this node saw it; a new epoch
        // is only started on what the stream says now.
        let cached = match what {
            Write::Epoch => None,
            _ => cache.get(channel).cloned(),
        };
        let mut last = match cached {
            Some(l) => Some(l),
            None => self.last(&streams.history, &subject).await?,
        };
        for _ in 0..PUBLISH_ATTEMPTS {
            let (kind, payload, at) = match &what {
                Write::Next(kind, payload) => (*kind, payload.clone(), None),
                Write::Mark => (
                    Some(KIND_MARK),
                    Bytes::new(),
                    Some(last.as_ref().map_or(0, |l| l.offset)),
                ),
                Write::Epoch => match &last {
                    // Someone else started the stream meanwhile.
                    Some(l) => return Ok(l.clone()),
                    None => (Some(KIND_MARK), Bytes::new(), Some(0)),
                },
            };
            match self.append(&subject, last.as_ref(), kind, payload, at).await {
                Ok(Some(landed)) => {
                    if cache.len() >= CACHE_LIMIT {
                        cache.clear();
                    }
                    cache.insert(channel.into(), landed.clone());
                    return Ok(landed);
                }
                Ok(None) => last = self.last(&streams.history, &subject).await?,
                Err(e) => {
                    cache.remove(channel);
                    return Err(e);
                }
            }
        }
        cache.remove(channel);
        Err(unavailable(format_args!(
            "{PUBLISH_ATTEMPTS} tries lost to concurrent publications"
        )))
    }

    /// The channel's position, creating its epoch (a marker) if it has none.
    async fn position(&self, history: &stream::Stream, channel: &str) -> Result<Last, BrokerError> {
        match self.last(history, &self.history_subject(channel)).await? {
            Some(l) => Ok(l),
            None => self.write(channel, Write::Epoch).await,
        }
    }

    /// Reads `channel`'s position and history (see [`HistoryQuery`]).
    pub async fn history(
        &self,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<(Vec<RemotePublication>, StreamPosition), BrokerError> {
        self.connected()?;
        let streams = self.streams().await?;
        let top = self.position(&streams.history, channel).await?;
        let current = StreamPosition {
            offset: top.offset,
            epoch: top.epoch.clone(),
        };
        if let Some(since) = &query.since {
            if (!since.epoch.is_empty() && since.epoch != top.epoch) || since.offset > top.offset {
                return Err(BrokerError::UnrecoverablePosition { current });
            }
        }
        let nothing_after = query
            .since
            .as_ref()
            .is_some_and(|s| !query.reverse && s.offset == top.offset);
        if query.limit == Some(0) || query.history_size == 0 || top.offset == 0 || nothing_after {
            return Ok((Vec::new(), current));
        }
        let stored = self
            .read_subject(&streams.history, self.history_subject(channel), top.sequence)
            .await?;
        let mut kept: Vec<(RemotePublication, i128)> = Vec::new();
        for m in stored {
            let (offset, epoch, kind) = stamp(m.headers.as_ref())?;
            if epoch != top.epoch || offset > top.offset || kind.is_some() {
                continue;
            }
            kept.push((codec::decode(m.payload, offset)?, m.time_nanos));
        }
        // The namespace's own size and TTL (the stream keeps the largest).
        if kept.len() > query.history_size {
            kept.drain(..kept.len() - query.history_size);
        }
        if let Some((_, newest)) = kept.last() {
            let ttl = query.history_ttl.as_nanos() as i128;
            if ttl > 0 && now_nanos() - newest > ttl {
                kept.clear();
            }
        }
        let mut pubs: Vec<RemotePublication> = kept.into_iter().map(|(p, _)| p).collect();
        if query.reverse {
            if let Some(s) = &query.since {
                pubs.retain(|p| p.offset < s.offset);
            }
            pubs.reverse();
        } else if let Some(s) = &query.since {
            pubs.retain(|p| p.offset > s.offset);
        }
        if let Some(limit) = query.limit {
            pubs.truncate(limit);
        }
        Ok((pubs, current))
    }

    /// The messages of `filter` up to stream sequence `until` (the top the
    /// caller read), through a consumer made for this read.
    async fn read_subject(
        &self,
        on: &stream::Stream,
        filter: String,
        until: u64,
    ) -> Result<Vec<Stored>, BrokerError> {
        let within = self.inner.config.request_timeout;
        let reader = bounded(
            within,
            "creating a reader",
            on.create_consumer(consumer::pull::Config {
                filter_subject: filter,
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            }),
        )
        .await?;
        let name = reader.cached_info().name.clone();
        // What matched when the reader was made is the snapshot this read
        // returns. Messages stored after it are not waited for: a no-wait
        // fetch that has delivered the snapshot may not come back until
        // the next write (a presence refresh, a publication), so the read
        // counts instead of trusting each message's `pending`.
        let mut remaining = reader.cached_info().num_pending;
        let read = async {
            let mut out = Vec::new();
            while remaining > 0 {
                let batch = usize::try_from(remaining).unwrap_or(usize::MAX).min(FETCH_BATCH);
                let mut messages = reader
                    .fetch()
                    .max_messages(batch)
                    .expires(FETCH_WAIT)
                    .messages()
                    .await
                    .map_err(|e| unavailable(format_args!("reading: {e}")))?;
                let mut got = 0;
                while let Some(m) = messages.next().await {
                    let m = m.map_err(|e| unavailable(format_args!("reading: {e}")))?;
                    let info = m.info().map_err(|e| unavailable(format_args!("reading: {e}")))?;
                    let time_nanos = info.published.unix_timestamp_nanos();
                    got += 1;
                    remaining -= 1;
                    out.push(Stored {
                        payload: m.message.payload.clone(),
                        headers: m.message.headers.clone(),
                        time_nanos,
                    });
                    if info.stream_sequence >= until {
                        remaining = 0;
                    }
                    if remaining == 0 || got == batch {
                        break;
                    }
                }
                if got == 0 {
                    break; // what was pending aged out or was purged meanwhile
                }
            }
            Ok::<_, BrokerError>(out)
        };
        let result = within_or(within, "JetStream did not deliver a read in time", read).await;
        let on = on.clone();
        tokio::spawn(async move {
            let _ = timeout(within, on.delete_consumer(&name)).await;
        });
        result
    }

    /// Drops `channel`'s history; its offset and epoch stay (a marker at
    /// the current position is written first, then older messages go).
    pub async fn remove_history(&self, channel: &str) -> Result<(), BrokerError> {
        self.connected()?;
        let streams = self.streams().await?;
        let mark = self.write(channel, Write::Mark).await?;
        bounded(
            self.inner.config.request_timeout,
            "purging history",
            streams
                .history
                .purge()
                .filter(self.history_subject(channel))
                .sequence(mark.sequence)
                .into_future(),
        )
        .await?;
        Ok(())
    }

    /// Adds (or refreshes) `client` in `channel`'s presence; it ages out
    /// after the stream's `max_age` (`presence_ttl`) unless refreshed.
    pub async fn add_presence(
        &self,
        channel: &str,
        client: &str,
        user: &str,
        info: Bytes,
        _ttl: Duration,
    ) -> Result<(), BrokerError> {
        self.connected()?;
        self.streams().await?;
        let subject = self.presence_subject(channel, client, user);
        bounded(self.inner.config.request_timeout, "writing presence", async {
            self.inner.js.publish(subject, info).await?.await
        })
        .await?;
        Ok(())
    }

    /// Removes `client` from `channel`'s presence.
    pub async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        self.connected()?;
        let streams = self.streams().await?;
        let filter = format!("{}.p.{}.{client}.*", self.prefix(), token(channel));
        bounded(
            self.inner.config.request_timeout,
            "removing presence",
            streams.presence.purge().filter(filter).into_future(),
        )
        .await?;
        Ok(())
    }

    /// Everyone present in `channel` whose entry has not aged out: the
    /// subjects listed, then each one's last message (up to
    /// [`PRESENCE_READS_IN_FLIGHT`] reads at once). A client's entry is
    /// one subject whatever its refreshes, so a read that overlaps
    /// refreshes still lists every client once.
    pub async fn presence(&self, channel: &str) -> Result<Vec<PresenceEntry>, BrokerError> {
        self.connected()?;
        let streams = self.streams().await?;
        let subjects = self.presence_subjects(&streams.presence, channel).await?;
        // JetStream ages messages out in passes; do not show one it has
        // not got to yet.
        let ttl = self.inner.config.presence_ttl.as_nanos() as i128;
        let now = now_nanos();
        let reads = futures_util::stream::iter(subjects)
            .map(|subject| {
                let presence = &streams.presence;
                // None: left or aged out since it was listed.
                async move { self.last_message(presence, &subject).await }
            })
            .buffer_unordered(PRESENCE_READS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::with_capacity(reads.len());
        for read in reads {
            let Some(m) = read? else {
                continue;
            };
            let (payload, time_nanos) = (m.payload, m.time.unix_timestamp_nanos());
            if now - time_nanos > ttl {
                continue;
            }
            let parts = decode_info(payload.clone())?;
            out.push(PresenceEntry {
                client: parts.client.to_string(),
                user: parts.user,
                info: payload,
            });
        }
        Ok(out)
    }

    /// `(clients, distinct users)` present in `channel`, from the subjects
    /// alone.
    pub async fn presence_stats(&self, channel: &str) -> Result<(u64, u64), BrokerError> {
        self.connected()?;
        let streams = self.streams().await?;
        let subjects = self.presence_subjects(&streams.presence, channel).await?;
        let users: std::collections::HashSet<&str> =
            subjects.iter().filter_map(|s| s.rsplit('.').next()).collect();
        Ok((subjects.len() as u64, users.len() as u64))
    }

    /// Sends `payload` to every node subscribed to [`CONTROL`].
    pub async fn publish_control(&self, payload: &[u8]) -> Result<(), BrokerError> {
        self.connected()?;
        let within = self.inner.config.request_timeout;
        let subject = format!("{}.control", self.prefix());
        bounded(
            within,
            "publishing a control message",
            self.inner
                .client
                .publish(subject, Bytes::copy_from_slice(payload)),
        )
        .await?;
        bounded(within, "flushing", self.inner.client.flush()).await
    }

    /// Checks that NATS answers and JetStream serves crier's streams; a
    /// connection still being made gets `connect_timeout` to succeed.
    pub async fn ping(&self) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.connect_timeout;
        while self.inner.client.connection_state() == async_nats::connection::State::Pending
            && tokio::time::Instant::now() < deadline
        {
            // Polling: async-nats offers no "connected" future.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.connected()?;
        self.round_trip().await?;
        self.streams().await.map(drop)
    }

    /// One request the server answers at once ("no responders" on a fresh
    /// inbox): when it returns, the server has processed everything this
    /// connection sent before it. `Client::flush` only writes the socket,
    /// so it confirms nothing.
    async fn round_trip(&self) -> Result<(), BrokerError> {
        use async_nats::RequestErrorKind as K;
        let client = &self.inner.client;
        let probe = client.request(client.new_inbox(), Bytes::new());
        match timeout(self.inner.config.request_timeout, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == K::NoResponders => Ok(()),
            Ok(Err(e)) => Err(unavailable(format_args!("round trip: {e}"))),
            Err(_) => Err(unavailable("no answer to a round trip")),
        }
    }

    /// The subscriber of this node. Must be called within a tokio runtime,
    /// once: the events of the connection go to the first caller.
    pub fn subscriptions(&self) -> (Subscriptions, BrokerEvents) {
        let rx = self
            .inner
            .events_rx
            .lock()
            .expect("nats events lock")
            .take()
            .unwrap_or_else(|| mpsc::channel(1).1);
        (
            Subscriptions {
                inner: Arc::new(SubscriptionsInner {
                    broker: self.clone(),
                    tasks: Mutex::new(HashMap::new()),
                }),
            },
            BrokerEvents::new(rx),
        )
    }
}

/// Which publish shard serializes `channel`'s publications on this node.
fn publish_shard(channel: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(channel) % PUBLISH_SHARDS as u64) as usize
}

fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

struct SubscriptionsInner {
    broker: NatsBroker,
    /// One forwarding task per subscribed channel; aborting it drops the
    /// NATS subscription (UNSUB).
    tasks: Mutex<HashMap<Arc<str>, tokio::task::JoinHandle<()>>>,
}

impl Drop for SubscriptionsInner {
    fn drop(&mut self) {
        for (_, t) in self.tasks.get_mut().drain() {
            t.abort();
        }
    }
}

/// Which channels' publications reach this node; cheap to clone.
#[derive(Clone)]
pub struct Subscriptions {
    inner: Arc<SubscriptionsInner>,
}

impl Subscriptions {
    /// Subscribes to `channel`'s fan-out subject; resolves once NATS
    /// processed it. Subscribing again only checks the connection.
    pub async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        let broker = &self.inner.broker;
        broker.connected()?;
        let within = broker.inner.config.request_timeout;
        {
            let mut tasks = self.inner.tasks.lock().await;
            if !tasks.contains_key(channel) {
                let subject = if channel == CONTROL {
                    format!("{}.control", broker.prefix())
                } else {
                    format!("{}.r.{}", broker.prefix(), token(channel))
                };
                let sub = bounded(within, "subscribing", broker.inner.client.subscribe(subject)).await?;
                let channel: Arc<str> = channel.into();
                let task = tokio::spawn(forward(sub, channel.clone(), broker.inner.events_tx.clone()));
                tasks.insert(channel, task);
            }
        }
        broker.round_trip().await
    }

    /// Stops `channel`'s publications reaching this node.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError> {
        if let Some(task) = self.inner.tasks.lock().await.remove(channel) {
            task.abort();
        }
        Ok(())
    }
}

/// Turns one subscription's messages into events, in order.
async fn forward(mut sub: async_nats::Subscriber, channel: Arc<str>, events: mpsc::Sender<BrokerEvent>) {
    while let Some(msg) = sub.next().await {
        let event = if &*channel == CONTROL {
            BrokerEvent::Publication {
                channel: channel.clone(),
                offset: 0,
                epoch: String::new(),
                publication: RemotePublication {
                    offset: 0,
                    data: msg.payload,
                    info: None,
                    tags: Vec::new(),
                    exclude_clients: Vec::new(),
                    exclude_users: Vec::new(),
                },
            }
        } else {
            let decoded = stamp(msg.headers.as_ref()).and_then(|(offset, epoch, kind)| {
                if kind.as_deref() == Some(KIND_MARK) {
                    return Ok(None);
                }
                Ok(Some((offset, epoch, codec::decode(msg.payload, offset)?)))
            });
            match decoded {
                Ok(Some((offset, epoch, publication))) => BrokerEvent::Publication {
                    channel: channel.clone(),
                    offset,
                    epoch,
                    publication,
                },
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "dropping a malformed nats message");
                    continue;
                }
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_channel_name_is_one_subject_token() {
        for channel in ["chat", "a.b", "news:*", "x > y", "é", "$sys"] {
            let t = token(channel);
            assert!(
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{channel:?} -> {t:?}"
            );
        }
        assert_ne!(token("a.b"), token("a_b"));
    }

    #[tokio::test]
    async fn bad_configs_are_refused() {
        let bad = |f: fn(&mut NatsConfig)| {
            let mut c = NatsConfig::default();
            f(&mut c);
            matches!(NatsBroker::connect(c), Err(BrokerError::InvalidConfig(_)))
        };
        assert!(bad(|c| c.addresses.clear()));
        assert!(bad(|c| c.prefix = "a.b".into()));
        assert!(bad(|c| c.prefix.clear()));
        assert!(bad(|c| c.request_timeout = Duration::ZERO));
        assert!(bad(|c| c.addresses = vec!["nats://[bad".into()]));
        assert!(NatsBroker::connect(NatsConfig::default()).is_ok());
    }

    /// The cluster calls the broker from spawned tasks: every future must
    /// be `Send`.
    #[allow(dead_code)]
    fn futures_are_send(b: NatsBroker, s: Subscriptions) {
        fn send<T: Send>(_: T) {}
        let opts = PublishOptions::default();
        send(b.publish("c", Bytes::new(), &opts));
        send(b.history("c", &HistoryQuery::default()));
        send(b.remove_history("c"));
        send(b.add_presence("c", "1", "u", Bytes::new(), Duration::from_secs(1)));
        send(b.remove_presence("c", "1"));
        send(b.presence("c"));
        send(b.presence_stats("c"));
        send(b.publish_control(b"x"));
        send(s.subscribe("c"));
        send(s.unsubscribe("c"));
    }
}
