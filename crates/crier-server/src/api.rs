//! The server API's operations, whatever carries them (`http::api` over
//! HTTP today): publish, broadcast, history, presence, channels, info, and
//! the operations on connections, which go through [`crate::control`] so
//! every node of a cluster applies them. Knows nothing of HTTP or sockets.

use crier_core::{Exclusion, PublishOptions, Tags};
use crier_proto::api::{self, ApiError, ApiResult, BatchReply, BatchResponse, Method, Request};
use crier_proto::client as wire;
use crier_proto::codes::{Disconnect, ErrorCode};

use crate::control::{self, Control, Target};
use crate::node::Node;
use crate::wire::{hub_error_code, wire_client_info};

pub(crate) type Outcome = Result<ApiResult, ApiError>;

fn err(code: ErrorCode) -> ApiError {
    code.into()
}

/// Applies `control` here and, on a cluster engine, broadcasts it so the
/// clients of every node are reached.
async fn act(node: &Node, control: Control) -> Result<(), ApiError> {
    control::apply(node, &control).await.map_err(err)?;
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &node.cluster {
        cluster.broadcast_control(&control.encode()).await.map_err(|e| {
            node.metrics.engine_error(&e);
            err(hub_error_code(&e))
        })?;
    }
    Ok(())
}

fn target(user: &str, client: &str) -> Result<Target, ApiError> {
    Target::new(user, client).map_err(|code| ApiError {
        code: code.code(),
        message: "user or client (a client id) required".into(),
    })
}

/// What an API request, named by its method and with a JSON body, came to.
pub(crate) enum Answer {
    /// The body is not JSON at all (Centrifugo answers HTTP 400).
    Malformed(String),
    /// One request's outcome.
    One(Outcome),
    /// A `batch` request's replies, in order.
    Batch(BatchResponse),
}

/// Decodes and runs the request `method` with `body` (what
/// `POST /api/<method>` and the admin UI's `POST /admin/api` carry).
pub(crate) async fn call_named(node: &Node, method: &str, body: &[u8]) -> Answer {
    let Some(method) = Method::from_name(method) else {
        return Answer::One(Err(ErrorCode::MethodNotFound.into()));
    };
    let request = match Request::parse(method, body) {
        Ok(r) => r,
        Err(e @ crier_proto::Error::MalformedApiRequest(_)) => return Answer::Malformed(e.to_string()),
        Err(e) => return Answer::One(Err(api_error_of(&e))),
    };
    if let Request::Batch(batch) = request {
        let mut replies = Vec::with_capacity(batch.commands.len());
        for c in batch.commands {
            replies.push(BatchReply(match c.into_request() {
                Ok(r) => call(node, r).await,
                Err(e) => Err(api_error_of(&e)),
            }));
        }
        return Answer::Batch(BatchResponse { replies });
    }
    Answer::One(call(node, request).await)
}

fn api_error_of(e: &crier_proto::Error) -> ApiError {
    let code = e.error_code().unwrap_or(ErrorCode::BadRequest);
    ApiError {
        code: code.code(),
        message: e.to_string().into(),
    }
}

/// Runs one API request against the node. The requests that act on
/// connections (`subscribe`, `unsubscribe`, `disconnect`, `refresh` with
/// `expired`) become a [`Control`] that every node applies ([`act`]).
pub(crate) async fn call(node: &Node, request: Request) -> Outcome {
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
        Request::Subscribe(r) => {
            known_channel(node, &r.channel)?;
            let control = Control::Subscribe {
                target: target(&r.user, &r.client)?,
                channel: r.channel,
                info: r.info,
                data: r.data,
                recover_since: r.recover_since.map(|s| (s.offset, s.epoch)),
            };
            act(node, control).await?;
            Ok(ApiResult::Subscribe(Default::default()))
        }
        Request::Unsubscribe(r) => {
            known_channel(node, &r.channel)?;
            let control = Control::Unsubscribe {
                target: target(&r.user, &r.client)?,
                channel: r.channel,
            };
            act(node, control).await?;
            Ok(ApiResult::Unsubscribe(Default::default()))
        }
        Request::Disconnect(r) => {
            let control = Control::Disconnect {
                target: target(&r.user, &r.client)?,
                disconnect: r.advice(),
                keep: r.whitelist,
            };
            act(node, control).await?;
            Ok(ApiResult::Disconnect(Default::default()))
        }
        Request::Refresh(r) => {
            let target = target(&r.user, &r.client)?;
            // Only `expired: true` acts: it ends the connections (3005), so
            // their clients reconnect with fresh credentials.
            if r.expired {
                let disconnect = Disconnect::EXPIRED;
                act(
                    node,
                    Control::Disconnect {
                        target,
                        disconnect,
                        keep: Vec::new(),
                    },
                )
                .await?;
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
            node.history_reply(&req.channel, req.limit, req.since.as_ref(), req.reverse)
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
                    req.pattern.is_empty()
                        || crate::config::glob_match(req.pattern.as_bytes(), name.as_bytes())
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
            // This node, then every other node of the cluster heard from.
            let mut nodes = vec![node.node_result()];
            let mut peers = node.peers();
            peers.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.extend(peers);
            Ok(ApiResult::Info(api::InfoResult { nodes }))
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

fn parse_client(id: &str) -> Result<crier_core::ClientId, ApiError> {
    id.parse::<u64>().map(crier_core::ClientId).map_err(|_| ApiError {
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

#[cfg(test)]
mod tests {
    use crate::config::glob_match;

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
