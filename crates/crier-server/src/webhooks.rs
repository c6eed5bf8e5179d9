//! Lifecycle webhooks (crier only, `crier.webhooks`): the hub's
//! [`Observer`] events — a client disconnected (with its code), a client
//! unsubscribed, a channel occupied or vacated — POSTed to the backend in
//! batches, in order, retried with backoff until it takes them.
//!
//! The hub hands an event over without waiting: it goes into a bounded
//! queue (`queue_size`), and when the queue is full the event is dropped,
//! counted and logged — the hub never blocks on the backend. One task per
//! node sends the batches; each event carries this node's id and a
//! per-node sequence number (its `id` is both), given as the event enters
//! its batch, so the backend can drop a duplicate (a batch is sent again
//! when its answer was lost).
//!
//! Occupied and vacated are cluster-wide when the node runs on a cluster
//! engine (an [`Occupancy`], injected by the node: this module never
//! names a broker). The hub's per-node transitions then pass through a
//! [`Resolver`] task first, which records in the engine, atomically, that
//! this node holds the channel or no longer does, and emits `occupied`
//! only when that made the cluster's holder set go from empty to not
//! empty (`vacated`: the reverse). The resolver applies one channel's
//! changes in the order the hub made them, keeps this node alive in the
//! engine (`node_ttl`) and removes the holdings of nodes that stopped
//! refreshing theirs, emitting `vacated` for the channels that left
//! empty. Without a cluster engine the node is the cluster.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use crier_core::{ClientId, DisconnectReason, Observer};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_now_ms;
use crate::config::WebhooksConfig;
use crate::metrics::WebhookCounters;
use crate::net::client::{http_client, HttpClient};
use crate::wire::disconnect_of;

/// First wait before a failed POST is sent again (it doubles up to
/// `max_retry_delay`).
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Hub steps the resolver takes at once (then it looks at its timer).
const RESOLVE_BATCH: usize = 256;

/// Channels whose holder set is written to the engine at once.
const RESOLVE_IN_FLIGHT: usize = 64;

