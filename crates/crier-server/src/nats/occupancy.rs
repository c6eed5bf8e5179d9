//! Which nodes hold which channels, for cluster-wide occupied/vacated
//! webhooks, in the stream `<prefix>_occupancy` (one message per subject).
//!
//! A channel's holder set is the last message of `<prefix>.o.c.<token>`;
//! a change reads it and writes the new set with
//! `Nats-Expected-Last-Subject-Sequence` (as publications are written),
//! so of two nodes changing it at once one is refused and tries again:
//! each empty <-> not-empty transition is seen by exactly one node. An
//! emptied set is written empty, then that message is deleted (by its
//! sequence: a set written after it by another node stays). A node also
//! keeps `<prefix>.o.i.<node>.<token>` per channel it holds (written
//! before the set, purged after), and heartbeats on `<prefix>.o.n.<node>`;
//! a sweep compares each node's last heartbeat with the sweeper's own
//! (JetStream's clock both) and releases the channels of nodes past the
//! TTL.

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream;
use async_nats::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{
    bounded, token, unavailable, within_or, BrokerError, NatsBroker, EXPECTED_LAST_SUBJECT_SEQUENCE,
    PUBLISH_ATTEMPTS,
};

/// Channels of one dead node released between two checks that it is still
/// dead.
const RECHECK_EVERY: usize = 64;

fn holders(payload: &[u8]) -> Vec<&str> {
    std::str::from_utf8(payload)
        .unwrap_or_default()
        .split('\n')
        .filter(|n| !n.is_empty())
        .collect()
}

impl NatsBroker {
    async fn occupancy_stream(&self) -> Result<stream::Stream, BrokerError> {
        if let Some(s) = self.inner.occupancy.lock().expect("nats occupancy lock").clone() {
            return Ok(s);
        }
        self.connected()?;
        let c = &self.inner.config;
        let p = self.prefix();
        let s = self
            .ensure(stream::Config {
                name: format!("{p}_occupancy"),
                description: Some(
                    "crier: which nodes hold which channels (occupied/vacated webhooks)".into(),
                ),
                subjects: vec![format!("{p}.o.>")],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                num_replicas: c.replicas,
                ..Default::default()
            })
            .await?;
        *self.inner.occupancy.lock().expect("nats occupancy lock") = Some(s.clone());
        Ok(s)
    }

    fn forget_occupancy(&self) {
        *self.inner.occupancy.lock().expect("nats occupancy lock") = None;
    }

