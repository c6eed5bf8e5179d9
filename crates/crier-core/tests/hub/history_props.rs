//! Property tests of history: any sequence of publishes (some skipping
//! history), size trims, TTL expiries, sweeps and the only subscriber
//! leaving and coming back answers history reads and recovery requests
//! exactly like a simple model says it must — including epoch loss: a
//! stream that no subscriber retains and whose history is all gone is
//! forgotten, the next one starts over at offset 1 in a new epoch, and
//! recovery from any position of the old epoch answers "not recovered".

use std::sync::Arc;
use std::time::Duration;

use crier_core::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Publish { skip_history: bool },
    Advance(u64),
    Sweep,
    // The channel's one long-lived subscriber leaves, or comes back.
    ToggleHolder,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::bool::weighted(0.2).prop_map(|s| Op::Publish { skip_history: s }),
        2 => (1u64..400).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
        1 => Just(Op::ToggleHolder),
    ]
}

// The model: the current stream's publications with their time and whether
// history kept it, and the positions of the streams forgotten before it.
struct Model {
    size: usize,
    ttl: u64,
    // Publications of the current epoch: (offset, published at, stored).
    pubs: Vec<(u64, u64, bool)>,
    // The current stream's epoch; `None` while the engine holds no stream.
    epoch: Option<Arc<str>>,
    // Last position of every forgotten stream.
    stale: Vec<StreamPosition>,
    // Whether the long-lived subscriber is in the channel.
    holder: bool,
}

impl Model {
    fn top(&self) -> u64 {
        self.pubs.len() as u64
    }

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

    // What the engine does when it next looks at the stream (a publication,
    // a sweep, the last subscriber leaving): a stream that nothing retains
    // and that keeps no publication is freed, and with it its epoch.
    fn forget_if_unneeded(&mut self, now: u64) {
        if !self.holder && self.epoch.is_some() && self.retained(now).is_empty() {
            let epoch = self.epoch.take().expect("checked");
            self.stale.push(StreamPosition {
                offset: self.top(),
                epoch,
            });
            self.pubs.clear();
        }
    }

    // A stream the engine just created must not reuse an old epoch.
    fn is_new_epoch(&self, epoch: &Arc<str>) -> bool {
        self.stale.iter().all(|s| s.epoch != *epoch)
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
        // A long-lived subscriber keeps the stream (and its epoch) alive
        // while it is in the channel.
        let (holder, _holder_rx) = hub.connect("holder", None);
        let epoch = hub.subscribe(holder, "c", SubscribeOptions::default()).unwrap().position.epoch;
        let mut model = Model { size, ttl, pubs: Vec::new(), epoch: Some(epoch), stale: Vec::new(), holder: true };

        for op in ops {
            let now = clock.now_ms();
            match op {
                Op::Publish { skip_history } => {
                    let pos = hub
                        .publish("c", "x", PublishOptions { skip_history, ..Default::default() })
                        .unwrap();
                    match &model.epoch {
                        Some(e) => prop_assert_eq!(&pos.epoch, e),
                        None => {
                            prop_assert!(model.is_new_epoch(&pos.epoch), "a recreated stream reused an epoch");
                            model.epoch = Some(pos.epoch.clone());
                        }
                    }
                    model.pubs.push((pos.offset, now, !skip_history));
                    prop_assert_eq!(pos.offset, model.top());
                    model.forget_if_unneeded(now);
                }
                Op::Advance(ms) => clock.advance(ms),
                Op::Sweep => {
                    hub.sweep();
                    model.forget_if_unneeded(now);
                }
                Op::ToggleHolder if model.holder => {
                    prop_assert!(hub.unsubscribe(holder, "c").unwrap());
                    model.holder = false;
                    model.forget_if_unneeded(now);
                }
                Op::ToggleHolder => {
                    let s = hub.subscribe(holder, "c", SubscribeOptions::default()).unwrap();
                    match &model.epoch {
                        Some(e) => prop_assert_eq!(&s.position.epoch, e),
                        None => {
                            prop_assert!(model.is_new_epoch(&s.position.epoch));
                            model.epoch = Some(s.position.epoch.clone());
                        }
                    }
                    prop_assert_eq!(s.position.offset, model.top());
                    model.holder = true;
                }
            }
            let now = clock.now_ms();
            let top = model.top();
            let retained = model.retained(now);

            // Plain history read: exactly the retained offsets.
            let page = hub.history("c", &HistoryQuery::default()).unwrap();
            let got: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
            prop_assert_eq!(&got, &retained);
            prop_assert_eq!(page.position.offset, top);
            if let Some(e) = &model.epoch {
                prop_assert_eq!(&page.position.epoch, e);
            }

            // Recovery from every position of the current epoch, and from
            // the last positions of forgotten ones (the top, and 0). Each
            // probe is a subscriber coming and going, which may itself let
            // the engine forget the stream: the model follows.
            let mut probes: Vec<StreamPosition> = match &model.epoch {
                Some(e) => (0..=top).map(|offset| StreamPosition { offset, epoch: e.clone() }).collect(),
                None => Vec::new(),
            };
            for s in model.stale.iter().rev().take(3) {
                probes.push(s.clone());
                probes.push(StreamPosition { offset: 0, epoch: s.epoch.clone() });
            }
            for since in probes {
                let (id, _rx) = hub.connect("r", None);
                let s = hub.subscribe(id, "c", SubscribeOptions {
                    catchup: Catchup::Recover(since.clone()),
                    ..Default::default()
                }).unwrap();
                hub.disconnect(id, DisconnectReason::Removed);
                let offs: Vec<u64> = s.publications.iter().map(|p| p.offset).collect();
                let top = model.top();
                match &model.epoch {
                    Some(e) if *e == since.epoch => {
                        let retained = model.retained(now);
                        let missed: Vec<u64> = (since.offset + 1..=top).collect();
                        let complete = missed.len() <= max_recover && missed.iter().all(|o| retained.contains(o));
                        prop_assert_eq!(s.recovered, complete, "since {:?} top {} retained {:?}", &since, top, &retained);
                        if complete {
                            prop_assert_eq!(offs, missed);
                        } else {
                            prop_assert!(offs.is_empty());
                        }
                        prop_assert_eq!(s.position.offset, top);
                        prop_assert_eq!(&s.position.epoch, e);
                    }
                    Some(e) => {
                        prop_assert!(!s.recovered, "recovered from stale epoch {:?}", &since);
                        prop_assert!(offs.is_empty());
                        prop_assert_eq!(s.position.offset, top);
                        prop_assert_eq!(&s.position.epoch, e);
                    }
                    None => {
                        // The probe itself brings up a brand-new stream.
                        prop_assert!(!s.recovered, "recovered from forgotten epoch {:?}", &since);
                        prop_assert!(offs.is_empty());
                        prop_assert_eq!(s.position.offset, 0);
                        prop_assert!(model.is_new_epoch(&s.position.epoch));
                    }
                }
                model.forget_if_unneeded(now);
            }

            // Forward reads after a position, with a limit.
            if let (Some(&first), Some(e)) = (retained.first(), &model.epoch) {
                let q = HistoryQuery {
                    since: Some(StreamPosition { offset: first, epoch: e.clone() }),
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
