//! The cluster engines: several crier nodes share channels through a
//! broker, Redis (`crate::redis_broker`) or NATS JetStream
//! (`crate::nats_broker`), behind [`Broker`].
//!
//! The hub stays the local fan-out; the broker decides order. On a node
//! with a cluster engine:
//!
//! - a publication (API, client, TCP, file source) goes to the broker
//!   only, which assigns its offset, keeps it in history and sends it to
//!   every subscribed node. Every node, the publishing one included, fans
//!   it out to its own subscribers when it comes back from the broker
//!   ([`Hub::deliver_at`]), so every node delivers one channel's
//!   publications in the same offset order;
//! - a subscribe is two-phase ([`Hub::begin_subscribe`]): the node makes
//!   sure the broker sends it the channel (first local subscriber only),
//!   reads the position or the recovery from the broker, then joins the
//!   client; publications that arrived meanwhile are queued after the
//!   reply, none twice;
//! - when the last local subscriber of a channel leaves, the node
//!   unsubscribes from it in the broker (the hub's `release`);
//! - presence entries are written to the broker with the engine's
//!   `presence_ttl` and refreshed by their node every third of it, so a
//!   dead node's clients vanish within the TTL;
//! - a broker connection that drops ([`BrokerEvent::Lost`]), or a delivery
//!   that skips an offset or changes epoch, may have left a gap: every
//!   local subscriber of the channels concerned gets an unsubscribe push
//!   with code 2500 ("insufficient state"), so the SDKs resubscribe with
//!   recovery from their last offset (which fails with a temporary error
//!   100 while the broker is down, and they retry with backoff);
//! - the server API's `disconnect`, `unsubscribe`, `subscribe` and
//!   `refresh` act on the clients of every node: the receiving node applies
//!   them and broadcasts them on the control channel; the others apply
//!   them when they hear it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use crier_core::{
    settle_recovery, Catchup, ChannelOptions, ClientId, ClientInfo, Delivery, Engine, EngineError, Exclusion,
    HistoryPage, HistoryQuery, Hub, HubError, Publication, PublishOptions, StreamPosition, SubscribeOptions,
    Subscribed,
};
use crier_proto::codes::Unsubscribe;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::broker::{
    self, decode_info, encode_info, BrokerError, BrokerEvent, BrokerEvents, InfoParts, RemotePublication,
};
pub(crate) use dispatch::{Broker, Subscriptions};

mod dispatch;
mod occupancy;

/// What the hub's engine hooks ask of the background tasks, in order.
enum SubOp {
    /// Make sure pub/sub is subscribed to the channel; answer when it is.
    Subscribe(Arc<str>, oneshot::Sender<Result<(), BrokerError>>),
    /// The last local subscriber left.
    Release(Arc<str>),
}

enum PresenceOp {
    Add(Arc<str>, Arc<ClientInfo>),
    Remove(Arc<str>, ClientId),
    /// Answers once every change queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Presence refreshes in flight at once.
const REFRESH_IN_FLIGHT: usize = 64;

/// This node's presence entries, re-written to the broker before they expire.
type LocalPresence = HashMap<Arc<str>, HashMap<ClientId, Arc<ClientInfo>>>;

/// The hub's engine on a cluster node. The hub calls it for the local side
/// of things (a channel gained or lost its last local subscriber, presence
/// changed) and those calls only queue work for the background tasks: they
/// never wait on the broker under the hub's locks. Publishing, history and
/// presence reads are asynchronous and go through [`Cluster`] instead; the
/// synchronous calls answer a temporary error, so nothing bypasses the broker's
/// order by accident.
pub struct RemoteEngine {
    subs: mpsc::UnboundedSender<SubOp>,
    presence: mpsc::UnboundedSender<PresenceOp>,
}

fn asynchronous() -> EngineError {
    EngineError::Unavailable("the cluster engine publishes and reads through the node, asynchronously".into())
}

impl Engine for RemoteEngine {
    fn publish(
        &self,
        _channel: &str,
        _options: &ChannelOptions,
        _publication: Publication,
        _skip_history: bool,
    ) -> Result<(Publication, crier_core::StreamPosition), EngineError> {
        Err(asynchronous())
    }

    fn history(
        &self,
        _channel: &str,
        _options: &ChannelOptions,
        _query: &HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        Err(asynchronous())
    }

    fn remove_history(&self, _channel: &str) -> Result<(), EngineError> {
        Err(asynchronous())
    }

    fn retain(&self, _channel: &str) {
        // The subscribe that made the channel asks for the broker's
        // subscription itself, through the same ordered queue as release.
    }

