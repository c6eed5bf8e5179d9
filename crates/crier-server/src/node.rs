//! One running crier node: the hub plus everything the transports and the
//! HTTP API share (configuration, token verifier, access policy, identity,
//! the shutdown signal). Built once from a validated [`Config`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crier_core::{ChannelConfig, ChannelOptions as HubChannelOptions, Hub, HubConfig, QueueLimits};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AccessPolicy, TokenVerifier};
use crate::config::{ChannelOptions, Config, ConfigError, OriginPolicy};
use crate::metrics::Metrics;

/// crier's version, reported in connect replies and `info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

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
    pub metrics: Metrics,
}

impl Node {
    /// Builds a node from a validated configuration.
    pub fn new(config: Config) -> Result<Arc<Self>, ConfigError> {
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
        let hub = Hub::new(HubConfig {
            node_tag,
            ..hub_config(&config)
        });
        let metrics = Metrics::new(hub.clone(), config.prometheus.enabled);
        Ok(Arc::new(Self {
            hub,
            tokens,
            access,
            origins,
            id: format!("{:x}-{:x}", nanos, std::process::id()),
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            metrics,
            config,
        }))
    }

    /// Options of `channel` as configured, or `None` if its namespace is
    /// unknown.
    pub fn channel_options(&self, channel: &str) -> Option<&ChannelOptions> {
        self.config.channel.options_for(channel)
    }

    /// Seconds since the node started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
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
