//! A tokio app embedding the hub behind its own transport, with sessions.
//!
//! An application's "sessions" (`conversation:123`, `project:456`) are the
//! hub's channels. A small [`SessionRegistry`] maps them onto channels and
//! offers what such an app needs:
//! - attach / detach a client to a session (subscribe / unsubscribe);
//! - broadcast to a session (publish), optionally leaving out the sender;
//! - send to one client (`hub.send`);
//! - list a session's members (presence, enabled for both namespaces);
//! - disconnect a client, which removes it from every session at once
//!   (`hub.disconnect`).
//!
//! The transport is in memory: each simulated client is a tokio task that
//! awaits `rx.drain(&mut out).await` (no polling) and reports what it
//! received over a tokio channel. At the end every client's log is compared
//! with exactly what it should have received, in order. That a detached
//! client got nothing after detaching is proved by ordering: after the last
//! session message a final marker goes to everyone; a client's queue is
//! FIFO, so anything published to it after the detach would sit before the
//! marker in its log.
//!
//! Run: `cargo run -p crier-core --example sessions`

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crier_core::*;
use tokio::sync::mpsc;

/// An application session, named like the channel that carries it.
#[derive(Clone, Copy, Debug)]
enum Session {
    Conversation(u64),
    Project(u64),
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Session::Conversation(id) => write!(f, "conversation:{id}"),
            Session::Project(id) => write!(f, "project:{id}"),
        }
    }
}

/// Sessions on top of a hub: one channel per session.
struct SessionRegistry {
    hub: Hub,
}

impl SessionRegistry {
    /// A registry whose session namespaces track presence.
    fn new() -> Self {
        let with_presence = ChannelOptions {
            presence: true,
            ..Default::default()
        };
        let channels = ChannelConfig::default()
            .namespace("conversation", with_presence.clone())
            .namespace("project", with_presence);
        Self {
            hub: Hub::new(HubConfig {
                channels,
                ..Default::default()
            }),
        }
    }

    /// A new client of `user`, and the receiving end its transport drains.
    fn connect(&self, user: &str) -> (ClientId, ClientReceiver) {
        self.hub.connect(user, None)
    }

    fn attach(&self, client: ClientId, session: Session) -> Result<(), HubError> {
        self.hub
            .subscribe(client, &session.to_string(), SubscribeOptions::default())
            .map(drop)
    }

    /// Returns whether the client was attached.
    fn detach(&self, client: ClientId, session: Session) -> Result<bool, HubError> {
        self.hub.unsubscribe(client, &session.to_string())
    }

    /// Publishes to every member of `session` except `from`, if given (the
    /// member who wrote it already has it).
    fn broadcast(&self, session: Session, from: Option<ClientId>, text: &str) -> Result<u64, HubError> {
        let opts = PublishOptions {
            exclude: Exclusion {
                clients: from.into_iter().collect(),
                ..Default::default()
            },
            ..Default::default()
        };
        let position = self.hub.publish(&session.to_string(), text.to_owned(), opts)?;
        Ok(position.offset)
    }

    fn send_to(&self, client: ClientId, text: &str) -> Result<(), HubError> {
        self.hub.send(client, text.to_owned())
    }

    /// Sends `text` to every connected client; returns how many got it.
    fn send_all(&self, text: &str) -> usize {
        self.hub.send_all(text.to_owned())
    }

    /// The users attached to `session`, sorted.
    fn members(&self, session: Session) -> Result<Vec<String>, HubError> {
        let mut users: Vec<String> = self
            .hub
            .presence(&session.to_string())?
            .iter()
            .map(|info| info.user.to_string())
            .collect();
        users.sort();
        Ok(users)
    }

    /// Removes the client from every session and closes its queue.
    fn disconnect(&self, client: ClientId) -> bool {
        self.hub.disconnect(client, DisconnectReason::Removed)
    }
}

