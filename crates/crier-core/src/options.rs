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

/// The default boundary between namespace and the rest of a channel name.
pub const NAMESPACE_BOUNDARY: &str = ":";

/// The default prefix that marks a private channel (it needs a
/// subscription token); it is not part of the namespace.
pub const PRIVATE_PREFIX: &str = "$";

/// How a channel name splits into its namespace: the one resolver every
/// layer asks (the hub for options, the server for permissions, sources
/// for validation), so they can never disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelNames {
    // Separates the namespace from the rest (Centrifugo's
    // `channel.namespace_boundary`); never empty.
    boundary: Box<str>,
    // Marks a private channel (`channel.private_prefix`); empty: none.
    private_prefix: Box<str>,
}

impl Default for ChannelNames {
    fn default() -> Self {
        Self::new(NAMESPACE_BOUNDARY, PRIVATE_PREFIX)
    }
}

impl ChannelNames {
    /// Names split at `boundary` (an empty one means the default `:`), with
    /// `private_prefix` (empty: no private channels) stripped first.
    pub fn new(boundary: &str, private_prefix: &str) -> Self {
        let boundary = if boundary.is_empty() {
            NAMESPACE_BOUNDARY
        } else {
            boundary
        };
        Self {
            boundary: boundary.into(),
            private_prefix: private_prefix.into(),
        }
    }

    /// The namespace of `channel`, if it has one: the text before the first
    /// boundary, after the private prefix (`$chat:1` is in `chat`). An empty
    /// namespace (`:x`) is no namespace.
    pub fn namespace_of<'c>(&self, channel: &'c str) -> Option<&'c str> {
        Self::split(channel, &self.boundary, &self.private_prefix)
    }

    /// Whether `channel` is private (starts with the private prefix).
    pub fn is_private(&self, channel: &str) -> bool {
        Self::private(channel, &self.private_prefix)
    }

    /// [`Self::namespace_of`] for rules held elsewhere as plain strings
    /// (a configuration file's), without building a `ChannelNames`.
    pub fn split<'c>(channel: &'c str, boundary: &str, private_prefix: &str) -> Option<&'c str> {
        let boundary = if boundary.is_empty() {
            NAMESPACE_BOUNDARY
        } else {
            boundary
        };
        let name = match private_prefix {
            "" => channel,
            prefix => channel.strip_prefix(prefix).unwrap_or(channel),
        };
        match name.find(boundary) {
            Some(end) if end > 0 => Some(&name[..end]),
            _ => None,
        }
    }

    /// [`Self::is_private`] for a prefix held elsewhere.
    pub fn private(channel: &str, private_prefix: &str) -> bool {
        !private_prefix.is_empty() && channel.starts_with(private_prefix)
    }

    /// The boundary.
    pub fn boundary(&self) -> &str {
        &self.boundary
    }
}

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
    /// How names split into namespaces.
    pub names: ChannelNames,
    /// A channel in a namespace that is not configured gets the options of
    /// channels without a namespace, instead of being unknown (for a
    /// development server, where any channel should just work).
    pub unknown_namespaces_as_top_level: bool,
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
            names: ChannelNames::default(),
            unknown_namespaces_as_top_level: false,
        }
    }

    /// Adds (or replaces) the options of namespace `name`.
    pub fn namespace(mut self, name: &str, options: ChannelOptions) -> Self {
        self.namespaces.insert(name.into(), Arc::new(options));
        self
    }

    /// The options of `channel`, or `None` when its namespace is unknown.
    pub fn resolve(&self, channel: &str) -> Option<&Arc<ChannelOptions>> {
        match self.names.namespace_of(channel) {
            None => Some(&self.without_namespace),
            Some(ns) => self.namespaces.get(ns).or(self
                .unknown_namespaces_as_top_level
                .then_some(&self.without_namespace)),
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

    #[test]
    fn resolves_with_another_boundary_and_prefix() {
        let chat = ChannelOptions {
            history_size: 10,
            ..Default::default()
        };
        let mut cfg = ChannelConfig::new(ChannelOptions::default()).namespace("chat", chat.clone());
        cfg.names = ChannelNames::new("/", "#");
        assert_eq!(**cfg.resolve("chat/1").unwrap(), chat);
        assert_eq!(**cfg.resolve("#chat/1").unwrap(), chat);
        assert_eq!(**cfg.resolve("chat:1").unwrap(), ChannelOptions::default());
        assert!(cfg.names.is_private("#chat/1"));
        assert!(!cfg.names.is_private("$chat/1"));
        let none = ChannelNames::new("::", "");
        assert_eq!(none.namespace_of("$a::b"), Some("$a"));
    }

    #[test]
    fn the_boundary_is_the_one_given_or_the_default() {
        assert_eq!(ChannelNames::default().boundary(), ":");
        assert_eq!(ChannelNames::new("/", "#").boundary(), "/");
        assert_eq!(ChannelNames::new("", "#").boundary(), ":");
    }
}