/// This node's channels as the cluster engine counts them. Implemented
/// above this module (by the cluster), so webhooks never import a broker.
/// Errors are for the log only: a failed write is tried again.
pub(crate) trait Occupancy: Send + Sync {
    /// Records that this node holds `channel` (`held`) or no longer does.
    /// True when that made the cluster's set of holders go from empty to
    /// not empty (`held`) or from not empty to empty; false when it did
    /// not, or when this node's record was already so.
    fn hold(&self, channel: &str, held: bool) -> BoxFuture<'_, Result<bool, String>>;
    /// Keeps this node alive for the engine's `node_ttl`. True when it had
    /// lapsed (never seen, or taken for dead): what it holds must be
    /// recorded again.
    fn heartbeat(&self) -> BoxFuture<'_, Result<bool, String>>;
    /// Removes the holdings of nodes that stopped their heartbeat; the
    /// channels this call left without a holder, with the node that held
    /// them.
    fn sweep(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, String>>;
    /// This node stops and holds nothing: forget it now rather than at its
    /// expiry.
    fn leave(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Which events the backend asked for.
#[derive(Clone, Copy)]
struct Kinds {
    disconnect: bool,
    unsubscribe: bool,
    occupied: bool,
    vacated: bool,
}

/// What the hub said, before the sender numbers it.
enum Step {
    /// An event as it will be sent, but for `id`, `node` and `seq`.
    Event(Value),
    /// This node began (`held`) or stopped holding `channel`, at `time`.
    Hold {
        channel: Arc<str>,
        held: bool,
        time: u64,
    },
}

/// `occupied`/`vacated` of `channel`, stamped `time`.
fn transition(held: bool, channel: &str, time: u64) -> Value {
    let kind = if held { "occupied" } else { "vacated" };
    json!({"type": kind, "channel": channel, "time": time})
}

impl Kinds {
    fn wants(&self, held: bool) -> bool {
        if held {
            self.occupied
        } else {
            self.vacated
        }
    }
}

/// The node's webhooks: the observer side (cheap, never blocking).
pub(crate) struct Webhooks {
    queue: mpsc::Sender<Step>,
    kinds: Kinds,
    /// Whether holds go to a resolver (which needs every one of them to
    /// keep the engine's holder sets right, whichever kinds are sent).
    clustered: bool,
    counters: WebhookCounters,
}

impl Webhooks {
    /// Starts the sending task (on the current tokio runtime) and, given
    /// the engine's [`Occupancy`] and occupied or vacated asked for, the
    /// resolver; returns the observer to give the hub, `None` when no
    /// endpoint is set.
    pub(crate) fn start(
        cfg: &WebhooksConfig,
        node: &str,
        counters: WebhookCounters,
        shutdown: CancellationToken,
        occupancy: Option<Arc<dyn Occupancy>>,
    ) -> Option<Arc<Self>> {
        if cfg.endpoint.is_empty() {
            return None;
        }
        let uri: Uri = cfg.endpoint.parse().ok()?;
        let headers = cfg
            .static_headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::try_from(k.as_str()).ok()?,
                    HeaderValue::try_from(v.as_str()).ok()?,
                ))
            })
            .collect();
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let on = |e: &str| cfg.events.iter().any(|x| x == e);
        let kinds = Kinds {
            disconnect: on("disconnect"),
            unsubscribe: on("unsubscribe"),
            occupied: on("occupied"),
            vacated: on("vacated"),
        };
        let (to_sender, from_hub) = mpsc::channel(cfg.queue_size);
        let sender = Sender {
            node: node.to_owned(),
            uri,
            headers,
            timeout: cfg.timeout,
            max_retry: cfg.max_retry_delay,
            batch_size: cfg.batch_size,
            kinds,
            client: http_client(),
            counters: counters.clone(),
        };
        let occupancy = occupancy.filter(|_| kinds.occupied || kinds.vacated);
        let clustered = occupancy.is_some();
        let queue = match occupancy {
            None => {
                runtime.spawn(sender.run(from_hub, shutdown));
                to_sender
            }
            Some(occupancy) => {
                let (to_resolver, from_hub_to_resolver) = mpsc::channel(cfg.queue_size);
                let (resolved_tx, resolved_rx) = (to_sender, from_hub);
                let resolver = Resolver {
                    occupancy,
                    kinds,
                    out: resolved_tx,
                    counters: counters.clone(),
                    held: HashSet::new(),
                    dirty: HashSet::new(),
                    reassert: 0,
                    alive: false,
                };
                runtime.spawn(sender.run(resolved_rx, shutdown));
                // At least every second: writes that failed (the engine
                // not reachable yet) are retried at the heartbeat.
                let every = (cfg.node_ttl / 3).min(Duration::from_secs(1));
                runtime.spawn(resolver.run(from_hub_to_resolver, every));
                to_resolver
            }
        };
        Some(Arc::new(Self {
            queue,
            kinds,
            clustered,
            counters,
        }))
    }

    fn push(&self, step: Step) {
        if self.queue.try_send(step).is_err() {
            dropped(&self.counters);
        }
    }

    fn emit(&self, kind: &str, mut fields: Value) {
        if let Value::Object(m) = &mut fields {
            m.insert("type".into(), kind.into());
            m.insert("time".into(), unix_now_ms().into());
        }
        self.push(Step::Event(fields));
    }

    fn hold(&self, channel: &str, held: bool) {
        if self.clustered || self.kinds.wants(held) {
            self.push(Step::Hold {
                channel: channel.into(),
                held,
                time: unix_now_ms(),
            });
        }
    }
}

/// Counts (and now and then logs) an event that found the queue full.
fn dropped(counters: &WebhookCounters) {
    counters.dropped.inc();
    // The first drop, then one in a thousand: a dead backend must not
    // flood the log.
    let dropped = counters.dropped.get();
    if dropped % 1000 == 1 {
        tracing::warn!(
            dropped,
            "webhook events dropped: the queue is full (crier.webhooks.queue_size)"
        );
    }
}

impl Observer for Webhooks {
    fn disconnected(&self, client: ClientId, user: &str, reason: &DisconnectReason) {
        if self.kinds.disconnect {
            let d = disconnect_of(reason);
            let fields =
                json!({"client": client.to_string(), "user": user, "code": d.code, "reason": d.reason});
            self.emit("disconnect", fields);
        }
    }

    fn unsubscribed(&self, client: ClientId, user: &str, channel: &str) {
        if self.kinds.unsubscribe {
            self.emit(
                "unsubscribe",
                json!({"client": client.to_string(), "user": user, "channel": channel}),
            );
        }
    }

    // Called under the channel's shard lock, so one channel's holds enter
    // the queue in the order the hub made them.
    fn occupied(&self, channel: &str) {
        self.hold(channel, true);
    }

    fn vacated(&self, channel: &str) {
        self.hold(channel, false);
    }
}