/// One thing a simulated client received, as its transport would write it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Delivery {
    /// A session message: (session, text).
    Session(String, String),
    /// A direct message.
    Direct(String),
    /// The hub closed the connection with this protocol code.
    Closed(u16),
}

/// The transport of one client: drains its queue whenever the hub pushes,
/// and reports each delivery, tagged with the user, to the app.
async fn transport(
    user: &'static str,
    mut rx: ClientReceiver,
    report: mpsc::UnboundedSender<(&'static str, Delivery)>,
) {
    let mut out = Vec::new();
    loop {
        let drained = rx.drain(&mut out).await;
        for item in out.drain(..) {
            let Outbound::Event(ev) = item else {
                panic!("{user}: unexpected raw bytes")
            };
            let delivery = match (&ev.kind, &ev.channel) {
                (EventKind::Publication(p), Some(channel)) => {
                    Delivery::Session(channel.to_string(), String::from_utf8_lossy(&p.data).into_owned())
                }
                (EventKind::Message(m), None) => Delivery::Direct(String::from_utf8_lossy(m).into_owned()),
                (other, _) => panic!("{user}: unexpected event {other:?}"),
            };
            let _ = report.send((user, delivery));
        }
        if let Err(reason) = drained {
            let _ = report.send((user, Delivery::Closed(reason.code())));
            return;
        }
    }
}

const MARKER: &str = "marker: end of test";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    run().await;
}

