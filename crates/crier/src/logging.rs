//! Installs the process's one logger: which events (`log.level`, or
//! `RUST_LOG` when set), where to (`log.file`, or standard error) and how
//! (`crier.log_format`: text or JSON lines).
//!
//! Standard output is never written here: it stays clean for the addresses
//! and JSON lines other programs read. The logger is installed once; SIGHUP
//! changes none of it (docs/configuration.md, "Logs").

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use crier_server::config::{LogFormat, LogLevel};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

/// What the configuration says about logs; the default (info, standard
/// error, text) serves every command but `serve`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Logs<'a> {
    /// `log.level`.
    pub level: LogLevel,
    /// `log.file`; `None` = standard error.
    pub file: Option<&'a Path>,
    /// `crier.log_format`.
    pub format: LogFormat,
}

/// Installs the logger. A non-empty `RUST_LOG` replaces `log.level`
/// entirely (its directives can name targets: `RUST_LOG=crier_server=debug`).
pub fn init(logs: Logs<'_>) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).with_context(|| format!("invalid RUST_LOG {directives:?}"))?
        }
        _ => EnvFilter::default().add_directive(level_filter(logs.level).into()),
    };
    let (writer, ansi) = match logs.file {
        Some(path) => {
            // Appended to, never truncated, so a restart keeps the earlier
            // lines and an external rotation by copy-and-truncate works.
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("log.file: cannot open {}", path.display()))?;
            (BoxMakeWriter::new(std::sync::Mutex::new(file)), false)
        }
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match logs.format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::None => LevelFilter::OFF,
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}
