//! The hub: the client registry, channel subscriber sets with their reverse
//! index, and ordered fan-out. It owns the per-channel critical section that
//! makes "catch-up then live" exact, and it never blocks on a client.
//!
//! Lock order (never taken in the other direction):
//! channel shard → channel state → client subscriptions → client queue.
//! Engine calls happen under the channel state lock (or, for a channel with
//! no local subscribers, under its shard's read lock).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::engine::{Engine, EngineError, HistoryPage, HistoryQuery, StreamPosition};
use crate::error::HubError;
use crate::event::{ClientId, ClientInfo, Event, EventKind, Exclusion, Outbound, Publication, Tags};
use crate::memory::MemoryEngine;
use crate::options::{ChannelConfig, ChannelOptions};
use crate::queue::{
    queue, ClientReceiver, DisconnectReason, Flush, PushError, QueueLimits, QueueSender, Spread, Via,
};
use crate::shard::RwShards;
use crate::stats::{Counters, HubStats};

/// How a hub is set up.
#[derive(Clone, Debug, Default)]
pub struct HubConfig {
    /// Channel options by namespace.
    pub channels: ChannelConfig,
    /// Limits of every client's outbound queue.
    pub queue_limits: QueueLimits,
    /// This node's tag in its client ids: ids are `tag << 40 | n` with `n`
    /// counting from 1, so nodes with different tags never hand out the
    /// same id and an exclusion by client id means one client across a
    /// cluster. 0 (the default) gives plain 1, 2, 3, ... Only the low 24
    /// bits are used.
    pub node_tag: u32,
}

/// Bits of a client id that count clients; the node tag sits above them.
const CLIENT_COUNTER_BITS: u32 = 40;

/// The in-process hub. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// What happens to clients and channels, for whoever embeds the hub (the
/// server's webhooks are one). Called inline by the hub, on the thread
/// that caused the event and sometimes under a channel's lock: an observer
/// must be quick, must not block, and must not call back into the hub —
/// queue the event and act on it elsewhere.
pub trait Observer: Send + Sync {
    /// A client left the hub: disconnected, dropped as slow, or removed.
    fn disconnected(&self, _client: ClientId, _user: &str, _reason: &DisconnectReason) {}
    /// A client left a channel by an unsubscribe (its own or the
    /// server's); leaving by disconnecting is [`Observer::disconnected`].
    fn unsubscribed(&self, _client: ClientId, _user: &str, _channel: &str) {}
    /// `channel` got its first subscriber on this hub (the hub began to
    /// hold it in its engine).
    fn occupied(&self, _channel: &str) {}
    /// `channel` lost its last subscriber on this hub.
    fn vacated(&self, _channel: &str) {}
}

struct Inner {
    // Source of client ids; never reused.
    next_id: AtomicU64,
    // Set once, by `Hub::observe`.
    observer: std::sync::OnceLock<Arc<dyn Observer>>,
    // Set once, by `Hub::spread_with`.
    spread: std::sync::OnceLock<Arc<dyn Spread>>,
    clients: RwShards<ClientId, Arc<ClientEntry>>,
    // Reverse index: channel → its local subscribers.
    channels: RwShards<Arc<str>, Arc<ChannelSlot>>,
    engine: Arc<dyn Engine>,
    config: HubConfig,
    counters: Counters,
}

struct ClientEntry {
    id: ClientId,
    user: Arc<str>,
    // Boxed: most connections have none, and every byte here is per
    // connection (8 bytes instead of 32; docs/benchmarks.md).
    conn_info: Option<Box<Bytes>>,
    queue: QueueSender,
    // Set once the hub has decided to remove this client, so a client that
    // fails many pushes is queued for removal only once.
    doomed: AtomicBool,
    // Forward index: the channels this client is in.
    subs: Mutex<ClientSubs>,
}

struct ClientSubs {
    // Set when the client is being removed: no new subscription may start,
    // so none can outlive it.
    closed: bool,
    channels: ChannelSet,
}

/// A client's channels. The first is kept inline: most clients are in
/// one channel, and a hash set of one costs a 96-byte allocation
/// (docs/benchmarks.md). The others' set is boxed, and only while it
/// holds any: an empty set is 32 bytes in every client's entry.
#[derive(Default)]
struct ChannelSet {
    first: Option<Arc<str>>,
    rest: Option<Box<FxHashSet<Arc<str>>>>,
}

impl ChannelSet {
    /// Adds `channel` (not in the set: the channel's own map refuses a
    /// second subscription first).
    fn insert(&mut self, channel: Arc<str>) {
        if self.first.is_none() {
            self.first = Some(channel);
        } else {
            self.rest.get_or_insert_with(Default::default).insert(channel);
        }
    }

    fn remove(&mut self, channel: &str) {
        if self.first.as_deref() == Some(channel) {
            self.first = None;
        } else if let Some(rest) = &mut self.rest {
            rest.remove(channel);
            if rest.is_empty() {
                self.rest = None;
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.first
            .iter()
            .chain(self.rest.iter().flat_map(|rest| rest.iter()))
    }
}

impl IntoIterator for ChannelSet {
    type Item = Arc<str>;
    type IntoIter = std::iter::Chain<
        std::option::IntoIter<Arc<str>>,
        std::iter::Flatten<std::option::IntoIter<std::collections::hash_set::IntoIter<Arc<str>>>>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        let rest = self.rest.map(|rest| (*rest).into_iter());
        self.first.into_iter().chain(rest.into_iter().flatten())
    }
}

struct ChannelSlot {
    name: Arc<str>,
    state: Mutex<ChannelState>,
}

struct ChannelState {
    // Set when the slot leaves the map; a publisher holding a stale Arc
    // retries its lookup.
    removed: bool,
    options: Arc<ChannelOptions>,
    subscribers: FxHashMap<ClientId, Subscriber>,
    // Two-phase subscribes in progress (a remote engine's catch-up is read
    // between `begin_subscribe` and `finish_subscribe`): what they must
    // still get once they join.
    pending: FxHashMap<ClientId, Pending>,
    // The stream as deliveries from a remote engine showed it: its epoch
    // and the highest offset seen. `None` until the first delivery or
    // finished subscribe.
    mark: Option<StreamPosition>,
}

// A subscriber between `begin_subscribe` and `finish_subscribe`.
#[derive(Default)]
struct Pending {
    events: Vec<Arc<Event>>,
    // Set when the buffer overflowed or the channel's stream was lost:
    // the subscribe must fail and be retried.
    failed: bool,
}

/// Events a pending subscribe buffers before it fails as too slow to
/// complete.
const PENDING_LIMIT: usize = 4096;

impl ChannelState {
    // No subscriber and no subscribe in progress: the slot may go.
    fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.pending.is_empty()
    }
}

