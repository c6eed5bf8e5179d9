//! crier-core: the in-process hub of crier. It owns clients, channels,
//! ordered fan-out, history and presence, and has no sockets, no HTTP and no
//! JSON: transports live in crier-server and talk to a [`Hub`].
//!
//! Map of the crate:
//! - [`hub`]: the [`Hub`] (registry, subscriber sets, fan-out, the
//!   per-channel critical section), the [`Publisher`] handle, and the
//!   [`Observer`] of lifecycle events (a client leaving, an unsubscribe, a
//!   channel occupied or vacated), set with [`Hub::observe`].
//! - [`hooks`]: the [`Hooks`] an application decides with — connect,
//!   subscribe, publish, RPC, refresh — as async answers ([`Pending`],
//!   boxed futures: no runtime here) in the hub's own types ([`Decision`]:
//!   allow with changes, refuse, disconnect, unavailable). crier-server's
//!   HTTP proxies are one implementation; an embedder asks its own before
//!   calling the hub.
//! - [`queue`]: each client's bounded outbound queue ([`ClientReceiver`]),
//!   pushed without blocking, drained in batches; a transport's
//!   [`WriteNow`] lets a small fan-out write to a quiet connection at once.
//! - [`event`]: what a client receives ([`Event`], [`Publication`],
//!   [`Outbound`]) and the per-format encoding cache.
//! - [`engine`]: the [`Engine`] seam (offsets, history, presence);
//!   [`memory`] is the in-process engine.
//! - [`options`]: per-namespace [`ChannelOptions`].
//! - [`clock`]: time for TTLs, replaceable in tests.
//!
//! ```
//! use crier_core::{Hub, SubscribeOptions, PublishOptions, Exclusion, Outbound};
//! use std::time::Duration;
//!
//! let hub = Hub::default();
//! let (alice, mut alice_rx) = hub.connect("alice", None);
//! let (bob, mut bob_rx) = hub.connect("bob", None);
//! hub.subscribe(alice, "news", SubscribeOptions::default()).unwrap();
//! hub.subscribe(bob, "news", SubscribeOptions::default()).unwrap();
//!
//! // Bob's request caused this publication: everyone but Bob gets it.
//! let opts = PublishOptions { exclude: Exclusion { clients: vec![bob], users: vec![] }, ..Default::default() };
//! hub.publish("news", "hello", opts).unwrap();
//!
//! let mut got = Vec::new();
//! assert_eq!(alice_rx.drain_blocking(&mut got, Duration::from_secs(1)), Ok(1));
//! assert_eq!(bob_rx.try_drain(&mut got), Ok(0));
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
pub mod engine;
mod error;
pub mod event;
pub mod hooks;
pub mod hub;
pub mod memory;
pub mod options;
pub mod queue;
mod shard;
mod stats;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{Engine, EngineError, HistoryPage, HistoryQuery, StreamPosition};
pub use error::HubError;
pub use event::{ClientId, ClientInfo, Event, EventKind, Exclusion, Format, Outbound, Publication, Tags};
pub use hooks::{
    Caller, ConnectAnswer, ConnectRequest, Decision, Hook, Hooks, NoHooks, Pending, PublishAnswer,
    PublishRequest, RefreshAnswer, RefreshRequest, RpcAnswer, RpcRequest, ServerSubscription,
    SubscribeAnswer, SubscribeRequest,
};
pub use hub::{
    anonymous_user, settle_recovery, Catchup, ClientSnapshot, Delivery, Hub, HubConfig, Observer,
    PresenceStats, PublishOptions, Publisher, SubscribeOptions, Subscribed,
};
pub use memory::{HistoryLimit, HistoryUsage, MemoryEngine};
pub use options::{ChannelConfig, ChannelNames, ChannelOptions};
pub use queue::{defer_wakes, ClientReceiver, DisconnectReason, Flush, QueueLimits, Spread, WriteNow};
pub use stats::HubStats;
