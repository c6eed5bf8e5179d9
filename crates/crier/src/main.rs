//! The `crier` command: argument parsing and wiring only.
//!
//! - [`serve`] runs a node (`crier serve`);
//! - `check-config` prints [`crier_server::check_config`]'s report;
//! - [`token`] signs HS256 connection and subscription tokens;
//! - [`publish`] calls the server HTTP API's `publish` method;
//! - [`subscribe`] is a minimal client protocol v2 WebSocket client (JSON or
//!   protobuf, `--format`) that prints publications as JSON lines;
//! - [`bench`] is a bounded load generator for the WebSocket fan-out path;
//! - [`genconfig`] prints a commented starter configuration with fresh secrets;
//! - `completions` prints a shell completion script (clap_complete);
//! - [`logging`] installs the logger (`log.*`, `crier.log_format`, `RUST_LOG`).
//!
//! Protocol, configuration and authentication logic live in `crier-server`;
//! this crate must never grow any of its own. Every failure a user can cause
//! becomes an `anyhow` error with context, printed once by [`main`].
#![forbid(unsafe_code)]

mod bench;
mod genconfig;
mod logging;
mod publish;
mod serve;
mod subscribe;
mod token;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// crier: a real-time broadcast hub speaking Centrifugo's client protocol v2
/// and server HTTP API.
#[derive(Debug, Parser)]
#[command(name = "crier", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(serve::Args),
    CheckConfig(CheckConfigArgs),
    Token(token::Args),
    Publish(publish::Args),
    Subscribe(subscribe::Args),
    Bench(bench::Args),
    Genconfig(genconfig::Args),
    /// Print crier's version.
    Version,
    Completions(CompletionsArgs),
}

/// Print a shell completion script for crier.
///
/// bash: `crier completions bash > ~/.local/share/bash-completion/completions/crier`;
/// zsh: into a directory on `$fpath` as `_crier`; fish:
/// `crier completions fish > ~/.config/fish/completions/crier.fish`.
#[derive(Debug, clap::Args)]
struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Check a configuration file and print what the server would run with.
///
/// Exits 0 when the file is usable (warnings are printed), 1 otherwise. The
/// `CRIER_*` environment variables are not applied, so the answer does not
/// depend on the shell it runs in.
#[derive(Debug, clap::Args)]
struct CheckConfigArgs {
    /// The configuration file (.toml, .json, .yaml or .yml).
    file: PathBuf,
    /// Report unknown keys as warnings instead of errors.
    #[arg(long)]
    allow_unknown_keys: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `crier serve` installs the logger itself, as its configuration says.
    let logging = match cli.command {
        Command::Serve(_) => Ok(()),
        _ => logging::init(logging::Logs::default()),
    };
    let result = logging.and_then(|()| match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::CheckConfig(args) => check_config(&args.file, args.allow_unknown_keys),
        Command::Token(args) => token::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Subscribe(args) => subscribe::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Genconfig(args) => genconfig::run(args),
        Command::Version => print_line(&format!("crier {}", env!("CARGO_PKG_VERSION"))).map_err(Into::into),
        Command::Completions(args) => completions(args.shell),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `crier subscribe news | head -1`: the reader left, which is not an
        // error worth a message.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", render(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, like `{:#}`, but skipping a cause
/// whose text its parent already printed (many error types put their source
/// in their own message and also return it from `source()`).
fn render(e: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !previous.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        previous = text;
    }
    line
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command(), "crier", &mut out);
    out.flush()?;
    Ok(())
}

fn check_config(file: &Path, allow_unknown_keys: bool) -> anyhow::Result<()> {
    // The error already names file:line:col and the key.
    let report = crier_server::check_config(file, allow_unknown_keys)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{report}")?;
    out.flush()?;
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes one line to stdout and flushes it, so output reaches pipes as it
/// happens. A closed pipe comes back as an error for [`main`] to recognise.
fn print_line(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
