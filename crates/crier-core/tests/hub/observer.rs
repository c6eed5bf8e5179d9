//! What an `Observer` hears: a channel's first and last subscriber on this
//! hub (occupied, vacated), unsubscribes, and clients leaving with their
//! reason — once each, in order.

use std::sync::{Arc, Mutex};

use crier_core::*;

#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Observer for Log {
    fn disconnected(&self, client: ClientId, user: &str, reason: &DisconnectReason) {
        self.0
            .lock()
            .unwrap()
            .push(format!("disconnected {client} {user} {reason:?}"));
    }
    fn unsubscribed(&self, client: ClientId, user: &str, channel: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("unsubscribed {client} {user} {channel}"));
    }
    fn occupied(&self, channel: &str) {
        self.0.lock().unwrap().push(format!("occupied {channel}"));
    }
    fn vacated(&self, channel: &str) {
        self.0.lock().unwrap().push(format!("vacated {channel}"));
    }
}

impl Log {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[test]
fn an_observer_hears_occupied_vacated_unsubscribes_and_disconnects_once_each() {
    let hub = Hub::new(HubConfig::default());
    let log = Arc::new(Log::default());
    assert!(hub.observe(log.clone()));
    assert!(!hub.observe(Arc::new(Log::default())), "one observer per hub");
    let (a, _rx_a) = hub.connect("alice", None);
    let (b, _rx_b) = hub.connect("bob", None);
    hub.subscribe(a, "news", SubscribeOptions::default()).unwrap();
    hub.subscribe(b, "news", SubscribeOptions::default()).unwrap();
    assert_eq!(
        log.take(),
        ["occupied news"],
        "only the first subscriber occupies"
    );
    assert!(hub.unsubscribe(a, "news").unwrap());
    assert!(!hub.unsubscribe(a, "news").unwrap(), "not subscribed any more");
    assert_eq!(log.take(), [format!("unsubscribed {a} alice news")]);
    hub.subscribe(b, "sport", SubscribeOptions::default()).unwrap();
    assert!(hub.disconnect(b, DisconnectReason::Removed));
    let mut events = log.take();
    assert_eq!(
        events[..2],
        [
            "occupied sport".to_owned(),
            format!("disconnected {b} bob Removed")
        ]
    );
    // Leaving by disconnecting is no unsubscribe; each channel it emptied
    // is vacated (in no fixed order).
    let mut vacated = events.split_off(2);
    vacated.sort();
    assert_eq!(vacated, ["vacated news", "vacated sport"]);
}

#[test]
fn a_disconnect_vacates_every_channel_it_empties() {
    let hub = Hub::new(HubConfig::default());
    let log = Arc::new(Log::default());
    hub.observe(log.clone());
    let (a, _rx) = hub.connect("alice", None);
    for ch in ["x", "y"] {
        hub.subscribe(a, ch, SubscribeOptions::default()).unwrap();
    }
    log.take();
    hub.disconnect(a, DisconnectReason::Shutdown);
    let mut events = log.take();
    assert_eq!(events.remove(0), format!("disconnected {a} alice Shutdown"));
    events.sort();
    assert_eq!(events, ["vacated x", "vacated y"]);
}