    fn release(&self, channel: &str) {
        let _ = self.subs.send(SubOp::Release(channel.into()));
    }

    fn add_presence(&self, channel: &str, info: Arc<ClientInfo>) -> Result<(), EngineError> {
        let _ = self.presence.send(PresenceOp::Add(channel.into(), info));
        Ok(())
    }

    fn remove_presence(&self, channel: &str, client: ClientId) -> Result<(), EngineError> {
        let _ = self.presence.send(PresenceOp::Remove(channel.into(), client));
        Ok(())
    }

    fn presence(&self, _channel: &str) -> Result<Vec<Arc<ClientInfo>>, EngineError> {
        Err(asynchronous())
    }

    fn sweep(&self) {}
}

/// Settings of the cluster engine, from `engine.redis` or `engine.nats`.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// How long a presence entry lives without a refresh.
    pub presence_ttl: Duration,
    /// How long a channel's offset and epoch live after its last use.
    pub history_meta_ttl: Duration,
}

/// A node's side of the cluster engine: publishing, two-phase subscribing,
/// history and presence against the broker, and the tasks that feed the hub.
pub struct Cluster {
    hub: Hub,
    broker: Broker,
    subs: mpsc::UnboundedSender<SubOp>,
    presence: mpsc::UnboundedSender<PresenceOp>,
    config: ClusterConfig,
    node_id: String,
    control: StdMutex<Option<ControlHandler>>,
}

/// Applies a control message (the JSON of a server API request) heard from
/// another node.
pub type ControlHandler = Box<dyn Fn(&[u8]) + Send + Sync>;

fn unavailable(e: BrokerError) -> HubError {
    HubError::Engine(match e {
        BrokerError::UnrecoverablePosition { .. } => EngineError::UnrecoverablePosition,
        other => EngineError::Unavailable(other.to_string()),
    })
}

fn position(p: broker::StreamPosition) -> StreamPosition {
    StreamPosition {
        offset: p.offset,
        epoch: p.epoch.into(),
    }
}

fn info_bytes(i: &ClientInfo) -> Bytes {
    Bytes::from(encode_info(&InfoParts {
        client: i.client.0,
        user: i.user.to_string(),
        conn_info: i.conn_info().cloned(),
        chan_info: i.chan_info().cloned(),
    }))
}

fn client_info(b: Bytes) -> Result<Arc<ClientInfo>, BrokerError> {
    let p = decode_info(b)?;
    Ok(Arc::new(ClientInfo::new(
        ClientId(p.client),
        p.user.into(),
        p.conn_info,
        p.chan_info,
    )))
}

/// A history read from the broker as the hub holds it.
fn page(pubs: Vec<RemotePublication>, top: broker::StreamPosition) -> Result<HistoryPage, HubError> {
    Ok(HistoryPage {
        publications: pubs
            .into_iter()
            .map(local)
            .collect::<Result<_, _>>()
            .map_err(unavailable)?,
        position: position(top),
    })
}

/// A publication from the broker as the hub holds it.
fn local(p: RemotePublication) -> Result<Publication, BrokerError> {
    let exclusion = if p.exclude_clients.is_empty() && p.exclude_users.is_empty() {
        None
    } else {
        let clients = p
            .exclude_clients
            .iter()
            .map(|c| c.parse().map(ClientId))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| BrokerError::Protocol("excluded client id not a number".into()))?;
        Some(Arc::new(Exclusion {
            clients,
            users: p.exclude_users.into_iter().map(Into::into).collect(),
        }))
    };
    Ok(Publication {
        offset: p.offset,
        data: p.data,
        info: p.info.map(client_info).transpose()?,
        tags: (!p.tags.is_empty()).then(|| {
            p.tags
                .into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect::<Vec<_>>()
                .into()
        }),
        exclusion,
    })
}

impl Cluster {
    /// The engine for the hub over `broker` (which connects lazily), and a
    /// [`ClusterStarter`] that, given the hub, starts the cluster. Split in
    /// two because the hub needs its engine before the cluster can hold it.
    pub fn engine(broker: Broker, config: ClusterConfig) -> (Arc<RemoteEngine>, ClusterStarter) {
        let (subs_tx, subs_rx) = mpsc::unbounded_channel();
        let (presence_tx, presence_rx) = mpsc::unbounded_channel();
        let engine = Arc::new(RemoteEngine {
            subs: subs_tx.clone(),
            presence: presence_tx.clone(),
        });
        (
            engine,
            ClusterStarter {
                broker,
                config,
                presence_tx,
                subs_tx,
                subs_rx,
                presence_rx,
            },
        )
    }

