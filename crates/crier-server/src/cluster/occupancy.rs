//! The cluster engine's side of cluster-wide occupied/vacated webhooks:
//! [`crate::webhooks::Occupancy`] over the broker, for this node. Used
//! only when the webhooks ask for occupied or vacated (the node wires
//! it), so a cluster without them does none of this work.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::Broker;
use crate::webhooks::Occupancy;

/// This node's holdings in the broker.
pub(crate) struct BrokerOccupancy {
    pub(crate) broker: Broker,
    /// This node's id, as the holder sets name it.
    pub(crate) node: String,
    /// How long this node counts as alive after a heartbeat.
    pub(crate) ttl: Duration,
}

impl Occupancy for BrokerOccupancy {
    fn hold(&self, channel: &str, held: bool) -> BoxFuture<'_, Result<bool, String>> {
        let channel = channel.to_owned();
        async move {
            self.broker
                .hold(&channel, &self.node, held)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn heartbeat(&self) -> BoxFuture<'_, Result<bool, String>> {
        async move {
            self.broker
                .heartbeat(&self.node, self.ttl)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn sweep(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, String>> {
        async move {
            let swept = self.broker.sweep(&self.node, self.ttl).await;
            let swept = swept.map_err(|e| e.to_string())?;
            if !swept.is_empty() {
                tracing::info!(
                    channels = swept.len(),
                    "channels held only by nodes that stopped (no heartbeat for crier.webhooks.node_ttl) are vacated"
                );
            }
            Ok(swept)
        }
        .boxed()
    }

    fn leave(&self) -> BoxFuture<'_, Result<(), String>> {
        async move { self.broker.leave(&self.node).await.map_err(|e| e.to_string()) }.boxed()
    }
}
