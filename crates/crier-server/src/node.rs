//! One running crier node: the hub plus everything the transports and the
//! HTTP API share (configuration, token verifier, access policy, identity,
//! the shutdown signal). Built once from a validated [`Config`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crier_core::{
    ChannelConfig, ChannelOptions as HubChannelOptions, ClientId, ClientInfo, HistoryLimit, HistoryPage,
    HistoryQuery, Hub, HubConfig, HubError, MemoryEngine, PresenceStats, PublishOptions, QueueLimits,
    StreamPosition, SubscribeOptions, Subscribed, SystemClock,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AccessPolicy, TokenVerifier};
use crate::config::{ChannelOptions, Config, ConfigError, OriginPolicy};
use crate::metrics::Metrics;
use crate::wire;
use crier_proto::api::NodeResult;
use crier_proto::codes::ErrorCode;

/// crier's version, reported in connect replies and `info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How often a node of a cluster tells the others what it is (its
/// `info`: clients, users, channels, subscriptions, uptime).
pub const NODE_INFO_EVERY: Duration = Duration::from_secs(2);

/// A node not heard from for this long is left out of `info`.
pub const NODE_INFO_TTL: Duration = Duration::from_secs(10);

/// State shared by every connection and API request of one node.
pub struct Node {
    /// The in-process hub.
    pub hub: Hub,
    /// The configuration the node runs with.
    pub config: Config,
    /// Verifies connection and subscription tokens.
    pub tokens: TokenVerifier,
    /// Channel permissions by namespace.
    pub access: AccessPolicy,
    /// Which browser origins may open WebSockets.
    pub origins: OriginPolicy,
    /// Unique id of this node process.
    pub id: String,
    /// When the node started, for `info.uptime`.
    pub started: Instant,
    /// Cancelled when the node shuts down: transports stop and say goodbye.
    pub shutdown: CancellationToken,
    /// Every live client connection task, so shutdown can wait for them.
    pub connections: TaskTracker,
    /// What the node counts for Prometheus (`GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// New connections admitted per second (`client.connection_rate_limit`),
    /// when limited.
    pub(crate) connection_rate: Option<std::sync::Mutex<crate::clock::TokenBucket>>,
    /// The connections that speak protobuf; every other one speaks JSON.
    /// Only what reaches a client outside its session (the server API's
    /// subscribe and unsubscribe pushes) needs to ask.
    protobuf_clients: std::sync::Mutex<std::collections::HashSet<ClientId>>,
    /// The backend's proxies: which request headers connections keep for
    /// them; also the node's `hooks` unless an embedder gave its own.
    pub(crate) proxies: Arc<crate::proxy::Proxies>,
    /// What decides connect (without a token), subscribe, publish, RPC and
    /// refresh where it [`decides`](crier_core::Hooks::decides): the HTTP
    /// proxies of the configuration, or an embedder's own
    /// ([`Node::with_hooks`], `Server::bind_with_hooks`). The session and
    /// the admission path ask only this.
    pub hooks: Arc<dyn crier_core::Hooks>,
    /// The emulated sessions (`http_stream`, `sse`) this node holds: where
    /// the commands POSTed to `/emulation` for each go.
    emulated: std::sync::Mutex<std::collections::HashMap<String, tokio::sync::mpsc::Sender<Bytes>>>,
    /// TLS on the HTTP listener (`http_server.tls`), reloadable.
    pub(crate) tls: Option<crate::net::tls::Tls>,
    /// TLS of the `[[tcp]]` listeners that have it, by index in
    /// `config.tcp` (registered when they bind), reloadable.
    pub(crate) tcp_tls: std::sync::Mutex<Vec<(usize, Arc<crate::net::tls::Tls>)>>,
    /// The other nodes of the cluster, as each last said (`Control::Node`,
    /// every [`NODE_INFO_EVERY`]), and when.
    peers: std::sync::Mutex<std::collections::HashMap<String, (Instant, NodeResult)>>,
    /// The secret key of the session ids this node gives out: a keyed
    /// hash of a counter, so one id says nothing about the next.
    session_key: std::collections::hash_map::RandomState,
    sessions_made: std::sync::atomic::AtomicU64,
    /// The cluster engine, when `engine.type` is `"redis"` or `"nats"`.
    #[cfg(feature = "cluster")]
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Node {
    /// The compression a WebSocket may agree to (`websocket.compression`).
    pub(crate) fn websocket_deflate(&self) -> Option<crate::net::deflate::Deflate> {
        let ws = &self.config.websocket;
        ws.compression.then_some(crate::net::deflate::Deflate {
            level: ws.compression_level,
            min_size: ws.compression_min_size,
        })
    }

    /// A new emulated session's id and the queue its commands arrive on
    /// (at most `depth` batches waiting); the session is known to this
    /// node until `end_emulated`. The id is 128 unguessable bits: knowing
    /// it is what lets a POST to `/emulation` act for the session.
    pub(crate) fn emulated_session(&self, depth: usize) -> (String, tokio::sync::mpsc::Receiver<Bytes>) {
        use std::hash::BuildHasher;
        let n = self
            .sessions_made
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!(
            "{:016x}{:016x}",
            self.session_key.hash_one((n, 0u8)),
            self.session_key.hash_one((n, 1u8))
        );
        let (tx, rx) = tokio::sync::mpsc::channel(depth);
        self.emulated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), tx);
        (id, rx)
    }

    /// Forgets an emulated session.
    pub(crate) fn end_emulated(&self, session: &str) {
        self.emulated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
    }

    /// Hands `commands` to emulated session `session` if this node holds
    /// it: `None` if it does not, `Some(false)` if its queue is full.
    pub(crate) fn emulate(&self, session: &str, commands: Bytes) -> Option<bool> {
        let tx = self
            .emulated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(session)
            .cloned()?;
        Some(tx.try_send(commands).is_ok())
    }

    /// Records the wire format of connection `id` (until `forget_format`).
    pub(crate) fn set_format(&self, id: ClientId, codec: wire::Codec) {
        if codec == wire::Codec::Protobuf {
            self.protobuf_clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id);
        }
    }

    /// Forgets what `set_format` recorded for `id`.
    pub(crate) fn forget_format(&self, id: ClientId, codec: wire::Codec) {
        if codec == wire::Codec::Protobuf {
            self.protobuf_clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
    }

    /// The wire format connection `id` speaks.
    pub(crate) fn format_of(&self, id: ClientId) -> wire::Codec {
        let protobuf = self
            .protobuf_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id);
        if protobuf {
            wire::Codec::Protobuf
        } else {
            wire::Codec::Json
        }
    }

    /// Builds a node from a validated configuration; its hooks are the
    /// configured HTTP proxies.
    pub fn new(config: Config) -> Result<Arc<Self>, ConfigError> {
        Self::build(config, None)
    }

    /// Builds a node whose decisions (connect without a token, subscribe,
    /// publish, RPC, refresh) are `hooks`' instead of the configured HTTP
    /// proxies', which are then never called.
    pub fn with_hooks(config: Config, hooks: Arc<dyn crier_core::Hooks>) -> Result<Arc<Self>, ConfigError> {
        Self::build(config, Some(hooks))
    }

    fn build(config: Config, hooks: Option<Arc<dyn crier_core::Hooks>>) -> Result<Arc<Self>, ConfigError> {
        let tokens = TokenVerifier::from_config(&config)?;
        let access = AccessPolicy::from_config(&config);
        let origins = config.client.origin_policy();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // A random tag per node process, so client ids (and exclusions by
        // client id) never collide between the nodes of a cluster; std's
        // randomly keyed hasher is the random source.
        let node_tag = {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id())) as u32
        };
        let hub_config = HubConfig {
            node_tag,
            ..hub_config(&config)
        };
        let id = format!("{:x}-{:x}", nanos, std::process::id());
        let shutdown = CancellationToken::new();
        let memory = || {
            Arc::new(MemoryEngine::with_limit(
                Arc::new(SystemClock),
                HistoryLimit {
                    max_bytes: config.engine.memory.history_max_bytes,
                },
            ))
        };
        #[cfg(feature = "cluster")]
        let (hub, cluster, history) = match config.engine.kind {
            crate::config::EngineType::Memory => {
                let engine = memory();
                (Hub::with_engine(hub_config, engine.clone()), None, Some(engine))
            }
            _ => {
                let (hub, cluster) = cluster_hub(&config, hub_config, id.clone(), shutdown.clone())?;
                (hub, Some(cluster), None)
            }
        };
        #[cfg(not(feature = "cluster"))]
        let (hub, history) = {
            let engine = memory();
            (Hub::with_engine(hub_config, engine.clone()), Some(engine))
        };
        let metrics = Arc::new(Metrics::new(hub.clone(), history, config.prometheus.enabled));
        let proxies = Arc::new(crate::proxy::Proxies::from_config(&config, metrics.clone())?);
        let hooks = hooks.unwrap_or_else(|| proxies.clone());
        // On a cluster engine, occupied/vacated are the cluster's.
        #[cfg(feature = "cluster")]
        let occupancy = cluster
            .as_ref()
            .map(|c| c.occupancy(config.crier.webhooks.node_ttl));
        #[cfg(not(feature = "cluster"))]
        let occupancy = None;
        if let Some(webhooks) = crate::webhooks::Webhooks::start(
            &config.crier.webhooks,
            &id,
            metrics.webhook_counters(),
            shutdown.clone(),
            occupancy,
        ) {
            hub.observe(webhooks);
        }
        // A large fan-out's writes at once run as tasks on this runtime,
        // so both cores share them.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            hub.spread_with(Arc::new(Spawn(runtime)));
        }
        let node = Arc::new(Self {
            hub,
            tokens,
            access,
            origins,
            id,
            started: Instant::now(),
            shutdown,
            connections: TaskTracker::new(),
            connection_rate: match config.client.connection_rate_limit {
                0 => None,
                rate => Some(std::sync::Mutex::new(crate::clock::TokenBucket::new(rate))),
            },
            metrics,
            protobuf_clients: Default::default(),
            proxies,
            hooks,
            emulated: Default::default(),
            tls: match config.http_server.tls.enabled {
                true => Some(crate::net::tls::Tls::new(tls_config(
                    &config.http_server.tls,
                    "http_server.tls",
                )?)),
                false => None,
            },
            peers: Default::default(),
            tcp_tls: Default::default(),
            session_key: Default::default(),
            sessions_made: Default::default(),
            #[cfg(feature = "cluster")]
            cluster,
            config,
        });
        Ok(node)
    }

    /// Publishes to `channel`: in the hub (memory engine) or through the
    /// cluster's broker (Redis or NATS).
    /// Timed in `crier_publish_duration_seconds`; engine errors counted.
    pub async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        opts: PublishOptions,
    ) -> Result<StreamPosition, HubError> {
        #[cfg(feature = "cluster")]
        if let Some(c) = &self.cluster {
            let started = Instant::now();
            let result = c.publish(channel, data, opts).await;
            self.metrics.observe_publish(started, &result);
            return result;
        }
        self.publish_in_hub(channel, data, opts)
    }

    /// [`Node::publish`] on the memory engine, which never waits: the hub
    /// assigns the offset and enqueues to local subscribers. Timed and
    /// counted the same way.
    pub fn publish_in_hub(
        &self,
        channel: &str,
        data: Bytes,
        opts: PublishOptions,
    ) -> Result<StreamPosition, HubError> {
        let started = Instant::now();
        let result = self.hub.publish(channel, data, opts);
        self.metrics.observe_publish(started, &result);
        result
    }

    /// Subscribes client `id` to `channel` with catch-up; `notice` as in
    /// [`Hub::subscribe_with`]. Engine errors are counted.
    pub async fn subscribe(
        &self,
        id: ClientId,
        channel: &str,
        opts: SubscribeOptions,
        notice: impl FnOnce(&Subscribed) -> Option<Bytes>,
    ) -> Result<Subscribed, HubError> {
        #[cfg(feature = "cluster")]
        let result = match &self.cluster {
            Some(c) => c.subscribe(id, channel, opts, notice).await,
            None => self.hub.subscribe_with(id, channel, opts, notice),
        };
        #[cfg(not(feature = "cluster"))]
        let result = self.hub.subscribe_with(id, channel, opts, notice);
        if let Err(e) = &result {
            self.metrics.engine_error(e);
        }
        result
    }

    /// Reads `channel`'s history.
    pub async fn history(&self, channel: &str, query: &HistoryQuery) -> Result<HistoryPage, HubError> {
        #[cfg(feature = "cluster")]
        if let Some(c) = &self.cluster {
            return c.history(channel, query).await;
        }
        self.hub.history(channel, query)
    }

    /// [`Node::history`] as the client protocol and the server API ask for
    /// it and answer it; an engine failure is counted.
    pub(crate) async fn history_reply(
        &self,
        channel: &str,
        limit: i32,
        since: Option<&crier_proto::client::StreamPosition>,
        reverse: bool,
    ) -> Result<crier_proto::client::HistoryResult, ErrorCode> {
        let max = self.config.client.history_max_publication_limit;
        let query = wire::history_query(max, limit, since, reverse);
        match self.history(channel, &query).await {
            Ok(page) => Ok(wire::history_result(&page)),
            Err(e) => {
                self.metrics.engine_error(&e);
                Err(wire::hub_error_code(&e))
            }
        }
    }

    /// Drops `channel`'s history (its position stays).
    pub async fn remove_history(&self, channel: &str) -> Result<(), HubError> {
        #[cfg(feature = "cluster")]
        if let Some(c) = &self.cluster {
            return c.remove_history(channel).await;
        }
        self.hub.remove_history(channel)
    }

    /// Who is present in `channel` (on every node, on a cluster engine).
    pub async fn presence(&self, channel: &str) -> Result<Vec<Arc<ClientInfo>>, HubError> {
        #[cfg(feature = "cluster")]
        if let Some(c) = &self.cluster {
            return c.presence(channel).await;
        }
        self.hub.presence(channel)
    }

    /// Presence counts of `channel` (on every node, on a cluster engine).
    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, HubError> {
        #[cfg(feature = "cluster")]
        if let Some(c) = &self.cluster {
            let (clients, users) = c.presence_stats(channel).await?;
            return Ok(PresenceStats {
                clients: clients as usize,
                users: users as usize,
            });
        }
        self.hub.presence_stats(channel)
    }

    /// One line saying which engine runs and, for Redis or NATS, whether
    /// it answers now (a node starts anyway and keeps retrying).
    pub async fn engine_status(&self) -> String {
        #[cfg(feature = "cluster")]
        if let Some(c) = &self.cluster {
            let broker = c.broker().describe();
            return match c.broker().ping().await {
                Ok(()) => broker,
                Err(e) => {
                    tracing::warn!(error = %e, "the engine's broker is not answering; publishing and subscribing fail with error 100 until it does");
                    format!("{broker} (NOT REACHABLE yet: {e}; retrying)")
                }
            };
        }
        "memory (one node)".to_owned()
    }

    /// Whether the engine answers now (a broker ping within a second), or
    /// why not.
    pub(crate) async fn engine_ready(&self) -> Result<(), String> {
        #[cfg(feature = "cluster")]
        if let Some(c) = &self.cluster {
            return match tokio::time::timeout(Duration::from_secs(1), c.broker().ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("engine unreachable: {e}")),
                Err(_) => Err("engine unreachable: no answer within 1 s".to_owned()),
            };
        }
        Ok(())
    }

    /// True when other nodes share this node's channels (Redis or NATS).
    pub fn clustered(&self) -> bool {
        #[cfg(feature = "cluster")]
        return self.cluster.is_some();
        #[cfg(not(feature = "cluster"))]
        false
    }

    /// Options of `channel` as configured, or `None` if its namespace is
    /// unknown.
    pub fn channel_options(&self, channel: &str) -> Option<&ChannelOptions> {
        let channels = &self.config.channel;
        // Under `--dev` any namespace works, with the top level's options
        // (the hub resolves the same way: `unknown_namespaces_as_top_level`).
        channels
            .options_for(channel)
            .or(self.config.crier.dev.then_some(&channels.without_namespace))
    }

    /// Whether a browser page from `origin` may open a `transport`
    /// connection to `host` (`client.allowed_origins`); a refusal is logged
    /// at info, rate-limited.
    pub(crate) fn origin_allowed(
        &self,
        peer: crate::metrics::Peer,
        origin: Option<&str>,
        host: Option<&str>,
    ) -> bool {
        // Under `--dev` a page served from this machine on any port (a
        // front-end dev server on localhost:3000) may connect too.
        let allowed = self.origins.allows(origin, host)
            || (self.config.crier.dev && origin.is_some_and(crate::config::is_local_origin));
        if !allowed {
            if let Some(left_out) = self.metrics.client_problem_line() {
                let (transport, origin, host) =
                    (peer.transport.label(), origin.unwrap_or(""), host.unwrap_or(""));
                tracing::info!(
                    transport,
                    remote = %peer.remote_field(),
                    origin,
                    host,
                    left_out,
                    "origin refused (HTTP 403): not in client.allowed_origins"
                );
            }
        }
        allowed
    }

    /// Seconds since the node started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Reads the TLS certificates, keys and client CAs that `config`
    /// names again (on SIGHUP), for the HTTP listener and every `[[tcp]]`
    /// listener that serves TLS, and uses them for the connections
    /// accepted from now on; the open ones keep theirs. Answers how many
    /// listeners took new files. Turning TLS on or off needs a restart; a
    /// listener whose new files are unusable keeps its certificate, and
    /// the first such error is returned (the others are still reloaded).
    pub fn reload_tls(&self, config: &Config) -> Result<usize, ConfigError> {
        let mut reloaded = 0;
        let mut first_error = None;
        let mut take = |outcome: Result<(), ConfigError>| match outcome {
            Ok(()) => reloaded += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        };
        if let (Some(current), true) = (&self.tls, config.http_server.tls.enabled) {
            take(tls_config(&config.http_server.tls, "http_server.tls").map(|c| current.replace(c)));
        }
        let listeners = self.tcp_tls.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (i, current) in listeners {
            if let Some(tcp) = config.tcp.get(i).filter(|t| t.tls.enabled) {
                take(tls_config(&tcp.tls, &format!("tcp[{i}].tls")).map(|c| current.replace(c)));
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(reloaded),
        }
    }

    /// This node, as the server API's `info` shows it.
    pub fn node_result(&self) -> NodeResult {
        let stats = self.hub.stats();
        NodeResult {
            uid: self.id.clone(),
            name: self.id.clone(),
            version: VERSION.to_owned(),
            num_clients: stats.clients as u32,
            num_users: self.hub.user_count() as u32,
            num_channels: stats.channels as u32,
            uptime: self.uptime().as_secs() as u32,
            num_subs: stats.subscriptions as u32,
        }
    }

    /// Another node said what it is now.
    pub(crate) fn peer_seen(&self, info: NodeResult) {
        if info.uid == self.id {
            return;
        }
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.insert(info.uid.clone(), (Instant::now(), info));
    }

    /// The other nodes heard from within [`NODE_INFO_TTL`]; the others
    /// are forgotten.
    pub fn peers(&self) -> Vec<NodeResult> {
        self.peers_heard().into_iter().map(|(info, _)| info).collect()
    }

    /// [`Node::peers`], each with how long ago it was last heard from.
    pub fn peers_heard(&self) -> Vec<(NodeResult, Duration)> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.retain(|_, (seen, _)| seen.elapsed() < NODE_INFO_TTL);
        peers
            .values()
            .map(|(seen, info)| (info.clone(), seen.elapsed()))
            .collect()
    }
}

