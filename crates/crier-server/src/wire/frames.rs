//! Turns what the hub queues for a client into the protocol's messages:
//! one shared encoding per event and format (a transport joins a batch of
//! them into one frame: JSON with `\n`, protobuf back to back). Never
//! decides who gets what.

use bytes::{Bytes, BytesMut};
use crier_core::{ClientInfo, Event, EventKind, Format, Outbound};
use crier_proto::encode::{self, ClientInfoRef, Envelope, PublicationRef};
use crier_proto::protobuf;

/// Bidirectional JSON (`{"push":{...}}`): WebSocket.
pub const BIDI_JSON: Format = Format::new(0);
/// Unidirectional JSON (bare push objects): uni transports.
pub const UNI_JSON: Format = Format::new(1);
// Slots 2 and 3 belong to the TCP listeners (`tcp::TCP_FORMATS`), one per
// distinct framing/encoding; no other transport may claim them.
/// Bidirectional protobuf (length-delimited `Reply{push}`): WebSocket.
pub const BIDI_PROTOBUF: Format = Format::new(4);
/// [`BIDI_JSON`] compressed (permessage-deflate, no context takeover).
pub const BIDI_JSON_DEFLATE: Format = Format::new(5);
/// [`BIDI_PROTOBUF`] compressed.
pub const BIDI_PROTOBUF_DEFLATE: Format = Format::new(6);

fn info_ref<'a>(info: &'a ClientInfo, client: &'a str) -> ClientInfoRef<'a> {
    ClientInfoRef {
        user: &info.user,
        client,
        conn_info: info.conn_info().map_or(&[][..], |b| &b[..]),
        chan_info: info.chan_info().map_or(&[][..], |b| &b[..]),
    }
}

/// Encodes one event as a length-delimited protobuf `Reply{push}`.
pub fn encode_protobuf(event: &Event) -> Bytes {
    let mut buf = BytesMut::new();
    let channel = event.channel.as_deref().unwrap_or_default();
    match &event.kind {
        EventKind::Publication(p) => {
            let publisher = p.info.as_ref().map(|i| (i, i.client.to_string()));
            let publication = PublicationRef {
                data: &p.data,
                offset: p.offset,
                info: publisher.as_ref().map(|(i, id)| info_ref(i, id)),
                tags: p.tags.as_deref().unwrap_or_default(),
            };
            protobuf::publication_push(&mut buf, channel, &publication);
        }
        EventKind::Join(info) => {
            let id = info.client.to_string();
            protobuf::join_push(&mut buf, channel, &info_ref(info, &id));
        }
        EventKind::Leave(info) => {
            let id = info.client.to_string();
            protobuf::leave_push(&mut buf, channel, &info_ref(info, &id));
        }
        EventKind::Message(data) => protobuf::message_push(&mut buf, data),
    }
    buf.freeze()
}

/// Encodes one event as a push in `envelope`.
pub fn encode_event(event: &Event, envelope: Envelope) -> Bytes {
    let mut buf = BytesMut::new();
    encode_event_into(&mut buf, event, envelope);
    buf.freeze()
}

/// Appends one event, as a push in `envelope`, to `buf`.
pub fn encode_event_into(buf: &mut BytesMut, event: &Event, envelope: Envelope) {
    let channel = event.channel.as_deref().unwrap_or_default();
    match &event.kind {
        EventKind::Publication(p) => {
            let publisher = p.info.as_ref().map(|i| (i, i.client.to_string()));
            let publication = PublicationRef {
                data: &p.data,
                offset: p.offset,
                info: publisher.as_ref().map(|(i, id)| info_ref(i, id)),
                tags: p.tags.as_deref().unwrap_or_default(),
            };
            encode::publication_push(buf, envelope, channel, &publication);
        }
        EventKind::Join(info) => {
            let id = info.client.to_string();
            encode::join_push(buf, envelope, channel, &info_ref(info, &id));
        }
        EventKind::Leave(info) => {
            let id = info.client.to_string();
            encode::leave_push(buf, envelope, channel, &info_ref(info, &id));
        }
        EventKind::Message(data) => encode::message_push(buf, envelope, data),
    }
}

/// One queued item in `format`: a shared event's cached encoding (made
/// by the first writer that needs it), or the client's own raw bytes.
pub fn encoded(item: &Outbound, format: Format, envelope: Envelope) -> &Bytes {
    match item {
        Outbound::Raw(bytes) => bytes,
        Outbound::Event(ev) => ev.encoded(format, |ev| encode_event(ev, envelope)),
    }
}
