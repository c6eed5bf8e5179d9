//! One client connection's protocol state, independent of the transport:
//! connect (token, anonymous, server-side subscriptions), then every command
//! of client protocol v2, each answered through the hub's queue for that
//! client so replies and pushes keep their order. Knows no sockets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use crier_core::{
    Caller, Catchup, ClientId, ClientInfo, ClientReceiver, Decision, Exclusion, Hook, PublishOptions,
    PublishRequest, RefreshAnswer, RefreshRequest, RpcRequest, SubscribeOptions, SubscribeRequest,
};
use crier_proto::client::{self as wire, Command, Payload, Reply, ReplyError, Request};
use crier_proto::codes::{Disconnect, ErrorCode, Unsubscribe};

pub(crate) use crate::admission::Refused;
use crate::admission::{self, Admitted, Credentials, Identity, Peer};
use crate::auth::{ChannelAction, Permission, Rejection, Requester, SubscriptionOptions};
use crate::clock::{after, unix_now, TokenBucket};
use crate::config::ChannelOptions;
use crate::metrics::Transport;
use crate::node::{Node, VERSION};
use crate::proxy::Forwarded;
use crate::wire::{
    code_of, hub_error_code, reason_of, subscribe_result, wire_client_info, Codec, SubscriptionMode,
};

/// Why a connect attempt did not produce a connection.
#[derive(Debug)]
pub enum Refusal {
    /// Answer with this error reply; the client may try again.
    Reply(Bytes),
    /// Close the connection with this disconnect.
    Disconnect(Disconnect),
}

/// A session that has just connected.
pub struct Opened {
    /// The connect result to send.
    pub result: wire::ConnectResult,
    /// The client's queue.
    pub rx: ClientReceiver,
    /// The client's hub id.
    pub id: ClientId,
}

/// Who sent a command: what every command handler needs, taken once per
/// command from the connected state (so a handler cannot run for a
/// session that has not connected).
#[derive(Clone)]
struct Who {
    id: ClientId,
    user: Arc<str>,
    // Boxed: most connections have none, and every connection's task
    // holds its session (8 bytes instead of 32).
    conn_info: Option<Box<Bytes>>,
}

/// A connected client's identity.
struct Connected {
    who: Who,
    // Unix seconds after which the connection needs a refreshed token
    // (never 0, Centrifugo's "no expiry": 8 bytes, not an `Option<i64>`'s
    // 16, in every connection's task).
    expiry: Option<std::num::NonZeroI64>,
    // Unix seconds after which each subscription made with an expiring
    // subscription token needs a `sub_refresh` (client-side subscriptions
    // only: server-side ones come from the connection token).
    sub_expires_at: Expiries,
}

impl Connected {
    fn expires_at(&self) -> Option<i64> {
        self.expiry.map(std::num::NonZeroI64::get)
    }

    fn set_expires_at(&mut self, at: Option<i64>) {
        self.expiry = at.and_then(std::num::NonZeroI64::new);
    }
}

/// Subscriptions' expiries (Unix seconds), by channel. Boxed, and only
/// while there are any: most connections have none, and an empty map is
/// 32 bytes in every connection's task (8 here).
#[derive(Default)]
struct Expiries(Option<Box<rustc_hash::FxHashMap<Arc<str>, i64>>>);

impl Expiries {
    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &i64)> {
        self.0.iter().flat_map(|m| m.iter())
    }

    fn insert(&mut self, channel: Arc<str>, at: i64) {
        self.0.get_or_insert_with(Default::default).insert(channel, at);
    }

    fn remove(&mut self, channel: &str) {
        if let Some(m) = &mut self.0 {
            m.remove(channel);
            if m.is_empty() {
                self.0 = None;
            }
        }
    }
}

/// The protocol state of one connection.
pub struct Session {
    node: Arc<Node>,
    // How this connection's replies and pushes are encoded; the session
    // never encodes on its own.
    codec: Codec,
    // Which transport carries it, for the logs.
    transport: Transport,
    // The address of the client's socket, for the logs.
    remote: Option<Remote>,
    connected: Option<Connected>,
    // What few sessions have (see `Extras`): boxed and absent otherwise,
    // as every connection's task holds its session.
    extras: Option<Box<Extras>>,
}

/// The address of a client's socket, kept for the logs by every
/// connection's session, and so in every connection's task: an IPv4
/// address and its port inline (8 bytes more in the session than a box,
/// a 48-byte allocation less), anything else boxed (a `SocketAddr` is 32
/// bytes).
enum Remote {
    V4([u8; 4], u16),
    Other(Box<SocketAddr>),
}

impl Remote {
    fn new(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(v4) => Remote::V4(v4.ip().octets(), v4.port()),
            other => Remote::Other(Box::new(other)),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Remote::V4(ip, port) => SocketAddr::from((*ip, *port)),
            Remote::Other(addr) => **addr,
        }
    }
}