/// The rustls configuration a TLS section (`http_server.tls`, or a
/// `[[tcp]]` listener's `tls`, named by `section`) describes: its files
/// (or inline PEM) read now; a failure names the key at fault.
pub(crate) fn tls_config(
    tls: &crate::config::TlsConfig,
    section: &str,
) -> Result<rustls::ServerConfig, ConfigError> {
    use crate::net::tls::{server_config, Part, Pems};
    let read = |key: &str, value: &str| {
        crate::config::TlsConfig::pem(value).map_err(|e| ConfigError::Invalid {
            key: format!("{section}.{key}"),
            message: format!("cannot read {value}: {e}"),
        })
    };
    if tls.cert_pem.is_empty() || tls.key_pem.is_empty() {
        return Err(ConfigError::Invalid {
            key: section.to_owned(),
            message: "enabled needs cert_pem and key_pem (a file path or the PEM itself)".to_owned(),
        });
    }
    let cert = read("cert_pem", &tls.cert_pem)?;
    let key = read("key_pem", tls.key_pem.expose())?;
    let client_ca = match tls.client_ca_pem.as_str() {
        "" => None,
        ca => Some(read("client_ca_pem", ca)?),
    };
    let pems = Pems {
        cert: &cert,
        key: &key,
        client_ca: client_ca.as_deref(),
    };
    server_config(&pems).map_err(|e| ConfigError::Invalid {
        key: match e.part {
            Part::Cert => format!("{section}.cert_pem"),
            Part::Key => format!("{section}.key_pem"),
            Part::ClientCa => format!("{section}.client_ca_pem"),
            Part::Whole => section.to_owned(),
        },
        message: e.why,
    })
}

