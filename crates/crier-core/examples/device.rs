//! A device thread that owns a (simulated) serial device and shares it with
//! many clients through the hub, leaving the asker out of the echo.
//!
//! - Clients send requests to the device thread over a std `mpsc` channel,
//!   each carrying the requesting [`ClientId`]; only the device thread ever
//!   touches the serial line.
//! - For each request the device thread writes the command, reads lines until
//!   the answer, then:
//!   - sends the asker a direct acknowledgement with the answer
//!     (`send(asker, ..)`, a message outside any channel);
//!   - publishes the answer to `device:responses` for everyone else,
//!     excluding the asker (`PublishOptions { exclude: Exclusion { clients:
//!     vec![asker], .. }, .. }`), so the asker gets it once, not twice.
//! - Unsolicited telegrams the device emits on its own (boot, door sensor)
//!   are published to `device:responses` for everyone.
//! - The device thread uses a [`Publisher`] (from `hub.publisher()`), the
//!   handle for plain threads: its `send` is `hub.send` and its
//!   `publish_with` is `hub.publish`. No async runtime anywhere.
//!
//! At the end the example checks, client by client, exactly who got what:
//! every telegram, every other client's answers, its own acknowledgements,
//! and never its own answer on the channel.
//!
//! Run: `cargo run -p crier-core --example device`

use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crier_core::*;

const CHANNEL: &str = "device:responses";
/// Longest wait for anything on a client's queue before the example fails.
const STALL: Duration = Duration::from_secs(2);
/// The door sensor fires once every this many commands written.
const DOOR_EVERY: u32 = 3;

/// A thermostat on a serial line, simulated: line-oriented, answers each
/// command with one `OK ..`/`ERR ..` line, and interleaves unsolicited
/// `EVT ..` telegrams with the answers, as real devices do.
struct SerialThermostat {
    setpoint: f64,
    temperature: f64,
    door_open: bool,
    writes: u32,
    // Lines the device has sent and nobody has read yet.
    rx_buffer: VecDeque<String>,
}

impl SerialThermostat {
    fn open() -> Self {
        Self {
            setpoint: 20.0,
            temperature: 18.5,
            door_open: false,
            writes: 0,
            rx_buffer: VecDeque::from(["EVT BOOT fw=1.2".to_owned()]),
        }
    }

    fn write_line(&mut self, command: &str) {
        self.writes += 1;
        // The room warms toward the setpoint a little with every exchange.
        self.temperature += (self.setpoint - self.temperature) * 0.25;
        if self.writes.is_multiple_of(DOOR_EVERY) {
            self.door_open = !self.door_open;
            let state = if self.door_open { "open" } else { "closed" };
            self.rx_buffer.push_back(format!("EVT DOOR {state}"));
        }
        let answer = match command.split_whitespace().collect::<Vec<_>>()[..] {
            ["GET", "TEMP"] => format!("OK TEMP {:.1}", self.temperature),
            ["GET", "SP"] => format!("OK SP {:.1}", self.setpoint),
            ["SET", "SP", value] => match value.parse::<f64>() {
                Ok(v) if (5.0..=30.0).contains(&v) => {
                    self.setpoint = v;
                    format!("OK SP {v:.1}")
                }
                _ => format!("ERR RANGE {value}"),
            },
            _ => format!("ERR UNKNOWN {command}"),
        };
        self.rx_buffer.push_back(answer);
    }

    /// The next line from the device, or `None` when it has sent nothing.
    fn read_line(&mut self) -> Option<String> {
        self.rx_buffer.pop_front()
    }
}

/// A client's request to the device.
struct Request {
    from: ClientId,
    id: String,
    command: String,
}

/// What the device thread did, for checking the clients against.
#[derive(Default)]
struct DeviceLog {
    /// Channel publications: (offset, the asker it excluded, payload).
    published: Vec<(u64, Option<ClientId>, String)>,
    /// Direct acknowledgements: (to, payload).
    acks: Vec<(ClientId, String)>,
}

