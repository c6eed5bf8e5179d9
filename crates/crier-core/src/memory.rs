//! The in-memory engine: offsets, epochs, history (size and TTL) and
//! presence for a single node. State lives as long as it is needed: a
//! stream with no retained history and no local subscribers is freed.
//!
//! History is bounded node-wide as well as per channel: with a
//! [`HistoryLimit`], once the bytes held by all streams pass the limit the
//! streams published to least recently lose their history (their position
//! stays while this node has subscribers there), so a client publishing to
//! ever new channels cannot grow the process without bound.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::clock::{Clock, SystemClock};
use crate::engine::{Engine, EngineError, HistoryPage, HistoryQuery, StreamPosition};
use crate::event::{ClientId, ClientInfo, Publication};
use crate::options::ChannelOptions;
use crate::shard::MutexShards;

/// Offsets, history and presence kept in this process.
pub struct MemoryEngine {
    // Time source for TTLs; a manual clock in tests.
    clock: Arc<dyn Clock>,
    streams: MutexShards<Box<str>, Stream>,
    presence: MutexShards<Box<str>, FxHashMap<ClientId, Arc<ClientInfo>>>,
    // Mixed into epochs so two streams created in the same instant differ.
    epoch_seq: AtomicU64,
    // The node-wide budget for history and what it holds now.
    budget: Budget,
}

/// A node-wide bound on the memory held by channel history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimit {
    /// Bytes all streams may hold together (payloads, publisher info and a
    /// fixed per-entry and per-stream overhead); 0 for no limit.
    pub max_bytes: usize,
}

/// What the engine's history holds, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryUsage {
    /// Bytes held by all streams (as counted against [`HistoryLimit`]).
    pub bytes: usize,
    /// Streams whose history was dropped to stay within the limit, since
    /// start.
    pub evicted_streams: u64,
}

#[derive(Default)]
struct Budget {
    max_bytes: usize,
    bytes: AtomicUsize,
    evicted: AtomicU64,
    // Orders streams by their latest publish, for eviction.
    tick: AtomicU64,
    // One eviction pass at a time; publishers that find it taken go on.
    evicting: parking_lot::Mutex<()>,
}

// What a retained publication costs beyond its payload and publisher info
// (the entry, its slot in the deque, the shared pointers), and what a
// stream costs beyond its name: estimates that keep the count honest for
// small payloads, where the overhead dominates.
const ENTRY_OVERHEAD: usize = 96;
const STREAM_OVERHEAD: usize = 160;

struct Stream {
    epoch: Arc<str>,
    // Offset of the latest publication.
    top: u64,
    // Retained publications, oldest first, offsets strictly increasing.
    entries: VecDeque<Entry>,
    // Whether this node has subscribers (keep the position even if empty).
    live: bool,
    // Bytes its entries hold (counted against the budget).
    bytes: usize,
    // The budget's tick at its latest publish (least recent goes first).
    used: u64,
}

struct Entry {
    publication: Publication,
    // Milliseconds since the Unix epoch after which it is gone.
    expires_at: Option<u64>,
}

/// Bytes one retained publication is counted for.
fn entry_cost(p: &Publication) -> usize {
    let info = p.info.as_ref().map_or(0, |i| {
        i.user.len() + i.conn_info().map_or(0, |b| b.len()) + i.chan_info().map_or(0, |b| b.len())
    });
    let tags = p
        .tags
        .as_ref()
        .map_or(0, |t| t.iter().map(|(k, v)| k.len() + v.len() + 16).sum());
    ENTRY_OVERHEAD + p.data.len() + info + tags
}