    /// The broker, for tests and tools.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Waits (at most `within`) until every presence change queued so far
    /// is written to the broker: a graceful shutdown calls it after the hub said
    /// goodbye to every client, so their entries go now, not after the TTL.
    pub async fn flush(&self, within: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.presence.send(PresenceOp::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }

    /// This node's holdings of channels in the broker, for cluster-wide
    /// occupied/vacated webhooks: alive for `ttl` after each heartbeat.
    pub(crate) fn occupancy(&self, ttl: Duration) -> Arc<dyn crate::webhooks::Occupancy> {
        Arc::new(occupancy::BrokerOccupancy {
            broker: self.broker.clone(),
            node: self.node_id.clone(),
            ttl,
        })
    }

    /// Sets what applies control messages from other nodes.
    pub fn on_control(&self, handler: ControlHandler) {
        *self.control.lock().expect("control handler lock") = Some(handler);
    }

    /// Broadcasts `payload` (a server API request as JSON) to the other
    /// nodes.
    pub async fn broadcast_control(&self, payload: &[u8]) -> Result<(), HubError> {
        let mut msg = Vec::with_capacity(self.node_id.len() + 1 + payload.len());
        msg.extend_from_slice(self.node_id.as_bytes());
        msg.push(b'\n');
        msg.extend_from_slice(payload);
        self.broker.publish_control(&msg).await.map_err(unavailable)?;
        Ok(())
    }

    /// Publishes to `channel` through the broker; local subscribers get it
    /// when the broker delivers it back to this node.
    pub async fn publish(
        &self,
        channel: &str,
        data: Bytes,
        opts: PublishOptions,
    ) -> Result<StreamPosition, HubError> {
        let options = self.hub.channel_options(channel)?;
        let exclude = opts.exclude;
        let broker_opts = broker::PublishOptions {
            history_size: if opts.skip_history {
                0
            } else {
                options.history_size
            },
            history_ttl: options.history_ttl.unwrap_or_default(),
            meta_ttl: self.config.history_meta_ttl,
            info: opts.info.as_deref().map(info_bytes),
            tags: opts
                .tags
                .iter()
                .flat_map(|t| t.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            exclude_clients: exclude.clients.iter().map(|c| c.0.to_string()).collect(),
            exclude_users: exclude.users.iter().map(|u| u.to_string()).collect(),
        };
        let p = self
            .broker
            .publish(channel, data, &broker_opts)
            .await
            .map_err(unavailable)?;
        Ok(position(p))
    }

    async fn ensure_subscribed(&self, channel: &str) -> Result<(), HubError> {
        let (tx, rx) = oneshot::channel();
        let gone = || HubError::Engine(EngineError::Unavailable("cluster engine stopped".into()));
        self.subs
            .send(SubOp::Subscribe(channel.into(), tx))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?.map_err(unavailable)
    }

    fn query(&self, options: &ChannelOptions, q: &HistoryQuery) -> broker::HistoryQuery {
        broker::HistoryQuery {
            history_size: options.history_size,
            history_ttl: options.history_ttl.unwrap_or_default(),
            since: q.since.as_ref().map(|s| broker::StreamPosition {
                offset: s.offset,
                epoch: s.epoch.to_string(),
            }),
            limit: q.limit,
            reverse: q.reverse,
            meta_ttl: self.config.history_meta_ttl,
        }
    }

    /// Subscribes client `id` to `channel` with catch-up from the broker; see
    /// [`Hub::subscribe_with`] for `notice`.
    pub async fn subscribe(
        &self,
        id: ClientId,
        channel: &str,
        opts: SubscribeOptions,
        notice: impl FnOnce(&Subscribed) -> Option<Bytes>,
    ) -> Result<Subscribed, HubError> {
        // Aborts the pending subscribe if this future fails or is dropped
        // (the connection closed while the broker was answering).
        struct Pending<'a> {
            hub: &'a Hub,
            id: ClientId,
            channel: &'a str,
            armed: bool,
        }
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                if self.armed {
                    self.hub.abort_subscribe(self.id, self.channel);
                }
            }
        }
        let mut retried = false;
        loop {
            self.hub.begin_subscribe(id, channel)?;
            let mut pending = Pending {
                hub: &self.hub,
                id,
                channel,
                armed: true,
            };
            self.ensure_subscribed(channel).await?;
            let (page, recovered) = self.catch_up(channel, &opts.catchup).await?;
            let stale = self
                .hub
                .stream_mark(channel)
                .is_some_and(|m| m.epoch != page.position.epoch);
            if stale && !retried {
                // The local subscribers follow an epoch the broker no longer has
                // (the channel's meta key expired while nobody published):
                // tell them (2500), then join the new stream.
                retried = true;
                drop(pending);
                self.resync(channel);
                continue;
            }
            pending.armed = false;
            return self
                .hub
                .finish_subscribe(id, channel, opts, page, recovered, notice);
        }
    }

    /// Reads the catch-up `catchup` asks for from the broker, settled.
    async fn catch_up(&self, channel: &str, catchup: &Catchup) -> Result<(HistoryPage, bool), HubError> {
        let max = self.hub.channel_config().recovery_max_publications;
        let options = self.hub.channel_options(channel)?;
        let query = self.query(&options, &catchup.query(max));
        match self.broker.history(channel, &query).await {
            Ok((pubs, top)) => {
                let page = page(pubs, top)?;
                Ok(match catchup {
                    Catchup::Recover(since) => settle_recovery(since, page, max),
                    _ => (page, false),
                })
            }
            Err(BrokerError::UnrecoverablePosition { current }) => Ok((
                HistoryPage {
                    publications: Vec::new(),
                    position: position(current),
                },
                false,
            )),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Reads `channel`'s history from the broker.
    pub async fn history(&self, channel: &str, query: &HistoryQuery) -> Result<HistoryPage, HubError> {
        let options = self.hub.channel_options(channel)?;
        let (pubs, top) = self
            .broker
            .history(channel, &self.query(&options, query))
            .await
            .map_err(unavailable)?;
        page(pubs, top)
    }

    /// Drops `channel`'s history in the broker (its position stays).
    pub async fn remove_history(&self, channel: &str) -> Result<(), HubError> {
        self.hub.channel_options(channel)?;
        self.broker.remove_history(channel).await.map_err(unavailable)
    }

    /// Everyone present in `channel`, on every node.
    pub async fn presence(&self, channel: &str) -> Result<Vec<Arc<ClientInfo>>, HubError> {
        self.hub.channel_options(channel)?;
        let entries = self.broker.presence(channel).await.map_err(unavailable)?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            match client_info(e.info) {
                Ok(i) => out.push(i),
                Err(err) => tracing::warn!(channel, error = %err, "skipping a malformed presence entry"),
            }
        }
        Ok(out)
    }

    /// `(clients, distinct users)` present in `channel`, on every node.
    pub async fn presence_stats(&self, channel: &str) -> Result<(u64, u64), HubError> {
        self.hub.channel_options(channel)?;
        self.broker.presence_stats(channel).await.map_err(unavailable)
    }

    fn subscribe_control(&self) {
        let (tx, _) = oneshot::channel();
        let _ = self.subs.send(SubOp::Subscribe(broker::CONTROL.into(), tx));
    }

    fn resync(&self, channel: &str) {
        let push = crate::wire::unsubscribe_push(channel, &Unsubscribe::INSUFFICIENT_STATE);
        let n = self.hub.unsubscribe_all(channel, Some(push)).len();
        if n > 0 {
            tracing::info!(
                channel,
                clients = n,
                "stream may have a gap: clients told to resubscribe (2500)"
            );
        }
    }

    fn on_event(&self, event: BrokerEvent) {
        match event {
            BrokerEvent::Publication {
                channel, publication, ..
            } if &*channel == broker::CONTROL => {
                let msg = &publication.data;
                let Some(split) = msg.iter().position(|&b| b == b'\n') else {
                    return;
                };
                if &msg[..split] == self.node_id.as_bytes() {
                    return; // applied already where it was made
                }
                if let Some(handler) = self.control.lock().expect("control handler lock").as_ref() {
                    handler(&msg[split + 1..]);
                }
            }
            BrokerEvent::Publication {
                channel,
                epoch,
                publication,
                ..
            } => match local(publication) {
                Ok(p) => {
                    if self.hub.deliver_at(&channel, &epoch, p) == Delivery::Gap {
                        self.resync(&channel);
                    }
                }
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "malformed publication from the broker");
                    self.resync(&channel);
                }
            },
            BrokerEvent::Lost { shard } => {
                for (channel, _) in self.hub.channels() {
                    if self.broker.shard_of(&channel) == shard {
                        self.resync(&channel);
                    }
                }
            }
            BrokerEvent::Restored { shard } => {
                tracing::info!(shard, "broker connection restored");
                if self.broker.shard_of(broker::CONTROL) == shard {
                    // Resubscribed already if it ever was; if the node
                    // started while the broker was down, this is the first time.
                    self.subscribe_control();
                }
            }
        }
    }
}