/// What only some sessions have.
#[derive(Default)]
struct Extras {
    // `client.command_rate_limit`, when set (most nodes set none).
    commands: Option<TokenBucket>,
    // The id of an emulated session (`http_stream`, `sse`), sent in the
    // connect result for the client's POSTs to `/emulation`.
    emulated: Option<String>,
    // What the node's hooks (the backend's proxies) may see of the
    // client's request.
    forwarded: Forwarded,
}

impl Session {
    /// A session that has not connected yet.
    /// `remote`: the address of the client's socket, when known.
    pub fn new(node: Arc<Node>, codec: Codec, transport: Transport, remote: Option<SocketAddr>) -> Self {
        let extras = match node.config.client.command_rate_limit {
            0 => None,
            rate => Some(Box::new(Extras {
                commands: Some(TokenBucket::new(rate)),
                ..Extras::default()
            })),
        };
        Self {
            node,
            codec,
            transport,
            remote: remote.map(Remote::new),
            connected: None,
            extras,
        }
    }

    /// The node this session belongs to.
    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// How this session's replies and pushes are encoded.
    pub(crate) fn codec(&self) -> Codec {
        self.codec
    }

    /// The headers of the client's HTTP request that a proxy forwards
    /// (`http_headers`), taken by the transport from its request.
    pub(crate) fn set_http_headers(&mut self, headers: axum::http::HeaderMap) {
        if !headers.is_empty() {
            self.extras().forwarded.http = headers;
        }
    }

    fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// What the hooks may see of this client's request (the proxies
    /// forward it).
    fn forwarded(&self) -> std::borrow::Cow<'_, Forwarded> {
        match &self.extras {
            Some(e) => std::borrow::Cow::Borrowed(&e.forwarded),
            None => std::borrow::Cow::Owned(Forwarded::default()),
        }
    }

    /// Marks this session as emulated, with the id its client's commands
    /// will name (sent as `session` in the connect result).
    pub(crate) fn set_emulated(&mut self, id: String) {
        self.extras().emulated = Some(id);
    }

    /// The hub id of the connected client.
    pub fn client_id(&self) -> Option<ClientId> {
        self.connected.as_ref().map(|c| c.who.id)
    }

    /// The next moment a credential of this connection lapses, if any: the
    /// connection token's expiry plus `client.expired_close_delay`, or a
    /// subscription token's plus `client.expired_sub_close_delay`. The
    /// transport calls [`Session::expire`] then.
    pub fn deadline(&self) -> Option<SystemTime> {
        let c = self.connected.as_ref()?;
        let cfg = &self.node.config.client;
        let connection = if self.node.hooks.decides(Hook::Refresh) {
            // The hook is asked at the expiry itself.
            c.expires_at().map(|t| after(t, std::time::Duration::ZERO))
        } else {
            admission::deadline(&self.node, c.expires_at())
        };
        let subscriptions = c
            .sub_expires_at
            .iter()
            .map(|(channel, &t)| {
                if self.node.hooks.decides(Hook::SubRefresh(channel)) {
                    // The hook is asked at the expiry itself.
                    after(t, std::time::Duration::ZERO)
                } else {
                    after(t, cfg.expired_sub_close_delay)
                }
            })
            .min();
        connection.into_iter().chain(subscriptions).min()
    }

    /// Acts on lapsed credentials, as Centrifugo does: a connection not
    /// refreshed in time must close with 3005 (the `Err`); a subscription
    /// not refreshed in time is unsubscribed with an `unsubscribe` push, code
    /// 2501, after which the client resubscribes with a new token.
    ///
    /// With a refresh hook (the refresh proxy, `client.proxy.refresh`), an
    /// expiring connection is the backend's to prolong instead: asked at
    /// the expiry, its new `expire_at` moves it, `expired` closes it with
    /// 3005, and a failed call is retried [`REFRESH_RETRY`] later (the
    /// connection stays). The same for subscriptions with a sub_refresh
    /// hook, ended with an unsubscribe push 2501.
    pub async fn expire(&mut self) -> Result<(), Disconnect> {
        let node = self.node.clone();
        let cfg = &node.config.client;
        let now = SystemTime::now();
        let refreshed = node.hooks.decides(Hook::Refresh);
        if refreshed {
            let due = self.connected.as_ref().and_then(|c| {
                c.expires_at()
                    .filter(|&t| after(t, std::time::Duration::ZERO) <= now)
                    .map(|_| c.who.clone())
            });
            if let Some(who) = due {
                let request = RefreshRequest {
                    caller: self.caller(&who),
                    channel: None,
                };
                let outcome = denied(node.hooks.refresh(request).await);
                let Some(c) = self.connected.as_mut() else {
                    return Ok(());
                };
                match prolonged(outcome) {
                    Some(Ok(t)) => c.set_expires_at(Some(t)),
                    // No new expiry, or the backend failed: ask again soon.
                    Some(Err(())) => c.set_expires_at(Some(unix_now() + REFRESH_RETRY)),
                    None => return Err(Disconnect::EXPIRED),
                }
            }
        }
        let Some(c) = self.connected.as_mut() else {
            return Ok(());
        };
        if !refreshed
            && c.expires_at()
                .is_some_and(|t| after(t, cfg.expired_close_delay) <= now)
        {
            return Err(Disconnect::EXPIRED);
        }
        // Subscriptions at their expiry whose namespace has a sub_refresh
        // proxy: the backend prolongs or ends them.
        let asked: Vec<Arc<str>> = c
            .sub_expires_at
            .iter()
            .filter(|(_, &t)| after(t, std::time::Duration::ZERO) <= now)
            .map(|(channel, _)| channel.clone())
            .filter(|channel| node.hooks.decides(Hook::SubRefresh(channel)))
            .collect();
        let who = c.who.clone();
        let mut ended = Vec::new();
        for channel in asked {
            let request = RefreshRequest {
                caller: self.caller(&who),
                channel: Some(&channel),
            };
            let outcome = denied(node.hooks.refresh(request).await);
            let Some(c) = self.connected.as_mut() else {
                return Ok(());
            };
            match prolonged(outcome) {
                Some(Ok(t)) => {
                    c.sub_expires_at.insert(channel, t);
                }
                Some(Err(())) => {
                    c.sub_expires_at.insert(channel, unix_now() + REFRESH_RETRY);
                }
                None => ended.push(channel),
            }
        }
        let Some(c) = self.connected.as_mut() else {
            return Ok(());
        };
        let lapsed: Vec<Arc<str>> = c
            .sub_expires_at
            .iter()
            .filter(|(_, &t)| after(t, cfg.expired_sub_close_delay) <= now)
            .map(|(channel, _)| channel.clone())
            .filter(|channel| !node.hooks.decides(Hook::SubRefresh(channel)))
            .chain(ended)
            .collect();
        let (cid, codec) = (c.who.id, self.codec);
        for channel in lapsed {
            c.sub_expires_at.remove(&channel);
            // `false`: already unsubscribed (e.g. by the server API).
            if let Ok(true) = node.hub.unsubscribe(cid, &channel) {
                let _ = node
                    .hub
                    .send_raw(cid, codec.unsubscribe(&channel, &Unsubscribe::EXPIRED));
            }
        }
        Ok(())
    }

    /// Where the client connects from, for the logs.
    fn peer(&self) -> Peer {
        Peer {
            transport: self.transport,
            remote: self.remote.as_ref().map(Remote::addr),
        }
    }

    /// `who` as the hooks see it.
    fn caller<'a>(&'a self, who: &'a Who) -> Caller<'a> {
        Caller {
            id: who.id,
            user: &who.user,
            transport: self.transport.label(),
            protocol: self.codec.label(),
            context: self.extras.as_deref().map(|e| &e.forwarded as _),
        }
    }

    /// Ends the session: the hub forgets the client and its writer closes
    /// the transport with `disconnect`.
    pub fn close(&mut self, disconnect: &Disconnect) {
        self.end(disconnect, "client disconnected");
    }

    /// Ends the session the hub already ended with `disconnect` (a slow
    /// consumer dropped, a server API disconnect), which the transport
    /// sent: logged as the server's decision.
    pub fn closed_by_hub(&mut self, disconnect: &Disconnect) {
        self.end(disconnect, "client disconnected by the server");
    }

    fn end(&mut self, disconnect: &Disconnect, what: &'static str) {
        if let Some(c) = self.connected.take() {
            self.node.forget_format(c.who.id, self.codec);
            let (transport, code, reason) = (self.transport.label(), disconnect.code, &disconnect.reason);
            let format = self.codec.label();
            if is_problem(code) {
                if let Some(left_out) = self.node.metrics.client_problem_line() {
                    let remote = self.peer().remote_field();
                    tracing::info!(client = %c.who.id, user = %c.who.user, transport, %remote, format, code, %reason, left_out, "{what}");
                }
            } else {
                tracing::debug!(client = %c.who.id, user = %c.who.user, transport, remote = %self.peer().remote_field(), format, code, %reason, "{what}");
            }
            self.node.hub.disconnect(c.who.id, reason_of(disconnect));
        }
    }

    /// Handles the connect command. On success returns the reply frame (to
    /// be written before anything queued) and the client's queue.
    pub async fn connect(
        &mut self,
        id: u32,
        req: wire::ConnectRequest,
    ) -> Result<(Bytes, ClientReceiver), Refusal> {
        match self.open(req, false).await {
            Ok(Opened { result, rx, .. }) => {
                let reply = Reply {
                    id,
                    connect: Some(result),
                    ..Default::default()
                };
                Ok((self.codec.reply(&reply), rx))
            }
            Err(Refused::Error(code)) => Err(Refusal::Reply(self.codec.error(id, code))),
            Err(Refused::Custom(e)) => Err(Refusal::Reply(self.codec.reply(&Reply::error(id, e)))),
            Err(Refused::Disconnect(d)) => Err(Refusal::Disconnect(d)),
        }
    }

    /// Authenticates and registers the client; returns the connect result
    /// and the client's queue. Unidirectional transports (`uni`) also
    /// subscribe the channels named in the request's `subs` that the client
    /// may subscribe to, since their clients cannot send subscribe commands.
    pub async fn open(&mut self, req: wire::ConnectRequest, uni: bool) -> Result<Opened, Refused> {
        if self.connected.is_some() {
            return Err(Refused::Disconnect(Disconnect::BAD_REQUEST));
        }
        let node = self.node.clone();
        let client_cfg = &node.config.client;
        let (identity, data) = if req.token.trim().is_empty() && admission::hooked(&node) {
            if !req.headers.is_empty() {
                self.extras().forwarded.emulated = req
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect();
            }
            let forwarded = self.forwarded();
            let hello = admission::Hello {
                protocol: self.codec.label(),
                name: &req.name,
                version: &req.version,
                data: req.data.as_ref().map(Payload::as_bytes),
                channels: if uni {
                    req.subs.keys().map(String::as_str).collect()
                } else {
                    Vec::new()
                },
                forwarded: &forwarded,
            };
            admission::identify_by_proxy(&node, self.peer(), &hello).await?
        } else {
            (
                admission::identify(&node, self.peer(), Credentials::Token(&req.token))?,
                None,
            )
        };
        if uni {
            admission::within_channel_limit(&node, self.peer(), &identity, req.subs.keys())?;
        }
        let Admitted {
            identity,
            id: cid,
            rx,
            user,
        } = admission::register(&node, self.peer(), identity)?;
        tracing::debug!(client = %cid, user = %identity.user, transport = self.transport.label(), remote = %self.peer().remote_field(), "client connected");
        let Identity {
            conn_info,
            expires_at,
            subs: server_subs,
            ..
        } = identity;
        let who = Who {
            id: cid,
            user,
            conn_info: conn_info.map(Box::new),
        };
        node.set_format(cid, self.codec);
        self.connected = Some(Connected {
            who: who.clone(),
            expiry: expires_at.and_then(std::num::NonZeroI64::new),
            sub_expires_at: Expiries::default(),
        });

        // Server-side subscriptions from the token; the request's `subs`
        // carry the positions to recover them from.
        let mut subs = BTreeMap::new();
        for (channel, opts) in &server_subs {
            let req = req.subs.get(channel).cloned().unwrap_or_default();
            match self.subscribe_server_side(&who, channel, opts, &req).await {
                Ok(result) => {
                    subs.insert(channel.clone(), result);
                }
                Err(code) => {
                    tracing::debug!(channel, ?code, "server-side subscription refused");
                }
            }
        }
        if uni {
            for (channel, sub_req) in &req.subs {
                if server_subs.contains_key(channel) {
                    continue;
                }
                let Some(base) = node.channel_options(channel) else {
                    continue;
                };
                if self.check(&who, ChannelAction::Subscribe, channel, base).is_err() {
                    tracing::debug!(channel, "uni subscription refused: no permission");
                    continue;
                }
                if let Ok(result) = self
                    .subscribe_server_side(&who, channel, &SubscriptionOptions::default(), sub_req)
                    .await
                {
                    subs.insert(channel.clone(), result);
                }
            }
        }
        let now = unix_now();
        // With a refresh hook the server prolongs the connection: the
        // client is not told it expires (its SDK would ask for a token).
        let told = expires_at.filter(|_| !node.hooks.decides(Hook::Refresh));
        let result = wire::ConnectResult {
            client: cid.to_string(),
            version: VERSION.to_owned(),
            expires: told.is_some(),
            ttl: told.map_or(0, |t| (t - now).max(0) as u32),
            subs,
            ping: client_cfg.ping_interval.as_secs() as u32,
            pong: !uni,
            node: node.id.clone(),
            session: self
                .extras
                .as_ref()
                .and_then(|e| e.emulated.clone())
                .unwrap_or_default(),
            data: data.map(Payload::new),
        };
        Ok(Opened { result, rx, id: cid })
    }

    async fn subscribe_server_side(
        &self,
        who: &Who,
        channel: &str,
        opts: &SubscriptionOptions,
        req: &wire::SubscribeRequest,
    ) -> Result<wire::SubscribeResult, ErrorCode> {
        let base = self
            .node
            .channel_options(channel)
            .ok_or(ErrorCode::UnknownChannel)?;
        let options = opts.overrides.apply(base);
        let mode = SubscriptionMode::new(&options, req);
        let recover = matches!(mode.catchup, Catchup::Recover(_));
        let s = self
            .node
            .subscribe(
                who.id,
                channel,
                SubscribeOptions {
                    catchup: mode.catchup,
                    chan_info: opts.info.clone(),
                },
                |_| None,
            )
            .await
            .map_err(|e| hub_error_code(&e))?;
        let mut result = subscribe_result(&s, mode.recoverable, mode.positioned, recover);
        result.data = opts.data.clone().map(Payload::new);
        Ok(result)
    }

    /// Handles one command after connect. Replies are queued to the client;
    /// an `Err` means the connection must close with that disconnect.
    pub async fn handle(&mut self, cmd: Command) -> Result<(), Disconnect> {
        let id = cmd.id;
        let request = cmd
            .into_request()
            .map_err(|e| e.disconnect().unwrap_or(Disconnect::BAD_REQUEST))?;
        let Some(c) = self.connected.as_ref() else {
            return Err(Disconnect::BAD_REQUEST);
        };
        let who = c.who.clone();
        let cid = who.id;
        if !matches!(request, Request::Pong)
            && self
                .extras
                .as_mut()
                .and_then(|e| e.commands.as_mut())
                .is_some_and(|b| !b.take())
        {
            self.node.metrics.refused("command_rate_limit");
            if !matches!(request, Request::Send(_)) {
                self.send(self.codec.error(id, ErrorCode::TooManyRequests));
            }
            return Ok(());
        }
        let reply = match request {
            Request::Pong => return Ok(()),
            Request::Connect(_) => return Err(Disconnect::BAD_REQUEST),
            Request::Subscribe(req) => return self.subscribe(&who, id, req).await,
            Request::Unsubscribe(req) => match self.node.hub.unsubscribe(cid, &req.channel) {
                Ok(_) => {
                    if let Some(c) = self.connected.as_mut() {
                        c.sub_expires_at.remove(req.channel.as_str());
                    }
                    Reply {
                        id,
                        unsubscribe: Some(Default::default()),
                        ..Default::default()
                    }
                }
                Err(e) => Reply::error(id, hub_error_code(&e)),
            },
            Request::Publish(req) => self.publish(&who, id, req).await?,
            Request::Presence(req) => self.presence(&who, id, &req.channel, false).await,
            Request::PresenceStats(req) => self.presence(&who, id, &req.channel, true).await,
            Request::History(req) => self.history(&who, id, req).await,
            Request::Ping => Reply {
                id,
                ping: Some(Default::default()),
                ..Default::default()
            },
            // No server-side handler for asynchronous messages: accepted
            // and dropped, as Centrifugo does without a proxy.
            Request::Send(_) => return Ok(()),
            Request::Rpc(req) => self.rpc(&who, id, req).await?,
            Request::Refresh(req) => match self.connected.as_mut() {
                Some(c) => refresh(&self.node, c, id, &req.token)?,
                None => return Err(Disconnect::BAD_REQUEST),
            },
            Request::SubRefresh(req) => self.sub_refresh(&who, id, &req.channel, &req.token)?,
        };
        self.send(self.codec.reply(&reply));
        Ok(())
    }

    fn send(&self, bytes: Bytes) {
        if let Some(c) = &self.connected {
            // A slow client is disconnected by the hub itself; nothing to add.
            let _ = self.node.hub.send_raw(c.who.id, bytes);
        }
    }

    /// Whether `who` is subscribed to `channel`.
    fn subscribed(&self, who: &Who, channel: &str) -> bool {
        self.node
            .hub
            .client(who.id)
            .is_some_and(|s| s.channels.iter().any(|ch| &**ch == channel))
    }

    fn check(
        &self,
        who: &Who,
        action: ChannelAction,
        channel: &str,
        options: &ChannelOptions,
    ) -> Result<(), ErrorCode> {
        match self.node.access.check(
            action,
            channel,
            options,
            Requester {
                user: &who.user,
                subscribed: self.subscribed(who, channel),
            },
        ) {
            Permission::Allowed => Ok(()),
            Permission::PermissionDenied => Err(ErrorCode::PermissionDenied),
            Permission::NotAvailable => Err(ErrorCode::NotAvailable),
        }
    }

    async fn subscribe(&mut self, who: &Who, id: u32, req: wire::SubscribeRequest) -> Result<(), Disconnect> {
        let node = self.node.clone();
        let (cid, user) = (who.id, who.user.clone());
        if req.channel.is_empty() || req.channel.len() > node.config.channel.max_length {
            self.send(self.codec.error(id, ErrorCode::BadRequest));
            return Ok(());
        }
        let Some(base) = node.channel_options(&req.channel) else {
            self.send(self.codec.error(id, ErrorCode::UnknownChannel));
            return Ok(());
        };
        let limit = node.config.client.channel_limit;
        if limit > 0 && node.hub.client(cid).is_some_and(|s| s.channels.len() >= limit) {
            node.metrics.refused("channel_limit");
            self.send(self.codec.error(id, ErrorCode::LimitExceeded));
            return Ok(());
        }
        let mut options = base.clone();
        let mut chan_info = None;
        let mut sub_data: Option<Bytes> = None;
        let mut expires_at = None;
        if !req.token.is_empty() {
            match node.tokens.verify_subscribe(&req.token, &user, &req.channel) {
                Ok(claims) => {
                    if !claims.allows_client(&cid.to_string()) {
                        return Err(Disconnect::INVALID_TOKEN);
                    }
                    options = claims.options.overrides.apply(base);
                    chan_info = claims.options.info.clone();
                    expires_at = claims.expires_at();
                    // `expire_at` already passed (an expired `exp` is 109).
                    if expires_at.is_some_and(|t| t <= unix_now()) {
                        self.send(self.codec.error(id, ErrorCode::Expired));
                        return Ok(());
                    }
                }
                Err(e) => match e.on_subscribe() {
                    Rejection::Error(code) => {
                        self.send(self.codec.error(id, code_of(code)));
                        return Ok(());
                    }
                    Rejection::Disconnect(_) => return Err(Disconnect::INVALID_TOKEN),
                },
            }
        } else if node.hooks.decides(Hook::Subscribe(&req.channel)) {
            // The hook (the backend) decides, instead of the namespace's
            // permissions.
            let request = SubscribeRequest {
                caller: self.caller(who),
                channel: &req.channel,
                data: req.data.as_ref().map(Payload::as_bytes),
            };
            match denied(node.hooks.subscribe(request).await) {
                Ok(r) => {
                    chan_info = r.info;
                    sub_data = r.data;
                    expires_at = r.expire_at;
                }
                Err(Denied::Reply(e)) => {
                    self.send(self.codec.reply(&Reply::error(id, e)));
                    return Ok(());
                }
                Err(Denied::Disconnect(d)) => return Err(d),
            }
        } else if let Err(code) = self.check(who, ChannelAction::Subscribe, &req.channel, base) {
            self.send(self.codec.error(id, code));
            return Ok(());
        }
        let mode = SubscriptionMode::new(&options, &req);
        let recover = matches!(mode.catchup, Catchup::Recover(_));
        let now = unix_now();
        let codec = self.codec;
        let outcome = node
            .subscribe(
                cid,
                &req.channel,
                SubscribeOptions {
                    catchup: mode.catchup,
                    chan_info,
                },
                // The reply is queued inside the channel's critical section, so
                // it precedes every live publication of the channel.
                |s| {
                    let mut result = subscribe_result(s, mode.recoverable, mode.positioned, recover);
                    result.data = sub_data.map(Payload::new);
                    result.expires = expires_at.is_some();
                    result.ttl = expires_at.map_or(0, |t| (t - now).max(0) as u32);
                    Some(codec.reply(&Reply {
                        id,
                        subscribe: Some(result),
                        ..Default::default()
                    }))
                },
            )
            .await;
        match outcome {
            Ok(_) => {
                if let Some(c) = self.connected.as_mut() {
                    let channel: Arc<str> = req.channel.as_str().into();
                    match expires_at {
                        Some(t) => c.sub_expires_at.insert(channel, t),
                        None => c.sub_expires_at.remove(&channel),
                    };
                }
            }
            Err(e) => self.send(self.codec.error(id, hub_error_code(&e))),
        }
        Ok(())
    }

    async fn publish(&self, who: &Who, id: u32, req: wire::PublishRequest) -> Result<Reply, Disconnect> {
        let Some(options) = self.node.channel_options(&req.channel) else {
            return Ok(Reply::error(id, ErrorCode::UnknownChannel));
        };
        let Some(data) = req.data else {
            return Ok(Reply::error(id, ErrorCode::BadRequest));
        };
        let mut data = data.into_bytes();
        let mut skip_history = false;
        if self.node.hooks.decides(Hook::Publish(&req.channel)) {
            // The hook (the backend) decides, and may replace the data.
            let request = PublishRequest {
                caller: self.caller(who),
                channel: &req.channel,
                data: &data,
            };
            match denied(self.node.hooks.publish(request).await) {
                Ok(r) => {
                    if let Some(replaced) = r.data {
                        data = replaced;
                    }
                    skip_history = r.skip_history;
                }
                Err(Denied::Reply(e)) => return Ok(Reply::error(id, e)),
                Err(Denied::Disconnect(d)) => return Err(d),
            }
        } else if let Err(code) = self.check(who, ChannelAction::Publish, &req.channel, options) {
            return Ok(Reply::error(id, code));
        }
        let info = Arc::new(ClientInfo::new(
            who.id,
            who.user.clone(),
            who.conn_info.as_deref().cloned(),
            None,
        ));
        let exclude = if req.exclude_self {
            Exclusion {
                clients: vec![who.id],
                users: vec![],
            }
        } else {
            Exclusion::default()
        };
        let published = self
            .node
            .publish(
                &req.channel,
                data,
                PublishOptions {
                    exclude,
                    info: Some(info),
                    skip_history,
                    ..Default::default()
                },
            )
            .await;
        Ok(match published {
            Ok(_) => Reply {
                id,
                publish: Some(Default::default()),
                ..Default::default()
            },
            Err(e) => Reply::error(id, hub_error_code(&e)),
        })
    }

    /// `rpc`: to the RPC hook (the backend's RPC proxy of the method's
    /// namespace); 104 method not found where none is on.
    async fn rpc(&self, who: &Who, id: u32, req: wire::RpcRequest) -> Result<Reply, Disconnect> {
        if !self.node.hooks.decides(Hook::Rpc(&req.method)) {
            return Ok(Reply::error(id, ErrorCode::MethodNotFound));
        }
        let request = RpcRequest {
            caller: self.caller(who),
            method: &req.method,
            data: req.data.as_ref().map(Payload::as_bytes),
        };
        match denied(self.node.hooks.rpc(request).await) {
            Ok(r) => Ok(Reply {
                id,
                rpc: Some(wire::RpcResult {
                    data: r.data.map(Payload::new),
                }),
                ..Default::default()
            }),
            Err(Denied::Reply(e)) => Ok(Reply::error(id, e)),
            Err(Denied::Disconnect(d)) => Err(d),
        }
    }

    async fn presence(&self, who: &Who, id: u32, channel: &str, stats: bool) -> Reply {
        let Some(options) = self.node.channel_options(channel) else {
            return Reply::error(id, ErrorCode::UnknownChannel);
        };
        if !options.presence {
            return Reply::error(id, ErrorCode::NotAvailable);
        }
        if let Err(code) = self.check(who, ChannelAction::Presence, channel, options) {
            return Reply::error(id, code);
        }
        if stats {
            match self.node.presence_stats(channel).await {
                Ok(s) => Reply {
                    id,
                    presence_stats: Some(wire::PresenceStatsResult {
                        num_clients: s.clients as u32,
                        num_users: s.users as u32,
                    }),
                    ..Default::default()
                },
                Err(e) => Reply::error(id, hub_error_code(&e)),
            }
        } else {
            match self.node.presence(channel).await {
                Ok(list) => Reply {
                    id,
                    presence: Some(wire::PresenceResult {
                        presence: list
                            .iter()
                            .map(|i| (i.client.to_string(), wire_client_info(i)))
                            .collect(),
                    }),
                    ..Default::default()
                },
                Err(e) => Reply::error(id, hub_error_code(&e)),
            }
        }
    }

    async fn history(&self, who: &Who, id: u32, req: wire::HistoryRequest) -> Reply {
        let Some(options) = self.node.channel_options(&req.channel) else {
            return Reply::error(id, ErrorCode::UnknownChannel);
        };
        if !options.history_enabled() {
            return Reply::error(id, ErrorCode::NotAvailable);
        }
        if let Err(code) = self.check(who, ChannelAction::History, &req.channel, options) {
            return Reply::error(id, code);
        }
        match self
            .node
            .history_reply(&req.channel, req.limit, req.since.as_ref(), req.reverse)
            .await
        {
            Ok(result) => Reply {
                id,
                history: Some(result),
                ..Default::default()
            },
            Err(code) => Reply::error(id, code),
        }
    }

    fn sub_refresh(&mut self, who: &Who, id: u32, channel: &str, token: &str) -> Result<Reply, Disconnect> {
        if channel.is_empty() {
            return Err(Disconnect::BAD_REQUEST);
        }
        if token.is_empty() {
            return Ok(Reply::error(id, ErrorCode::BadRequest));
        }
        if !self.subscribed(who, channel) {
            // Only a live subscription can be refreshed, as in Centrifugo.
            return Ok(Reply::error(id, ErrorCode::PermissionDenied));
        }
        match self.node.tokens.verify_subscribe(token, &who.user, channel) {
            Ok(claims) => {
                let exp = claims.expires_at();
                let now = unix_now();
                if let Some(c) = self.connected.as_mut() {
                    match exp {
                        Some(t) => c.sub_expires_at.insert(channel.into(), t),
                        None => c.sub_expires_at.remove(channel),
                    };
                }
                Ok(Reply {
                    id,
                    sub_refresh: Some(wire::SubRefreshResult {
                        expires: exp.is_some(),
                        ttl: exp.map_or(0, |t| (t - now).max(0) as u32),
                    }),
                    ..Default::default()
                })
            }
            Err(e) => match e.on_subscribe() {
                Rejection::Error(code) => Ok(Reply::error(id, code_of(code))),
                Rejection::Disconnect(_) => Err(Disconnect::INVALID_TOKEN),
            },
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(c) = &self.connected {
            self.node.forget_format(c.who.id, self.codec);
        }
    }
}

