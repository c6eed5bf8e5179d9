//! The engine seam: where a channel's publications get their offsets, where
//! history and presence live. The hub does local fan-out; the engine decides
//! order and keeps state that may outlive (or live outside) this process.
//! The memory engine is in [`crate::memory`]; Redis and NATS engines live in
//! crier-server behind features, implementing this same trait.

use std::sync::Arc;

use crate::event::{ClientId, ClientInfo, Publication};
use crate::options::ChannelOptions;

/// A place in a channel's stream: the offset of its latest publication and
/// the epoch of the stream. A new epoch means history was lost or reset, so
/// offsets from another epoch cannot be compared.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StreamPosition {
    /// Offset of the latest publication (0 before the first).
    pub offset: u64,
    /// Identity of the stream's current incarnation.
    pub epoch: Arc<str>,
}

/// Which part of a channel's history to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Read publications after this position (before it when `reverse`).
    /// Its epoch must match the stream's.
    pub since: Option<StreamPosition>,
    /// Most publications to return; `None` for all, `Some(0)` for only the
    /// stream position.
    pub limit: Option<usize>,
    /// Newest first.
    pub reverse: bool,
}

/// The answer to a [`HistoryQuery`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// Publications in the order asked for.
    pub publications: Vec<Publication>,
    /// The stream's current position.
    pub position: StreamPosition,
}

/// Engine failures. Each maps to one protocol error code at the wire.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The `since` position belongs to another epoch, or is beyond the top
    /// of the stream (protocol error 112, unrecoverable position).
    #[error("unrecoverable position")]
    UnrecoverablePosition,
    /// The engine cannot answer right now, e.g. its backend is unreachable
    /// (protocol error 100, internal, temporary).
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

/// Ordering, history and presence for channels.
///
/// The hub calls `publish` while it holds the channel's critical section, and
/// fans the returned publication out to local subscribers before releasing
/// it; it calls `history` for a subscriber's catch-up inside the same
/// section. So an engine only needs each call to be atomic on its own.
/// Engines backed by another process implement the same calls against it
/// and feed publications made on other nodes to [`crate::Hub::deliver_at`],
/// which checks each against the stream the local subscribers follow.
pub trait Engine: Send + Sync + 'static {
    /// Assigns `publication` the next offset of `channel`, keeps it in
    /// history as `options` say (unless `skip_history`), and returns it with
    /// its offset and the stream's epoch.
    fn publish(
        &self,
        channel: &str,
        options: &ChannelOptions,
        publication: Publication,
        skip_history: bool,
    ) -> Result<(Publication, StreamPosition), EngineError>;

    /// Reads history. Expired publications are never returned.
    fn history(
        &self,
        channel: &str,
        options: &ChannelOptions,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, EngineError>;

    /// Drops a channel's history but keeps its stream position: the offset
    /// and the epoch stay, and the next publication gets the next offset.
    /// Subscribers are not told their state is lost; recovery from before
    /// the current offset then answers "not recovered" with the position.
    /// This is Centrifugo's contract (`history_remove` clears the stream and
    /// keeps its top offset and epoch). An epoch changes only when the
    /// stream itself is lost or reset. The memory engine frees a stream
    /// that nothing [`retain`](Engine::retain)s once it holds no
    /// publication, so there, with no local subscriber, the emptied stream
    /// is forgotten and the next publication starts a new epoch at offset 1,
    /// as after its whole history expired.
    fn remove_history(&self, channel: &str) -> Result<(), EngineError>;

    /// This node now has subscribers in `channel`: its stream position must
    /// survive even with no history, so they see offsets that only grow.
    fn retain(&self, channel: &str);

    /// This node has no subscribers in `channel` any more.
    fn release(&self, channel: &str);

    /// Adds or updates `info` in `channel`'s presence.
    fn add_presence(&self, channel: &str, info: Arc<ClientInfo>) -> Result<(), EngineError>;

    /// Removes `client` from `channel`'s presence.
    fn remove_presence(&self, channel: &str, client: ClientId) -> Result<(), EngineError>;

    /// Everyone present in `channel`.
    fn presence(&self, channel: &str) -> Result<Vec<Arc<ClientInfo>>, EngineError>;

    /// Frees expired history and streams nobody needs. Called by the
    /// embedder from its own housekeeping timer; never required for
    /// correctness (reads skip expired entries themselves).
    fn sweep(&self);
}
