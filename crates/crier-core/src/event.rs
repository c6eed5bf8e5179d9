//! What travels from the hub to a client: publications, join/leave, direct
//! messages, and the per-format encoding cache that lets every transport
//! encode a shared event once. Owns no queues and knows no wire format.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// A connection's identity inside one hub, from an atomic counter.
///
/// Ids are never reused within the life of a hub.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who a client is, as shown in presence, join/leave and publication info.
///
/// Its two optional infos are kept together, boxed, and only when either
/// is set: every subscription of a channel with presence keeps one of
/// these for as long as it lasts, and most have neither (a `ClientInfo`
/// in its `Arc` is then a 48-byte allocation instead of 104).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The connection.
    pub client: ClientId,
    /// The user id; empty for an anonymous connection.
    pub user: Arc<str>,
    infos: Option<Box<Infos>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Infos {
    conn: Option<Bytes>,
    chan: Option<Bytes>,
}

impl ClientInfo {
    /// Client `client` of `user`, with its connection's info and its
    /// subscription's (channel) info, if any.
    pub fn new(client: ClientId, user: Arc<str>, conn_info: Option<Bytes>, chan_info: Option<Bytes>) -> Self {
        let infos = (conn_info.is_some() || chan_info.is_some()).then(|| {
            Box::new(Infos {
                conn: conn_info,
                chan: chan_info,
            })
        });
        ClientInfo { client, user, infos }
    }

    /// Opaque data attached to the connection (e.g. from its token).
    pub fn conn_info(&self) -> Option<&Bytes> {
        self.infos.as_ref().and_then(|i| i.conn.as_ref())
    }

    /// Opaque data attached to this client's subscription of one channel.
    pub fn chan_info(&self) -> Option<&Bytes> {
        self.infos.as_ref().and_then(|i| i.chan.as_ref())
    }
}

/// Clients and users that must not receive a publication: typically the
/// connection (or user) whose request caused it.
///
/// The exclusion is stored with the publication, so history replay and
/// recovery honour it too, not only live delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exclusion {
    /// Connections that must not receive it.
    pub clients: Vec<ClientId>,
    /// Users none of whose connections may receive it.
    pub users: Vec<Arc<str>>,
}

impl Exclusion {
    /// True when nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.users.is_empty()
    }

    /// Whether a connection `client` of `user` is excluded.
    #[inline]
    pub fn excludes(&self, client: ClientId, user: &str) -> bool {
        self.clients.contains(&client) || (!user.is_empty() && self.users.iter().any(|u| &**u == user))
    }
}

/// Key/value tags of a publication, shared by every copy of it.
pub type Tags = Arc<[(Box<str>, Box<str>)]>;

/// One message of a channel's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// Position in the channel's stream; 0 until the engine assigns one.
    pub offset: u64,
    /// The payload, opaque to the hub (the server stores raw JSON here).
    pub data: Bytes,
    /// The publishing client, when a client published it.
    pub info: Option<Arc<ClientInfo>>,
    /// Optional key/value tags carried with the publication.
    pub tags: Option<Tags>,
    /// Who must not receive it (live or from history).
    pub exclusion: Option<Arc<Exclusion>>,
}

impl Publication {
    /// A publication of `data` with nothing else attached.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self {
            offset: 0,
            data: data.into(),
            info: None,
            tags: None,
            exclusion: None,
        }
    }

    /// Whether the connection `client` of `user` may receive this publication.
    #[inline]
    pub fn is_for(&self, client: ClientId, user: &str) -> bool {
        match &self.exclusion {
            Some(ex) => !ex.excludes(client, user),
            None => true,
        }
    }
}

/// What happened.
#[derive(Debug)]
pub enum EventKind {
    /// A publication in `Event::channel`.
    Publication(Publication),
    /// A client joined `Event::channel` (only for channels with join/leave).
    Join(Arc<ClientInfo>),
    /// A client left `Event::channel` (only for channels with join/leave).
    Leave(Arc<ClientInfo>),
    /// A message to one client, or to all clients, outside any channel.
    Message(Bytes),
}

/// Number of distinct wire formats an event can cache an encoding for.
pub const FORMAT_SLOTS: usize = 7;

/// A wire format's slot in an event's encoding cache. Each transport that
/// encodes events differently (e.g. bidirectional JSON, unidirectional JSON,
/// plain TCP text) takes its own slot, so it encodes a shared event once no
/// matter how many of its clients receive it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format(u8);

impl Format {
    /// The format in `slot`; `slot` must be below [`FORMAT_SLOTS`].
    pub const fn new(slot: u8) -> Self {
        assert!((slot as usize) < FORMAT_SLOTS, "format slot out of range");
        Self(slot)
    }
}

/// An event shared by every client that receives it.
#[derive(Debug)]
pub struct Event {
    /// The channel it belongs to; `None` for a direct message.
    pub channel: Option<Arc<str>>,
    /// What happened.
    pub kind: EventKind,
    // Encoded frames, one per wire format, filled by the first writer that
    // needs each: encode once, clone the `Bytes` for every other client.
    encoded: [OnceLock<Bytes>; FORMAT_SLOTS],
    // When the hub made it (the publish), for delivery latency.
    created: std::time::Instant,
}

