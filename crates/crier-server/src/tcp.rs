//! Plain TCP listeners (`[[tcp]]`): line or start/end-delimited frames for
//! legacy devices, telnet and netcat, on the same channels as every other
//! transport. (Being built; see issue 4.)

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::server::ServerError;

/// The bound TCP listeners of a node.
pub struct TcpListeners {}

/// Binds every configured `[[tcp]]` listener.
pub async fn bind(_node: &Arc<Node>) -> Result<TcpListeners, ServerError> {
    Ok(TcpListeners {})
}

impl TcpListeners {
    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, _shutdown: CancellationToken) {}
}