/// The answer to each hold of one channel, by its place in the steps.
type Answers = Vec<(usize, Option<bool>)>;

/// Turns this node's holds into cluster-wide transitions through the
/// engine (see the module documentation). One task per node.
struct Resolver {
    occupancy: Arc<dyn Occupancy>,
    kinds: Kinds,
    /// The sender's queue; full, an event is dropped and counted (the
    /// engine's record is right all the same).
    out: mpsc::Sender<Step>,
    counters: WebhookCounters,
    /// The channels this node holds, as the hub said last.
    held: HashSet<Arc<str>>,
    /// Channels whose last write failed: written again, as `held` says,
    /// at each heartbeat until it works.
    dirty: HashSet<Arc<str>>,
    /// Heartbeats left at which every held channel is recorded again (this
    /// node lapsed; the second round repairs a sweep that was still
    /// running when it came back).
    reassert: u8,
    /// Whether a heartbeat was written once (holds wait for it).
    alive: bool,
}

impl Resolver {
    async fn run(mut self, mut from_hub: mpsc::Receiver<Step>, every: Duration) {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut steps = Vec::with_capacity(RESOLVE_BATCH);
        loop {
            tokio::select! {
                // The heartbeat first: a node busy writing holds must not
                // be taken for dead.
                biased;
                _ = tick.tick() => self.upkeep().await,
                n = from_hub.recv_many(&mut steps, RESOLVE_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.resolve(std::mem::take(&mut steps)).await;
                }
            }
        }
        // The hub is gone (the node stops). A node holding nothing leaves
        // now; one still holding something is left to expire and be swept.
        if self.held.is_empty() && self.dirty.is_empty() {
            if let Err(e) = self.occupancy.leave().await {
                tracing::debug!(error = %e, "could not leave the engine's node list; it expires");
            }
        }
    }

    fn forward(&self, event: Value) {
        if self.out.try_send(Step::Event(event)).is_err() {
            dropped(&self.counters);
        }
    }

    /// Writes one channel's holds in order; the answer of each (`None`
    /// once one failed: the rest are not tried, the channel is dirty).
    async fn write(occupancy: &dyn Occupancy, channel: &str, holds: &[bool]) -> Vec<Option<bool>> {
        let mut out = Vec::with_capacity(holds.len());
        for &held in holds {
            match occupancy.hold(channel, held).await {
                Ok(t) => out.push(Some(t)),
                Err(e) => {
                    tracing::debug!(channel, error = %e, "occupancy not written; retried at the next heartbeat");
                    break;
                }
            }
        }
        out.resize(holds.len(), None);
        out
    }