struct Subscriber {
    // The client's queue, held here too so the fan-out loop touches one
    // less pointer per delivery.
    queue: QueueSender,
    client: Arc<ClientEntry>,
    // This subscription's presence entry, for leave events: kept only when
    // it holds something the client's entry does not (the subscription's
    // `chan_info`) or was made anyway (presence, join events). Otherwise a
    // leave makes it, and an idle subscription costs no allocation for it.
    info: Option<Arc<ClientInfo>>,
    // Publications at or below this offset already reached the subscriber
    // in its catch-up (a remote engine's deliveries may lag behind the
    // history it read); 0 filters nothing.
    since: u64,
}

/// Where a new subscriber's stream starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Catchup {
    /// Only live publications from now on; the answer carries the position.
    #[default]
    None,
    /// Everything after this position (recovery), all or nothing.
    Recover(StreamPosition),
    /// The latest publication as a snapshot, then live ones.
    Latest,
}

impl Catchup {
    /// The history read this catch-up needs: the position only, the
    /// latest publication, or everything after the recovery position (at
    /// most `max` + 1, to tell "too many to replay").
    pub fn query(&self, max: usize) -> HistoryQuery {
        match self {
            Catchup::None => HistoryQuery {
                limit: Some(0),
                ..Default::default()
            },
            Catchup::Latest => HistoryQuery {
                limit: Some(1),
                reverse: true,
                since: None,
            },
            Catchup::Recover(since) => HistoryQuery {
                since: Some(since.clone()),
                limit: Some(max.saturating_add(1)),
                reverse: false,
            },
        }
    }
}

/// Decides a recovery from `since` given the history read with
/// [`Catchup::query`]: the page and `true` when it holds every publication
/// after `since` up to the top (and no more than `max`), else an empty page
/// at the stream's position and `false` (the client must resync itself).
pub fn settle_recovery(since: &StreamPosition, page: HistoryPage, max: usize) -> (HistoryPage, bool) {
    let complete = page.publications.len() <= max
        && page
            .publications
            .iter()
            .enumerate()
            .all(|(i, p)| p.offset == since.offset + 1 + i as u64)
        && since.offset + page.publications.len() as u64 == page.position.offset;
    if complete {
        (page, true)
    } else {
        (
            HistoryPage {
                publications: Vec::new(),
                position: page.position,
            },
            false,
        )
    }
}

/// What [`Hub::deliver_at`] did with a publication from a remote engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Fanned out to this many local subscribers.
    Delivered(usize),
    /// No local subscriber (or pending subscribe) in the channel.
    NoSubscribers,
    /// The publication does not follow the stream the local subscribers
    /// have: its epoch differs, or offsets were skipped. Nothing was
    /// delivered; the caller should [`Hub::unsubscribe_all`] the channel so
    /// clients resubscribe and recover.
    Gap,
}

/// Options of one subscription.
#[derive(Clone, Debug, Default)]
pub struct SubscribeOptions {
    /// Where the stream starts.
    pub catchup: Catchup,
    /// Opaque data shown in this subscription's presence and join/leave.
    pub chan_info: Option<Bytes>,
}

/// The answer to a subscribe: what the subscriber gets before live events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribed {
    /// The channel's position at the moment the subscriber joined: every
    /// live publication it receives has a larger offset.
    pub position: StreamPosition,
    /// Catch-up publications, oldest first (excluding those not meant for
    /// this client).
    pub publications: Vec<Publication>,
    /// For [`Catchup::Recover`]: whether the whole gap was replayed. When
    /// false, `publications` is empty and the client must resync by itself.
    pub recovered: bool,
    /// The channel's options.
    pub options: Arc<ChannelOptions>,
}

/// Options of one publication.
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    /// Clients and users that must not receive it (live or from history).
    pub exclude: Exclusion,
    /// The publishing client, shown to receivers.
    pub info: Option<Arc<ClientInfo>>,
    /// Tags carried with it.
    pub tags: Option<Tags>,
    /// Deliver live but keep out of history.
    pub skip_history: bool,
}

/// Presence counts of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceStats {
    /// Present connections.
    pub clients: usize,
    /// Distinct users among them (anonymous connections count as one).
    pub users: usize,
}

/// What the hub knows about one connected client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSnapshot {
    /// Its id.
    pub id: ClientId,
    /// Its user (empty = anonymous).
    pub user: Arc<str>,
    /// Its connection info.
    pub conn_info: Option<Bytes>,
    /// The channels it is subscribed to.
    pub channels: Vec<Arc<str>>,
    /// Items waiting in its queue.
    pub queued: usize,
}

// Why a client is being dropped by the hub itself.
#[derive(Clone, Copy)]
enum DropCause {
    Slow,
    Closed,
}

type Dropped = Vec<(Arc<ClientEntry>, DropCause)>;

impl Default for Hub {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl Hub {
    /// A hub with the in-memory engine.
    pub fn new(config: HubConfig) -> Self {
        Self::with_engine(config, Arc::new(MemoryEngine::default()))
    }

    /// A hub whose offsets, history and presence live in `engine`.
    pub fn with_engine(config: HubConfig, engine: Arc<dyn Engine>) -> Self {
        Self {
            inner: Arc::new(Inner {
                next_id: AtomicU64::new(
                    (u64::from(config.node_tag & 0x00FF_FFFF) << CLIENT_COUNTER_BITS) | 1,
                ),
                observer: std::sync::OnceLock::new(),
                spread: std::sync::OnceLock::new(),
                clients: RwShards::new(),
                channels: RwShards::new(),
                engine,
                config,
                counters: Counters::default(),
            }),
        }
    }

    /// Tells `observer` about every client and channel event from now on.
    /// One observer per hub: false (and nothing changes) if one is set.
    pub fn observe(&self, observer: Arc<dyn Observer>) -> bool {
        self.inner.observer.set(observer).is_ok()
    }

    /// Lets a publication's fan-out to more clients than one thread
    /// should write to in turn (128) leave its deliveries
    /// to quiet clients queued, in [`Flush`]es of that many clients that
    /// `spread` runs on other threads, instead of waking each client's
    /// writer. One per hub: false (and nothing changes) if one is set.
    pub fn spread_with(&self, spread: Arc<dyn Spread>) -> bool {
        self.inner.spread.set(spread).is_ok()
    }

    /// The spread given to [`spread_with`](Self::spread_with), if any: a
    /// transport's [`WriteNow::spread`](crate::WriteNow::spread).
    pub fn spread(&self) -> Option<&dyn Spread> {
        self.inner.spread.get().map(|s| &**s)
    }

