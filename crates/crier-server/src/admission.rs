//! The one admission path for every transport that accepts clients
//! (WebSocket, the uni transports, plain TCP, and the ones to come): who a
//! client is (its connection token, or the anonymous rules), whether the
//! node's limits let it in (`client.connection_limit`,
//! `connection_rate_limit`, `user_connection_limit`, each refusal counted
//! in `crier_limit_refusals_total`), and when its credentials lapse. A transport
//! only says which credentials it received; it never decides.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use crier_core::{Caller, ClientId, ClientReceiver, ConnectRequest, Decision, Hook};
use crier_proto::codes::{Disconnect, ErrorCode};

use crier_proto::client::ReplyError;

use crate::auth::{Rejection, SubscriptionOptions};
use crate::clock::{after, unix_now};
use crate::metrics::Transport;
use crate::node::Node;
use crate::proxy::Forwarded;
use crate::wire::code_of;

/// What a client presented to connect.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Credentials<'a> {
    /// A connection token (JWT); empty means none was sent.
    Token(&'a str),
    /// Nothing, on a listener that its configuration makes anonymous (a
    /// `[[tcp]]` listener without `token`): the anonymous rules of
    /// `client.*` do not apply, the limits do.
    ListenerAnonymous,
}

pub(crate) use crate::metrics::Peer;

/// Why a client was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// An error the client may recover from within the connection (109
    /// token expired, 110 expired).
    Error(ErrorCode),
    /// The connection must close with this.
    Disconnect(Disconnect),
    /// An error of the application's backend (the connect hook: the
    /// connect proxy), with its code and message.
    Custom(ReplyError),
}

/// Who an admitted client is.
#[derive(Debug)]
pub(crate) struct Identity {
    /// The user; empty for anonymous.
    pub user: String,
    /// Connection info from the token.
    pub conn_info: Option<Bytes>,
    /// Unix seconds when the credentials lapse.
    pub expires_at: Option<i64>,
    /// Server-side subscriptions from the token.
    pub subs: BTreeMap<String, SubscriptionOptions>,
    /// The client id the connect hook was told, to register it under.
    pub reserved: Option<ClientId>,
}

/// A client the hub has registered.
pub(crate) struct Admitted {
    /// Who it is.
    pub identity: Identity,
    /// Its hub id.
    pub id: ClientId,
    /// Its outbound queue.
    pub rx: ClientReceiver,
    /// Its user, as the hub keeps it: the session shares it rather than
    /// keeping a copy of its own (every connection keeps both).
    pub user: Arc<str>,
}

/// Decides who presents `credentials`: token verification, then
/// `client.insecure`, `allow_anonymous_connect_without_token` and
/// `disallow_anonymous_connection_tokens`, then an `expire_at` already past.
pub(crate) fn identify(node: &Node, peer: Peer, credentials: Credentials<'_>) -> Result<Identity, Refused> {
    identify_quietly(node, credentials).inspect_err(|refused| log_refusal(node, peer, "", refused))
}

fn identify_quietly(node: &Node, credentials: Credentials<'_>) -> Result<Identity, Refused> {
    let cfg = &node.config.client;
    let identity = match credentials {
        Credentials::Token(token) if !token.trim().is_empty() => {
            let claims = node
                .tokens
                .verify_connect(token.trim())
                .map_err(|e| match e.on_connect() {
                    Rejection::Error(code) => Refused::Error(code_of(code)),
                    Rejection::Disconnect(_) => Refused::Disconnect(Disconnect::INVALID_TOKEN),
                })?;
            // Centrifugo: a token with an empty `sub` is refused when
            // anonymous connection tokens are disallowed.
            if claims.user.is_empty() && cfg.disallow_anonymous_connection_tokens && !cfg.insecure {
                return Err(Refused::Disconnect(Disconnect::PERMISSION_DENIED));
            }
            let expires_at = claims.expires_at();
            Identity {
                user: claims.user,
                conn_info: claims.info,
                expires_at,
                subs: claims.subs,
                reserved: None,
            }
        }
        Credentials::Token(_) => {
            if !(cfg.insecure || cfg.allow_anonymous_connect_without_token || node.config.crier.dev) {
                return Err(Refused::Disconnect(Disconnect::INVALID_TOKEN));
            }
            Identity::anonymous()
        }
        Credentials::ListenerAnonymous => Identity::anonymous(),
    };
    // A valid token whose `expire_at` has passed: 110, as in Centrifugo
    // (an expired `exp` already failed verification with 109).
    if identity.expires_at.is_some_and(|t| t <= unix_now()) {
        return Err(Refused::Error(ErrorCode::Expired));
    }
    // Server-side subscriptions above the limit refuse the connection;
    // client-side ones get error 106 in `subscribe`.
    if cfg.channel_limit > 0 && identity.subs.len() > cfg.channel_limit {
        return Err(Refused::Disconnect(Disconnect::CHANNEL_LIMIT));
    }
    Ok(identity)
}