    async fn resolve(&mut self, mut steps: Vec<Step>) {
        // A node records holds only once it is in the engine's list of
        // nodes: else, killed now, nobody would ever release them.
        if !self.alive && !self.beat().await {
            for step in steps.drain(..) {
                match step {
                    Step::Event(e) => self.forward(e),
                    Step::Hold { channel, held, .. } => {
                        if held {
                            self.held.insert(channel.clone());
                        } else {
                            self.held.remove(&channel);
                        }
                        self.dirty.insert(channel);
                    }
                }
            }
            return;
        }
        // One channel's holds in the hub's order; channels at once.
        let mut channels: HashMap<Arc<str>, Vec<(usize, bool)>> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            if let Step::Hold { channel, held, .. } = step {
                channels.entry(channel.clone()).or_default().push((i, *held));
                if *held {
                    self.held.insert(channel.clone());
                } else {
                    self.held.remove(channel);
                }
            }
        }
        let occupancy = &*self.occupancy;
        let written: Vec<(Arc<str>, Answers)> = futures_util::stream::iter(channels)
            .map(|(channel, holds)| async move {
                let flags: Vec<bool> = holds.iter().map(|(_, h)| *h).collect();
                let answers = Self::write(occupancy, &channel, &flags).await;
                let at = holds.into_iter().map(|(i, _)| i).zip(answers).collect();
                (channel, at)
            })
            .buffer_unordered(RESOLVE_IN_FLIGHT)
            .collect()
            .await;
        let mut transitions = vec![false; steps.len()];
        for (channel, at) in written {
            if at.iter().all(|(_, a)| a.is_some()) {
                self.dirty.remove(&channel);
            } else {
                self.dirty.insert(channel);
            }
            for (i, a) in at {
                transitions[i] = a == Some(true);
            }
        }
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Step::Event(e) => self.forward(e),
                Step::Hold { channel, held, time } => {
                    if transitions[i] && self.kinds.wants(held) {
                        self.forward(transition(held, &channel, time));
                    }
                }
            }
        }
    }

    /// One heartbeat; whether it was written.
    async fn beat(&mut self) -> bool {
        match self.occupancy.heartbeat().await {
            Ok(lapsed) => {
                if lapsed {
                    if !self.held.is_empty() {
                        tracing::info!(
                            channels = self.held.len(),
                            "this node had lapsed in the engine: recording its channels again"
                        );
                    }
                    self.reassert = 2;
                }
                self.alive = true;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "occupancy heartbeat failed");
                false
            }
        }
    }

    /// The heartbeat, the writes that failed, and the sweep of dead nodes.
    async fn upkeep(&mut self) {
        if !self.beat().await {
            return;
        }
        if self.reassert > 0 {
            self.reassert -= 1;
            self.dirty.extend(self.held.iter().cloned());
        }
        if !self.dirty.is_empty() {
            let occupancy = &*self.occupancy;
            let held = &self.held;
            let written: Vec<(Arc<str>, Option<bool>)> =
                futures_util::stream::iter(self.dirty.iter().cloned())
                    .map(|channel| async move {
                        let want = held.contains(&channel);
                        let answer = Self::write(occupancy, &channel, &[want]).await;
                        (channel, answer[0])
                    })
                    .buffer_unordered(RESOLVE_IN_FLIGHT)
                    .collect()
                    .await;
            let now = unix_now_ms();
            for (channel, answer) in written {
                let Some(t) = answer else { continue };
                self.dirty.remove(&channel);
                let held = self.held.contains(&channel);
                if t && self.kinds.wants(held) {
                    self.forward(transition(held, &channel, now));
                }
            }
        }
        match self.occupancy.sweep().await {
            Ok(vacated) => {
                let now = unix_now_ms();
                for (channel, node) in vacated {
                    if self.kinds.vacated {
                        let mut e = transition(false, &channel, now);
                        e["lost_node"] = node.into();
                        self.forward(e);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "sweeping dead nodes failed"),
        }
    }
}

/// The sending side: numbers, batches, in order, retried.
struct Sender {
    node: String,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    max_retry: Duration,
    batch_size: usize,
    kinds: Kinds,
    client: HttpClient,
    counters: WebhookCounters,
}

impl Sender {
    /// `step` as the backend gets it, numbered `seq`; a hold (no cluster
    /// engine: this node's own transition) only if its kind is asked for.
    fn event(&self, step: Step, seq: &mut u64) -> Option<Value> {
        let mut fields = match step {
            Step::Event(e) => e,
            Step::Hold { channel, held, time } => {
                if !self.kinds.wants(held) {
                    return None;
                }
                transition(held, &channel, time)
            }
        };
        *seq += 1;
        if let Value::Object(m) = &mut fields {
            m.insert("id".into(), format!("{}-{seq}", self.node).into());
            m.insert("node".into(), self.node.clone().into());
            m.insert("seq".into(), (*seq).into());
        }
        Some(fields)
    }

    async fn run(self, mut rx: mpsc::Receiver<Step>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut seq = 0;
        loop {
            // Ends when the hub (holding the observer) is gone; during a
            // graceful shutdown the disconnects of the closing clients are
            // still sent.
            let Some(first) = rx.recv().await else { break };
            batch.extend(self.event(first, &mut seq));
            while batch.len() < self.batch_size {
                match rx.try_recv() {
                    Ok(step) => batch.extend(self.event(step, &mut seq)),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let body = Bytes::from(json!({"events": batch}).to_string());
            let mut wait = FIRST_RETRY;
            // The same batch until the backend takes it (or the node stops):
            // order holds, and the queue bounds what waits meanwhile.
            while !self.post(body.clone()).await {
                self.counters.failures.inc();
                if shutdown.is_cancelled() {
                    // Stopping, and the backend does not take them: give up.
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => {}
                }
                wait = (wait * 2).min(self.max_retry);
            }
            self.counters.delivered.inc_by(batch.len() as u64);
            batch.clear();
        }
    }

    /// One POST; whether the backend answered 2xx in time.
    async fn post(&self, body: Bytes) -> bool {
        let Ok(mut request) = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .body(Full::new(body))
        else {
            return false;
        };
        let h = request.headers_mut();
        for (k, v) in &self.headers {
            h.insert(k.clone(), v.clone());
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response.status().is_success(),
            _ => false,
        }
    }
}
