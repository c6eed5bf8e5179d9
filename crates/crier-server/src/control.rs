//! Operations on connections that every node of a cluster applies: a
//! server-side subscribe, an unsubscribe, a disconnect (an API `refresh`
//! with `expired` is one, with 3005). The server API turns a request into
//! a [`Control`], applies it here and, on
//! a cluster engine, broadcasts it; every other node decodes it and
//! applies it too, one message after another in the order the broker
//! delivered them (so an `unsubscribe` never overtakes the `subscribe`
//! sent before it). Typed (`{"subscribe": {...}}`, one key per operation,
//! which a node that does not know it drops): never a re-serialised API
//! request.

use std::sync::Arc;

use bytes::Bytes;
use crier_core::{ClientId, SubscribeOptions};
use crier_proto::client::{self as wire, Payload, Push, Reply};
use crier_proto::codes::{Disconnect, ErrorCode, Unsubscribe};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::node::Node;
use crate::wire::{hub_error_code, reason_of, subscribe_result, Codec, SubscriptionMode};

/// Whose connections an operation acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Target {
    /// Every connection of this user (or, with `client`, only one of its).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Only this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<u64>,
}

impl Target {
    /// The target of an API request naming a `user`, a `client`, or both;
    /// 107 when it names neither or the client id is not one.
    pub(crate) fn new(user: &str, client: &str) -> Result<Self, ErrorCode> {
        let client = match client {
            "" => None,
            id => Some(id.parse::<u64>().map_err(|_| ErrorCode::BadRequest)?),
        };
        if user.is_empty() && client.is_none() {
            return Err(ErrorCode::BadRequest);
        }
        Ok(Target {
            user: user.to_owned(),
            client,
        })
    }

    /// The matching connections on this node.
    fn local(&self, node: &Node) -> Vec<ClientId> {
        match self.client {
            Some(id) => {
                let id = ClientId(id);
                match node.hub.client(id) {
                    Some(c) if self.user.is_empty() || *c.user == *self.user => vec![id],
                    _ => vec![],
                }
            }
            None => node.hub.clients_of_user(&self.user),
        }
    }
}

/// One operation on connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Control {
    /// Subscribe the target's connections to `channel` (server-side).
    Subscribe {
        /// Whose connections.
        target: Target,
        /// The channel.
        channel: String,
        /// Channel info for presence and join/leave (raw JSON).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<Box<RawValue>>,
        /// Data for the client's `subscribe` push (raw JSON).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Box<RawValue>>,
        /// Recover from this position.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recover_since: Option<(u64, String)>,
    },
    /// Unsubscribe the target's connections from `channel` (push 2000).
    Unsubscribe {
        /// Whose connections.
        target: Target,
        /// The channel.
        channel: String,
    },
    /// Commands POSTed to `/emulation` for an emulated session that the
    /// receiving node does not hold: the node holding it hands them on.
    Emulation {
        /// The node the client says holds the session.
        node: String,
        /// The session id.
        session: String,
        /// The commands, base64 (protobuf sessions send bytes).
        data: String,
    },
    /// What a node is now (sent every `NODE_INFO_EVERY`), so `info` on
    /// any node lists every node.
    Node {
        /// The node's `info` entry.
        info: crier_proto::api::NodeResult,
    },
    /// Close the target's connections, except the ones in `keep`.
    Disconnect {
        /// Whose connections.
        target: Target,
        /// The code and reason they get.
        disconnect: Disconnect,
        /// Client ids left connected.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keep: Vec<String>,
    },
}