/// The second half of [`Cluster::engine`].
pub struct ClusterStarter {
    broker: Broker,
    config: ClusterConfig,
    presence_tx: mpsc::UnboundedSender<PresenceOp>,
    subs_tx: mpsc::UnboundedSender<SubOp>,
    subs_rx: mpsc::UnboundedReceiver<SubOp>,
    presence_rx: mpsc::UnboundedReceiver<PresenceOp>,
}

impl ClusterStarter {
    /// Starts the pub/sub connections and the background tasks (they stop
    /// when `shutdown` is cancelled). Must run inside a tokio runtime.
    pub fn start(self, hub: Hub, node_id: String, shutdown: CancellationToken) -> Arc<Cluster> {
        let (subscriptions, events) = self.broker.subscriptions();
        let cluster = Arc::new(Cluster {
            hub,
            broker: self.broker.clone(),
            subs: self.subs_tx,
            presence: self.presence_tx,
            config: self.config.clone(),
            node_id,
            control: StdMutex::new(None),
        });
        // The control channel is subscribed for the life of the node.
        cluster.subscribe_control();
        tokio::spawn(subscription_task(self.subs_rx, subscriptions, shutdown.clone()));
        tokio::spawn(event_task(Arc::downgrade(&cluster), events, shutdown.clone()));
        tokio::spawn(presence_task(
            self.broker,
            self.presence_rx,
            self.config.presence_ttl,
        ));
        cluster
    }
}

