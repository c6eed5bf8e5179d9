//! Lifecycle webhooks (crier only, `crier.webhooks`): the hub's
//! [`Observer`] events — a client disconnected (with its code), a client
//! unsubscribed, a channel occupied or vacated on this node — POSTed to
//! the backend in batches, in order, retried with backoff until it takes
//! them.
//!
//! The hub hands an event over without waiting: it goes into a bounded
//! queue (`queue_size`), and when the queue is full the event is dropped,
//! counted and logged — the hub never blocks on the backend. One task per
//! node sends the batches; each event carries this node's id and a
//! per-node sequence number (its `id` is both), so the backend can drop a
//! duplicate (a batch is sent again when its answer was lost).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use crier_core::{ClientId, DisconnectReason, Observer};
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

/// The node's webhooks: the observer side (cheap, never blocking).
pub(crate) struct Webhooks {
    node: String,
    seq: AtomicU64,
    queue: mpsc::Sender<Value>,
    disconnect: bool,
    unsubscribe: bool,
    occupied: bool,
    vacated: bool,
    counters: WebhookCounters,
}

impl Webhooks {
    /// Starts the sending task (on the current tokio runtime) and returns
    /// the observer to give the hub; `None` when no endpoint is set.
    pub(crate) fn start(
        cfg: &WebhooksConfig,
        node: &str,
        counters: WebhookCounters,
        shutdown: CancellationToken,
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
        let (queue, rx) = mpsc::channel(cfg.queue_size);
        let sender = Sender {
            uri,
            headers,
            timeout: cfg.timeout,
            max_retry: cfg.max_retry_delay,
            batch_size: cfg.batch_size,
            client: http_client(),
            counters: counters.clone(),
        };
        tokio::runtime::Handle::try_current()
            .ok()?
            .spawn(sender.run(rx, shutdown));
        let on = |e: &str| cfg.events.iter().any(|x| x == e);
        Some(Arc::new(Self {
            node: node.to_owned(),
            seq: AtomicU64::new(0),
            queue,
            disconnect: on("disconnect"),
            unsubscribe: on("unsubscribe"),
            occupied: on("occupied"),
            vacated: on("vacated"),
            counters,
        }))
    }

    fn emit(&self, kind: &str, mut fields: Value) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if let Value::Object(m) = &mut fields {
            m.insert("type".into(), kind.into());
            m.insert("id".into(), format!("{}-{seq}", self.node).into());
            m.insert("node".into(), self.node.clone().into());
            m.insert("seq".into(), seq.into());
            m.insert("time".into(), unix_now_ms().into());
        }
        if self.queue.try_send(fields).is_err() {
            self.counters.dropped.inc();
            // The first drop, then one in a thousand: a dead backend must
            // not flood the log.
            let dropped = self.counters.dropped.get();
            if dropped % 1000 == 1 {
                tracing::warn!(
                    seq,
                    dropped,
                    "webhook events dropped: the queue is full (crier.webhooks.queue_size)"
                );
            }
        }
    }
}

impl Observer for Webhooks {
    fn disconnected(&self, client: ClientId, user: &str, reason: &DisconnectReason) {
        if self.disconnect {
            let d = disconnect_of(reason);
            let fields =
                json!({"client": client.to_string(), "user": user, "code": d.code, "reason": d.reason});
            self.emit("disconnect", fields);
        }
    }

    fn unsubscribed(&self, client: ClientId, user: &str, channel: &str) {
        if self.unsubscribe {
            self.emit(
                "unsubscribe",
                json!({"client": client.to_string(), "user": user, "channel": channel}),
            );
        }
    }

    fn occupied(&self, channel: &str) {
        if self.occupied {
            self.emit("occupied", json!({"channel": channel}));
        }
    }

    fn vacated(&self, channel: &str) {
        if self.vacated {
            self.emit("vacated", json!({"channel": channel}));
        }
    }
}

/// The sending side: batches, in order, retried.
struct Sender {
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    max_retry: Duration,
    batch_size: usize,
    client: HttpClient,
    counters: WebhookCounters,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Value>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(self.batch_size);
        loop {
            // Ends when the hub (holding the observer) is gone; during a
            // graceful shutdown the disconnects of the closing clients are
            // still sent.
            let Some(first) = rx.recv().await else { break };
            batch.push(first);
            while batch.len() < self.batch_size {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
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