/// Maps the configuration's channel options onto the hub's.
fn hub_options(o: &ChannelOptions) -> HubChannelOptions {
    let history = o.history_enabled();
    HubChannelOptions {
        history_size: if history { o.history_size } else { 0 },
        history_ttl: history.then_some(o.history_ttl),
        presence: o.presence,
        join_leave: o.join_leave,
    }
}

fn hub_config(config: &Config) -> HubConfig {
    let mut channels = ChannelConfig::new(hub_options(&config.channel.without_namespace));
    for ns in &config.channel.namespaces {
        channels = channels.namespace(&ns.name, hub_options(&ns.options));
    }
    channels.recovery_max_publications = config.client.recovery_max_publication_limit;
    channels.max_channel_length = config.channel.max_length;
    channels.names = config.channel.names();
    channels.unknown_namespaces_as_top_level = config.crier.dev;
    HubConfig {
        channels,
        queue_limits: QueueLimits {
            // 0 means "no cap" in the configuration.
            max_messages: match config.crier.client_queue_max_messages {
                0 => usize::MAX,
                n => n,
            },
            max_bytes: config.client.queue_max_size,
        },
        ..HubConfig::default()
    }
}

/// The most publications any namespace keeps in history.
#[cfg(feature = "nats")]
fn largest_history_size(config: &Config) -> usize {
    let c = &config.channel;
    std::iter::once(&c.without_namespace)
        .chain(c.namespaces.iter().map(|ns| &ns.options))
        .map(|o| hub_options(o).history_size)
        .max()
        .unwrap_or(0)
}