/// The device thread: the only owner of the serial line.
fn run_device(requests: mpsc::Receiver<Request>, publisher: Publisher) -> DeviceLog {
    let mut serial = SerialThermostat::open();
    let mut log = DeviceLog::default();
    let telegram = |line: &str, log: &mut DeviceLog| {
        let payload = format!(r#"{{"type":"telegram","line":"{line}"}}"#);
        let pos = publisher
            .publish(CHANNEL, payload.clone())
            .expect("publish telegram");
        log.published.push((pos.offset, None, payload));
    };
    // Whatever the device said before anyone asked (its boot banner).
    while let Some(line) = serial.read_line() {
        telegram(&line, &mut log);
    }
    // Ends when every client has dropped its sender.
    for req in requests {
        serial.write_line(&req.command);
        let answer = loop {
            let line = serial.read_line().expect("the device answers every command");
            if line.starts_with("EVT ") {
                telegram(&line, &mut log);
            } else {
                break line;
            }
        };
        // The asker hears back directly...
        let ack = format!(r#"{{"type":"ack","req":"{}","line":"{answer}"}}"#, req.id);
        publisher.send(req.from, ack.clone()).expect("asker is connected");
        log.acks.push((req.from, ack));
        // ...and everyone else sees the answer on the channel.
        let payload = format!(
            r#"{{"type":"response","req":"{}","by":{},"line":"{answer}"}}"#,
            req.id, req.from
        );
        let opts = PublishOptions {
            exclude: Exclusion {
                clients: vec![req.from],
                ..Default::default()
            },
            ..Default::default()
        };
        let pos = publisher
            .publish_with(CHANNEL, payload.clone(), opts)
            .expect("publish response");
        log.published.push((pos.offset, Some(req.from), payload));
    }
    log
}

/// What one client received.
#[derive(Default)]
struct ClientLog {
    /// Channel publications: (offset, payload).
    channel: Vec<(u64, String)>,
    /// Direct messages.
    direct: Vec<String>,
}

impl ClientLog {
    fn take(&mut self, out: &mut Vec<Outbound>) {
        for item in out.drain(..) {
            let Outbound::Event(ev) = item else {
                panic!("unexpected raw bytes")
            };
            match &ev.kind {
                EventKind::Publication(p) => {
                    assert_eq!(ev.channel.as_deref(), Some(CHANNEL));
                    self.channel
                        .push((p.offset, String::from_utf8_lossy(&p.data).into_owned()));
                }
                EventKind::Message(m) => {
                    assert!(ev.channel.is_none(), "a direct message has no channel");
                    self.direct.push(String::from_utf8_lossy(m).into_owned());
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
}

/// A client: sends its commands one at a time, waiting for each
/// acknowledgement, then keeps listening until the hub disconnects it.
fn run_client(
    name: &'static str,
    id: ClientId,
    mut rx: ClientReceiver,
    device: mpsc::Sender<Request>,
    commands: &[&str],
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut out = Vec::new();
    let mut drain = |log: &mut ClientLog| {
        let r = rx.drain_blocking(&mut out, STALL);
        log.take(&mut out);
        match r {
            Ok(0) => panic!("{name}: nothing arrived for {STALL:?}"),
            Ok(_) => Ok(()),
            Err(reason) => Err(reason),
        }
    };
    for (n, command) in commands.iter().enumerate() {
        let req = format!("{name}-{}", n + 1);
        device
            .send(Request {
                from: id,
                id: req.clone(),
                command: (*command).to_owned(),
            })
            .expect("device thread is running");
        let tag = format!(r#""req":"{req}""#);
        while !log.direct.iter().any(|m| m.contains(&tag)) {
            if let Err(reason) = drain(&mut log) {
                panic!("{name}: disconnected ({reason:?}) before the ack of {req}");
            }
        }
    }
    // Done asking: the device thread stops once every client has done so.
    drop(device);
    while drain(&mut log).is_ok() {}
    log
}

fn main() {
    run();
}

/// The whole example; also run by `cargo test` (see the test below).
fn run() {
    let began = Instant::now();
    let channels = ChannelConfig::default().namespace("device", ChannelOptions::default());
    let hub = Hub::new(HubConfig {
        channels,
        ..Default::default()
    });

    let scripts: [(&str, &[&str]); 3] = [
        ("panel-a", &["GET TEMP", "SET SP 21.5", "GET TEMP"]),
        ("panel-b", &["GET SP", "SET SP 99", "GET TEMP"]),
        ("laptop", &["GET TEMP", "SET SP 19", "GET SP"]),
    ];

    // Everyone subscribes before the device boots, so nobody misses a
    // telegram (the channel keeps no history).
    let (device_tx, device_rx) = mpsc::channel();
    let mut clients = Vec::new();
    for (name, commands) in scripts {
        let (id, rx) = hub.connect(name, None);
        hub.subscribe(id, CHANNEL, SubscribeOptions::default())
            .expect("subscribe");
        clients.push((name, id, rx, commands));
    }
    let publisher = hub.publisher();
    let device = thread::spawn(move || run_device(device_rx, publisher));
    let handles: Vec<_> = clients
        .into_iter()
        .map(|(name, id, rx, commands)| {
            let tx = device_tx.clone();
            (
                name,
                id,
                thread::spawn(move || run_client(name, id, rx, tx, commands)),
            )
        })
        .collect();
    drop(device_tx);

    // Every client has sent its last command and the device answered it.
    let device_log = device.join().expect("device thread");
    // Close the clients' queues: each drains what is queued, then stops.
    for (_, id, _) in &handles {
        assert!(hub.disconnect(*id, DisconnectReason::Removed));
    }

    let telegrams = device_log
        .published
        .iter()
        .filter(|(_, by, _)| by.is_none())
        .count();
    let requests: usize = scripts.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(
        telegrams,
        1 + requests / DOOR_EVERY as usize,
        "boot + door events"
    );
    println!("device: answered {requests} requests, emitted {telegrams} telegrams");
    for (offset, by, payload) in &device_log.published {
        let to = by.map_or("everyone".to_owned(), |c| format!("all but client {c}"));
        println!("  #{offset:<2} -> {to:<16} {payload}");
    }

    for (name, id, handle) in handles {
        let log = handle.join().expect("client thread");
        // Exactly the publications not caused by this client, in order...
        let expected: Vec<(u64, String)> = device_log
            .published
            .iter()
            .filter(|(_, by, _)| *by != Some(id))
            .map(|(o, _, p)| (*o, p.clone()))
            .collect();
        assert_eq!(log.channel, expected, "{name}: channel publications");
        assert!(
            log.channel.windows(2).all(|w| w[0].0 < w[1].0),
            "{name}: offsets increase"
        );
        // ...never its own answer back on the channel...
        let own = format!(r#""by":{id},"#);
        assert!(
            !log.channel.iter().any(|(_, p)| p.contains(&own)),
            "{name}: got its own answer echoed"
        );
        // ...and one acknowledgement per request it made, in order.
        let acks: Vec<String> = device_log
            .acks
            .iter()
            .filter(|(to, _)| *to == id)
            .map(|(_, a)| a.clone())
            .collect();
        assert_eq!(log.direct, acks, "{name}: direct acknowledgements");
        let others = log.channel.iter().filter(|(_, p)| p.contains("response")).count();
        println!(
            "  {name} (client {id}): {} acks, {others} answers to others, {} telegrams, own answer never echoed",
            log.direct.len(),
            log.channel.len() - others,
        );
        assert_eq!(others, requests - log.direct.len());
    }

    let stats = hub.stats();
    assert_eq!(stats.publications as usize, telegrams + requests);
    assert_eq!(stats.messages as usize, requests, "one direct ack per request");
    println!(
        "ok: {} publications, {} deliveries, {} direct messages, {:.2} s",
        stats.publications,
        stats.deliveries,
        stats.messages,
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