#[cfg(any(feature = "cluster", test))]
impl Control {
    /// The bytes other nodes decode with [`Control::decode`].
    pub(crate) fn encode(&self) -> Vec<u8> {
        // A struct of strings, numbers and raw JSON always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A control message from another node; `None` when it is not one
    /// this version knows.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Applies `control` to this node's connections.
pub(crate) async fn apply(node: &Node, control: &Control) -> Result<(), ErrorCode> {
    match control {
        Control::Subscribe {
            target,
            channel,
            info,
            data,
            recover_since,
        } => {
            subscribe(
                node,
                target,
                channel,
                info.as_deref(),
                data.as_deref(),
                recover_since.as_ref(),
            )
            .await
        }
        Control::Unsubscribe { target, channel } => {
            node.channel_options(channel).ok_or(ErrorCode::UnknownChannel)?;
            let mut notices = PerFormat::default();
            for id in target.local(node) {
                let notice = notices.get(node, id, |codec| codec.unsubscribe(channel, &Unsubscribe::SERVER));
                node.hub
                    .unsubscribe_with(id, channel, Some(notice))
                    .map_err(|e| hub_error_code(&e))?;
            }
            Ok(())
        }
        Control::Emulation { session, data, .. } => {
            use base64::Engine as _;
            // Not held here (the usual case: every node hears it) or its
            // queue is full: nothing to do on this node.
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) {
                let _ = node.emulate(session, Bytes::from(bytes));
            }
            Ok(())
        }
        Control::Node { info } => {
            node.peer_seen(info.clone());
            Ok(())
        }
        Control::Disconnect {
            target,
            disconnect,
            keep,
        } => {
            let reason = reason_of(disconnect);
            for id in target.local(node) {
                if !keep.iter().any(|k| *k == id.to_string()) {
                    node.hub.disconnect(id, reason.clone());
                }
            }
            Ok(())
        }
    }
}

async fn subscribe(
    node: &Node,
    target: &Target,
    channel: &str,
    info: Option<&RawValue>,
    data: Option<&RawValue>,
    recover_since: Option<&(u64, String)>,
) -> Result<(), ErrorCode> {
    let options = node
        .channel_options(channel)
        .ok_or(ErrorCode::UnknownChannel)?
        .clone();
    let request = wire::SubscribeRequest {
        channel: channel.to_owned(),
        recover: recover_since.is_some(),
        recoverable: true,
        positioned: true,
        offset: recover_since.map_or(0, |s| s.0),
        epoch: recover_since.map_or(String::new(), |s| s.1.clone()),
        ..Default::default()
    };
    let data = data.map(|d| Payload::json(d.to_owned()));
    let mut pushes = PerFormat::default();
    for id in target.local(node) {
        let codec = node.format_of(id);
        let mode = SubscriptionMode::new(&options, &request);
        let opts = SubscribeOptions {
            catchup: mode.catchup,
            chan_info: info.map(|r| Bytes::copy_from_slice(r.get().as_bytes())),
        };
        let (recoverable, positioned) = (mode.recoverable, mode.positioned);
        let result = node
            .subscribe(id, channel, opts, |s| {
                let r = subscribe_result(s, recoverable, positioned, false);
                let push = Push {
                    channel: channel.to_owned(),
                    subscribe: Some(wire::Subscribe {
                        recoverable: r.recoverable,
                        epoch: r.epoch,
                        offset: r.offset,
                        positioned: r.positioned,
                        data: data.clone(),
                    }),
                    ..Default::default()
                };
                Some(pushes.get_for(codec, |codec| codec.reply(&Reply::push(push))))
            })
            .await;
        match result {
            Ok(_) | Err(crier_core::HubError::AlreadySubscribed) => {}
            Err(crier_core::HubError::UnknownClient(_)) => {} // left meanwhile
            Err(e) => return Err(hub_error_code(&e)),
        }
    }
    Ok(())
}

/// What became of commands POSTed to `/emulation`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Emulated {
    /// Handed to the session, on this node.
    Delivered,
    /// The session is here but has too many batches waiting.
    Busy,
    /// Sent through the engine's control channel to the node named.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Forwarded,
    /// No such session here, and no other node to ask.
    Unknown,
    /// The engine could not send it on.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Failed,
}

