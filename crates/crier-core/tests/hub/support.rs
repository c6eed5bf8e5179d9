//! Small helpers shared by the hub tests.

use std::time::Duration;

use bytes::Bytes;
use crier_core::{ClientReceiver, DisconnectReason, EventKind, Outbound};

/// What a test client saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Pub {
        channel: String,
        offset: u64,
        data: Bytes,
    },
    Join {
        channel: String,
        user: String,
    },
    Leave {
        channel: String,
        user: String,
    },
    Message(Bytes),
    Raw(Bytes),
}

pub fn describe(items: Vec<Outbound>) -> Vec<Seen> {
    items
        .into_iter()
        .map(|o| match o {
            Outbound::Raw(b) => Seen::Raw(*b),
            Outbound::Event(ev) => {
                let channel = ev.channel.as_deref().unwrap_or_default().to_owned();
                match &ev.kind {
                    EventKind::Publication(p) => Seen::Pub {
                        channel,
                        offset: p.offset,
                        data: p.data.clone(),
                    },
                    EventKind::Join(i) => Seen::Join {
                        channel,
                        user: i.user.to_string(),
                    },
                    EventKind::Leave(i) => Seen::Leave {
                        channel,
                        user: i.user.to_string(),
                    },
                    EventKind::Message(d) => Seen::Message(d.clone()),
                }
            }
        })
        .collect()
}

/// Everything queued right now (no waiting).
pub fn take(rx: &mut ClientReceiver) -> Vec<Seen> {
    let mut out = Vec::new();
    let _ = rx.try_drain(&mut out);
    describe(out)
}

/// Offsets of the publications queued right now.
pub fn offsets(rx: &mut ClientReceiver) -> Vec<u64> {
    take(rx)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Pub { offset, .. } => Some(offset),
            _ => None,
        })
        .collect()
}

/// The reason the queue was closed, failing loudly if it is still open.
pub fn closed_reason(rx: &mut ClientReceiver) -> DisconnectReason {
    let mut out = Vec::new();
    loop {
        match rx.drain_blocking(&mut out, Duration::from_secs(10)) {
            Err(reason) => return reason,
            Ok(0) => panic!("queue still open after 10 s"),
            Ok(_) => out.clear(),
        }
    }
}
