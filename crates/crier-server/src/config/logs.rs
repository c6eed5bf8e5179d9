//! `log.*` (Centrifugo v6: how much to log and where) and
//! `crier.log_format` (crier's own: text or JSON lines).
//!
//! These are plain values: installing the logger, opening `log.file` and
//! honouring `RUST_LOG` are the binary's business, never this module's.

use serde::{Deserialize, Serialize};

/// `log.*`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// The least severe level written; `RUST_LOG`, when set, replaces it.
    pub level: LogLevel,
    /// A file to append log lines to; empty = standard error. Opened once
    /// at start (SIGHUP does not reopen it).
    pub file: String,
}

/// `log.level`, as Centrifugo v6 spells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Nothing at all.
    None,
    /// Everything, down to each frame's handling.
    Trace,
    /// Connects, disconnects and other per-client events.
    Debug,
    /// Start, stop and client problems (refused tokens, origins, limits).
    #[default]
    Info,
    /// Only what may need an operator.
    Warn,
    /// Only failures.
    Error,
}

impl LogLevel {
    /// The name as written in `log.level`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::None => "none",
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `crier.log_format`: how each log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event: time, level, target, message,
    /// `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with
    /// `message`) and `target`.
    Json,
}
