//! A simulation thread feeding the hub at a fixed tick rate, and viewers that
//! join mid-run: each gets the latest state as a snapshot, then every later
//! tick live, with no gap and no duplicate between the two.
//!
//! - The simulation is a plain `std::thread` (no async runtime) that ticks at
//!   200 Hz for 1 s and publishes its state as hand-formatted JSON to
//!   `sim:state` through a [`Publisher`].
//! - The `sim` namespace keeps a little history, so a subscriber with
//!   [`Catchup::Latest`] receives the newest state in
//!   [`Subscribed::publications`] before its live stream starts.
//! - The main thread watches the run through a `recorder` client subscribed
//!   from the start: each time its queue wakes it, it checks
//!   `hub.stats().publications` and lets a viewer join once enough ticks
//!   happened. Nothing sleeps to synchronise; only the simulation sleeps, to
//!   keep its tick rate.
//! - Each viewer drains its queue on its own thread with
//!   [`ClientReceiver::drain_blocking`] and asserts: first live offset ==
//!   snapshot offset + 1, offsets strictly increasing with no gap, the
//!   payload's tick equals its offset, and the stream ends at the last tick.
//!
//! Run: `cargo run -p crier-core --example simulation`

use std::thread;
use std::time::{Duration, Instant};

use crier_core::*;

const CHANNEL: &str = "sim:state";
/// Ticks per second of the simulation.
const RATE_HZ: u64 = 200;
/// Ticks in the whole run (1 s).
const TICKS: u64 = 200;
/// Viewers join once this many ticks were published.
const JOIN_AFTER: [u64; 2] = [50, 130];
/// Longest quiet spell tolerated on a queue before the example fails.
const STALL: Duration = Duration::from_secs(2);

/// The simulated world: a ball bouncing on the floor.
struct World {
    tick: u64,
    height: f64,
    velocity: f64,
}

impl World {
    fn step(&mut self, dt: f64) {
        self.tick += 1;
        self.velocity -= 9.81 * dt;
        self.height += self.velocity * dt;
        if self.height < 0.0 {
            self.height = -self.height;
            self.velocity = -self.velocity * 0.9;
        }
    }

    /// The state as JSON text. crier-core has no JSON dependency (and needs
    /// none: payloads are opaque bytes), so it is formatted by hand.
    fn to_json(&self) -> String {
        format!(
            r#"{{"tick":{},"height":{:.4},"velocity":{:.4}}}"#,
            self.tick, self.height, self.velocity
        )
    }
}

