//! The decisions an application makes about its clients: whether one may
//! connect (and as whom, with which server-side channels), subscribe to a
//! channel, publish into one (and with what data), what an RPC returns,
//! and whether an expiring connection or subscription lives on. The
//! [`Hooks`] trait asks them; its request and answer types are the hub's
//! own (ids, strings, opaque bytes), never a wire format.
//!
//! crier-server asks its [`Hooks`] for the client commands of the hooks
//! it [`decides`](Hooks::decides); its HTTP proxies (Centrifugo's proxy
//! protocol, JSON) are one implementation, and an embedder of the server
//! can plug in another. An embedder of this crate alone asks its hooks in
//! its own code before calling the [`Hub`](crate::Hub) (see
//! `examples/hooks.rs`). Lifecycle events (a client left, a channel
//! vacated) are the [`Observer`](crate::Observer)'s.
//!
//! No runtime here: the answers are boxed futures ([`Pending`]) that any
//! executor can drive, and the trait is object safe, so a server keeps
//! one as `Arc<dyn Hooks>`. Nothing on the publication path asks a hook.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::event::ClientId;

/// An answer still to come: a boxed future any executor can drive.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which decision is meant, for [`Hooks::decides`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook<'a> {
    /// A client connecting without credentials of its own (crier-server: no token).
    Connect,
    /// A connection reaching its expiry.
    Refresh,
    /// A client subscribing to this channel.
    Subscribe(&'a str),
    /// A subscription to this channel reaching its expiry.
    SubRefresh(&'a str),
    /// A client publishing into this channel.
    Publish(&'a str),
    /// A client calling this RPC method.
    Rpc(&'a str),
}

/// Who is asking: a connected client, or, in a [`ConnectRequest`], the
/// client about to be.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// Its id (in a connect request, the id it gets if admitted).
    pub id: ClientId,
    /// Its user; empty while connecting, and for anonymous clients.
    pub user: &'a str,
    /// The transport that carries it (crier-server: `websocket`,
    /// `http_stream`, `sse`, `uni_websocket`, `uni_sse`, `uni_http_stream`,
    /// `tcp`).
    pub transport: &'a str,
    /// Its wire format (crier-server: `json` or `protobuf`).
    pub protocol: &'a str,
    /// What the transport kept of the request that opened the connection,
    /// opaque to the hub; an implementation that knows the transport
    /// downcasts it (crier-server: `crier_server::Forwarded`, the HTTP
    /// headers its proxies forward and the emulated headers).
    pub context: Option<&'a (dyn Any + Send + Sync)>,
}

/// A client asking to connect.
#[derive(Clone, Copy, Debug)]
pub struct ConnectRequest<'a> {
    /// Who asks (no user yet).
    pub caller: Caller<'a>,
    /// The client's name and version, as it says.
    pub name: &'a str,
    /// See `name`.
    pub version: &'a str,
    /// The data of its connect request, if any.
    pub data: Option<&'a [u8]>,
    /// The channels it asks for at once (a client that cannot subscribe
    /// later, like a unidirectional one); usually none.
    pub channels: &'a [&'a str],
}

/// A client asking to subscribe.
#[derive(Clone, Copy, Debug)]
pub struct SubscribeRequest<'a> {
    /// Who asks.
    pub caller: Caller<'a>,
    /// The channel.
    pub channel: &'a str,
    /// The data of its subscribe request, if any.
    pub data: Option<&'a [u8]>,
}

/// A client asking to publish.
#[derive(Clone, Copy, Debug)]
pub struct PublishRequest<'a> {
    /// Who asks.
    pub caller: Caller<'a>,
    /// The channel.
    pub channel: &'a str,
    /// What it would publish.
    pub data: &'a [u8],
}

/// A client calling a method.
#[derive(Clone, Copy, Debug)]
pub struct RpcRequest<'a> {
    /// Who asks.
    pub caller: Caller<'a>,
    /// The method.
    pub method: &'a str,
    /// Its argument, if any.
    pub data: Option<&'a [u8]>,
}

/// A connection, or one subscription (`channel`), at its expiry.
#[derive(Clone, Copy, Debug)]
pub struct RefreshRequest<'a> {
    /// Whose connection.
    pub caller: Caller<'a>,
    /// The channel, for a subscription's expiry; `None` for the connection's.
    pub channel: Option<&'a str>,
}

/// What a hook decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<T> {
    /// Go ahead, with these changes.
    Allow(T),
    /// Refuse this request with an error the client sees (codes 400–1999
    /// by Centrifugo's rule); the connection stays.
    Refuse {
        /// The error code.
        code: u32,
        /// Its message.
        reason: String,
    },
    /// Close the connection (codes 4000–4499: the client reconnects;
    /// 4500–4999: it does not).
    Disconnect {
        /// The disconnect code.
        code: u32,
        /// Its reason.
        reason: String,
    },
    /// The decision could not be made now (a backend down, slow, or
    /// answering nonsense): a temporary failure the client may retry
    /// (crier-server: error 100 internal, temporary).
    Unavailable,
}

