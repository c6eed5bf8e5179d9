//! Property tests of history: any sequence of publishes (some skipping
//! history), size trims and TTL expiries answers history reads and recovery
//! requests exactly like a simple model says it must.

use std::sync::Arc;
use std::time::Duration;

use crier_core::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Publish { skip_history: bool },
    Advance(u64),
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::bool::weighted(0.2).prop_map(|s| Op::Publish { skip_history: s }),
        2 => (1u64..400).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

// The model: every publication with its time and whether history kept it.
struct Model {
    size: usize,
    ttl: u64,
    pubs: Vec<(u64, u64, bool)>, // (offset, published at, stored)
}

impl Model {
    // Offsets history must still hold at `now`.
    fn retained(&self, now: u64) -> Vec<u64> {
        let stored: Vec<&(u64, u64, bool)> = self.pubs.iter().filter(|p| p.2).collect();
        let window = &stored[stored.len().saturating_sub(self.size)..];
        window
            .iter()
            .filter(|p| p.1 + self.ttl > now)
            .map(|p| p.0)
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn history_and_recovery_match_the_model(
        size in 1usize..8,
        ttl in 50u64..1000,
        max_recover in 1usize..6,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let clock = Arc::new(ManualClock::new(10_000));
        let options = ChannelOptions {
            history_size: size,
            history_ttl: Some(Duration::from_millis(ttl)),
            ..Default::default()
        };
        let mut channels = ChannelConfig::new(options);
        channels.recovery_max_publications = max_recover;
        let engine = Arc::new(MemoryEngine::new(clock.clone()));
        let hub = Hub::with_engine(HubConfig { channels, ..Default::default() }, engine);
        // A live subscriber keeps the stream (and its epoch) alive throughout.
        let (holder, _holder_rx) = hub.connect("holder", None);
        let epoch = hub.subscribe(holder, "c", SubscribeOptions::default()).unwrap().position.epoch;
        let mut model = Model { size, ttl, pubs: Vec::new() };

        for op in ops {
            match op {
                Op::Publish { skip_history } => {
                    let pos = hub
                        .publish("c", "x", PublishOptions { skip_history, ..Default::default() })
                        .unwrap();
                    model.pubs.push((pos.offset, clock.now_ms(), !skip_history));
                    prop_assert_eq!(pos.offset, model.pubs.len() as u64);
                    prop_assert_eq!(&pos.epoch, &epoch);
                }
                Op::Advance(ms) => clock.advance(ms),
                Op::Sweep => hub.sweep(),
            }
            let now = clock.now_ms();
            let top = model.pubs.len() as u64;
            let retained = model.retained(now);

            // Plain history read: exactly the retained offsets.
            let page = hub.history("c", &HistoryQuery::default()).unwrap();
            let got: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
            prop_assert_eq!(&got, &retained);
            prop_assert_eq!(page.position.offset, top);

            // Recovery from every possible position.
            for since in 0..=top {
                let missed: Vec<u64> = (since + 1..=top).collect();
                let complete = missed.len() <= max_recover && missed.iter().all(|o| retained.contains(o));
                let (id, _rx) = hub.connect("r", None);
                let s = hub.subscribe(id, "c", SubscribeOptions {
                    catchup: Catchup::Recover(StreamPosition { offset: since, epoch: epoch.clone() }),
                    ..Default::default()
                }).unwrap();
                hub.disconnect(id, DisconnectReason::Removed);
                prop_assert_eq!(s.recovered, complete, "since {} top {} retained {:?}", since, top, &retained);
                let offs: Vec<u64> = s.publications.iter().map(|p| p.offset).collect();
                if complete {
                    prop_assert_eq!(offs, missed);
                } else {
                    prop_assert!(offs.is_empty());
                }
                prop_assert_eq!(s.position.offset, top);
            }

            // Forward reads after a position, with a limit.
            if let Some(&first) = retained.first() {
                let q = HistoryQuery {
                    since: Some(StreamPosition { offset: first, epoch: epoch.clone() }),
                    limit: Some(2),
                    reverse: false,
                };
                let got: Vec<u64> = hub.history("c", &q).unwrap().publications.iter().map(|p| p.offset).collect();
                let want: Vec<u64> = retained.iter().copied().filter(|o| *o > first).take(2).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
