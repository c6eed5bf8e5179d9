//! The server HTTP API, `POST /api/<method>`: how backends publish, manage
//! subscriptions and connections, and read history, presence and stats.
//! Checks the API key, decodes the request, calls the hub, encodes the
//! answer (errors as HTTP 200 `{"error":...}`, or mapped to HTTP statuses in
//! the "transport" error mode). Knows nothing of client sockets.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use crier_core::{ClientId, Exclusion, PublishOptions, SubscribeOptions, Tags};
use crier_proto::api::{self, ApiError, ApiResult, BatchReply, BatchResponse, Method, Request};
use crier_proto::client::{self as wire, Push};
use crier_proto::codes::{Disconnect, ErrorCode, Unsubscribe};
use crier_proto::encode::{self, Envelope};
use serde::Serialize;

use crate::auth::{api_key_from_headers, api_key_matches};
use crate::config::ApiErrorMode;
use crate::node::{Node, VERSION};
use crate::session::{self, hub_error_code, reason_of, wire_client_info, SubscriptionMode};

type Outcome = Result<ApiResult, ApiError>;

fn err(code: ErrorCode) -> ApiError {
    code.into()
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Handles `POST /api/<method>`.
pub async fn handle(
    State(node): State<Arc<Node>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !(node.config.http_api.insecure || node.config.crier.dev) {
        let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let configured = node.config.http_api.key.expose();
        let given = api_key_from_headers(x_api_key, authorization);
        if !given.is_some_and(|g| api_key_matches(configured, g)) {
            return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
        }
    }
    let Some(method) = Method::from_name(&method) else {
        return respond(&node, Err(err(ErrorCode::MethodNotFound)));
    };
    let request = match Request::parse(method, &body) {
        Ok(r) => r,
        Err(e) => {
            return match e.error_code() {
                // A body that is not JSON at all: Centrifugo answers 400.
                _ if matches!(e, crier_proto::Error::MalformedApiRequest(_)) => {
                    (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
                }
                Some(code) => respond(
                    &node,
                    Err(ApiError {
                        code: code.code(),
                        message: e.to_string().into(),
                    }),
                ),
                None => respond(&node, Err(err(ErrorCode::BadRequest))),
            };
        }
    };
    if let Request::Batch(batch) = request {
        let mut replies = Vec::with_capacity(batch.commands.len());
        for c in batch.commands {
            replies.push(BatchReply(match c.into_request() {
                Ok(r) => call(&node, r).await,
                Err(e) => Err(api_error_of(&e)),
            }));
        }
        return json_response(StatusCode::OK, &BatchResponse { replies });
    }
    let outcome = call(&node, request).await;
    respond(&node, outcome)
}

fn api_error_of(e: &crier_proto::Error) -> ApiError {
    let code = e.error_code().unwrap_or(ErrorCode::BadRequest);
    ApiError {
        code: code.code(),
        message: e.to_string().into(),
    }
}

fn respond(node: &Node, outcome: Outcome) -> Response {
    match outcome {
        Ok(result) => json_response(StatusCode::OK, &api::Response::ok(result)),
        Err(error) => {
            let status = match node.config.http_api.error_mode {
                ApiErrorMode::Transport => StatusCode::from_u16(error.transport_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                _ => StatusCode::OK,
            };
            json_response(status, &api::Response::<ApiResult>::error(error))
        }
    }
}

/// Runs one API request against the node. With the Redis engine, the
/// requests that act on connections (`subscribe`, `unsubscribe`,
/// `disconnect`, `refresh`) are applied here and then broadcast on the
/// control channel, so the clients of every node are reached.
pub async fn call(node: &Node, request: Request) -> Outcome {
    let control = node.clustered().then(|| control_message(&request)).flatten();
    let outcome = call_local(node, request).await;
    #[cfg(feature = "cluster")]
    if let (Ok(_), Some(msg), Some(cluster)) = (&outcome, control, &node.cluster) {
        cluster.broadcast_control(&msg).await.map_err(|e| {
            node.metrics.engine_error(&e);
            err(hub_error_code(&e))
        })?;
    }
    #[cfg(not(feature = "cluster"))]
    let _ = control;
    outcome
}

/// `<method>\n<params as JSON>` for the requests other nodes must apply too.
fn control_message(request: &Request) -> Option<Vec<u8>> {
    let (method, params) = match request {
        Request::Subscribe(r) => ("subscribe", serde_json::to_vec(r)),
        Request::Unsubscribe(r) => ("unsubscribe", serde_json::to_vec(r)),
        Request::Disconnect(r) => ("disconnect", serde_json::to_vec(r)),
        Request::Refresh(r) => ("refresh", serde_json::to_vec(r)),
        _ => return None,
    };
    let mut msg = method.as_bytes().to_vec();
    msg.push(b'\n');
    msg.extend(params.ok()?);
    Some(msg)
}

/// Applies a control message another node broadcast with [`call`].
/// Malformed messages are logged and dropped.
pub async fn apply_control(node: &Node, msg: &[u8]) {
    let Some(split) = msg.iter().position(|&b| b == b'\n') else {
        tracing::warn!("control message without a method");
        return;
    };
    let method = std::str::from_utf8(&msg[..split])
        .ok()
        .and_then(Method::from_name);
    let request = method.map(|m| Request::parse(m, &msg[split + 1..]));
    match request {
        Some(Ok(r)) if control_message(&r).is_some() => {
            if let Err(e) = call_local(node, r).await {
                tracing::debug!(code = e.code, "control message from another node failed here");
            }
        }
        _ => tracing::warn!("malformed control message dropped"),
    }
}

async fn call_local(node: &Node, request: Request) -> Outcome {
    match request {
        Request::Publish(req) => {
            let exclude = exclusion(&req.exclude_clients, &req.exclude_users)?;
            let data = raw_data(req.data.as_deref())?;
            publish(node, &req.channel, data, exclude, &req.tags, req.skip_history)
                .await
                .map(ApiResult::Publish)
        }
        Request::Broadcast(req) => {
            let exclude = exclusion(&req.exclude_clients, &req.exclude_users)?;
            let data = raw_data(req.data.as_deref())?;
            let mut responses = Vec::with_capacity(req.channels.len());
            for c in &req.channels {
                let r = publish(
                    node,
                    c,
                    data.clone(),
                    exclude.clone(),
                    &req.tags,
                    req.skip_history,
                )
                .await;
                responses.push(r.into());
            }
            Ok(ApiResult::Broadcast(api::BroadcastResult { responses }))
        }
        Request::Subscribe(req) => subscribe(node, req)
            .await
            .map(|_| ApiResult::Subscribe(Default::default())),
        Request::Unsubscribe(req) => {
            known_channel(node, &req.channel)?;
            let notice = session::unsubscribe_push(&req.channel, &Unsubscribe::SERVER);
            for id in targets(node, &req.user, &req.client)? {
                node.hub
                    .unsubscribe_with(id, &req.channel, Some(notice.clone()))
                    .map_err(|e| err(hub_error_code(&e)))?;
            }
            Ok(ApiResult::Unsubscribe(Default::default()))
        }
        Request::Disconnect(req) => {
            let reason = reason_of(&req.advice());
            for id in targets(node, &req.user, &req.client)? {
                if !req.whitelist.iter().any(|w| *w == id.to_string()) {
                    node.hub.disconnect(id, reason.clone());
                }
            }
            Ok(ApiResult::Disconnect(Default::default()))
        }
        Request::Refresh(req) => {
            // Only `expired: true` acts: it ends the connections (3005), so
            // their clients reconnect with fresh credentials.
            if req.expired {
                let reason = reason_of(&Disconnect::EXPIRED);
                for id in targets(node, &req.user, &req.client)? {
                    node.hub.disconnect(id, reason.clone());
                }
            }
            Ok(ApiResult::Refresh(Default::default()))
        }
        Request::Presence(req) => {
            let options = known_channel(node, &req.channel)?;
            if !options.presence {
                return Err(err(ErrorCode::NotAvailable));
            }
            let list = node
                .presence(&req.channel)
                .await
                .map_err(|e| err(hub_error_code(&e)))?;
            Ok(ApiResult::Presence(wire::PresenceResult {
                presence: list
                    .iter()
                    .map(|i| (i.client.to_string(), wire_client_info(i)))
                    .collect(),
            }))
        }
        Request::PresenceStats(req) => {
            let options = known_channel(node, &req.channel)?;
            if !options.presence {
                return Err(err(ErrorCode::NotAvailable));
            }
            let s = node
                .presence_stats(&req.channel)
                .await
                .map_err(|e| err(hub_error_code(&e)))?;
            Ok(ApiResult::PresenceStats(wire::PresenceStatsResult {
                num_clients: s.clients as u32,
                num_users: s.users as u32,
            }))
        }
        Request::History(req) => {
            let options = known_channel(node, &req.channel)?;
            if !options.history_enabled() {
                return Err(err(ErrorCode::NotAvailable));
            }
            session::history_query(node, &req.channel, req.limit, req.since.as_ref(), req.reverse)
                .await
                .map(ApiResult::History)
                .map_err(err)
        }
        Request::HistoryRemove(req) => {
            known_channel(node, &req.channel)?;
            node.remove_history(&req.channel)
                .await
                .map_err(|e| err(hub_error_code(&e)))?;
            Ok(ApiResult::HistoryRemove(Default::default()))
        }
        Request::Channels(req) => {
            let channels = node
                .hub
                .channels()
                .into_iter()
                .filter(|(name, _)| {
                    req.pattern.is_empty() || glob_match(req.pattern.as_bytes(), name.as_bytes())
                })
                .map(|(name, n)| {
                    (
                        name.to_string(),
                        api::ChannelInfo {
                            num_clients: n as u32,
                        },
                    )
                })
                .collect();
            Ok(ApiResult::Channels(api::ChannelsResult { channels }))
        }
        Request::Info => {
            let stats = node.hub.stats();
            Ok(ApiResult::Info(api::InfoResult {
                nodes: vec![api::NodeResult {
                    uid: node.id.clone(),
                    name: node.id.clone(),
                    version: VERSION.to_owned(),
                    num_clients: stats.clients as u32,
                    num_users: node.hub.user_count() as u32,
                    num_channels: stats.channels as u32,
                    uptime: node.uptime().as_secs() as u32,
                    num_subs: stats.subscriptions as u32,
                }],
            }))
        }
        // Nested batches are not allowed.
        Request::Batch(_) => Err(err(ErrorCode::BadRequest)),
    }
}

fn known_channel<'n>(node: &'n Node, channel: &str) -> Result<&'n crate::config::ChannelOptions, ApiError> {
    node.channel_options(channel)
        .ok_or_else(|| err(ErrorCode::UnknownChannel))
}

fn raw_data(data: Option<&serde_json::value::RawValue>) -> Result<bytes::Bytes, ApiError> {
    let data = data.ok_or_else(|| err(ErrorCode::BadRequest))?;
    Ok(bytes::Bytes::copy_from_slice(data.get().as_bytes()))
}

fn parse_client(id: &str) -> Result<ClientId, ApiError> {
    id.parse::<u64>().map(ClientId).map_err(|_| ApiError {
        code: ErrorCode::BadRequest.code(),
        message: format!("invalid client id {id:?}").into(),
    })
}

fn exclusion(clients: &[String], users: &[String]) -> Result<Exclusion, ApiError> {
    Ok(Exclusion {
        clients: clients
            .iter()
            .map(|c| parse_client(c))
            .collect::<Result<_, _>>()?,
        users: users.iter().map(|u| u.as_str().into()).collect(),
    })
}

async fn publish(
    node: &Node,
    channel: &str,
    data: bytes::Bytes,
    exclude: Exclusion,
    tags: &std::collections::BTreeMap<String, String>,
    skip_history: bool,
) -> Result<api::PublishResult, ApiError> {
    let options = known_channel(node, channel)?;
    let tags: Option<Tags> = (!tags.is_empty()).then(|| {
        tags.iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect::<Vec<(Box<str>, Box<str>)>>()
            .into()
    });
    let position = node
        .publish(
            channel,
            data,
            PublishOptions {
                exclude,
                info: None,
                tags,
                skip_history,
            },
        )
        .await
        .map_err(|e| err(hub_error_code(&e)))?;
    Ok(if options.history_enabled() {
        api::PublishResult {
            offset: position.offset,
            epoch: position.epoch.to_string(),
        }
    } else {
        api::PublishResult::default()
    })
}

// The connections a user/client pair names: one client (of that user, if
// given), or every connection of the user.
fn targets(node: &Node, user: &str, client: &str) -> Result<Vec<ClientId>, ApiError> {
    if !client.is_empty() {
        let id = parse_client(client)?;
        return Ok(match node.hub.client(id) {
            Some(c) if user.is_empty() || &*c.user == user => vec![id],
            _ => vec![],
        });
    }
    if user.is_empty() {
        return Err(ApiError {
            code: ErrorCode::BadRequest.code(),
            message: "user or client required".into(),
        });
    }
    Ok(node.hub.clients_of_user(user))
}

async fn subscribe(node: &Node, req: api::SubscribeRequest) -> Result<(), ApiError> {
    let options = known_channel(node, &req.channel)?.clone();
    let wire_req = wire::SubscribeRequest {
        channel: req.channel.clone(),
        recover: req.recover_since.is_some(),
        recoverable: true,
        positioned: true,
        offset: req.recover_since.as_ref().map_or(0, |s| s.offset),
        epoch: req
            .recover_since
            .as_ref()
            .map_or(String::new(), |s| s.epoch.clone()),
        ..Default::default()
    };
    for id in targets(node, &req.user, &req.client)? {
        let mode = SubscriptionMode::new(&options, &wire_req);
        let opts = SubscribeOptions {
            catchup: mode.catchup,
            chan_info: req
                .info
                .as_deref()
                .map(|r| bytes::Bytes::copy_from_slice(r.get().as_bytes())),
        };
        let (recoverable, positioned) = (mode.recoverable, mode.positioned);
        let result = node
            .subscribe(id, &req.channel, opts, |s| {
                let r = session::subscribe_result(s, recoverable, positioned, false);
                let push = Push {
                    channel: req.channel.clone(),
                    subscribe: Some(wire::Subscribe {
                        recoverable: r.recoverable,
                        epoch: r.epoch,
                        offset: r.offset,
                        positioned: r.positioned,
                        data: req.data.clone(),
                    }),
                    ..Default::default()
                };
                let mut buf = BytesMut::new();
                encode::push(&mut buf, Envelope::Reply, &push);
                Some(buf.freeze())
            })
            .await;
        match result {
            Ok(_) | Err(crier_core::HubError::AlreadySubscribed) => {}
            Err(crier_core::HubError::UnknownClient(_)) => {} // left meanwhile
            Err(e) => return Err(err(hub_error_code(&e))),
        }
    }
    Ok(())
}

/// `*` matches any run of bytes, `?` any one byte; everything else itself.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_patterns() {
        assert!(glob_match(b"chat:*", b"chat:1"));
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"chat:*", b"news:1"));
        assert!(glob_match(b"*:1", b"chat:1"));
        assert!(!glob_match(b"a", b"ab"));
    }
}