impl<T> Decision<T> {
    /// [`Decision::Refuse`] with `code` and `reason`.
    pub fn refuse(code: u32, reason: impl Into<String>) -> Self {
        Decision::Refuse {
            code,
            reason: reason.into(),
        }
    }

    /// [`Decision::Disconnect`] with `code` and `reason`.
    pub fn disconnect(code: u32, reason: impl Into<String>) -> Self {
        Decision::Disconnect {
            code,
            reason: reason.into(),
        }
    }

    /// The same decision with the allowed answer changed by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Decision<U> {
        match self {
            Decision::Allow(t) => Decision::Allow(f(t)),
            Decision::Refuse { code, reason } => Decision::Refuse { code, reason },
            Decision::Disconnect { code, reason } => Decision::Disconnect { code, reason },
            Decision::Unavailable => Decision::Unavailable,
        }
    }

    /// A ready [`Pending`] of this decision, for hooks that decide at once.
    pub fn ready<'a>(self) -> Pending<'a, Self>
    where
        T: Send + 'a,
    {
        Box::pin(std::future::ready(self))
    }
}

/// A connection admitted, and as what.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectAnswer {
    /// Its user (empty: anonymous).
    pub user: String,
    /// Unix seconds when it expires (then [`Hook::Refresh`], or closed).
    pub expire_at: Option<i64>,
    /// Connection info, shown to others in presence and publications.
    pub info: Option<Bytes>,
    /// Data for the client, in its connect reply.
    pub data: Option<Bytes>,
    /// Channels it is subscribed to by the server, at once.
    pub channels: BTreeMap<String, ServerSubscription>,
}

/// One server-side subscription of a [`ConnectAnswer`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerSubscription {
    /// Channel info (presence, join/leave, publications).
    pub info: Option<Bytes>,
    /// Data for the client, with the subscription.
    pub data: Option<Bytes>,
}

/// A subscription allowed, and with what.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeAnswer {
    /// Channel info (presence, join/leave, publications).
    pub info: Option<Bytes>,
    /// Data for the client, in its subscribe reply.
    pub data: Option<Bytes>,
    /// Unix seconds when it expires (then [`Hook::SubRefresh`], or ended).
    pub expire_at: Option<i64>,
}

/// A publication allowed, and what is published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishAnswer {
    /// Published instead of the client's data, when set.
    pub data: Option<Bytes>,
    /// Kept out of the channel's history.
    pub skip_history: bool,
}

/// An RPC's result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpcAnswer {
    /// What the client gets.
    pub data: Option<Bytes>,
}

/// What happens to an expiring connection or subscription.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefreshAnswer {
    /// End it now.
    pub expired: bool,
    /// Prolong it to these Unix seconds. Neither this nor `expired`: ask
    /// again a little later (crier-server: 10 s), it stays meanwhile.
    pub expire_at: Option<i64>,
}

/// The application's decisions about clients. Object safe: kept as
/// `Arc<dyn Hooks>`. Each method is asked only for what
/// [`Hooks::decides`] claims; the default of each answers
/// [`Decision::Unavailable`].
///
/// ```
/// use crier_core::{Decision, Hook, Hooks, Pending, SubscribeAnswer, SubscribeRequest};
///
/// /// Only `alice` may subscribe to `secret`; other channels follow the
/// /// server's own rules.
/// struct Secret;
///
/// impl Hooks for Secret {
///     fn decides(&self, hook: Hook<'_>) -> bool {
///         hook == Hook::Subscribe("secret")
///     }
///     fn subscribe<'a>(&'a self, request: SubscribeRequest<'a>) -> Pending<'a, Decision<SubscribeAnswer>> {
///         Box::pin(async move {
///             if request.caller.user == "alice" {
///                 Decision::Allow(SubscribeAnswer::default())
///             } else {
///                 Decision::refuse(403, "permission denied")
///             }
///         })
///     }
/// }
/// let hooks: std::sync::Arc<dyn Hooks> = std::sync::Arc::new(Secret);
/// assert!(hooks.decides(Hook::Subscribe("secret")));
/// assert!(!hooks.decides(Hook::Publish("secret")));
/// ```
pub trait Hooks: Send + Sync {
    /// Whether this implementation makes `hook`'s decision. Asked without
    /// waiting, before each request of that kind (and when a connection's
    /// deadlines are computed): where it says no, the caller's own rules
    /// apply (crier-server: tokens, namespace permissions, 104 for RPC).
    fn decides(&self, hook: Hook<'_>) -> bool;

    /// May this client connect, and as whom?
    fn connect<'a>(&'a self, request: ConnectRequest<'a>) -> Pending<'a, Decision<ConnectAnswer>> {
        let _ = request;
        Decision::Unavailable.ready()
    }

    /// Does this connection, or subscription (`request.channel`), live on
    /// past its expiry? [`Decision::Disconnect`] ends it as `expired` does;
    /// a refusal or a failure is asked again later.
    fn refresh<'a>(&'a self, request: RefreshRequest<'a>) -> Pending<'a, Decision<RefreshAnswer>> {
        let _ = request;
        Decision::Unavailable.ready()
    }

    /// May this client subscribe to this channel, and with what?
    fn subscribe<'a>(&'a self, request: SubscribeRequest<'a>) -> Pending<'a, Decision<SubscribeAnswer>> {
        let _ = request;
        Decision::Unavailable.ready()
    }

    /// May this client publish this, and what is published?
    fn publish<'a>(&'a self, request: PublishRequest<'a>) -> Pending<'a, Decision<PublishAnswer>> {
        let _ = request;
        Decision::Unavailable.ready()
    }

    /// What does this RPC return?
    fn rpc<'a>(&'a self, request: RpcRequest<'a>) -> Pending<'a, Decision<RpcAnswer>> {
        let _ = request;
        Decision::Unavailable.ready()
    }
}

/// Decides nothing: every request follows the caller's own rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {
    fn decides(&self, _: Hook<'_>) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    /// Drives a future that needs no waking (every answer here is ready).
    fn now<T>(mut f: Pending<'_, T>) -> T {
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(t) => t,
            Poll::Pending => panic!("not ready"),
        }
    }

