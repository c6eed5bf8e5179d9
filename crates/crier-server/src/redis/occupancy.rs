//! Which nodes hold which channels, for cluster-wide occupied/vacated
//! webhooks: one script per change (see `scripts::OCCUPANCY_*`), so two
//! nodes changing one channel's holder set at once are ordered by Redis
//! and exactly one of them sees each empty <-> not-empty transition.

use std::time::Duration;

use super::conn::Request;
use super::{as_array, as_string, as_u64, key, millis, BrokerError, RedisBroker};

/// Channels of a dead node released per sweep script (each a short
/// atomic step, so Redis is never held long).
const SWEEP_BATCH: usize = 512;
/// Sweep scripts per shard per call; the rest waits for the next call.
const SWEEP_ROUNDS: usize = 64;

impl RedisBroker {
    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.inner.config.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:node:{node}", self.inner.config.prefix)
    }

    /// Records that `node` holds `channel` (`held`) or no longer does;
    /// true when the channel's holder set went from empty to not empty
    /// (or back).
    pub async fn hold(&self, channel: &str, node: &str, held: bool) -> Result<bool, BrokerError> {
        let mut inv = self
            .inner
            .scripts
            .hold
            .key(key(&self.inner.config.prefix, channel, "n"));
        inv.key(self.node_key(node))
            .arg(node)
            .arg(channel)
            .arg(if held { "1" } else { "0" });
        // Retried after a dropped connection: the set ends the same, though
        // the transition of a first try that ran is then not seen.
        let reply = self.shard(channel).run(Request::Script(&inv), true).await?;
        Ok(as_u64(&reply)? == 1)
    }

    /// Keeps `node` alive for `ttl` on every shard; true when it had lapsed
    /// on any (never seen, or expired).
    pub async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<bool, BrokerError> {
        let mut lapsed = false;
        for shard in &self.inner.shards {
            let mut inv = self.inner.scripts.heartbeat.key(self.nodes_key());
            inv.arg(node).arg(millis(ttl).max(1));
            lapsed |= as_u64(&shard.run(Request::Script(&inv), true).await?)? == 1;
        }
        Ok(lapsed)
    }

    /// Releases what expired nodes held (not `node`'s own); the channels
    /// this call left without a holder, with the node that held them.
    pub async fn sweep(&self, node: &str) -> Result<Vec<(String, String)>, BrokerError> {
        let mut vacated = Vec::new();
        for shard in &self.inner.shards {
            for _ in 0..SWEEP_ROUNDS {
                let mut inv = self.inner.scripts.sweep.key(self.nodes_key());
                inv.arg(&self.inner.config.prefix).arg(SWEEP_BATCH).arg(node);
                let reply = as_array(shard.run(Request::Script(&inv), false).await?)?;
                let mut items = reply.into_iter();
                let Some(dead) = items.next() else { break };
                let dead = as_string(dead)?;
                for channel in items {
                    vacated.push((as_string(channel)?, dead.clone()));
                }
            }
        }
        Ok(vacated)
    }

    /// Forgets `node` (it stops, holding nothing).
    pub async fn leave(&self, node: &str) -> Result<(), BrokerError> {
        for shard in &self.inner.shards {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(self.nodes_key()).arg(node);
            shard.run(Request::Cmd(&cmd), true).await?;
        }
        Ok(())
    }
}
