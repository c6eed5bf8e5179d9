//! An embedder authorising subscriptions in its own code through the
//! [`Hooks`] trait, and hearing about clients and channels through an
//! [`Observer`] — what crier-server does with its subscribe proxy (one
//! implementation of [`Hooks`]) and its webhooks (one [`Observer`]).
//!
//! The rule here: a user may subscribe to `team:<name>` only if it is a
//! member of that team, and gets its role there as channel info; anyone
//! may subscribe to `lobby`. The embedder's connection code asks the
//! hooks before the hub, driving the answer with a few lines of its own
//! (no async runtime needed). The observer keeps a log the example prints
//! and checks at the end.
//!
//! `cargo run -p crier-core --example hooks`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake};

use bytes::Bytes;
use crier_core::{
    Caller, ChannelConfig, ChannelOptions, ClientId, Decision, DisconnectReason, Hook, Hooks, Hub, HubConfig,
    Observer, Pending, SubscribeAnswer, SubscribeOptions, SubscribeRequest,
};

/// The application's own permission check: team → member → role.
struct Teams(HashMap<&'static str, HashMap<&'static str, &'static str>>);

impl Hooks for Teams {
    fn decides(&self, hook: Hook<'_>) -> bool {
        matches!(hook, Hook::Subscribe(_))
    }

    fn subscribe<'a>(&'a self, request: SubscribeRequest<'a>) -> Pending<'a, Decision<SubscribeAnswer>> {
        let user = request.caller.user;
        let role = match request.channel.strip_prefix("team:") {
            Some(team) => self.0.get(team).and_then(|members| members.get(user)).copied(),
            None if request.channel == "lobby" => Some("guest"),
            None => None,
        };
        match role {
            Some(role) => Decision::Allow(SubscribeAnswer {
                info: Some(Bytes::from(role)),
                ..Default::default()
            }),
            None => Decision::refuse(403, "not a member"),
        }
        .ready()
    }
}

/// What the embedder's connection code does with a client's subscribe:
/// ask the hooks (when they decide it), then the hub.
fn subscribe(hub: &Hub, hooks: &dyn Hooks, id: ClientId, user: &str, channel: &str) -> Result<(), String> {
    let mut options = SubscribeOptions::default();
    if hooks.decides(Hook::Subscribe(channel)) {
        let request = SubscribeRequest {
            caller: Caller {
                id,
                user,
                transport: "in-process",
                protocol: "none",
                context: None,
            },
            channel,
            data: None,
        };
        match block_on(hooks.subscribe(request)) {
            Decision::Allow(answer) => options.chan_info = answer.info,
            Decision::Refuse { code, reason } => {
                return Err(format!("{user} may not subscribe to {channel}: {code} {reason}"))
            }
            Decision::Disconnect { code, .. } => return Err(format!("{user} disconnected: {code}")),
            Decision::Unavailable => return Err(format!("{user}: try again later")),
        }
    }
    hub.subscribe(id, channel, options).map_err(|e| e.to_string())?;
    Ok(())
}

/// Drives a hook's answer on this thread: all an embedder without an
/// async runtime needs (one with tokio just `.await`s it).
fn block_on<T>(mut answer: Pending<'_, T>) -> T {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    loop {
        match answer.as_mut().poll(&mut cx) {
            Poll::Ready(t) => return t,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Records lifecycle events; quick and non-blocking, as the hub requires.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Observer for Log {
    fn disconnected(&self, client: ClientId, user: &str, reason: &DisconnectReason) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{user} ({client}) left: {reason:?}"));
    }
    fn unsubscribed(&self, _client: ClientId, user: &str, channel: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{user} unsubscribed from {channel}"));
    }
    fn occupied(&self, channel: &str) {
        self.0.lock().unwrap().push(format!("{channel} occupied"));
    }
    fn vacated(&self, channel: &str) {
        self.0.lock().unwrap().push(format!("{channel} vacated"));
    }
}

fn main() {
    run();
}

/// The whole example; also run by `cargo test` (see the test below).
fn run() {
    let hub = Hub::new(HubConfig {
        channels: ChannelConfig::default().namespace(
            "team",
            ChannelOptions {
                presence: true,
                ..Default::default()
            },
        ),
        ..Default::default()
    });
    let log = Arc::new(Log::default());
    hub.observe(log.clone());
    let teams: Arc<dyn Hooks> = Arc::new(Teams(HashMap::from([(
        "red",
        HashMap::from([("alice", "captain")]),
    )])));

    let (alice, _alice_rx) = hub.connect("alice", None);
    let (bob, _bob_rx) = hub.connect("bob", None);
    let mut refused = Vec::new();
    for (id, user, channel) in [
        (alice, "alice", "team:red"),
        (bob, "bob", "team:red"),
        (bob, "bob", "lobby"),
    ] {
        if let Err(why) = subscribe(&hub, &*teams, id, user, channel) {
            refused.push(why);
        }
    }
    // The hook's answer is the subscription's channel info.
    let present = hub.presence("team:red").expect("presence");
    assert_eq!(present.len(), 1);
    assert_eq!(present[0].chan_info().map(|b| &b[..]), Some(&b"captain"[..]));
    hub.unsubscribe(bob, "lobby").expect("unsubscribe");
    hub.disconnect(alice, DisconnectReason::Removed);

    let events = log.0.lock().unwrap().clone();
    for line in refused.iter().chain(&events) {
        println!("{line}");
    }
    assert_eq!(refused, ["bob may not subscribe to team:red: 403 not a member"]);
    assert_eq!(
        events,
        [
            "team:red occupied".to_owned(),
            "lobby occupied".to_owned(),
            "bob unsubscribed from lobby".to_owned(),
            "lobby vacated".to_owned(),
            format!("alice ({alice}) left: Removed"),
            "team:red vacated".to_owned(),
        ]
    );
}

#[cfg(test)]
mod tests {
    /// `cargo test` runs the example, so its claims guard the hub.
    #[test]
    fn example_runs_and_its_claims_hold() {
        super::run();
    }
}