/// The whole example; also run by `cargo test` (see the test below).
async fn run() {
    let began = Instant::now();
    let sessions = SessionRegistry::new();
    let conv = Session::Conversation(123);
    let proj = Session::Project(456);

    let (report_tx, mut report_rx) = mpsc::unbounded_channel();
    let mut ids = BTreeMap::new();
    let mut tasks = Vec::new();
    for user in ["ann", "ben", "cat", "dan"] {
        let (id, rx) = sessions.connect(user);
        ids.insert(user, id);
        tasks.push(tokio::spawn(transport(user, rx, report_tx.clone())));
    }
    drop(report_tx);
    let [ann, ben, cat, dan] = ["ann", "ben", "cat", "dan"].map(|u| ids[u]);

    println!("1. attach: ann, ben, dan -> {conv}; ben, cat, dan -> {proj}");
    for (client, session) in [
        (ann, conv),
        (ben, conv),
        (dan, conv),
        (ben, proj),
        (cat, proj),
        (dan, proj),
    ] {
        sessions.attach(client, session).expect("attach");
    }
    assert_eq!(sessions.members(conv).unwrap(), ["ann", "ben", "dan"]);
    assert_eq!(sessions.members(proj).unwrap(), ["ben", "cat", "dan"]);
    println!("   members {conv}: {:?}", sessions.members(conv).unwrap());
    println!("   members {proj}: {:?}", sessions.members(proj).unwrap());

    println!("2. broadcast to each session; ann's own post is not echoed to her");
    sessions.broadcast(conv, Some(ann), "ann: hello 123").unwrap();
    sessions.broadcast(proj, None, "ci: build green").unwrap();

    println!("3. send to one client: cat");
    sessions.send_to(cat, "direct: hi cat").unwrap();

    println!("4. detach ben from {conv}, then post there again");
    assert!(sessions.detach(ben, conv).unwrap());
    assert!(!sessions.detach(ben, conv).unwrap(), "detaching twice is a no-op");
    assert_eq!(sessions.members(conv).unwrap(), ["ann", "dan"]);
    sessions.broadcast(conv, None, "bot: ben left 123").unwrap();

    println!("5. dan disconnects: gone from every session");
    assert!(sessions.disconnect(dan));
    assert_eq!(sessions.members(conv).unwrap(), ["ann"]);
    assert_eq!(sessions.members(proj).unwrap(), ["ben", "cat"]);
    assert!(sessions.hub.client(dan).is_none(), "dan is out of the registry");
    assert_eq!(
        sessions.send_to(dan, "too late"),
        Err(HubError::UnknownClient(dan)),
        "a disconnected client cannot be reached"
    );
    sessions.broadcast(proj, None, "ci: deploy done").unwrap();
    sessions.broadcast(conv, None, "ann-only after dan left").unwrap();

    println!("6. final marker to everyone still connected");
    assert_eq!(sessions.send_all(MARKER), 3, "ann, ben and cat get the marker");

    // Collect until every client reported its marker (or its close).
    let mut logs: BTreeMap<&str, Vec<Delivery>> = BTreeMap::new();
    let finished = |logs: &BTreeMap<&str, Vec<Delivery>>| {
        ["ann", "ben", "cat"]
            .iter()
            .all(|u| logs.get(u).and_then(|l| l.last()) == Some(&Delivery::Direct(MARKER.into())))
            && logs
                .get("dan")
                .and_then(|l| l.last())
                .is_some_and(|d| matches!(d, Delivery::Closed(_)))
    };
    while !finished(&logs) {
        let (user, delivery) = tokio::time::timeout(Duration::from_secs(2), report_rx.recv())
            .await
            .expect("every client reports its marker within 2 s")
            .expect("transports are running");
        logs.entry(user).or_default().push(delivery);
    }

    let session = |s: Session, text: &str| Delivery::Session(s.to_string(), text.to_owned());
    let direct = |text: &str| Delivery::Direct(text.to_owned());
    let expected: BTreeMap<&str, Vec<Delivery>> = BTreeMap::from([
        (
            "ann",
            vec![
                session(conv, "bot: ben left 123"),
                session(conv, "ann-only after dan left"),
                direct(MARKER),
            ],
        ),
        (
            "ben",
            vec![
                session(conv, "ann: hello 123"),
                session(proj, "ci: build green"),
                // Detached from conversation:123 here: nothing from it
                // may come between this point and the marker.
                session(proj, "ci: deploy done"),
                direct(MARKER),
            ],
        ),
        (
            "cat",
            vec![
                session(proj, "ci: build green"),
                direct("direct: hi cat"),
                session(proj, "ci: deploy done"),
                direct(MARKER),
            ],
        ),
        (
            "dan",
            vec![
                session(conv, "ann: hello 123"),
                session(proj, "ci: build green"),
                session(conv, "bot: ben left 123"),
                Delivery::Closed(DisconnectReason::Removed.code()),
            ],
        ),
    ]);
    for (user, log) in &logs {
        println!("   {user} received:");
        for d in log {
            println!("     {d:?}");
        }
    }
    assert_eq!(logs, expected, "each client received exactly its share, in order");

    // The same claim, stated directly: after ben's detach, no message of
    // conversation:123 reached him before his last message, the marker.
    let ben_log = &logs["ben"];
    let detached_at = ben_log
        .iter()
        .position(|d| *d == session(proj, "ci: build green"))
        .expect("ben's last delivery before the detach");
    assert!(
        !ben_log[detached_at + 1..]
            .iter()
            .any(|d| matches!(d, Delivery::Session(s, _) if *s == conv.to_string())),
        "ben got a {conv} message after detaching"
    );
    assert_eq!(ben_log.last(), Some(&direct(MARKER)));

    // Close the rest; every transport task ends on its own.
    assert_eq!(sessions.hub.shutdown(), 3);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("transport ends after shutdown")
            .expect("transport task did not panic");
    }
    let stats = sessions.hub.stats();
    println!(
        "ok: {} publications, {} deliveries, {} direct messages, {:.3} s",
        stats.publications,
        stats.deliveries,
        stats.messages,
        began.elapsed().as_secs_f64()
    );
    assert_eq!(stats.publications, 5);
    assert_eq!(stats.deliveries, 10, "sum of session messages in the logs above");
    assert_eq!(stats.messages, 4, "one direct + three markers");
}

#[cfg(test)]
mod tests {
    /// `cargo test` runs the example, so its assertions guard the hub.
    #[tokio::test(flavor = "current_thread")]
    async fn example_runs_and_its_claims_hold() {
        super::run().await;
    }
}
