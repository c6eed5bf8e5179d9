//! `crier serve`: load the configuration, apply the command-line overrides,
//! bind, say where to connect, and run until SIGINT or SIGTERM.
//!
//! What `--dev` relaxes is decided here (the config module only records
//! `crier.dev`); everything else is `crier_server`'s business.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use crier_server::config::{Config, Warning, WarningKind};
use crier_server::Server;

use crate::print_line;

/// Run a crier node.
///
/// Settings come from the file (optional), then `CRIER_*` environment
/// variables (`CRIER_HTTP_SERVER_PORT=9000` sets `http_server.port`), then
/// these flags. Stops gracefully on Ctrl-C or SIGTERM.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (.toml, .json, .yaml or .yml; Centrifugo v6 keys).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Development mode, INSECURE: anyone may connect without a token,
    /// subscribe and publish anywhere, and call the HTTP API without a key;
    /// the unidirectional transports (SSE, HTTP streaming, uni WebSocket)
    /// are on. For local trials only.
    #[arg(long)]
    dev: bool,
    /// Interface to listen on (overrides http_server.address; "" = all).
    #[arg(long, value_name = "A")]
    address: Option<String>,
    /// Port to listen on (overrides http_server.port; 0 = any free port).
    #[arg(long, value_name = "P")]
    port: Option<u16>,
    /// Start even when the config file has keys crier does not know
    /// (each is a warning instead of an error).
    #[arg(long)]
    allow_unknown_keys: bool,
}

const DEV_WARNING: &str = "\
!!! ================================================================ !!!
!!!  crier is running in DEVELOPMENT mode (--dev). THIS IS INSECURE:  !!!
!!!   - anyone who can reach this port can connect without a token,  !!!
!!!   - subscribe to and publish in any channel,                     !!!
!!!   - call the whole HTTP API without an API key,                  !!!
!!!   - and use the admin web UI (at /) without a password.          !!!
!!!  Use it for local trials only. Never expose it to a network.     !!!
!!! ================================================================ !!!";

/// The options every channel gets under `--dev` without a config file
/// (docs/configuration.md, "Development mode").
fn dev_channels(o: &mut crier_server::config::ChannelOptions) {
    o.presence = true;
    // No join and leave: the hub pushes them to every subscriber, which
    // makes each connect a fan-out to the whole channel (quadratic in its
    // subscribers: against `--dev`, 7,520 of `crier bench`'s 19,000
    // subscribers could not subscribe in time). A config file turns them on.
    o.history_size = 100;
    o.history_ttl = std::time::Duration::from_secs(300);
    o.force_recovery = true;
    o.force_positioning = true;
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = Config::load(args.config.as_deref()).context("cannot load the configuration")?;
    if let (Some(path), false) = (&args.config, args.allow_unknown_keys) {
        crier_server::config::refuse_unknown_keys(path, &loaded.config, &loaded.warnings)
            .context("the configuration has keys crier does not know")?;
    }
    let mut config = loaded.config;
    if args.dev {
        config.crier.dev = true;
        config.client.insecure = true;
        config.http_api.insecure = true;
        // Every transport on, so each can be tried without a config file.
        config.uni_sse.enabled = true;
        config.uni_http_stream.enabled = true;
        config.uni_websocket.enabled = true;
        config.http_stream.enabled = true;
        config.sse.enabled = true;
        if !config.admin.enabled {
            // The admin UI at `/`, with no login (the warning says so).
            config.admin.enabled = true;
            config.admin.insecure = true;
        }
        if args.config.is_none() {
            // With no file to say otherwise, every channel shows what crier
            // does: history and recovery, and presence.
            // A config file given with --dev keeps its own channel options.
            dev_channels(&mut config.channel.without_namespace);
        }
        eprintln!("{DEV_WARNING}");
    }
    if let Some(address) = args.address {
        config.http_server.address = address;
    }
    if let Some(port) = args.port {
        config.http_server.port = port;
    }
    // `load` validated before the overrides; validate what will actually run.
    // Its advice replaces the advice `load` gave, which may be stale now.
    let advice = config.validate().context("invalid configuration")?;
    let log_file = (!config.log.file.is_empty()).then(|| std::path::Path::new(&config.log.file));
    crate::logging::init(crate::logging::Logs {
        level: config.log.level,
        file: log_file,
        format: config.crier.log_format,
    })?;
    let mut warnings: Vec<Warning> = loaded
        .warnings
        .into_iter()
        .filter(|w| w.kind != WarningKind::Advice)
        .chain(advice)
        .collect();
    let unreachable = !config.client.insecure
        && !config.client.token.has_keys()
        && !config.client.allow_anonymous_connect_without_token;
    // Said at length below (no key) or above (--dev), with what to do.
    warnings.retain(|w| {
        let said = (unreachable && w.key == "client.token")
            || (args.dev && (w.key == "client.insecure" || w.key == "admin.insecure"));
        !(w.kind == WarningKind::Advice && said)
    });
    // Through the logger, so `log.file` and the JSON format apply to them.
    for Warning { key, message, .. } in &warnings {
        tracing::warn!(%key, "{message}");
    }
    if unreachable {
        tracing::warn!(
            key = "client.token",
            "no client can connect: no token key is configured (client.token.*) \
             and client.insecure is off. To fix it, set client.token.hmac_secret_key in the \
             config file (or CRIER_CLIENT_TOKEN_HMAC_SECRET_KEY) and give clients tokens from \
             `crier token --user ID`; or, for a local trial only, run `crier serve --dev`."
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, args.config))
}