/// The `tick` field of a state published by [`World::to_json`].
fn tick_of(json: &[u8]) -> u64 {
    let text = std::str::from_utf8(json).expect("state is UTF-8");
    let rest = text
        .strip_prefix(r#"{"tick":"#)
        .unwrap_or_else(|| panic!("not a state: {text}"));
    let end = rest.find(',').expect("tick is followed by more fields");
    rest[..end].parse().expect("tick is a number")
}

/// Runs the simulation at a fixed rate; returns the last position published.
fn simulate(publisher: Publisher) -> StreamPosition {
    let period = Duration::from_nanos(1_000_000_000 / RATE_HZ);
    let dt = period.as_secs_f64();
    let mut world = World {
        tick: 0,
        height: 2.0,
        velocity: 0.0,
    };
    let start = Instant::now();
    let mut last = StreamPosition::default();
    for n in 1..=TICKS {
        world.step(dt);
        last = publisher
            .publish(CHANNEL, world.to_json())
            .expect("sim:state is a known channel");
        // Pace to absolute deadlines so the rate does not drift with the
        // time spent publishing.
        let deadline = start + period * n as u32;
        if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    last
}

/// What one viewer saw.
struct ViewerReport {
    name: &'static str,
    snapshot: u64,
    live: Vec<u64>,
    disconnect: DisconnectReason,
}

/// Drains a viewer's queue until the hub disconnects it, checking every
/// live offset against the snapshot it started from.
fn view(name: &'static str, mut rx: ClientReceiver, subscribed: Subscribed) -> ViewerReport {
    assert_eq!(
        subscribed.publications.len(),
        1,
        "{name}: Catchup::Latest gives exactly one snapshot once the channel has history"
    );
    let snapshot = &subscribed.publications[0];
    assert_eq!(
        snapshot.offset, subscribed.position.offset,
        "{name}: the snapshot is the latest publication"
    );
    assert_eq!(
        tick_of(&snapshot.data),
        snapshot.offset,
        "{name}: snapshot payload"
    );
    println!(
        "  {name}: joined at offset {}, snapshot {}",
        snapshot.offset,
        String::from_utf8_lossy(&snapshot.data)
    );

    let mut live = Vec::new();
    let mut expected = snapshot.offset + 1;
    let mut out = Vec::new();
    let disconnect = loop {
        match rx.drain_blocking(&mut out, STALL) {
            Ok(0) => panic!("{name}: nothing arrived for {STALL:?}: the stream stalled"),
            Ok(_) => {}
            Err(reason) => break reason,
        }
        for item in out.drain(..) {
            let Outbound::Event(ev) = item else {
                panic!("{name}: unexpected raw bytes")
            };
            let EventKind::Publication(p) = &ev.kind else {
                panic!("{name}: unexpected event {:?}", ev.kind)
            };
            assert_eq!(ev.channel.as_deref(), Some(CHANNEL));
            // Strictly increasing with no gap: each offset is exactly the
            // next one, starting right after the snapshot.
            assert_eq!(p.offset, expected, "{name}: gap or duplicate in the live stream");
            assert_eq!(tick_of(&p.data), p.offset, "{name}: payload and offset disagree");
            expected += 1;
            live.push(p.offset);
        }
    };
    ViewerReport {
        name,
        snapshot: snapshot.offset,
        live,
        disconnect,
    }
}

fn main() {
    run();
}

/// The whole example; also run by `cargo test` (see the test below).
fn run() {
    let began = Instant::now();
    let channels = ChannelConfig::default().namespace(
        "sim",
        ChannelOptions {
            // One entry would do for `Catchup::Latest`; a few more let a
            // reconnecting viewer recover a short gap instead.
            history_size: 16,
            ..Default::default()
        },
    );
    let hub = Hub::new(HubConfig {
        channels,
        ..Default::default()
    });

    // The recorder sees the run from its very first tick; its queue is what
    // wakes the main thread.
    let (recorder, mut recorder_rx) = hub.connect("recorder", None);
    let start = hub
        .subscribe(recorder, CHANNEL, SubscribeOptions::default())
        .expect("subscribe recorder");
    assert_eq!(start.position.offset, 0, "a fresh channel starts at offset 0");

    println!("simulation: {TICKS} ticks at {RATE_HZ} Hz on {CHANNEL}");
    let publisher = hub.publisher();
    let sim = thread::spawn(move || simulate(publisher));

    let names = ["viewer-1", "viewer-2"];
    let mut viewers = Vec::new();
    let mut recorded = 0;
    let mut out = Vec::new();
    while recorded < TICKS {
        match recorder_rx.drain_blocking(&mut out, STALL) {
            Ok(0) => panic!("recorder: nothing arrived for {STALL:?}: the simulation stalled"),
            Ok(n) => recorded += n as u64,
            Err(reason) => panic!("recorder disconnected: {reason:?}"),
        }
        // Checked after every wake-up, i.e. after every tick or batch.
        let published = hub.stats().publications;
        let next = viewers.len();
        if next < JOIN_AFTER.len() && published >= JOIN_AFTER[next] {
            let name = names[next];
            let (id, rx) = hub.connect(name, None);
            let subscribed = hub
                .subscribe(
                    id,
                    CHANNEL,
                    SubscribeOptions {
                        catchup: Catchup::Latest,
                        ..Default::default()
                    },
                )
                .expect("subscribe viewer");
            let handle = thread::spawn(move || view(name, rx, subscribed));
            viewers.push((id, handle));
        }
    }
    let mut offsets = Vec::new();
    for item in out {
        if let Outbound::Event(ev) = item {
            if let EventKind::Publication(p) = &ev.kind {
                offsets.push(p.offset);
            }
        }
    }
    assert_eq!(
        offsets,
        (1..=TICKS).collect::<Vec<_>>(),
        "the recorder saw every tick once, in order"
    );

    let last = sim.join().expect("simulation thread");
    assert_eq!(last.offset, TICKS, "one offset per tick");
    println!(
        "  recorder: {} ticks, offsets 1..={TICKS}, all in order",
        offsets.len()
    );
    assert_eq!(viewers.len(), JOIN_AFTER.len(), "both viewers joined mid-run");

    // The run is over and every tick is queued: closing the viewers' queues
    // now ends their drain loops after what is already queued.
    let mut live_total = 0;
    for (id, handle) in viewers {
        assert!(hub.disconnect(id, DisconnectReason::Removed));
        let report = handle.join().expect("viewer thread");
        assert!(
            report.snapshot < TICKS && !report.live.is_empty(),
            "{}: joined before the end of the run",
            report.name
        );
        let (first, last_live) = (report.live[0], report.live[report.live.len() - 1]);
        println!(
            "  {}: {} live ticks {first}..={last_live} after snapshot {}, no gaps; then {:?}",
            report.name,
            report.live.len(),
            report.snapshot,
            report.disconnect
        );
        assert_eq!(
            first,
            report.snapshot + 1,
            "{}: live starts after the snapshot",
            report.name
        );
        assert_eq!(
            last_live, TICKS,
            "{}: live stream reaches the last tick",
            report.name
        );
        assert_eq!(report.disconnect, DisconnectReason::Removed);
        live_total += report.live.len() as u64;
    }

    let stats = hub.stats();
    assert_eq!(stats.publications, TICKS);
    assert_eq!(
        stats.deliveries,
        TICKS + live_total,
        "every delivery is accounted for by the recorder and the viewers"
    );
    assert_eq!(stats.dropped_slow, 0);
    println!(
        "ok: {} publications, {} deliveries, {:.2} s",
        stats.publications,
        stats.deliveries,
        began.elapsed().as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    /// `cargo test` runs the example, so its assertions guard the hub.
    #[test]
    fn example_runs_and_its_claims_hold() {
        super::run();
    }
}