/// Registers `identity` with the hub if `client.connection_limit` and
/// `client.user_connection_limit` let it in.
pub(crate) fn register(node: &Node, peer: Peer, identity: Identity) -> Result<Admitted, Refused> {
    let user = identity.user.clone();
    register_quietly(node, identity).inspect_err(|refused| log_refusal(node, peer, &user, refused))
}

fn register_quietly(node: &Node, identity: Identity) -> Result<Admitted, Refused> {
    let cfg = &node.config.client;
    if cfg.connection_limit > 0 && node.hub.client_count() >= cfg.connection_limit {
        node.metrics.refused("connection_limit");
        return Err(Refused::Disconnect(Disconnect::CONNECTION_LIMIT));
    }
    if let Some(rate) = &node.connection_rate {
        // Nothing panics while holding it; a poisoned bucket still counts.
        if !rate.lock().unwrap_or_else(|e| e.into_inner()).take() {
            node.metrics.refused("connection_rate_limit");
            return Err(Refused::Disconnect(Disconnect::TOO_MANY_REQUESTS));
        }
    }
    // Anonymous connections share the empty user and are not counted.
    if cfg.user_connection_limit > 0
        && !identity.user.is_empty()
        && node.hub.clients_of_user(&identity.user).len() >= cfg.user_connection_limit
    {
        node.metrics.refused("user_connection_limit");
        return Err(Refused::Disconnect(Disconnect::CONNECTION_LIMIT));
    }
    let user = match identity.user.as_str() {
        "" => crier_core::anonymous_user(),
        named => Arc::from(named),
    };
    let (id, rx) = match identity.reserved {
        Some(id) => (
            id,
            node.hub.connect_as(id, user.clone(), identity.conn_info.clone()),
        ),
        None => node.hub.connect(user.clone(), identity.conn_info.clone()),
    };
    Ok(Admitted {
        identity,
        id,
        rx,
        user,
    })
}

/// Whether a client that names `requested` channels in its connect
/// request (a uni client, which cannot send subscribe commands) stays
/// within `client.channel_limit` with its token's channels, as a
/// bidirectional client's subscribes must: 3505 over it.
pub(crate) fn within_channel_limit<'a>(
    node: &Node,
    peer: Peer,
    identity: &Identity,
    requested: impl Iterator<Item = &'a String>,
) -> Result<(), Refused> {
    let limit = node.config.client.channel_limit;
    if limit == 0 {
        return Ok(());
    }
    let extra = requested.filter(|c| !identity.subs.contains_key(*c)).count();
    if identity.subs.len() + extra <= limit {
        return Ok(());
    }
    node.metrics.refused("channel_limit");
    let refused = Refused::Disconnect(Disconnect::CHANNEL_LIMIT);
    log_refusal(node, peer, &identity.user, &refused);
    Err(refused)
}

/// [`identify`] then [`register`].
pub(crate) fn admit(node: &Node, peer: Peer, credentials: Credentials<'_>) -> Result<Admitted, Refused> {
    register(node, peer, identify(node, peer, credentials)?)
}

/// Logs a refused connection at info (rate-limited node-wide, so a flood
/// of bad tokens cannot fill the disk): the transport, the user when
/// known, the remote address and the code.
pub(crate) fn log_refusal(node: &Node, peer: Peer, user: &str, refused: &Refused) {
    let Some(left_out) = node.metrics.client_problem_line() else {
        return;
    };
    let (transport, remote) = (peer.transport.label(), peer.remote_field());
    match refused {
        Refused::Error(code) => {
            let code = code.code();
            tracing::info!(transport, user, %remote, code, left_out, "connection refused");
        }
        Refused::Disconnect(d) => {
            let (code, reason) = (d.code, &d.reason);
            tracing::info!(transport, user, %remote, code, %reason, left_out, "connection refused");
        }
        Refused::Custom(e) => {
            let (code, reason) = (e.code, &e.message);
            tracing::info!(transport, user, %remote, code, %reason, left_out, "connection refused by the connect proxy");
        }
    }
}

