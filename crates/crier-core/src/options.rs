//! Per-channel behaviour chosen by namespace (the part of a channel name
//! before the first `:`): history size and TTL, presence, join/leave, and
//! the recovery cap. Configured by the embedder; knows nothing of files.

use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

/// What a channel keeps and announces. The default keeps nothing and
/// announces nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Publications kept for history and recovery; 0 keeps none.
    pub history_size: usize,
    /// How long a publication stays in history; `None` keeps it until trimmed
    /// by size. Ignored when `history_size` is 0.
    pub history_ttl: Option<Duration>,
    /// Whether the channel tracks who is subscribed.
    pub presence: bool,
    /// Whether subscribers receive join and leave events.
    pub join_leave: bool,
}

/// The boundary between namespace and the rest of a channel name.
pub const NAMESPACE_BOUNDARY: char = ':';

/// The prefix that marks a private channel (it needs a subscription token);
/// it is not part of the namespace.
pub const PRIVATE_PREFIX: char = '$';

/// Channel options for channels without a namespace and for each namespace.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Options of channels whose name has no `:`.
    pub without_namespace: Arc<ChannelOptions>,
    // Options by namespace name.
    namespaces: FxHashMap<Box<str>, Arc<ChannelOptions>>,
    /// Most publications a subscribe may replay on recovery (Centrifugo: 300).
    pub recovery_max_publications: usize,
    /// Longest channel name accepted (Centrifugo: 255).
    pub max_channel_length: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self::new(ChannelOptions::default())
    }
}

impl ChannelConfig {
    /// Channels without a namespace use `without_namespace`; a channel in a
    /// namespace is unknown until that namespace is added with
    /// [`Self::namespace`].
    pub fn new(without_namespace: ChannelOptions) -> Self {
        Self {
            without_namespace: Arc::new(without_namespace),
            namespaces: FxHashMap::default(),
            recovery_max_publications: 300,
            max_channel_length: 255,
        }
    }

    /// Adds (or replaces) the options of namespace `name`.
    pub fn namespace(mut self, name: &str, options: ChannelOptions) -> Self {
        self.namespaces.insert(name.into(), Arc::new(options));
        self
    }

    /// The namespace of `channel`, if it has one. A leading `$` (private
    /// channel) is not part of the namespace, and an empty namespace
    /// (`:x`) is no namespace.
    pub fn namespace_of(channel: &str) -> Option<&str> {
        let name = channel.strip_prefix(PRIVATE_PREFIX).unwrap_or(channel);
        name.split_once(NAMESPACE_BOUNDARY)
            .map(|(ns, _)| ns)
            .filter(|ns| !ns.is_empty())
    }

    /// The options of `channel`, or `None` when its namespace is unknown.
    pub fn resolve(&self, channel: &str) -> Option<&Arc<ChannelOptions>> {
        match Self::namespace_of(channel) {
            None => Some(&self.without_namespace),
            Some(ns) => self.namespaces.get(ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_by_namespace() {
        let chat = ChannelOptions {
            history_size: 10,
            ..Default::default()
        };
        let cfg = ChannelConfig::new(ChannelOptions::default()).namespace("chat", chat.clone());
        assert_eq!(**cfg.resolve("news").unwrap(), ChannelOptions::default());
        assert_eq!(**cfg.resolve("chat:42").unwrap(), chat);
        assert_eq!(
            **cfg.resolve("chat:a:b").unwrap(),
            chat,
            "only the first ':' splits"
        );
        assert!(cfg.resolve("nope:1").is_none());
        assert_eq!(
            **cfg.resolve("$chat:1").unwrap(),
            chat,
            "private prefix is not the namespace"
        );
        assert_eq!(
            **cfg.resolve(":x").unwrap(),
            ChannelOptions::default(),
            "empty namespace is none"
        );
    }
}