    /// Publishes `payload` to `subject` and waits for JetStream's ack: its
    /// sequence, or `None` when `after` (the subject's last sequence
    /// expected, 0 = none) no longer holds.
    async fn put(
        &self,
        subject: String,
        payload: Bytes,
        after: Option<u64>,
    ) -> Result<Option<u64>, BrokerError> {
        let mut headers = HeaderMap::new();
        if let Some(seq) = after {
            headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, seq.to_string().as_str());
        }
        let within = self.inner.config.request_timeout;
        let sent = tokio::time::timeout(within, async {
            self.inner
                .js
                .publish_with_headers(subject, headers, payload)
                .await?
                .await
        })
        .await
        .map_err(|_| unavailable("JetStream did not acknowledge an occupancy write in time"))?;
        match sent {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => {
                self.forget_occupancy();
                Err(unavailable(format_args!("writing occupancy: {e}")))
            }
        }
    }

    async fn purge_subject(&self, on: &stream::Stream, subject: String) -> Result<(), BrokerError> {
        bounded(
            self.inner.config.request_timeout,
            "purging occupancy",
            on.purge().filter(subject).into_future(),
        )
        .await
        .map(drop)
    }

    /// Records that `node` holds `channel` (`held`) or no longer does;
    /// true when the channel's holder set went from empty to not empty
    /// (or back).
    pub async fn hold(&self, channel: &str, node: &str, held: bool) -> Result<bool, BrokerError> {
        let on = self.occupancy_stream().await?;
        let p = self.prefix();
        let t = token(channel);
        let index = format!("{p}.o.i.{node}.{t}");
        if held {
            self.put(index.clone(), Bytes::new(), None).await?;
        }
        let subject = format!("{p}.o.c.{t}");
        for _ in 0..PUBLISH_ATTEMPTS {
            let last = self.last_message(&on, &subject).await?;
            let (after, mut set) = match &last {
                Some(m) => (m.sequence, holders(&m.payload)),
                None => (0, Vec::new()),
            };
            let was_empty = set.is_empty();
            if set.contains(&node) == held {
                if !held {
                    self.purge_subject(&on, index).await?;
                }
                return Ok(false);
            }
            if held {
                set.push(node);
            } else {
                set.retain(|n| *n != node);
            }
            let payload = Bytes::from(set.join("\n"));
            let Some(seq) = self.put(subject.clone(), payload, Some(after)).await? else {
                continue; // another node changed it first
            };
            if held {
                return Ok(was_empty);
            }
            if set.is_empty() {
                // Only this message: a set another node wrote since stays.
                let _ = tokio::time::timeout(self.inner.config.request_timeout, on.delete_message(seq)).await;
            }
            self.purge_subject(&on, index).await?;
            return Ok(set.is_empty());
        }
        Err(unavailable(format_args!(
            "{PUBLISH_ATTEMPTS} tries lost to other nodes changing the occupancy of one channel"
        )))
    }

    /// `node`'s last heartbeat, JetStream time (Unix ns).
    async fn beat_of(&self, on: &stream::Stream, node: &str) -> Result<Option<i128>, BrokerError> {
        let subject = format!("{}.o.n.{node}", self.prefix());
        Ok(self
            .last_message(on, &subject)
            .await?
            .map(|m| m.time.unix_timestamp_nanos()))
    }

    /// Keeps `node` alive for `ttl`; true when it had lapsed (no heartbeat
    /// on record, or the last one older than `ttl`).
    pub async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<bool, BrokerError> {
        let on = self.occupancy_stream().await?;
        let before = self.beat_of(&on, node).await?;
        self.put(format!("{}.o.n.{node}", self.prefix()), Bytes::new(), None)
            .await?;
        let now = self.beat_of(&on, node).await?;
        Ok(match (before, now) {
            (Some(b), Some(n)) => n - b > ttl.as_nanos() as i128,
            _ => true,
        })
    }

    /// Every subject of the occupancy stream under `filter`.
    async fn subjects(&self, on: &stream::Stream, filter: String) -> Result<Vec<String>, BrokerError> {
        let list = async {
            let mut pages = on
                .info_with_subjects(filter)
                .await
                .map_err(|e| unavailable(format_args!("listing occupancy: {e}")))?;
            let mut out = Vec::new();
            while let Some(item) = pages.next().await {
                let (subject, _) = item.map_err(|e| unavailable(format_args!("listing occupancy: {e}")))?;
                out.push(subject);
            }
            Ok::<_, BrokerError>(out)
        };
        within_or(
            self.inner.config.request_timeout,
            "JetStream did not list occupancy in time",
            list,
        )
        .await
    }

    /// Releases what nodes past `ttl` held (never `node`'s own); the
    /// channels left without a holder, with the node that held them.
    pub async fn sweep(&self, node: &str, ttl: Duration) -> Result<Vec<(String, String)>, BrokerError> {
        let on = self.occupancy_stream().await?;
        let p = self.prefix().to_owned();
        // JetStream's now: this node's own heartbeat, just written.
        let Some(now) = self.beat_of(&on, node).await? else {
            return Ok(Vec::new());
        };
        let ttl = ttl.as_nanos() as i128;
        let dead_at = |beat: Option<i128>| beat.is_some_and(|b| now - b > ttl);
        let mut vacated = Vec::new();
        for subject in self.subjects(&on, format!("{p}.o.n.*")).await? {
            let Some(other) = subject.rsplit('.').next().map(str::to_owned) else {
                continue;
            };
            if other == node || !dead_at(self.beat_of(&on, &other).await?) {
                continue;
            }
            let held = self.subjects(&on, format!("{p}.o.i.{other}.*")).await?;
            for (i, index) in held.iter().enumerate() {
                if i > 0 && i % RECHECK_EVERY == 0 && !dead_at(self.beat_of(&on, &other).await?) {
                    break; // it came back: it records its channels again
                }
                let Some(channel) = index
                    .rsplit('.')
                    .next()
                    .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                else {
                    self.purge_subject(&on, index.clone()).await?;
                    continue;
                };
                if self.hold(&channel, &other, false).await? {
                    vacated.push((channel, other.clone()));
                }
            }
            if dead_at(self.beat_of(&on, &other).await?) {
                self.purge_subject(&on, subject).await?;
            }
        }
        Ok(vacated)
    }

    /// Forgets `node` (it stops, holding nothing).
    pub async fn leave(&self, node: &str) -> Result<(), BrokerError> {
        let on = self.occupancy_stream().await?;
        self.purge_subject(&on, format!("{}.o.n.{node}", self.prefix()))
            .await
    }
}