/// What a client sent with its connect, for the connect hook.
pub(crate) struct Hello<'a> {
    /// The wire format (`json`, `protobuf`).
    pub protocol: &'static str,
    /// The connect request's `name`, `version` and `data`.
    pub name: &'a str,
    pub version: &'a str,
    pub data: Option<&'a [u8]>,
    /// The channels a unidirectional client asks for (its `subs`).
    pub channels: Vec<&'a str>,
    /// Its HTTP headers and emulated headers.
    pub forwarded: &'a Forwarded,
}

/// Whether a client without a token is the connect hook's to decide
/// (`client.proxy.connect`, or an embedder's hooks).
pub(crate) fn hooked(node: &Node) -> bool {
    node.hooks.decides(Hook::Connect)
}

/// Decides who a client without a token is by asking the node's connect
/// hook (the connect proxy, `client.proxy.connect`), then applies the
/// same rules a token's identity gets. Also the data for the connect
/// reply, if the hook gave some. A hook that cannot decide (a backend
/// that times out, is down, answers a status other than 200 or not the
/// protocol's JSON) refuses with 100 internal (temporary: SDKs reconnect
/// with backoff).
pub(crate) async fn identify_by_proxy(
    node: &Node,
    peer: Peer,
    hello: &Hello<'_>,
) -> Result<(Identity, Option<Bytes>), Refused> {
    let outcome = ask_connect_proxy(node, peer.transport, hello).await;
    if let Err(refused) = &outcome {
        log_refusal(node, peer, "", refused);
    }
    outcome
}

async fn ask_connect_proxy(
    node: &Node,
    transport: Transport,
    hello: &Hello<'_>,
) -> Result<(Identity, Option<Bytes>), Refused> {
    // The id the client will have: the backend sees it, as in Centrifugo.
    let id = node.hub.reserve_id();
    let request = ConnectRequest {
        caller: Caller {
            id,
            user: "",
            transport: transport.label(),
            protocol: hello.protocol,
            context: Some(hello.forwarded),
        },
        name: hello.name,
        version: hello.version,
        data: hello.data,
        channels: &hello.channels,
    };
    let answer = match node.hooks.connect(request).await {
        Decision::Allow(answer) => answer,
        Decision::Refuse { code, reason } => {
            return Err(Refused::Custom(ReplyError {
                code,
                message: reason.into(),
                temporary: false,
            }))
        }
        Decision::Disconnect { code, reason } => {
            return Err(Refused::Disconnect(Disconnect::new(code, reason)))
        }
        Decision::Unavailable => return Err(Refused::Error(ErrorCode::Internal)),
    };
    let subs = answer
        .channels
        .into_iter()
        .map(|(channel, s)| {
            let options = SubscriptionOptions {
                info: s.info,
                data: s.data,
                ..Default::default()
            };
            (channel, options)
        })
        .collect();
    let identity = Identity {
        user: answer.user,
        conn_info: answer.info,
        expires_at: answer.expire_at,
        subs,
        reserved: Some(id),
    };
    if identity.expires_at.is_some_and(|t| t <= unix_now()) {
        return Err(Refused::Error(ErrorCode::Expired));
    }
    let limit = node.config.client.channel_limit;
    if limit > 0 && identity.subs.len() > limit {
        return Err(Refused::Disconnect(Disconnect::CHANNEL_LIMIT));
    }
    Ok((identity, answer.data))
}

/// When a connection whose credentials lapse at `expires_at` must close
/// (3005) unless refreshed: `client.expired_close_delay` later, on every
/// transport.
pub(crate) fn deadline(node: &Node, expires_at: Option<i64>) -> Option<SystemTime> {
    expires_at.map(|t| after(t, node.config.client.expired_close_delay))
}

impl Identity {
    fn anonymous() -> Self {
        Identity {
            user: String::new(),
            conn_info: None,
            expires_at: None,
            subs: BTreeMap::new(),
            reserved: None,
        }
    }
}