/// Seconds before a failed refresh proxy call is tried again.
pub(crate) const REFRESH_RETRY: i64 = 10;

/// What a client gets instead of a hook's answer.
enum Denied {
    Reply(ReplyError),
    Disconnect(Disconnect),
}

/// A hook's decision as what the client gets: the answer, the hook's
/// refusal (an error reply) or disconnect, or 100 internal, temporary,
/// when the hook could not decide (the backend failed).
fn denied<T>(decision: Decision<T>) -> Result<T, Denied> {
    match decision {
        Decision::Allow(answer) => Ok(answer),
        Decision::Refuse { code, reason } => Err(Denied::Reply(ReplyError {
            code,
            message: reason.into(),
            temporary: false,
        })),
        Decision::Disconnect { code, reason } => Err(Denied::Disconnect(Disconnect::new(code, reason))),
        Decision::Unavailable => Err(Denied::Reply(ErrorCode::Internal.into())),
    }
}

/// What a refresh hook's answer does to an expiry: `Ok` a new one (in the
/// future), `Err` ask again later (no new expiry, a refusal, a failure),
/// `None` end it now (`expired`, or a disconnect).
fn prolonged(outcome: Result<RefreshAnswer, Denied>) -> Option<Result<i64, ()>> {
    match outcome {
        Ok(r) if r.expired => None,
        Ok(RefreshAnswer {
            expire_at: Some(t), ..
        }) if t > unix_now() => Some(Ok(t)),
        Ok(_) | Err(Denied::Reply(_)) => Some(Err(())),
        Err(Denied::Disconnect(_)) => None,
    }
}