    // Where a publication's fan-out may leave deliveries for the spread:
    // only on a hub that has one.
    fn later(&self) -> Option<Later<'_>> {
        self.inner.spread.get().map(|spread| Later {
            spread: &**spread,
            queues: Vec::new(),
        })
    }

    fn observer(&self) -> Option<&dyn Observer> {
        self.inner.observer.get().map(|o| &**o)
    }

    // The engine holds `channel` from now on: it is occupied here.
    fn retain(&self, channel: &str) {
        self.inner.engine.retain(channel);
        if let Some(o) = self.observer() {
            o.occupied(channel);
        }
    }

    // The engine lets `channel` go: it is vacated here.
    fn release(&self, channel: &str) {
        self.inner.engine.release(channel);
        if let Some(o) = self.observer() {
            o.vacated(channel);
        }
    }

    /// The engine behind this hub.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }

    /// The channel configuration.
    pub fn channel_config(&self) -> &ChannelConfig {
        &self.inner.config.channels
    }

    /// A handle for producers on any thread, async or not.
    pub fn publisher(&self) -> Publisher {
        Publisher { hub: self.clone() }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> HubStats {
        self.inner.counters.snapshot()
    }

    // ----- registry -------------------------------------------------------

    /// Registers a client of `user` (empty = anonymous). Returns its id and
    /// the receiving end of its bounded queue, for its transport's writer.
    pub fn connect(&self, user: impl Into<Arc<str>>, conn_info: Option<Bytes>) -> (ClientId, ClientReceiver) {
        let id = self.reserve_id();
        (id, self.connect_as(id, user, conn_info))
    }

    /// A client id no one has or will be given, for a client not connected
    /// yet (an embedder that must name it before admitting it, as a connect
    /// proxy request does). Connect it with [`Hub::connect_as`], or drop
    /// it: ids are never reused.
    pub fn reserve_id(&self) -> ClientId {
        ClientId(self.inner.next_id.fetch_add(1, Relaxed))
    }

    /// Connects a client under `id`, which [`Hub::reserve_id`] gave out.
    pub fn connect_as(
        &self,
        id: ClientId,
        user: impl Into<Arc<str>>,
        conn_info: Option<Bytes>,
    ) -> ClientReceiver {
        let (tx, rx) = queue(self.inner.config.queue_limits);
        let user = user.into();
        let entry = Arc::new(ClientEntry {
            id,
            user: if user.is_empty() { anonymous_user() } else { user },
            conn_info: conn_info.map(Box::new),
            queue: tx,
            doomed: AtomicBool::new(false),
            subs: Mutex::new(ClientSubs {
                closed: false,
                channels: ChannelSet::default(),
            }),
        });
        self.inner.clients.shard(&id).write().insert(id, entry);
        self.inner.counters.clients.fetch_add(1, Relaxed);
        rx
    }

    /// Removes a client and every trace of it (subscriptions, presence), and
    /// closes its queue with `reason`. Returns false if it was not connected.
    pub fn disconnect(&self, id: ClientId, reason: DisconnectReason) -> bool {
        let removed = self.remove_client(id, reason);
        if removed {
            self.inner.counters.disconnected.fetch_add(1, Relaxed);
        }
        removed
    }

    /// Disconnects every connection of `user`; returns how many there were.
    pub fn disconnect_user(&self, user: &str, reason: DisconnectReason) -> usize {
        self.clients_of_user(user)
            .into_iter()
            .filter(|id| self.disconnect(*id, reason.clone()))
            .count()
    }

    /// Disconnects everyone with [`DisconnectReason::Shutdown`].
    pub fn shutdown(&self) -> usize {
        let ids: Vec<ClientId> = self
            .inner
            .clients
            .all()
            .flat_map(|s| s.read().keys().copied().collect::<Vec<_>>())
            .collect();
        ids.into_iter()
            .filter(|id| self.disconnect(*id, DisconnectReason::Shutdown))
            .count()
    }

    /// The connections of `user`.
    pub fn clients_of_user(&self, user: &str) -> Vec<ClientId> {
        let mut ids = Vec::new();
        for shard in self.inner.clients.all() {
            ids.extend(shard.read().values().filter(|c| &*c.user == user).map(|c| c.id));
        }
        ids
    }

    /// What the hub knows of client `id`.
    pub fn client(&self, id: ClientId) -> Option<ClientSnapshot> {
        let c = self.entry(id)?;
        let channels = c.subs.lock().channels.iter().cloned().collect();
        Some(ClientSnapshot {
            id,
            user: c.user.clone(),
            conn_info: c.conn_info.as_deref().cloned(),
            channels,
            queued: c.queue.len(),
        })
    }

    /// Up to `limit` connected clients, lowest id first (the oldest
    /// connections), for an operator's view. One pass over the registry,
    /// each shard's read lock held while its ids are copied.
    pub fn client_list(&self, limit: usize) -> Vec<ClientSnapshot> {
        let mut ids: Vec<ClientId> = Vec::new();
        for shard in self.inner.clients.all() {
            ids.extend(shard.read().keys().copied());
        }
        ids.sort_unstable_by_key(|id| id.0);
        ids.into_iter()
            .filter_map(|id| self.client(id))
            .take(limit)
            .collect()
    }

    /// Number of distinct users among connected clients (anonymous
    /// connections count as one user).
    pub fn user_count(&self) -> usize {
        let mut users: FxHashSet<Arc<str>> = FxHashSet::default();
        for shard in self.inner.clients.all() {
            users.extend(shard.read().values().map(|c| c.user.clone()));
        }
        users.len()
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.inner.clients.len()
    }

    /// Calls `f` with the number of items waiting in each connected client's
    /// queue, once per client, in no particular order (for a queue-depth
    /// histogram). Read-only: it changes no queue and no counter.
    ///
    /// Cost: one pass over the registry; each registry shard's read lock is
    /// held only while its clients' lengths are copied (one uncontended
    /// queue lock each), and `f` runs with no hub lock held, so it may call
    /// back into the hub. Clients connecting or leaving meanwhile may or may
    /// not be seen.
    pub fn queue_depths(&self, mut f: impl FnMut(usize)) {
        let mut depths = Vec::new();
        for shard in self.inner.clients.all() {
            depths.extend(shard.read().values().map(|c| c.queue.len()));
            depths.drain(..).for_each(&mut f);
        }
    }

    fn entry(&self, id: ClientId) -> Option<Arc<ClientEntry>> {
        self.inner.clients.shard(&id).read().get(&id).cloned()
    }

    fn resolve(&self, channel: &str) -> Result<&Arc<ChannelOptions>, HubError> {
        let cfg = &self.inner.config.channels;
        if channel.is_empty() || channel.len() > cfg.max_channel_length {
            return Err(HubError::InvalidChannel);
        }
        cfg.resolve(channel)
            .ok_or_else(|| HubError::UnknownChannel(channel.to_owned()))
    }

    /// The options of `channel`, or why it cannot be used.
    pub fn channel_options(&self, channel: &str) -> Result<Arc<ChannelOptions>, HubError> {
        self.resolve(channel).cloned()
    }

    // ----- subscriptions --------------------------------------------------

    /// Subscribes client `id` to `channel`; see [`Hub::subscribe_with`].
    pub fn subscribe(
        &self,
        id: ClientId,
        channel: &str,
        opts: SubscribeOptions,
    ) -> Result<Subscribed, HubError> {
        self.subscribe_with(id, channel, opts, |_| None)
    }

    /// Subscribes client `id` to `channel`, with catch-up, atomically with
    /// respect to publications in that channel: each publication reaches the
    /// subscriber exactly once, either in [`Subscribed::publications`] or
    /// live through its queue, in offset order.
    ///
    /// `notice` runs inside the critical section; bytes it returns are
    /// queued to the client before any live publication of the channel, so
    /// a transport can put its subscribe reply (or a subscribe push) ahead
    /// of the stream it starts.
    pub fn subscribe_with(
        &self,
        id: ClientId,
        channel: &str,
        opts: SubscribeOptions,
        notice: impl FnOnce(&Subscribed) -> Option<Bytes>,
    ) -> Result<Subscribed, HubError> {
        let options = self.resolve(channel)?.clone();
        let client = self.entry(id).ok_or(HubError::UnknownClient(id))?;
        let inner = &*self.inner;
        // The shard stays write-locked for the whole subscribe: a brand-new
        // slot is never seen half-built, and is removed again on failure.
        let mut map = inner.channels.shard(channel).write();
        let slot = self.slot_in(&mut map, channel, &options);
        let mut st = slot.state.lock();
        let result = self.join(&slot, &mut st, &client, &options, opts, notice);
        if st.is_empty() {
            // Only possible when the join failed on a slot made for it.
            st.removed = true;
            drop(st);
            map.remove(channel);
            inner.counters.channels.fetch_sub(1, Relaxed);
            return result.map(|(s, _)| s);
        }
        drop(st);
        drop(map);
        let (subscribed, dropped) = result?;
        self.drop_clients(dropped);
        Ok(subscribed)
    }

    /// First half of a two-phase subscribe, for engines whose history is
    /// read asynchronously (a remote engine): from now on every publication
    /// of `channel` fanned out on this node is kept for client `id`, until
    /// [`Hub::finish_subscribe`] queues those it did not get from the
    /// history read in between, or [`Hub::abort_subscribe`] drops them.
    /// The embedder reads history only after this returns (and after its
    /// engine's subscription to the channel is confirmed), so nothing
    /// published meanwhile is lost.
    pub fn begin_subscribe(&self, id: ClientId, channel: &str) -> Result<(), HubError> {
        let options = self.resolve(channel)?.clone();
        self.entry(id).ok_or(HubError::UnknownClient(id))?;
        let mut map = self.inner.channels.shard(channel).write();
        let slot = self.slot_in(&mut map, channel, &options);
        let mut st = slot.state.lock();
        if st.subscribers.contains_key(&id) || st.pending.contains_key(&id) {
            return Err(HubError::AlreadySubscribed);
        }
        if st.is_empty() {
            self.retain(channel);
        }
        st.pending.insert(id, Pending::default());
        Ok(())
    }

    /// Second half of a two-phase subscribe: `page` is the history the
    /// embedder read for `opts.catchup` after [`Hub::begin_subscribe`]
    /// (settled with [`settle_recovery`] for a recovery), `recovered` says
    /// whether the recovery was complete. The client joins the live set;
    /// `notice` is queued first, then every publication fanned out since
    /// `begin_subscribe` with an offset above the page's position, and
    /// later deliveries at or below it are not repeated. Fails (and leaves
    /// no trace) if the client left, the subscribe was not begun, its
    /// buffer overflowed, or the stream was lost meanwhile.
    pub fn finish_subscribe(
        &self,
        id: ClientId,
        channel: &str,
        opts: SubscribeOptions,
        page: HistoryPage,
        recovered: bool,
        notice: impl FnOnce(&Subscribed) -> Option<Bytes>,
    ) -> Result<Subscribed, HubError> {
        let options = self.resolve(channel)?.clone();
        let Some(slot) = self.inner.channels.shard(channel).read().get(channel).cloned() else {
            return Err(HubError::UnknownClient(id));
        };
        let mut st = slot.state.lock();
        let Some(pending) = st.pending.remove(&id) else {
            return Err(HubError::UnknownClient(id));
        };
        let client = self.entry(id);
        let result = match client {
            _ if pending.failed => Err(HubError::Engine(EngineError::Unavailable(
                "the channel's stream was interrupted while subscribing; retry".into(),
            ))),
            None => Err(HubError::UnknownClient(id)),
            Some(_) if st.mark.as_ref().is_some_and(|m| m.epoch != page.position.epoch) => {
                Err(HubError::Engine(EngineError::Unavailable(
                    "the channel's epoch changed while subscribing; retry".into(),
                )))
            }
            Some(client) if self.admit(&slot, &client) => Ok(client),
            Some(_) => Err(HubError::UnknownClient(id)),
        };
        let client = match result {
            Ok(c) => c,
            Err(e) => {
                let empty = st.is_empty();
                drop(st);
                if empty {
                    self.remove_slot_if_empty(channel);
                }
                return Err(e);
            }
        };
        if st.mark.is_none() {
            st.mark = Some(page.position.clone());
        }
        let since = page.position.offset;
        let mut publications = page.publications;
        publications.retain(|p| p.is_for(client.id, &client.user));
        let subscribed = Subscribed {
            position: page.position,
            publications,
            recovered,
            options,
        };
        let mut dropped = self.seat(
            &slot,
            &mut st,
            &client,
            &subscribed.options,
            opts.chan_info,
            since,
            &subscribed,
            notice,
        );
        for ev in pending.events {
            let wanted = match &ev.kind {
                EventKind::Publication(p) => p.offset > since && p.is_for(client.id, &client.user),
                _ => true,
            };
            if wanted && !push_or_note(&client, Outbound::Event(ev), &mut dropped) {
                break;
            }
        }
        drop(st);
        self.drop_clients(dropped);
        Ok(subscribed)
    }

    /// The stream position remote deliveries and finished subscribes of
    /// `channel` have shown this node (its epoch and highest offset), if it
    /// has local subscribers.
    pub fn stream_mark(&self, channel: &str) -> Option<StreamPosition> {
        let slot = self.inner.channels.shard(channel).read().get(channel).cloned()?;
        let st = slot.state.lock();
        st.mark.clone()
    }

    /// Abandons a subscribe begun with [`Hub::begin_subscribe`] (its history
    /// read failed, or the client went away meanwhile).
    pub fn abort_subscribe(&self, id: ClientId, channel: &str) {
        let Some(slot) = self.inner.channels.shard(channel).read().get(channel).cloned() else {
            return;
        };
        let empty = {
            let mut st = slot.state.lock();
            st.pending.remove(&id).is_some() && st.is_empty()
        };
        if empty {
            self.remove_slot_if_empty(channel);
        }
    }

    /// Removes every local subscriber of `channel`, queueing `notice` (an
    /// unsubscribe push) to each after the last publication it got, and
    /// fails the subscribes in progress. For a stream that may have a gap:
    /// clients resubscribe and recover. Returns the clients removed.
    pub fn unsubscribe_all(&self, channel: &str, notice: Option<Bytes>) -> Vec<ClientId> {
        let Some(slot) = self.inner.channels.shard(channel).read().get(channel).cloned() else {
            return Vec::new();
        };
        let clients: Vec<Arc<ClientEntry>> = {
            let mut st = slot.state.lock();
            for p in st.pending.values_mut() {
                p.failed = true;
                p.events.clear();
            }
            st.mark = None;
            st.subscribers.values().map(|s| s.client.clone()).collect()
        };
        let mut dropped = Vec::new();
        let mut removed = Vec::with_capacity(clients.len());
        for client in clients {
            if self.leave(&client, channel, notice.clone(), true, &mut dropped) {
                removed.push(client.id);
            }
        }
        self.drop_clients(dropped);
        removed
    }

    // The slot of `channel` in its (write-locked) shard, made if missing.
    fn slot_in(
        &self,
        map: &mut FxHashMap<Arc<str>, Arc<ChannelSlot>>,
        channel: &str,
        options: &Arc<ChannelOptions>,
    ) -> Arc<ChannelSlot> {
        if let Some(s) = map.get(channel) {
            return s.clone();
        }
        let name: Arc<str> = channel.into();
        let slot = Arc::new(ChannelSlot {
            name: name.clone(),
            state: Mutex::new(ChannelState {
                removed: false,
                options: options.clone(),
                subscribers: FxHashMap::default(),
                pending: FxHashMap::default(),
                mark: None,
            }),
        });
        map.insert(name, slot.clone());
        self.inner.counters.channels.fetch_add(1, Relaxed);
        slot
    }

    fn join(
        &self,
        slot: &ChannelSlot,
        st: &mut ChannelState,
        client: &Arc<ClientEntry>,
        options: &Arc<ChannelOptions>,
        opts: SubscribeOptions,
        notice: impl FnOnce(&Subscribed) -> Option<Bytes>,
    ) -> Result<(Subscribed, Dropped), HubError> {
        let channel = &*slot.name;
        if st.subscribers.contains_key(&client.id) || st.pending.contains_key(&client.id) {
            return Err(HubError::AlreadySubscribed);
        }
        let first = st.is_empty();
        if first {
            self.retain(channel);
        }
        let undo = |e: HubError| {
            if first {
                self.release(channel);
            }
            e
        };
        let subscribed = self
            .catch_up(channel, options, client, &opts.catchup)
            .map_err(undo)?;
        if !self.admit(slot, client) {
            return Err(undo(HubError::UnknownClient(client.id)));
        }
        let dropped = self.seat(slot, st, client, options, opts.chan_info, 0, &subscribed, notice);
        Ok((subscribed, dropped))
    }

    // Records `slot` in `client`'s forward index; false if the client is
    // being removed.
    fn admit(&self, slot: &ChannelSlot, client: &ClientEntry) -> bool {
        let mut subs = client.subs.lock();
        if subs.closed {
            return false;
        }
        subs.channels.insert(slot.name.clone());
        true
    }

    // Puts `client` in the live set with its presence and join event, then
    // queues `notice`.
    #[allow(clippy::too_many_arguments)]
    fn seat(
        &self,
        slot: &ChannelSlot,
        st: &mut ChannelState,
        client: &Arc<ClientEntry>,
        options: &ChannelOptions,
        chan_info: Option<Bytes>,
        since: u64,
        subscribed: &Subscribed,
        notice: impl FnOnce(&Subscribed) -> Option<Bytes>,
    ) -> Dropped {
        let engine = &self.inner.engine;
        let channel = &*slot.name;
        let info = (chan_info.is_some() || options.presence || options.join_leave)
            .then(|| Arc::new(client_info(client, chan_info)));
        st.subscribers.insert(
            client.id,
            Subscriber {
                queue: client.queue.clone(),
                client: client.clone(),
                info: info.clone(),
                since,
            },
        );
        self.inner.counters.subscriptions.fetch_add(1, Relaxed);
        let mut dropped = Vec::new();
        if let Some(info) = info {
            if options.presence {
                // Presence is advisory: a failing remote engine must not
                // refuse the subscription itself.
                let _ = engine.add_presence(channel, info.clone());
            }
            if options.join_leave {
                let ev = Arc::new(Event::new(Some(slot.name.clone()), EventKind::Join(info)));
                self.fan_out(st, &ev, Some(client.id), &mut dropped, None);
            }
        }
        if let Some(bytes) = notice(subscribed) {
            push_or_note(client, Outbound::raw(bytes), &mut dropped);
        }
        dropped
    }

    fn catch_up(
        &self,
        channel: &str,
        options: &ChannelOptions,
        client: &ClientEntry,
        catchup: &Catchup,
    ) -> Result<Subscribed, HubError> {
        let engine = &self.inner.engine;
        let position_only = Catchup::None.query(0);
        let (page, recovered) = match catchup {
            Catchup::None => (engine.history(channel, options, &position_only)?, false),
            Catchup::Latest => (engine.history(channel, options, &catchup.query(0))?, false),
            Catchup::Recover(since) => {
                let max = self.inner.config.channels.recovery_max_publications;
                match engine.history(channel, options, &catchup.query(max)) {
                    Ok(page) => settle_recovery(since, page, max),
                    Err(EngineError::UnrecoverablePosition) => {
                        (engine.history(channel, options, &position_only)?, false)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let mut publications = page.publications;
        publications.retain(|p| p.is_for(client.id, &client.user));
        Ok(Subscribed {
            position: page.position,
            publications,
            recovered,
            options: Arc::new(options.clone()),
        })
    }

    /// Unsubscribes client `id` from `channel`. Returns whether it was
    /// subscribed.
    pub fn unsubscribe(&self, id: ClientId, channel: &str) -> Result<bool, HubError> {
        self.unsubscribe_with(id, channel, None)
    }

    /// Like [`Hub::unsubscribe`]; `notice` (e.g. an unsubscribe push) is
    /// queued to the client after the last publication it got from the
    /// channel.
    pub fn unsubscribe_with(
        &self,
        id: ClientId,
        channel: &str,
        notice: Option<Bytes>,
    ) -> Result<bool, HubError> {
        self.resolve(channel)?;
        let client = self.entry(id).ok_or(HubError::UnknownClient(id))?;
        let mut dropped = Vec::new();
        let left = self.leave(&client, channel, notice, true, &mut dropped);
        self.drop_clients(dropped);
        Ok(left)
    }

    // Removes `client` from `channel`'s subscribers, with presence and leave
    // events; frees the channel if it was the last subscriber. Clients that
    // could not take the leave event are added to `dropped`. `unsubscribe`:
    // an unsubscribe the observer hears of (not a client leaving the hub).
    fn leave(
        &self,
        client: &Arc<ClientEntry>,
        channel: &str,
        notice: Option<Bytes>,
        unsubscribe: bool,
        dropped: &mut Dropped,
    ) -> bool {
        let Some(slot) = self.inner.channels.shard(channel).read().get(channel).cloned() else {
            return false;
        };
        let now_empty = {
            let mut st = slot.state.lock();
            if st.removed {
                return false;
            }
            let Some(sub) = st.subscribers.remove(&client.id) else {
                return false;
            };
            client.subs.lock().channels.remove(channel);
            self.inner.counters.subscriptions.fetch_sub(1, Relaxed);
            if st.options.presence {
                let _ = self.inner.engine.remove_presence(channel, client.id);
            }
            if st.options.join_leave {
                let ev = Arc::new(Event::new(
                    Some(slot.name.clone()),
                    EventKind::Leave(sub.info.unwrap_or_else(|| Arc::new(client_info(client, None)))),
                ));
                self.fan_out(&mut st, &ev, None, dropped, None);
            }
            if let Some(bytes) = notice {
                push_or_note(client, Outbound::raw(bytes), dropped);
            }
            st.is_empty()
        };
        if unsubscribe {
            if let Some(o) = self.observer() {
                o.unsubscribed(client.id, &client.user, channel);
            }
        }
        if now_empty {
            self.remove_slot_if_empty(channel);
        }
        true
    }

    fn remove_slot_if_empty(&self, channel: &str) {
        let mut map = self.inner.channels.shard(channel).write();
        let Some(slot) = map.get(channel).cloned() else {
            return;
        };
        let mut st = slot.state.lock();
        if st.is_empty() && !st.removed {
            st.removed = true;
            map.remove(channel);
            self.inner.counters.channels.fetch_sub(1, Relaxed);
            self.release(channel);
        }
    }

    // ----- delivery -------------------------------------------------------

    /// Publishes `data` to `channel`: the engine assigns the next offset and
    /// keeps history, and every local subscriber not excluded gets it.
    pub fn publish(
        &self,
        channel: &str,
        data: impl Into<Bytes>,
        opts: PublishOptions,
    ) -> Result<StreamPosition, HubError> {
        let options = self.resolve(channel)?;
        let mut publication = Some(Publication {
            offset: 0,
            data: data.into(),
            info: opts.info,
            tags: opts.tags,
            exclusion: (!opts.exclude.is_empty()).then(|| Arc::new(opts.exclude)),
        });
        let engine = &self.inner.engine;
        loop {
            let map = self.inner.channels.shard(channel).read();
            let Some(slot) = map.get(channel).cloned() else {
                // No local subscriber. The shard read lock keeps a concurrent
                // subscribe (which needs the write lock) from reading history
                // before this publication is in it.
                let p = publication.take().expect("publication is consumed once");
                let (_, position) = engine.publish(channel, options, p, opts.skip_history)?;
                drop(map);
                self.inner.counters.publications.fetch_add(1, Relaxed);
                return Ok(position);
            };
            drop(map);
            let mut st = slot.state.lock();
            if st.removed {
                continue; // the slot was freed meanwhile: look again
            }
            let p = publication.take().expect("publication is consumed once");
            let (p, position) = engine.publish(channel, options, p, opts.skip_history)?;
            let ev = Arc::new(Event::new(Some(slot.name.clone()), EventKind::Publication(p)));
            let mut dropped = Vec::new();
            let mut later = self.later();
            self.fan_out(
                &mut st,
                &ev,
                None,
                &mut dropped,
                later.as_mut().map(|l| &mut l.queues),
            );
            drop(st);
            if let Some(later) = later {
                later.spread(&ev);
            }
            self.inner.counters.publications.fetch_add(1, Relaxed);
            self.drop_clients(dropped);
            return Ok(position);
        }
    }

    /// Publishes `data` to each of `channels`, one result per channel.
    pub fn broadcast(
        &self,
        channels: &[&str],
        data: impl Into<Bytes>,
        opts: PublishOptions,
    ) -> Vec<Result<StreamPosition, HubError>> {
        let data = data.into();
        channels
            .iter()
            .map(|c| self.publish(c, data.clone(), opts.clone()))
            .collect()
    }

    /// Fans out a publication that already has its offset, made elsewhere
    /// (a remote engine's subscription delivers other nodes' publications
    /// here). Returns how many local subscribers got it. No continuity
    /// check: see [`Hub::deliver_at`].
    pub fn deliver(&self, channel: &str, publication: Publication) -> usize {
        match self.deliver_checked(channel, None, publication) {
            Delivery::Delivered(n) => n,
            _ => 0,
        }
    }

    /// Like [`Hub::deliver`], for a publication of stream epoch `epoch`:
    /// checks that it continues the stream the local subscribers follow (same
    /// epoch, no skipped offset) and answers [`Delivery::Gap`] without
    /// delivering when it does not.
    pub fn deliver_at(&self, channel: &str, epoch: &str, publication: Publication) -> Delivery {
        self.deliver_checked(channel, Some(epoch), publication)
    }

    fn deliver_checked(&self, channel: &str, epoch: Option<&str>, publication: Publication) -> Delivery {
        let Some(slot) = self.inner.channels.shard(channel).read().get(channel).cloned() else {
            return Delivery::NoSubscribers;
        };
        let mut st = slot.state.lock();
        if st.removed {
            return Delivery::NoSubscribers;
        }
        if let Some(epoch) = epoch {
            let offset = publication.offset;
            match &mut st.mark {
                Some(m) if &*m.epoch != epoch || offset > m.offset + 1 => return Delivery::Gap,
                Some(m) => m.offset = m.offset.max(offset),
                None => {
                    st.mark = Some(StreamPosition {
                        offset,
                        epoch: epoch.into(),
                    })
                }
            }
        }
        let ev = Arc::new(Event::new(
            Some(slot.name.clone()),
            EventKind::Publication(publication),
        ));
        let mut dropped = Vec::new();
        let mut later = self.later();
        let n = self.fan_out(
            &mut st,
            &ev,
            None,
            &mut dropped,
            later.as_mut().map(|l| &mut l.queues),
        );
        drop(st);
        if let Some(later) = later {
            later.spread(&ev);
        }
        self.drop_clients(dropped);
        Delivery::Delivered(n)
    }

    // The hot loop: one shared event, one non-blocking push per subscriber.
    // Subscribes in progress keep the event for when they finish. A large
    // fan-out given `later` leaves its deliveries to quiet clients there,
    // for the caller to spread once the channel's lock is released.
    fn fan_out(
        &self,
        st: &mut ChannelState,
        ev: &Arc<Event>,
        skip: Option<ClientId>,
        dropped: &mut Dropped,
        mut later: Option<&mut Vec<QueueSender>>,
    ) -> usize {
        let (exclusion, offset) = match &ev.kind {
            // An offset of 0 (none assigned) is never filtered.
            EventKind::Publication(p) if p.offset > 0 => (p.exclusion.as_deref(), p.offset),
            EventKind::Publication(p) => (p.exclusion.as_deref(), u64::MAX),
            _ => (None, u64::MAX),
        };
        let mut delivered = 0;
        // A small fan-out writes to quiet connections at once from this
        // thread; a large one leaves them to flushes on other threads when
        // it can (`later`), or wakes their writers, so both cores share it
        // (docs/benchmarks.md).
        let at_once = st.subscribers.len() <= AT_ONCE_FAN_OUT;
        if at_once {
            later = None;
        }
        let via = if at_once || later.is_some() {
            Via::fan_out(later.is_some())
        } else {
            Via::Writer
        };
        let item = Outbound::Event(ev.clone());
        for (id, sub) in &st.subscribers {
            if offset <= sub.since
                || skip == Some(*id)
                || exclusion.is_some_and(|ex| ex.excludes(*id, &sub.client.user))
            {
                continue;
            }
            let pushed = match via {
                Via::Later(at) => sub.queue.push_later(&item, at),
                Via::AtOnce(at) => sub.queue.push_at_once(&item, at).map(|()| false),
                Via::Writer => sub.queue.push(item.clone()).map(|()| false),
            };
            match pushed {
                Ok(left) => {
                    delivered += 1;
                    if let (true, Some(later)) = (left, later.as_deref_mut()) {
                        // Room for all at the first, not per publication:
                        // a fan-out to clients under load leaves none.
                        if later.capacity() == 0 {
                            later.reserve(st.subscribers.len());
                        }
                        later.push(sub.queue.clone());
                    }
                }
                Err(e) => note_failed(&sub.client, e, dropped),
            }
        }
        if !st.pending.is_empty() {
            for p in st.pending.values_mut().filter(|p| !p.failed) {
                if p.events.len() < PENDING_LIMIT {
                    p.events.push(ev.clone());
                } else {
                    p.failed = true;
                    p.events = Vec::new();
                }
            }
        }
        self.inner
            .counters
            .deliveries
            .fetch_add(delivered as u64, Relaxed);
        delivered
    }

    /// Sends `data` to one client as a direct message (not in any channel).
    pub fn send(&self, id: ClientId, data: impl Into<Bytes>) -> Result<(), HubError> {
        let ev = Arc::new(Event::new(None, EventKind::Message(data.into())));
        self.push_to(id, Outbound::Event(ev))?;
        self.inner.counters.messages.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Queues bytes already in the client's wire format (a transport's reply
    /// to one of its commands), in order with everything else it receives.
    pub fn send_raw(&self, id: ClientId, bytes: Bytes) -> Result<(), HubError> {
        self.push_to(id, Outbound::raw(bytes))
    }

    fn push_to(&self, id: ClientId, item: Outbound) -> Result<(), HubError> {
        let client = self.entry(id).ok_or(HubError::UnknownClient(id))?;
        let mut dropped = Vec::new();
        let ok = push_or_note(&client, item, &mut dropped);
        self.drop_clients(dropped);
        if ok {
            Ok(())
        } else {
            Err(HubError::SlowClient(id))
        }
    }

    /// Sends `data` as a direct message to every connected client. Returns
    /// how many got it.
    pub fn send_all(&self, data: impl Into<Bytes>) -> usize {
        let ev = Arc::new(Event::new(None, EventKind::Message(data.into())));
        let mut dropped = Vec::new();
        let mut n = 0;
        for shard in self.inner.clients.all() {
            for client in shard.read().values() {
                if push_or_note(client, Outbound::Event(ev.clone()), &mut dropped) {
                    n += 1;
                }
            }
        }
        self.inner.counters.messages.fetch_add(n as u64, Relaxed);
        self.drop_clients(dropped);
        n
    }

    // Forgets clients whose queue overflowed or whose receiver is gone.
    // Iterative: a leave event from one removal may overflow another queue.
    fn drop_clients(&self, mut dropped: Dropped) {
        while let Some((client, why)) = dropped.pop() {
            let counter = match why {
                DropCause::Slow => &self.inner.counters.dropped_slow,
                DropCause::Closed => &self.inner.counters.dropped_closed,
            };
            if self.unregister(&client, DisconnectReason::Slow, &mut dropped) {
                counter.fetch_add(1, Relaxed);
            }
        }
    }

    fn remove_client(&self, id: ClientId, reason: DisconnectReason) -> bool {
        let Some(client) = self.entry(id) else {
            return false;
        };
        let mut dropped = Vec::new();
        let removed = self.unregister(&client, reason, &mut dropped);
        self.drop_clients(dropped);
        removed
    }

    fn unregister(&self, client: &Arc<ClientEntry>, reason: DisconnectReason, dropped: &mut Dropped) -> bool {
        if self
            .inner
            .clients
            .shard(&client.id)
            .write()
            .remove(&client.id)
            .is_none()
        {
            return false; // someone else removed it first
        }
        self.inner.counters.clients.fetch_sub(1, Relaxed);
        if let Some(o) = self.observer() {
            o.disconnected(client.id, &client.user, &reason);
        }
        client.queue.close(reason);
        let channels = {
            let mut subs = client.subs.lock();
            subs.closed = true;
            std::mem::take(&mut subs.channels)
        };
        client.doomed.store(true, Relaxed);
        for channel in channels {
            self.leave(client, &channel, None, false, dropped);
        }
        true
    }

    // ----- queries --------------------------------------------------------

    /// Reads `channel`'s history.
    pub fn history(&self, channel: &str, query: &HistoryQuery) -> Result<HistoryPage, HubError> {
        let options = self.resolve(channel)?;
        Ok(self.inner.engine.history(channel, options, query)?)
    }

    /// Drops `channel`'s history (its position stays).
    pub fn remove_history(&self, channel: &str) -> Result<(), HubError> {
        self.resolve(channel)?;
        Ok(self.inner.engine.remove_history(channel)?)
    }

    /// Who is present in `channel`.
    pub fn presence(&self, channel: &str) -> Result<Vec<Arc<ClientInfo>>, HubError> {
        self.resolve(channel)?;
        Ok(self.inner.engine.presence(channel)?)
    }

    /// Presence counts of `channel`.
    pub fn presence_stats(&self, channel: &str) -> Result<PresenceStats, HubError> {
        let present = self.presence(channel)?;
        let users: FxHashSet<&str> = present.iter().map(|i| &*i.user).collect();
        Ok(PresenceStats {
            clients: present.len(),
            users: users.len(),
        })
    }

    /// Channels with local subscribers, with their subscriber counts.
    pub fn channels(&self) -> Vec<(Arc<str>, usize)> {
        let mut out = Vec::new();
        for shard in self.inner.channels.all() {
            for (name, slot) in shard.read().iter() {
                out.push((name.clone(), slot.state.lock().subscribers.len()));
            }
        }
        out
    }

    /// Local subscribers of `channel`.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.inner
            .channels
            .shard(channel)
            .read()
            .get(channel)
            .map_or(0, |s| s.state.lock().subscribers.len())
    }

    /// Whether `id`'s outbound queue holds more than half of what its
    /// limits allow. A transport that queues replies to a client's commands
    /// waits for its writer while this holds, so a client that pipelines
    /// commands faster than it reads slows down instead of overflowing its
    /// own queue (and being dropped as slow).
    pub fn backlogged(&self, id: ClientId) -> bool {
        self.entry(id).is_some_and(|c| c.queue.over_half())
    }

    /// Frees expired history; call from a housekeeping timer.
    pub fn sweep(&self) {
        self.inner.engine.sweep();
    }
}

/// What a publication's fan-out left for writes at once on other threads
/// ([`Hub::spread_with`]), handed to the spread once the channel's lock is
/// released.
struct Later<'a> {
    spread: &'a dyn Spread,
    queues: Vec<QueueSender>,
}

impl Later<'_> {
    // Hands the clients to the spread in flushes of `ev` to
    // AT_ONCE_FAN_OUT clients each.
    fn spread(self, ev: &Arc<Event>) {
        let mut left = self.queues.into_iter();
        loop {
            let chunk: Vec<_> = left.by_ref().take(AT_ONCE_FAN_OUT).collect();
            if chunk.is_empty() {
                return;
            }
            self.spread.spread(Flush::new(Outbound::Event(ev.clone()), chunk));
        }
    }
}

/// The largest fan-out whose deliveries are written at once (see
/// [`crate::WriteNow`]) by the publishing thread. Larger ones wake each
/// subscriber's writer instead: one thread writing to a thousand sockets in
/// turn falls behind two writing in parallel (docs/benchmarks.md).
const AT_ONCE_FAN_OUT: usize = 128;

/// The user of anonymous connections (the empty string), one for all of
/// them: an `Arc<str>` of its own would be an allocation per connection.
/// [`Hub::connect`] keeps this one for any empty user; an embedder that
/// keeps the user too can share it.
pub fn anonymous_user() -> Arc<str> {
    static ANONYMOUS: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    ANONYMOUS.clone()
}

// Who `client` is, in one subscription with `chan_info`.
fn client_info(client: &ClientEntry, chan_info: Option<Bytes>) -> ClientInfo {
    ClientInfo::new(
        client.id,
        client.user.clone(),
        client.conn_info.as_deref().cloned(),
        chan_info,
    )
}

// Pushes one item; notes the client for removal (once) when it cannot take
// it.
#[inline]
fn push_or_note(client: &Arc<ClientEntry>, item: Outbound, dropped: &mut Dropped) -> bool {
    match client.queue.push(item) {
        Ok(()) => true,
        Err(e) => {
            note_failed(client, e, dropped);
            false
        }
    }
}

#[cold]
fn note_failed(client: &Arc<ClientEntry>, err: PushError, dropped: &mut Dropped) {
    let cause = match err {
        PushError::Full => DropCause::Slow,
        PushError::Closed => DropCause::Closed,
    };
    if !client.doomed.swap(true, Relaxed) {
        dropped.push((client.clone(), cause));
    }
}

/// A producer's handle to a hub: `Send + Sync + Clone`, callable from plain
/// threads without any async runtime (every call returns without waiting on
/// a client) and from async code alike.
#[derive(Clone)]
pub struct Publisher {
    hub: Hub,
}

impl Publisher {
    /// Publishes `data` to `channel`.
    pub fn publish(&self, channel: &str, data: impl Into<Bytes>) -> Result<StreamPosition, HubError> {
        self.hub.publish(channel, data, PublishOptions::default())
    }

    /// Publishes with options (exclusion, info, tags, skip_history).
    pub fn publish_with(
        &self,
        channel: &str,
        data: impl Into<Bytes>,
        opts: PublishOptions,
    ) -> Result<StreamPosition, HubError> {
        self.hub.publish(channel, data, opts)
    }

    /// Sends a direct message to one client.
    pub fn send(&self, client: ClientId, data: impl Into<Bytes>) -> Result<(), HubError> {
        self.hub.send(client, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection holds one client entry for its whole life: it
    /// stays within a 112-byte allocation (with the `Arc`'s two counts and
    /// the allocator's 8-byte header). A connection's info and the set of
    /// its channels past the first, inline, once made it 160.
    #[test]
    fn a_client_entry_stays_small() {
        let size = std::mem::size_of::<ClientEntry>();
        assert!(size + 16 + 8 <= 112, "a client entry is {size} bytes");
    }
}
