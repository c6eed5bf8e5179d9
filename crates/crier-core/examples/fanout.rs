//! A tour of the hub with no network: three clients, fan-out with the
//! publisher excluded, a late joiner that catches up from history, and a
//! simulation thread feeding the hub through a `Publisher`.
//!
//! Run: `cargo run --release -p crier-core --example fanout`

use std::time::Duration;

use crier_core::*;

fn show(name: &str, rx: &mut ClientReceiver) {
    let mut out = Vec::new();
    let _ = rx.drain_blocking(&mut out, Duration::from_millis(200));
    for item in out {
        if let Outbound::Event(ev) = item {
            if let EventKind::Publication(p) = &ev.kind {
                println!(
                    "  {name:<6} got #{:<3} on {:<14} {}",
                    p.offset,
                    ev.channel.as_deref().unwrap_or("-"),
                    String::from_utf8_lossy(&p.data)
                );
            }
        }
    }
}

fn main() {
    run();
}

/// The whole example; also run by `cargo test` (see the test below).
fn run() {
    let channels = ChannelConfig::default().namespace(
        "conversation",
        ChannelOptions {
            history_size: 100,
            presence: true,
            join_leave: false,
            ..Default::default()
        },
    );
    let hub = Hub::new(HubConfig {
        channels,
        ..Default::default()
    });

    let (alice, mut alice_rx) = hub.connect("alice", None);
    let (bob, mut bob_rx) = hub.connect("bob", None);
    for id in [alice, bob] {
        hub.subscribe(id, "conversation:123", SubscribeOptions::default())
            .unwrap();
    }

    println!("1. alice posts; her own connection is excluded from the echo:");
    let opts = PublishOptions {
        exclude: Exclusion {
            clients: vec![alice],
            users: vec![],
        },
        ..Default::default()
    };
    hub.publish("conversation:123", "alice: hi bob", opts).unwrap();
    show("alice", &mut alice_rx);
    show("bob", &mut bob_rx);

    println!("2. a simulation thread publishes ticks through a Publisher:");
    let publisher = hub.publisher();
    let sim = std::thread::spawn(move || {
        for tick in 1..=3 {
            publisher
                .publish("conversation:123", format!("tick {tick}"))
                .unwrap();
        }
    });
    sim.join().unwrap();
    show("bob", &mut bob_rx);

    println!("3. carol joins late and catches up from history, then goes live:");
    let (carol, mut carol_rx) = hub.connect("carol", None);
    let epoch = hub
        .history(
            "conversation:123",
            &HistoryQuery {
                limit: Some(0),
                ..Default::default()
            },
        )
        .unwrap()
        .position
        .epoch;
    let since = StreamPosition { offset: 0, epoch };
    let s = hub
        .subscribe(
            carol,
            "conversation:123",
            SubscribeOptions {
                catchup: Catchup::Recover(since),
                ..Default::default()
            },
        )
        .unwrap();
    for p in &s.publications {
        println!(
            "  carol  caught up #{} {}",
            p.offset,
            String::from_utf8_lossy(&p.data)
        );
    }
    hub.publish(
        "conversation:123",
        "bob: welcome carol",
        PublishOptions::default(),
    )
    .unwrap();
    show("carol", &mut carol_rx);

    let present: Vec<String> = hub
        .presence("conversation:123")
        .unwrap()
        .iter()
        .map(|i| i.user.to_string())
        .collect();
    println!("4. present in conversation:123: {present:?}");
    println!("   stats: {:?}", hub.stats());
}

#[cfg(test)]
mod tests {
    /// `cargo test` runs the example, so its assertions guard the hub.
    #[test]
    fn example_runs_and_its_claims_hold() {
        super::run();
    }
}