    fn caller(user: &str) -> Caller<'_> {
        Caller {
            id: ClientId(7),
            user,
            transport: "websocket",
            protocol: "json",
            context: None,
        }
    }

    /// Publishes upper-cased, refuses empty data, answers one method.
    struct Shout;

    impl Hooks for Shout {
        fn decides(&self, hook: Hook<'_>) -> bool {
            matches!(hook, Hook::Publish(_) | Hook::Rpc("echo"))
        }
        fn publish<'a>(&'a self, r: PublishRequest<'a>) -> Pending<'a, Decision<PublishAnswer>> {
            if r.data.is_empty() {
                return Decision::refuse(400, "empty").ready();
            }
            Decision::Allow(PublishAnswer {
                data: Some(Bytes::from(r.data.to_ascii_uppercase())),
                skip_history: false,
            })
            .ready()
        }
        fn rpc<'a>(&'a self, r: RpcRequest<'a>) -> Pending<'a, Decision<RpcAnswer>> {
            Box::pin(async move {
                Decision::Allow(RpcAnswer {
                    data: r.data.map(Bytes::copy_from_slice),
                })
            })
        }
    }

    #[test]
    fn an_implementation_answers_what_it_decides_and_defaults_to_unavailable() {
        let hooks: Arc<dyn Hooks> = Arc::new(Shout);
        assert!(hooks.decides(Hook::Publish("news")));
        assert!(hooks.decides(Hook::Rpc("echo")));
        assert!(!hooks.decides(Hook::Rpc("other")));
        assert!(!hooks.decides(Hook::Subscribe("news")));
        let publish = |data: &'static [u8]| {
            now(hooks.publish(PublishRequest {
                caller: caller("ann"),
                channel: "news",
                data,
            }))
        };
        assert_eq!(
            publish(b"hi"),
            Decision::Allow(PublishAnswer {
                data: Some(Bytes::from_static(b"HI")),
                skip_history: false
            })
        );
        assert_eq!(publish(b""), Decision::refuse(400, "empty"));
        let echoed = now(hooks.rpc(RpcRequest {
            caller: caller("ann"),
            method: "echo",
            data: Some(b"{}"),
        }));
        assert_eq!(
            echoed.map(|a| a.data),
            Decision::Allow(Some(Bytes::from_static(b"{}")))
        );
        // Not implemented: a temporary failure, never a silent allow.
        let asked = now(hooks.subscribe(SubscribeRequest {
            caller: caller("ann"),
            channel: "news",
            data: None,
        }));
        assert_eq!(asked, Decision::Unavailable);
        assert!(!NoHooks.decides(Hook::Connect));
    }

    #[test]
    fn the_context_reaches_an_implementation_that_knows_its_type() {
        struct Cookie(&'static str);
        let cookie = Cookie("s=1");
        let mut c = caller("");
        c.context = Some(&cookie);
        let seen = c.context.and_then(|x| x.downcast_ref::<Cookie>()).map(|c| c.0);
        assert_eq!(seen, Some("s=1"));
        assert!(c.context.and_then(|x| x.downcast_ref::<String>()).is_none());
    }

    #[test]
    fn map_keeps_refusals_and_disconnects() {
        let d: Decision<u8> = Decision::disconnect(4501, "go away");
        assert_eq!(d.map(|n| n + 1), Decision::disconnect(4501, "go away"));
        assert_eq!(Decision::Allow(1u8).map(|n| n + 1), Decision::Allow(2));
    }
}