impl Event {
    /// A new event, not yet encoded in any format.
    pub fn new(channel: Option<Arc<str>>, kind: EventKind) -> Self {
        Self {
            channel,
            kind,
            encoded: Default::default(),
            created: std::time::Instant::now(),
        }
    }

    /// When the hub made this event (a publish, a join or leave, a
    /// message): a writer subtracts it from the time it writes the event
    /// to measure delivery latency.
    pub fn created(&self) -> std::time::Instant {
        self.created
    }

    /// This event in `format`: encoded by `encode` the first time any client
    /// asks for that format, then shared. Borrowed: a writer that sends it
    /// at once takes no reference (two atomic operations per delivery on
    /// a line every subscriber's writer touches).
    pub fn encoded(&self, format: Format, encode: impl FnOnce(&Event) -> Bytes) -> &Bytes {
        self.encoded[format.0 as usize].get_or_init(|| encode(self))
    }

    /// An approximation of the memory this event pins, for queue limits.
    pub fn weight(&self) -> usize {
        let payload = match &self.kind {
            EventKind::Publication(p) => p.data.len(),
            EventKind::Message(d) => d.len(),
            EventKind::Join(_) | EventKind::Leave(_) => 64,
        };
        payload + self.channel.as_ref().map_or(0, |c| c.len()) + 64
    }
}

/// One item in a client's outbound queue.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// An event shared with other clients.
    Event(Arc<Event>),
    /// Bytes for this client only, already in its wire format (a reply to
    /// one of its commands, or a notice such as a subscribe push). Boxed so
    /// a queue slot is two words, not five: shared events are the hot path.
    Raw(Box<Bytes>),
}

impl Outbound {
    /// An approximation of the memory this item pins, for queue limits.
    pub fn weight(&self) -> usize {
        match self {
            Outbound::Event(e) => e.weight(),
            Outbound::Raw(b) => b.len(),
        }
    }

    /// Bytes for one client only.
    pub fn raw(bytes: Bytes) -> Self {
        Outbound::Raw(Box::new(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subscription of a channel with presence (or join and leave)
    /// keeps a `ClientInfo` for as long as it lasts: with its `Arc`'s two
    /// counts it stays within 48 bytes (a 64-byte allocator chunk; both
    /// infos inline once made it 104, a 112-byte chunk), and it gives back
    /// the infos it was made with, whichever are set.
    #[test]
    fn a_client_info_stays_small_and_keeps_its_infos() {
        let size = std::mem::size_of::<ClientInfo>();
        assert!(size + 16 <= 48, "a client info is {size} bytes");
        let conn = Some(Bytes::from_static(b"conn"));
        let chan = Some(Bytes::from_static(b"chan"));
        for (c, h) in [
            (None, None),
            (conn.clone(), None),
            (None, chan.clone()),
            (conn, chan),
        ] {
            let i = ClientInfo::new(ClientId(3), "u".into(), c.clone(), h.clone());
            assert_eq!((i.conn_info(), i.chan_info()), (c.as_ref(), h.as_ref()));
            assert_eq!(i.infos.is_some(), c.is_some() || h.is_some());
        }
    }

    #[test]
    fn a_client_id_displays_as_its_number() {
        assert_eq!(ClientId(42).to_string(), "42");
        assert_eq!(
            format!("client {}", ClientId(u64::MAX)),
            "client 18446744073709551615"
        );
    }

    #[test]
    fn an_exclusion_is_empty_only_when_it_names_no_client_and_no_user() {
        assert!(Exclusion::default().is_empty());
        let by_client = Exclusion {
            clients: vec![ClientId(1)],
            ..Default::default()
        };
        let by_user = Exclusion {
            users: vec!["ann".into()],
            ..Default::default()
        };
        assert!(!by_client.is_empty());
        assert!(!by_user.is_empty());
    }

    #[test]
    fn an_event_weighs_its_payload_its_channel_name_and_a_fixed_overhead() {
        let publication = Event::new(
            Some("chan".into()),
            EventKind::Publication(Publication::new("0123456789")),
        );
        assert_eq!(publication.weight(), 10 + 4 + 64);
        let message = Event::new(None, EventKind::Message(Bytes::from_static(b"hello")));
        assert_eq!(message.weight(), 5 + 64);
        let info = Arc::new(ClientInfo::new(ClientId(1), "u".into(), None, None));
        let join = Event::new(Some("ab".into()), EventKind::Join(info.clone()));
        assert_eq!(join.weight(), 64 + 2 + 64);
        let leave = Event::new(Some("ab".into()), EventKind::Leave(info));
        assert_eq!(Outbound::Event(Arc::new(leave)).weight(), 64 + 2 + 64);
        assert_eq!(Outbound::raw(Bytes::from_static(b"abc")).weight(), 3);
    }
}
