//! A client that never drains is dropped as slow while a thousand others
//! keep receiving every publication.

use crier_core::*;

use super::support::{closed_reason, offsets};

#[test]
fn one_stuck_client_is_dropped_others_get_everything() {
    let hub = Hub::new(HubConfig {
        queue_limits: QueueLimits {
            max_messages: 64,
            max_bytes: 1 << 20,
        },
        ..Default::default()
    });
    let (stuck, mut stuck_rx) = hub.connect("stuck", None);
    hub.subscribe(stuck, "c", SubscribeOptions::default()).unwrap();
    let mut others = Vec::new();
    for i in 0..1000 {
        let (id, rx) = hub.connect(format!("u{i}"), None);
        hub.subscribe(id, "c", SubscribeOptions::default()).unwrap();
        others.push((rx, Vec::new()));
    }
    for i in 0..500u64 {
        hub.publish("c", format!("{i}"), PublishOptions::default())
            .unwrap();
        for (rx, got) in &mut others {
            got.extend(offsets(rx));
        }
    }
    assert!(
        hub.client(stuck).is_none(),
        "the stuck client is gone from the hub"
    );
    assert_eq!(closed_reason(&mut stuck_rx), DisconnectReason::Slow);
    assert_eq!(DisconnectReason::Slow.code(), 3008);
    assert_eq!(hub.stats().dropped_slow, 1);
    assert_eq!(hub.subscriber_count("c"), 1000);
    let all: Vec<u64> = (1..=500).collect();
    for (_, got) in &others {
        assert_eq!(got, &all);
    }
}

#[test]
fn slow_client_in_a_join_leave_channel_does_not_cascade() {
    // Every member is stuck: each removal's leave event meets full queues.
    // All must be dropped, once each, without deep recursion.
    let hub = Hub::new(HubConfig {
        channels: ChannelConfig::new(ChannelOptions {
            join_leave: true,
            presence: true,
            ..Default::default()
        }),
        queue_limits: QueueLimits {
            max_messages: 4,
            max_bytes: 1 << 20,
        },
        node_tag: 0,
    });
    let mut rxs = Vec::new();
    for i in 0..2000 {
        let (id, rx) = hub.connect(format!("u{i}"), None);
        hub.subscribe(id, "c", SubscribeOptions::default()).unwrap();
        rxs.push(rx);
    }
    for _ in 0..5 {
        hub.publish("c", "x", PublishOptions::default()).unwrap();
    }
    assert_eq!(hub.client_count(), 0);
    assert!(hub.channels().is_empty());
    assert!(hub.presence("c").unwrap().is_empty());
    assert_eq!(hub.stats().dropped_slow + hub.stats().dropped_closed, 2000);
}