impl Stream {
    fn trim_expired(&mut self, now: u64) {
        while let Some(front) = self.entries.front() {
            match front.expires_at {
                Some(t) if t <= now => {
                    self.pop_front();
                }
                _ => break,
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= entry_cost(&e.publication);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    // What it holds against the budget, its name included.
    fn held(&self, name: &str) -> usize {
        if self.entries.is_empty() {
            0
        } else {
            self.bytes + STREAM_OVERHEAD + name.len()
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

impl Default for MemoryEngine {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryEngine {
    /// An engine whose TTLs follow `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_limit(clock, HistoryLimit { max_bytes: 0 })
    }

    /// An engine whose TTLs follow `clock` and whose history stays within
    /// `limit`.
    pub fn with_limit(clock: Arc<dyn Clock>, limit: HistoryLimit) -> Self {
        Self {
            clock,
            streams: MutexShards::new(),
            presence: MutexShards::new(),
            epoch_seq: AtomicU64::new(0),
            budget: Budget {
                max_bytes: limit.max_bytes,
                ..Budget::default()
            },
        }
    }

    /// What history holds now, and how often the limit evicted it.
    pub fn history_usage(&self) -> HistoryUsage {
        HistoryUsage {
            bytes: self.budget.bytes.load(Ordering::Relaxed),
            evicted_streams: self.budget.evicted.load(Ordering::Relaxed),
        }
    }

    // Moves the node-wide count by what a stream's holding changed.
    fn account(&self, before: usize, after: usize) {
        if after > before {
            self.budget.bytes.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.budget.bytes.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Drops the history of the streams published to least recently until
    /// the engine holds at most 90 % of the limit (so a pass runs once per
    /// tenth of the budget, not once per publish). Called with no stream
    /// lock held; takes one shard lock at a time.
    fn evict(&self) {
        let budget = &self.budget;
        let Some(_pass) = budget.evicting.try_lock() else {
            return; // another publisher is already evicting
        };
        let target = budget.max_bytes - budget.max_bytes / 10;
        let held = budget.bytes.load(Ordering::Relaxed);
        if held <= budget.max_bytes {
            return;
        }
        let mut candidates: Vec<(u64, Box<str>)> = Vec::new();
        for shard in self.streams.all() {
            for (name, s) in shard.lock().iter() {
                if s.held(name) > 0 {
                    candidates.push((s.used, name.clone()));
                }
            }
        }
        candidates.sort_unstable_by_key(|c| c.0);
        let mut to_free = held.saturating_sub(target);
        for (used, name) in candidates {
            if to_free == 0 {
                break;
            }
            let mut shard = self.streams.shard(&*name).lock();
            let Some(s) = shard.get_mut(&*name) else { continue };
            if s.used != used {
                continue; // published to since the scan: no longer the oldest
            }
            let before = s.held(&name);
            s.clear();
            if !s.live {
                shard.remove(&*name);
            }
            self.account(before, 0);
            budget.evicted.fetch_add(1, Ordering::Relaxed);
            to_free = to_free.saturating_sub(before);
        }
    }

    fn new_stream(&self) -> Stream {
        let seq = self.epoch_seq.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let epoch = format!("{:08x}", splitmix64(nanos ^ seq.rotate_left(32)) as u32);
        Stream {
            epoch: epoch.into(),
            top: 0,
            entries: VecDeque::new(),
            live: false,
            bytes: 0,
            used: 0,
        }
    }

    /// Number of streams held (for tests and stats).
    pub fn stream_count(&self) -> usize {
        self.streams.all().map(|s| s.lock().len()).sum()
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Engine for MemoryEngine {
    fn publish(
        &self,
        channel: &str,
        options: &ChannelOptions,
        mut publication: Publication,
        skip_history: bool,
    ) -> Result<(Publication, StreamPosition), EngineError> {
        let now = self.clock.now_ms();
        let mut shard = self.streams.shard(channel).lock();
        let stream = match shard.get_mut(channel) {
            Some(s) => s,
            None => shard.entry(channel.into()).or_insert(self.new_stream()),
        };
        let before = stream.held(channel);
        stream.top += 1;
        publication.offset = stream.top;
        stream.trim_expired(now);
        if options.history_size > 0 && !skip_history {
            stream.bytes += entry_cost(&publication);
            stream.entries.push_back(Entry {
                publication: publication.clone(),
                expires_at: options.history_ttl.map(|ttl| now + ttl.as_millis() as u64),
            });
            while stream.entries.len() > options.history_size {
                stream.pop_front();
            }
            stream.used = self.budget.tick.fetch_add(1, Ordering::Relaxed) + 1;
        }
        let after = stream.held(channel);
        let position = stream.position();
        if !stream.live && stream.entries.is_empty() {
            // Nobody here needs this position and nothing is kept: free it.
            shard.remove(channel);
        }
        drop(shard);
        self.account(before, after);
        if self.budget.max_bytes > 0 && self.budget.bytes.load(Ordering::Relaxed) > self.budget.max_bytes {
            self.evict();
        }
        Ok((publication, position))
    }

    fn history(
        &self,
        channel: &str,
        _options: &ChannelOptions,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        let now = self.clock.now_ms();
        let mut shard = self.streams.shard(channel).lock();
        let Some(stream) = shard.get_mut(channel) else {
            if query.since.as_ref().is_some_and(|s| s.offset > 0) {
                return Err(EngineError::UnrecoverablePosition);
            }
            return Ok(HistoryPage::default());
        };
        let before = stream.held(channel);
        stream.trim_expired(now);
        self.account(before, stream.held(channel));
        if let Some(since) = &query.since {
            if since.epoch != stream.epoch || since.offset > stream.top {
                return Err(EngineError::UnrecoverablePosition);
            }
        }
        let limit = query.limit.unwrap_or(usize::MAX);
        let publications = if limit == 0 {
            Vec::new()
        } else if query.reverse {
            let below = query.since.as_ref().map_or(u64::MAX, |s| s.offset);
            stream
                .entries
                .iter()
                .rev()
                .filter(|e| e.publication.offset < below)
                .take(limit)
                .map(|e| e.publication.clone())
                .collect()
        } else {
            let after = query.since.as_ref().map_or(0, |s| s.offset);
            // Entries are sorted by offset: skip straight to the first one.
            let start = stream.entries.partition_point(|e| e.publication.offset <= after);
            stream
                .entries
                .range(start..)
                .take(limit)
                .map(|e| e.publication.clone())
                .collect()
        };
        Ok(HistoryPage {
            publications,
            position: stream.position(),
        })
    }

    fn remove_history(&self, channel: &str) -> Result<(), EngineError> {
        let mut shard = self.streams.shard(channel).lock();
        if let Some(stream) = shard.get_mut(channel) {
            // The position stays, so subscribers are not told their state is
            // lost; recovery from before it will say "not recovered".
            self.account(stream.held(channel), 0);
            stream.clear();
            if !stream.live {
                shard.remove(channel);
            }
        }
        Ok(())
    }

    fn retain(&self, channel: &str) {
        let mut shard = self.streams.shard(channel).lock();
        match shard.get_mut(channel) {
            Some(s) => s.live = true,
            None => {
                let mut s = self.new_stream();
                s.live = true;
                shard.insert(channel.into(), s);
            }
        }
    }

    fn release(&self, channel: &str) {
        let mut shard = self.streams.shard(channel).lock();
        if let Some(s) = shard.get_mut(channel) {
            s.live = false;
            if s.entries.is_empty() {
                shard.remove(channel);
            }
        }
    }

    fn add_presence(&self, channel: &str, info: Arc<ClientInfo>) -> Result<(), EngineError> {
        let mut shard = self.presence.shard(channel).lock();
        match shard.get_mut(channel) {
            Some(m) => {
                m.insert(info.client, info);
            }
            None => {
                let mut m = FxHashMap::default();
                m.insert(info.client, info);
                shard.insert(channel.into(), m);
            }
        }
        Ok(())
    }

    fn remove_presence(&self, channel: &str, client: ClientId) -> Result<(), EngineError> {
        let mut shard = self.presence.shard(channel).lock();
        if let Some(m) = shard.get_mut(channel) {
            m.remove(&client);
            if m.is_empty() {
                shard.remove(channel);
            }
        }
        Ok(())
    }

    fn presence(&self, channel: &str) -> Result<Vec<Arc<ClientInfo>>, EngineError> {
        let shard = self.presence.shard(channel).lock();
        Ok(shard
            .get(channel)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    fn sweep(&self) {
        let now = self.clock.now_ms();
        for shard in self.streams.all() {
            shard.lock().retain(|name, s| {
                let before = s.held(name);
                s.trim_expired(now);
                self.account(before, s.held(name));
                s.live || !s.entries.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn opts(size: usize, ttl_ms: Option<u64>) -> ChannelOptions {
        ChannelOptions {
            history_size: size,
            history_ttl: ttl_ms.map(Duration::from_millis),
            ..Default::default()
        }
    }

    #[test]
    fn offsets_increase_and_history_is_trimmed_by_size() {
        let e = MemoryEngine::default();
        let o = opts(3, None);
        let mut epoch = None;
        for i in 1..=5u64 {
            let (p, pos) = e
                .publish("c", &o, Publication::new(vec![i as u8]), false)
                .unwrap();
            assert_eq!(p.offset, i);
            assert_eq!(pos.offset, i);
            let ep = epoch.get_or_insert(pos.epoch.clone());
            assert_eq!(*ep, pos.epoch, "epoch is stable while history lives");
        }
        let page = e.history("c", &o, &HistoryQuery::default()).unwrap();
        let offs: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offs, vec![3, 4, 5]);
        let rev = e
            .history(
                "c",
                &o,
                &HistoryQuery {
                    limit: Some(2),
                    reverse: true,
                    since: None,
                },
            )
            .unwrap();
        let offs: Vec<u64> = rev.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offs, vec![5, 4]);
    }

    #[test]
    fn ttl_expires_history_and_sweep_frees_the_stream() {
        let clock = Arc::new(ManualClock::new(1_000));
        let e = MemoryEngine::new(clock.clone());
        let o = opts(10, Some(100));
        e.publish("c", &o, Publication::new("a"), false).unwrap();
        clock.advance(50);
        e.publish("c", &o, Publication::new("b"), false).unwrap();
        clock.advance(60);
        let page = e.history("c", &o, &HistoryQuery::default()).unwrap();
        assert_eq!(page.publications.len(), 1, "the first publication expired");
        assert_eq!(page.publications[0].data, "b");
        clock.advance(100);
        e.sweep();
        assert_eq!(
            e.stream_count(),
            0,
            "an expired stream with no subscribers is freed"
        );
    }

    #[test]
    fn since_with_other_epoch_is_unrecoverable() {
        let e = MemoryEngine::default();
        let o = opts(10, None);
        e.publish("c", &o, Publication::new("a"), false).unwrap();
        let q = HistoryQuery {
            since: Some(StreamPosition {
                offset: 0,
                epoch: "other".into(),
            }),
            ..Default::default()
        };
        assert_eq!(e.history("c", &o, &q), Err(EngineError::UnrecoverablePosition));
    }

    #[test]
    fn no_history_and_no_subscribers_holds_no_memory() {
        let e = MemoryEngine::default();
        e.publish("c", &opts(0, None), Publication::new("a"), false)
            .unwrap();
        assert_eq!(e.stream_count(), 0);
        e.retain("c");
        e.publish("c", &opts(0, None), Publication::new("a"), false)
            .unwrap();
        let (_, pos) = e
            .publish("c", &opts(0, None), Publication::new("b"), false)
            .unwrap();
        assert_eq!(pos.offset, 2, "a live stream keeps counting without history");
        e.release("c");
        assert_eq!(e.stream_count(), 0);
    }

    #[test]
    fn remove_history_keeps_position() {
        let e = MemoryEngine::default();
        let o = opts(10, None);
        e.retain("c");
        let (_, before) = e.publish("c", &o, Publication::new("a"), false).unwrap();
        e.remove_history("c").unwrap();
        let page = e.history("c", &o, &HistoryQuery::default()).unwrap();
        assert!(page.publications.is_empty());
        assert_eq!(page.position, before);
        let (p, after) = e.publish("c", &o, Publication::new("b"), false).unwrap();
        assert_eq!(p.offset, before.offset + 1, "offsets carry on");
        assert_eq!(
            after.epoch, before.epoch,
            "the epoch stays (Centrifugo keeps it too)"
        );
        // Nothing retains the stream any more and its history goes: it is
        // forgotten, so the next publication starts a new epoch.
        e.release("c");
        e.remove_history("c").unwrap();
        assert_eq!(e.stream_count(), 0);
        let (_, fresh) = e.publish("c", &o, Publication::new("c"), false).unwrap();
        assert_eq!(fresh.offset, 1);
        assert_ne!(fresh.epoch, before.epoch);
    }

    #[test]
    fn churn_over_fresh_channels_stays_within_the_history_limit() {
        let limit = 64 * 1024;
        let e = MemoryEngine::with_limit(Arc::new(ManualClock::new(0)), HistoryLimit { max_bytes: limit });
        let o = opts(100, Some(300_000));
        e.retain("kept");
        e.publish("kept", &o, Publication::new("first"), false).unwrap();
        for i in 0..20_000 {
            e.publish(
                &format!("fresh:{i}"),
                &o,
                Publication::new(vec![b'x'; 200]),
                false,
            )
            .unwrap();
            assert!(e.history_usage().bytes <= limit + 1024, "over the limit at {i}");
        }
        let usage = e.history_usage();
        assert!(usage.evicted_streams > 10_000, "{usage:?}");
        assert!(e.stream_count() < 400, "{} streams held", e.stream_count());
        // The oldest history went; a live stream keeps its position.
        let page = e.history("kept", &o, &HistoryQuery::default()).unwrap();
        assert!(page.publications.is_empty());
        assert_eq!(page.position.offset, 1);
        // The latest channels still have theirs.
        let page = e.history("fresh:19999", &o, &HistoryQuery::default()).unwrap();
        assert_eq!(page.publications.len(), 1);
    }

    #[test]
    fn the_history_count_returns_to_zero_when_everything_is_gone() {
        let clock = Arc::new(ManualClock::new(0));
        let e = MemoryEngine::with_limit(clock.clone(), HistoryLimit { max_bytes: 1 << 20 });
        let o = opts(2, Some(1_000));
        for i in 0..50 {
            for _ in 0..5 {
                e.publish(&format!("c{i}"), &o, Publication::new("abc"), false)
                    .unwrap();
            }
        }
        assert!(e.history_usage().bytes > 0);
        e.remove_history("c0").unwrap();
        clock.advance(2_000);
        e.sweep();
        assert_eq!(e.history_usage().bytes, 0);
        assert_eq!(e.stream_count(), 0);
    }

    #[test]
    fn history_bytes_count_payload_publisher_tags_and_overheads_exactly() {
        let clock = Arc::new(ManualClock::new(0));
        let e = MemoryEngine::with_limit(clock.clone(), HistoryLimit { max_bytes: 1 << 20 });
        let o = opts(2, Some(1_000));
        let mut first = Publication::new("0123456789");
        first.info = Some(Arc::new(ClientInfo::new(
            ClientId(1),
            "ann".into(),
            Some(bytes::Bytes::from_static(b"conn!")),
            Some(bytes::Bytes::from_static(b"channel")),
        )));
        first.tags = Some(vec![("k".into(), "vv".into())].into());
        // The entry: overhead, payload, user + conn info + chan info, and
        // each tag's key + value + 16.
        let first_cost = ENTRY_OVERHEAD + 10 + (3 + 5 + 7) + (1 + 2 + 16);
        let stream = STREAM_OVERHEAD + "chan".len();
        e.publish("chan", &o, first, false).unwrap();
        assert_eq!(e.history_usage().bytes, first_cost + stream);
        assert_eq!(e.stream_count(), 1);

        e.publish("chan", &o, Publication::new("ab"), false).unwrap();
        assert_eq!(e.history_usage().bytes, first_cost + ENTRY_OVERHEAD + 2 + stream);
        // history_size 2: the first entry goes, and its bytes with it.
        clock.advance(500);
        e.publish("chan", &o, Publication::new("abc"), false).unwrap();
        assert_eq!(
            e.history_usage().bytes,
            (ENTRY_OVERHEAD + 2) + (ENTRY_OVERHEAD + 3) + stream
        );
        // "ab" expires (published at 0, TTL 1 s), "abc" (at 500) not yet.
        clock.advance(600);
        let page = e.history("chan", &o, &HistoryQuery::default()).unwrap();
        assert_eq!(page.publications.len(), 1);
        assert_eq!(e.history_usage().bytes, ENTRY_OVERHEAD + 3 + stream);
        e.remove_history("chan").unwrap();
        assert_eq!(e.history_usage(), HistoryUsage::default());
    }

    #[test]
    fn the_limit_evicts_the_least_recently_published_streams_down_to_ninety_percent() {
        let e = MemoryEngine::with_limit(
            Arc::new(ManualClock::new(0)),
            HistoryLimit {
                max_bytes: 10 * (ENTRY_OVERHEAD + 100 + STREAM_OVERHEAD + 3),
            },
        );
        let held = ENTRY_OVERHEAD + 100 + STREAM_OVERHEAD + 3;
        let o = opts(10, None);
        // A live stream without history holds nothing and is never evicted.
        e.retain("idl");
        for i in 0..10 {
            e.publish(&format!("c{i:02}"), &o, Publication::new(vec![b'x'; 100]), false)
                .unwrap();
        }
        assert_eq!(
            e.history_usage().bytes,
            10 * held,
            "exactly at the limit: nothing evicted"
        );
        assert_eq!(e.history_usage().evicted_streams, 0);
        // One more stream passes the limit: the two oldest go, which brings
        // the count down to 90 % of the limit.
        e.publish("c10", &o, Publication::new(vec![b'x'; 100]), false)
            .unwrap();
        assert_eq!(
            e.history_usage(),
            HistoryUsage {
                bytes: 9 * held,
                evicted_streams: 2,
            }
        );
        for (name, kept) in [("c00", 0), ("c01", 0), ("c02", 1), ("c10", 1)] {
            let page = e.history(name, &o, &HistoryQuery::default()).unwrap();
            assert_eq!(page.publications.len(), kept, "{name}");
        }
        assert_eq!(
            e.stream_count(),
            9 + 1,
            "nine streams with history, and the live one"
        );
    }

    #[test]
    fn a_publication_not_kept_leaves_the_history_already_kept() {
        let e = MemoryEngine::default();
        e.publish("c", &opts(10, None), Publication::new("a"), false)
            .unwrap();
        // Without history (options of no history, or skip_history): the
        // offset moves on, the stream keeps what it holds.
        e.publish("c", &opts(0, None), Publication::new("b"), false)
            .unwrap();
        e.publish("c", &opts(10, None), Publication::new("c"), true)
            .unwrap();
        let page = e.history("c", &opts(10, None), &HistoryQuery::default()).unwrap();
        let data: Vec<_> = page.publications.iter().map(|p| p.data.clone()).collect();
        assert_eq!(data, vec!["a"]);
        assert_eq!(page.position.offset, 3);
    }

    #[test]
    fn epochs_are_mixed_with_splitmix64() {
        // The reference outputs of SplitMix64 seeded with 0 (each call
        // advances the state by the golden-ratio increment, as here).
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix64(0x3c6e_f372_fe94_f82a), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn history_of_a_stream_this_engine_does_not_hold() {
        let e = MemoryEngine::default();
        let o = opts(10, None);
        let since = |offset| HistoryQuery {
            since: Some(StreamPosition {
                offset,
                epoch: "any".into(),
            }),
            ..Default::default()
        };
        // From the start: nothing was missed.
        assert_eq!(e.history("c", &o, &since(0)), Ok(HistoryPage::default()));
        assert_eq!(
            e.history("c", &o, &HistoryQuery::default()),
            Ok(HistoryPage::default())
        );
        // From a position: what came after it is gone.
        assert_eq!(
            e.history("c", &o, &since(3)),
            Err(EngineError::UnrecoverablePosition)
        );
    }

    #[test]
    fn reverse_history_since_a_position_reads_what_came_before_it() {
        let e = MemoryEngine::default();
        let o = opts(10, None);
        let mut epoch = None;
        for i in 1..=5u8 {
            let (_, pos) = e.publish("c", &o, Publication::new(vec![i]), false).unwrap();
            epoch = Some(pos.epoch);
        }
        let q = HistoryQuery {
            since: Some(StreamPosition {
                offset: 3,
                epoch: epoch.unwrap(),
            }),
            reverse: true,
            limit: None,
        };
        let page = e.history("c", &o, &q).unwrap();
        let offs: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offs, vec![2, 1]);
    }

    #[test]
    fn presence_add_remove() {
        let e = MemoryEngine::default();
        let info = Arc::new(ClientInfo::new(ClientId(7), "u".into(), None, None));
        e.add_presence("c", info.clone()).unwrap();
        assert_eq!(e.presence("c").unwrap(), vec![info]);
        e.remove_presence("c", ClientId(7)).unwrap();
        assert!(e.presence("c").unwrap().is_empty());
    }
}
