//! Why a server could not start or stopped.

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A `[[watch]]` path could not be watched (e.g. the inotify watch limit).
    #[error("{key}: cannot watch {path}: {source}")]
    Watch {
        /// The config key, `watch[i].path`.
        key: String,
        /// The path asked for.
        path: String,
        /// What the OS (through notify) said.
        source: notify::Error,
    },
}