async fn serve(config: Config, path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let insecure_client = config.client.insecure;
    let needs_token = !insecure_client && config.client.token.has_keys();
    let anonymous_too = config.client.allow_anonymous_connect_without_token;
    let api = (!config.http_api.disabled).then(|| {
        let prefix = config.http_api.handler_prefix.trim_end_matches('/').to_owned();
        (prefix, config.http_api.insecure)
    });
    let admin = config.admin.enabled.then(|| {
        let prefix = config.admin.handler_prefix.trim_end_matches('/').to_owned();
        (prefix, config.admin.insecure)
    });
    let (http, ws) = match config.http_server.tls.enabled {
        true => ("https", "wss"),
        false => ("http", "ws"),
    };
    let server = Server::bind(config).await.context("cannot start the server")?;
    let bound = server.local_addr().context("cannot read the bound address")?;
    // Set up signal handling before saying "listening", so a supervisor that
    // signals right after that line is handled gracefully.
    let node = server.node().clone();
    let reload = move || reload(&node, path.as_deref());
    let signal = shutdown_signal(reload).context("cannot install signal handlers")?;

    let connect = connectable(bound);
    print_line(&format!("crier listening on {http}://{bound}"))?;
    print_line(&format!("  WebSocket: {ws}://{connect}/connection/websocket"))?;
    match &api {
        Some((prefix, _)) => print_line(&format!("  HTTP API:  POST {http}://{connect}{prefix}/<method>"))?,
        None => print_line("  HTTP API:  disabled")?,
    }
    if let Some((prefix, insecure)) = &admin {
        let login = if *insecure {
            " (no login: admin.insecure)"
        } else {
            ""
        };
        print_line(&format!("  admin UI:  {http}://{connect}{prefix}/{login}"))?;
    }
    print_line(&format!("  engine:    {}", server.node().engine_status().await))?;
    let default_port = bound.port() == 8000 && connect.ip().is_loopback() && connect.is_ipv4();
    let api_default = api
        .as_ref()
        .is_some_and(|(prefix, insecure)| prefix == "/api" && *insecure);
    if needs_token {
        let or_not = if anonymous_too {
            " (or without one, anonymously)"
        } else {
            ""
        };
        print_line(&format!(
            "  clients connect with a token{or_not}: crier subscribe CHANNEL --token \"$(crier token --user ID)\""
        ))?;
    } else if insecure_client && api_default {
        let (sub_url, pub_url) = if default_port {
            (String::new(), String::new())
        } else {
            (
                format!(" --url ws://{connect}/connection/websocket"),
                format!(" --url http://{connect}"),
            )
        };
        print_line(&format!("  try:       crier subscribe news{sub_url}"))?;
        print_line(&format!(
            "  and then:  crier publish news '{{\"text\":\"hi\"}}'{pub_url}"
        ))?;
    }

    server.run(signal).await.context("the server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// The address a local client should dial: the bound one, except that an
/// unspecified address (all interfaces) is reached through loopback.
fn connectable(bound: SocketAddr) -> SocketAddr {
    let mut addr = bound;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// What SIGHUP re-reads: the configuration (file and environment), of
/// which only the TLS certificate, key and client CA apply at run time
/// (to the connections accepted afterwards); the log says that the rest
/// needs a restart.
fn reload(node: &crier_server::Node, path: Option<&std::path::Path>) {
    let loaded = match Config::load(path) {
        Ok(loaded) => loaded,
        Err(error) => {
            return tracing::error!(%error, "SIGHUP: the configuration does not load; nothing changed");
        }
    };
    match node.reload_tls(&loaded.config) {
        Ok(0) => {}
        Ok(listeners) => tracing::info!(
            listeners,
            "SIGHUP: TLS certificate and key re-read; new connections use them, open ones keep theirs"
        ),
        Err(error) => {
            tracing::error!(%error, "SIGHUP: TLS not reloaded where this names; that listener keeps its certificate")
        }
    }
    tracing::warn!("SIGHUP: only the TLS files are re-read at run time; restart crier to apply other configuration changes");
}

/// Completes on the first SIGINT or SIGTERM; runs `reload` on each SIGHUP.
/// A second Ctrl-C during the graceful shutdown exits at once, for whoever
/// does not want to wait. The handlers are installed here, not on first
/// poll, so failures show at start.
#[cfg(unix)]
fn shutdown_signal(
    reload: impl Fn() + Send + 'static,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    // SIGHUP: a reload, by convention (`reload`).
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {
                    tracing::info!("interrupted: shutting down gracefully (Ctrl-C again to stop at once)");
                    break;
                }
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM: shutting down gracefully");
                    break;
                }
                _ = hangup.recv() => reload(),
            }
        }
        tokio::spawn(async move {
            if interrupt.recv().await.is_some() {
                tracing::warn!("interrupted again: stopping without waiting for clients");
                std::process::exit(130);
            }
        });
    })
}

/// Completes on the first Ctrl-C (no SIGHUP, so no reload).
#[cfg(not(unix))]
fn shutdown_signal(
    _reload: impl Fn() + Send + 'static,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
        tracing::info!("interrupted: shutting down gracefully");
    })
}
