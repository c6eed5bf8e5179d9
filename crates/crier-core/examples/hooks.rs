//! An embedder deciding in its own code who may subscribe, and hearing
//! about clients and channels through an [`Observer`] — what crier-server
//! does with its subscribe proxy and its webhooks, without either.
//!
//! The rule here: a user may subscribe to `team:<name>` only if it is a
//! member of that team; anyone may subscribe to `lobby`. The observer
//! keeps a log the example prints and checks at the end.
//!
//! `cargo run -p crier-core --example hooks`

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crier_core::{
    ChannelConfig, ChannelOptions, ClientId, DisconnectReason, Hub, HubConfig, Observer, SubscribeOptions,
};

/// The application's own permission check, called before the hub.
struct Teams(HashMap<&'static str, HashSet<&'static str>>);

impl Teams {
    fn may_subscribe(&self, user: &str, channel: &str) -> bool {
        match channel.strip_prefix("team:") {
            Some(team) => self.0.get(team).is_some_and(|members| members.contains(user)),
            None => channel == "lobby",
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
        channels: ChannelConfig::default().namespace("team", ChannelOptions::default()),
        ..Default::default()
    });
    let log = Arc::new(Log::default());
    hub.observe(log.clone());
    let teams = Teams(HashMap::from([("red", HashSet::from(["alice"]))]));

    let (alice, _alice_rx) = hub.connect("alice", None);
    let (bob, _bob_rx) = hub.connect("bob", None);
    let mut refused = Vec::new();
    for (id, user, channel) in [
        (alice, "alice", "team:red"),
        (bob, "bob", "team:red"),
        (bob, "bob", "lobby"),
    ] {
        if teams.may_subscribe(user, channel) {
            hub.subscribe(id, channel, SubscribeOptions::default())
                .expect("subscribe");
        } else {
            refused.push(format!("{user} may not subscribe to {channel}"));
        }
    }
    hub.unsubscribe(bob, "lobby").expect("unsubscribe");
    hub.disconnect(alice, DisconnectReason::Removed);

    let events = log.0.lock().unwrap().clone();
    for line in refused.iter().chain(&events) {
        println!("{line}");
    }
    assert_eq!(refused, ["bob may not subscribe to team:red"]);
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