/// `refresh`: a new connection token for the same user moves the expiry.
fn refresh(node: &Node, c: &mut Connected, id: u32, token: &str) -> Result<Reply, Disconnect> {
    let claims = match node.tokens.verify_connect(token) {
        Ok(claims) => claims,
        Err(e) => {
            return match e.on_connect() {
                Rejection::Error(code) => Ok(Reply::error(id, code_of(code))),
                Rejection::Disconnect(_) => Err(Disconnect::INVALID_TOKEN),
            }
        }
    };
    if claims.user != *c.who.user {
        return Err(Disconnect::INVALID_TOKEN);
    }
    c.set_expires_at(claims.expires_at());
    let now = unix_now();
    Ok(Reply {
        id,
        refresh: Some(wire::RefreshResult {
            client: c.who.id.to_string(),
            version: VERSION.to_owned(),
            expires: c.expires_at().is_some(),
            ttl: c.expires_at().map_or(0, |t| (t - now).max(0) as u32),
        }),
        ..Default::default()
    })
}

/// Whether a disconnect code says something went wrong with the client
/// (logged at info, rate-limited), rather than a normal end (debug): the
/// terminal codes, a slow consumer, a missing pong, a stale connection.
pub(crate) fn is_problem(code: u32) -> bool {
    code >= 3500 || code == 3008 || code == 3012
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscription expiries are kept in a map only while there are any
    /// (every connection's task holds the empty case).
    #[test]
    fn subscription_expiries_keep_a_map_only_while_there_are_any() {
        let mut e = Expiries::default();
        assert!(e.0.is_none() && e.iter().next().is_none());
        e.insert("a".into(), 10);
        e.insert("b".into(), 20);
        e.insert("a".into(), 30);
        let mut all: Vec<_> = e.iter().map(|(c, &t)| (c.to_string(), t)).collect();
        all.sort();
        assert_eq!(all, [("a".to_string(), 30), ("b".to_string(), 20)]);
        e.remove("a");
        e.remove("missing");
        assert_eq!(e.iter().count(), 1);
        e.remove("b");
        assert!(e.0.is_none(), "the map is freed once empty");
        e.remove("b");
        assert!(e.0.is_none());
    }

    #[test]
    fn a_remote_address_is_logged_as_it_came_whether_kept_inline_or_boxed() {
        for addr in ["127.0.0.1:8000", "10.1.2.3:65535", "[::1]:443", "[fe80::1%2]:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let remote = Remote::new(addr);
            assert_eq!(remote.addr(), addr);
            assert_eq!(matches!(remote, Remote::V4(..)), addr.is_ipv4());
        }
    }
}