async fn subscription_task(
    mut ops: mpsc::UnboundedReceiver<SubOp>,
    subscriptions: Subscriptions,
    shutdown: CancellationToken,
) {
    loop {
        let op = tokio::select! {
            op = ops.recv() => op,
            () = shutdown.cancelled() => None,
        };
        match op {
            None => return,
            Some(SubOp::Subscribe(channel, reply)) => {
                let _ = reply.send(subscriptions.subscribe(&channel).await);
            }
            Some(SubOp::Release(channel)) => {
                if let Err(e) = subscriptions.unsubscribe(&channel).await {
                    tracing::debug!(channel = %channel, error = %e, "broker unsubscribe failed");
                }
            }
        }
    }
}

async fn event_task(
    cluster: std::sync::Weak<Cluster>,
    mut events: BrokerEvents,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = shutdown.cancelled() => None,
        };
        let (Some(event), Some(cluster)) = (event, cluster.upgrade()) else {
            return;
        };
        cluster.on_event(event);
    }
}

/// Writes presence changes to the broker in order and refreshes this node's
/// entries every third of the TTL. A write that fails (broker down) is
/// repaired by the next refresh; a removal that fails expires by itself.
/// Runs while the hub (which holds the sending side) lives, so the
/// removals of a graceful shutdown are still written ([`Cluster::flush`]).
async fn presence_task(broker: Broker, mut ops: mpsc::UnboundedReceiver<PresenceOp>, ttl: Duration) {
    let mut local: LocalPresence = HashMap::new();
    let mut refresh = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            op = ops.recv() => match op {
                None => return,
                Some(PresenceOp::Add(channel, info)) => {
                    let bytes = info_bytes(&info);
                    if let Err(e) = broker
                        .add_presence(&channel, &info.client.to_string(), &info.user, bytes, ttl)
                        .await
                    {
                        tracing::debug!(channel = %channel, error = %e, "presence add failed; the refresh retries");
                    }
                    local.entry(channel).or_default().insert(info.client, info);
                }
                Some(PresenceOp::Remove(channel, client)) => {
                    if let Some(m) = local.get_mut(&channel) {
                        m.remove(&client);
                        if m.is_empty() {
                            local.remove(&channel);
                        }
                    }
                    if let Err(e) = broker.remove_presence(&channel, &client.to_string()).await {
                        tracing::debug!(channel = %channel, error = %e, "presence remove failed; the entry expires");
                    }
                }
                Some(PresenceOp::Flush(done)) => {
                    let _ = done.send(());
                }
            },
            _ = refresh.tick() => {
                // Up to REFRESH_IN_FLIGHT writes at once on the multiplexed
                // connection (pipelined), not one round trip per entry. A
                // failure (broker down) is retried at the next tick.
                let entries: Vec<(Arc<str>, Arc<ClientInfo>)> = local
                    .iter()
                    .flat_map(|(channel, clients)| clients.values().map(|info| (channel.clone(), info.clone())))
                    .collect();
                futures_util::stream::iter(entries)
                    .for_each_concurrent(REFRESH_IN_FLIGHT, |(channel, info)| {
                        let broker = broker.clone();
                        async move {
                            let client = info.client.to_string();
                            let _ = broker
                                .add_presence(&channel, &client, &info.user, info_bytes(&info), ttl)
                                .await;
                        }
                    })
                    .await;
            }
        }
    }
}
