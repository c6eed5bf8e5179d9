//! One Redis shard's command connection: a multiplexed connection made on
//! first use, dropped on a connection-level failure and made again by the
//! next call. Every call is bounded: connecting by `connect_timeout`, the
//! command by `command_timeout`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, RedisError, ScriptInvocation, ServerErrorKind, Value};
use tokio::sync::Mutex;
use tokio::time::timeout;

use super::BrokerError;

pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) address: String,
    pub(crate) client: redis::Client,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    conn: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
}

/// What to run: a script or a plain command.
pub(crate) enum Request<'a> {
    Script(&'a ScriptInvocation<'a>),
    Cmd(&'a Cmd),
}

/// Whether a failure says Redis is unreachable, slow or not serving (so the
/// caller may retry later) rather than that the request or reply was wrong.
fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
}

pub(crate) fn map_error(address: &str, e: RedisError) -> BrokerError {
    if is_unavailable(&e) {
        BrokerError::Unavailable(format!("redis {address}: {e}"))
    } else {
        BrokerError::Protocol(format!("redis {address}: {e}"))
    }
}

impl Shard {
    pub(crate) fn new(
        index: usize,
        address: String,
        client: redis::Client,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Self {
        Self {
            index,
            address,
            client,
            connect_timeout,
            command_timeout,
            conn: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// The current connection (and whether it was already there), or a new one.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection, bool), BrokerError> {
        let mut slot = self.conn.lock().await;
        if let Some((id, c)) = &*slot {
            return Ok((*id, c.clone(), true));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let c = match timeout(
            self.connect_timeout,
            self.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(map_error(&self.address, e)),
            Err(_) => {
                return Err(BrokerError::Unavailable(format!(
                    "redis {}: connect timed out after {:?}",
                    self.address, self.connect_timeout
                )))
            }
        };
        let id = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *slot = Some((id, c.clone()));
        Ok((id, c, false))
    }

    /// Forgets connection `id` (if still the current one).
    async fn invalidate(&self, id: u64) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|(cur, _)| *cur == id) {
            *slot = None;
        }
    }

    /// Forgets the current connection, whatever it is: the pub/sub side saw
    /// this shard go away.
    pub(crate) async fn invalidate_all(&self) {
        *self.conn.lock().await = None;
    }

    /// One attempt; the flag says a retry may help: the request failed
    /// fast on a connection made earlier, which had died meanwhile.
    async fn once(&self, req: &Request<'_>) -> (Result<Value, BrokerError>, bool) {
        // Bounded as a whole, waiting for the lock included: callers queued
        // behind a connect that hangs fail together, not one after another.
        let (id, mut c, reused) = match timeout(self.connect_timeout, self.connection()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return (Err(e), false),
            Err(_) => {
                let e = BrokerError::Unavailable(format!(
                    "redis {}: no connection within {:?}",
                    self.address, self.connect_timeout
                ));
                return (Err(e), false);
            }
        };
        let run = async {
            match req {
                Request::Script(inv) => inv.invoke_async::<Value>(&mut c).await,
                Request::Cmd(cmd) => cmd.query_async::<Value>(&mut c).await,
            }
        };
        match timeout(self.command_timeout, run).await {
            Ok(Ok(v)) => (Ok(v), false),
            Ok(Err(e)) => {
                let dropped = e.is_connection_dropped() || e.is_unrecoverable_error();
                let e = map_error(&self.address, e);
                if matches!(e, BrokerError::Unavailable(_)) {
                    self.invalidate(id).await;
                }
                (Err(e), reused && dropped)
            }
            Err(_) => {
                self.invalidate(id).await;
                let e = BrokerError::Unavailable(format!(
                    "redis {}: no reply within {:?}",
                    self.address, self.command_timeout
                ));
                (Err(e), false)
            }
        }
    }

    /// Runs `req`. An `idempotent` request that failed because its
    /// connection had died is tried once more on a new connection; a publish
    /// is not (it may have run before the reply was lost).
    pub(crate) async fn run(&self, req: Request<'_>, idempotent: bool) -> Result<Value, BrokerError> {
        match self.once(&req).await {
            (Err(_), true) if idempotent => self.once(&req).await.0,
            (result, _) => result,
        }
    }
}
