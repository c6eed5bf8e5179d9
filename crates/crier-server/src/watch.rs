//! File sources (`[[watch]]`): file events and appended lines published to
//! channels. (Being built; see issue 4.)

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::node::Node;
use crate::server::ServerError;

/// The running file watchers of a node.
pub struct Watchers {}

/// Starts watching every configured `[[watch]]` path.
pub fn start(_node: &Arc<Node>) -> Result<Watchers, ServerError> {
    Ok(Watchers {})
}

impl Watchers {
    /// Watches until `shutdown` is cancelled.
    pub async fn run(self, _shutdown: CancellationToken) {}
}