/// Hands `commands` to emulated session `session`, here or, through the
/// engine, on the node `target` that the client says holds it (so the
/// POSTs need no sticky sessions).
pub(crate) async fn emulate(node: &Node, target: &str, session: &str, commands: Bytes) -> Emulated {
    match node.emulate(session, commands.clone()) {
        Some(true) => return Emulated::Delivered,
        Some(false) => return Emulated::Busy,
        None => {}
    }
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &node.cluster {
        if target != node.id && !target.is_empty() {
            use base64::Engine as _;
            let control = Control::Emulation {
                node: target.to_owned(),
                session: session.to_owned(),
                data: base64::engine::general_purpose::STANDARD.encode(&commands),
            };
            return match cluster.broadcast_control(&control.encode()).await {
                Ok(()) => Emulated::Forwarded,
                Err(e) => {
                    node.metrics.engine_error(&e);
                    Emulated::Failed
                }
            };
        }
    }
    let _ = target;
    Emulated::Unknown
}

/// One encoding of a notice per wire format, made when a connection of
/// that format first needs it.
#[derive(Default)]
struct PerFormat {
    json: Option<Bytes>,
    protobuf: Option<Bytes>,
}

impl PerFormat {
    fn get(&mut self, node: &Node, id: ClientId, encode: impl FnOnce(Codec) -> Bytes) -> Bytes {
        self.get_for(node.format_of(id), encode)
    }

    fn get_for(&mut self, codec: Codec, encode: impl FnOnce(Codec) -> Bytes) -> Bytes {
        let slot = match codec {
            Codec::Json => &mut self.json,
            Codec::Protobuf => &mut self.protobuf,
        };
        slot.get_or_insert_with(|| encode(codec)).clone()
    }
}

/// Applies the control messages other nodes broadcast, one after another
/// in the order the broker delivers them. Unbounded: only API callers
/// (holding the API key) on some node produce them, and each is small.
#[cfg(feature = "cluster")]
pub(crate) fn listen(node: &Arc<Node>) {
    let Some(cluster) = &node.cluster else { return };
    let (queue, mut applied) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    // Weak: the node owns the cluster, which owns the handler and so the
    // queue's sender; the task ends when the node goes.
    let weak = Arc::downgrade(node);
    tokio::spawn(async move {
        while let Some(msg) = applied.recv().await {
            let Some(node) = weak.upgrade() else { break };
            match Control::decode(&msg) {
                Some(control) => {
                    if let Err(code) = apply(&node, &control).await {
                        tracing::debug!(?code, ?control, "control message from another node failed here");
                    }
                }
                None => tracing::warn!("unknown control message dropped (a node of another version?)"),
            }
        }
    });
    cluster.on_control(Box::new(move |msg| {
        let _ = queue.send(msg.to_vec());
    }));
}

/// Without a cluster engine no other node sends control messages.
#[cfg(not(feature = "cluster"))]
pub(crate) fn listen(_node: &Arc<Node>) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip() {
        let all = [
            Control::Subscribe {
                target: Target::new("u", "").unwrap(),
                channel: "chat:1".into(),
                info: RawValue::from_string(r#"{"a":1}"#.into()).ok(),
                data: None,
                recover_since: Some((3, "ep".into())),
            },
            Control::Unsubscribe {
                target: Target::new("", "42").unwrap(),
                channel: "c".into(),
            },
            Control::Disconnect {
                target: Target::new("u", "7").unwrap(),
                disconnect: Disconnect::FORCE_DISCONNECT,
                keep: vec!["9".into()],
            },
        ];
        for c in all {
            let back = Control::decode(&c.encode()).expect("decodes");
            assert_eq!(back.encode(), c.encode());
        }
        assert!(
            Control::decode(b"subscribe\n{}").is_none(),
            "the old format is refused"
        );
        assert_eq!(Target::new("", ""), Err(ErrorCode::BadRequest));
        assert_eq!(Target::new("", "x"), Err(ErrorCode::BadRequest));
    }
}