/// The hub on the Redis or NATS engine, and the cluster feeding it. Needs
/// a tokio runtime (the broker's connections start now, in the background).
#[cfg(feature = "cluster")]
fn cluster_hub(
    config: &Config,
    hub_config: HubConfig,
    node_id: String,
    shutdown: CancellationToken,
) -> Result<(Hub, Arc<crate::cluster::Cluster>), ConfigError> {
    use crate::cluster::Broker;
    use crate::cluster::{Cluster, ClusterConfig};
    use crate::config::EngineType;
    let kind = config.engine.kind;
    let invalid = |message: String| ConfigError::Invalid {
        key: format!("engine.{}", kind.as_str()),
        message,
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(invalid(format!(
            "the {} engine needs a tokio runtime",
            kind.as_str()
        )));
    }
    let (broker, presence_ttl, history_meta_ttl) = match kind {
        #[cfg(feature = "redis")]
        EngineType::Redis => {
            use crate::redis_broker::{RedisBroker, RedisConfig};
            let r = &config.engine.redis;
            let broker = RedisBroker::connect(RedisConfig {
                addresses: r.address.clone(),
                prefix: r.prefix.clone(),
                connect_timeout: r.connect_timeout,
                command_timeout: r.io_timeout,
                ..RedisConfig::default()
            })
            .map_err(|e| invalid(e.to_string()))?;
            (Broker::Redis(broker), r.presence_ttl, r.history_meta_ttl)
        }
        #[cfg(feature = "nats")]
        EngineType::Nats => {
            use crate::nats_broker::{NatsBroker, NatsConfig};
            let n = &config.engine.nats;
            let broker = NatsBroker::connect(NatsConfig {
                addresses: n.address.clone(),
                prefix: n.prefix.clone(),
                connect_timeout: n.connect_timeout,
                request_timeout: n.io_timeout,
                replicas: n.replicas,
                presence_ttl: n.presence_ttl,
                history_meta_ttl: n.history_meta_ttl,
                history_cap: largest_history_size(config),
            })
            .map_err(|e| invalid(e.to_string()))?;
            (Broker::Nats(broker), n.presence_ttl, n.history_meta_ttl)
        }
        other => {
            return Err(invalid(format!(
                "this crier was built without the {:?} cargo feature",
                other.as_str()
            )))
        }
    };
    let (engine, starter) = Cluster::engine(
        broker,
        ClusterConfig {
            presence_ttl,
            history_meta_ttl,
        },
    );
    let hub = Hub::with_engine(hub_config, engine);
    let cluster = starter.start(hub.clone(), node_id, shutdown);
    Ok((hub, cluster))
}

/// Runs a fan-out's writes at once ([`crier_core::Flush`]) as a task on the
/// node's runtime. A runtime shutting down drops the task, and the flush
/// wakes its clients' writers instead.
struct Spawn(tokio::runtime::Handle);

impl crier_core::Spread for Spawn {
    fn spread(&self, flush: crier_core::Flush) {
        self.0.spawn(async move { flush.run() });
    }
}
