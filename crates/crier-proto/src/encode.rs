//! Encoders for the frames the server sends, into [`bytes::BytesMut`].
//!
//! The pushes that fan out to many clients (publication, join, leave,
//! message, unsubscribe, disconnect) are written by hand, without serde: a
//! publication is encoded once and the resulting `Bytes` is shared by every
//! subscriber. Rare frames (replies, other pushes) go through serde via
//! [`reply`] and [`push`].
//!
//! Invariant: every frame written here is exactly one line. The client
//! protocol joins messages with `\n`, so a raw newline inside a frame would
//! split it. Embedded payloads are inserted verbatim except that raw CR/LF
//! bytes are turned into spaces: in valid JSON they can only be insignificant
//! whitespace (string contents must escape them), so the value is unchanged.
//!
//! This module must never validate payloads against channel rules or decide
//! who receives a frame; it writes bytes. An embedded payload that is not
//! valid JSON (binary data, see [`is_json`]) is written as `null`.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use crate::client::{Push, Reply};
use crate::codes::{Disconnect, Unsubscribe};

/// The frame the server sends as a ping: `{}` (an empty reply on
/// bidirectional transports, an empty push on unidirectional ones). A client
/// answers a bidirectional ping with the same `{}`.
pub const PING: &[u8] = b"{}";

/// Whether `bytes` are one JSON value. Payloads from JSON clients and the
/// API's `data` always are; binary ones (from protobuf clients or the API's
/// `b64data`) may not be, and a JSON client receives `null` in their
/// place: the one thing it can parse, keeping the publication's offset, so
/// its position stays whole. Checked once per shared encoding.
pub fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// How a push is framed for the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// Bidirectional transports: the push inside a reply, `{"push":{...}}`.
    Reply,
    /// Unidirectional transports (uni WebSocket, SSE, HTTP streaming): the
    /// push object itself, `{"channel":...,"pub":{...}}`.
    Bare,
}

/// Borrowed view of a connection's identity, for join/leave pushes and a
/// publication's `info`. Empty `conn_info`/`chan_info` are omitted.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientInfoRef<'a> {
    /// User id; empty for anonymous connections (still sent, as `""`).
    pub user: &'a str,
    /// Connection id.
    pub client: &'a str,
    /// Raw JSON connection info, or empty.
    pub conn_info: &'a [u8],
    /// Raw JSON channel info, or empty.
    pub chan_info: &'a [u8],
}

/// Borrowed view of a publication to encode.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicationRef<'a> {
    /// Raw JSON payload; omitted when empty.
    pub data: &'a [u8],
    /// Stream offset; omitted when 0 (channel without history).
    pub offset: u64,
    /// The publisher, when it was a client.
    pub info: Option<ClientInfoRef<'a>>,
    /// Publication tags as key/value pairs, the form crier-core keeps them in
    /// (`Tags = Arc<[(Box<str>, Box<str>)]>`); written in slice order, keys
    /// should be distinct; omitted when empty.
    pub tags: &'a [(Box<str>, Box<str>)],
}

/// Appends `s` as a JSON string literal (with quotes): `"` and `\` are
/// backslash-escaped, `\n`, `\r`, `\t` use their short forms and every other
/// control character is written as `\u00XX`. Everything else, including
/// non-ASCII text, is copied as UTF-8.
pub fn json_string(buf: &mut BytesMut, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    buf.reserve(bytes.len() + 2);
    buf.put_u8(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => &[],
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            buf.extend_from_slice(b"\\u00");
            buf.put_u8(HEX[usize::from(b >> 4)]);
            buf.put_u8(HEX[usize::from(b & 0xf)]);
        } else {
            buf.extend_from_slice(escape);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.put_u8(b'"');
}

/// Appends a publication push:
/// `{"push":{"channel":C,"pub":{"data":D,"info":{...},"offset":N,"tags":{...}}}}`
/// (or the bare push for [`Envelope::Bare`]).
pub fn publication_push(
    buf: &mut BytesMut,
    envelope: Envelope,
    channel: &str,
    publication: &PublicationRef<'_>,
) {
    let start = buf.len();
    buf.reserve(64 + channel.len() + publication.data.len());
    let mut push = open_push(buf, envelope);
    push.channel(channel);
    push.key("pub");
    write_publication(push.buf, publication);
    push.close_push(envelope);
    flatten_newlines(buf, start);
}

/// Appends a join push: `{"push":{"channel":C,"join":{"info":{...}}}}`.
pub fn join_push(buf: &mut BytesMut, envelope: Envelope, channel: &str, info: &ClientInfoRef<'_>) {
    presence_push(buf, envelope, channel, "join", info);
}

/// Appends a leave push: `{"push":{"channel":C,"leave":{"info":{...}}}}`.
pub fn leave_push(buf: &mut BytesMut, envelope: Envelope, channel: &str, info: &ClientInfoRef<'_>) {
    presence_push(buf, envelope, channel, "leave", info);
}

/// Appends a message push: `{"push":{"message":{"data":D}}}`.
pub fn message_push(buf: &mut BytesMut, envelope: Envelope, data: &[u8]) {
    let start = buf.len();
    buf.reserve(32 + data.len());
    let mut push = open_push(buf, envelope);
    push.key("message");
    let mut message = Object::open(push.buf);
    message.raw("data", data);
    message.close();
    push.close_push(envelope);
    flatten_newlines(buf, start);
}

/// Appends an unsubscribe push:
/// `{"push":{"channel":C,"unsubscribe":{"code":N,"reason":R}}}`.
pub fn unsubscribe_push(buf: &mut BytesMut, envelope: Envelope, channel: &str, unsubscribe: &Unsubscribe) {
    let mut push = open_push(buf, envelope);
    push.channel(channel);
    push.key("unsubscribe");
    let mut body = Object::open(push.buf);
    body.number("code", u64::from(unsubscribe.code));
    body.string("reason", &unsubscribe.reason);
    body.close();
    push.close_push(envelope);
}

/// Appends a disconnect push: `{"push":{"disconnect":{"code":N,"reason":R}}}`.
///
/// On a WebSocket the disconnect normally travels in the close frame; this
/// push is for unidirectional transports (and mirrors Centrifugo, which does
/// not send the legacy `reconnect` field).
pub fn disconnect_push(buf: &mut BytesMut, envelope: Envelope, disconnect: &Disconnect) {
    let mut push = open_push(buf, envelope);
    push.key("disconnect");
    let mut body = Object::open(push.buf);
    body.number("code", u64::from(disconnect.code));
    body.string("reason", &disconnect.reason);
    body.close();
    push.close_push(envelope);
}

/// Appends any push through serde: the `connect` push that opens a
/// unidirectional stream, `subscribe` and `refresh` pushes, and anything not
/// worth a hand-written encoder.
pub fn push(buf: &mut BytesMut, envelope: Envelope, push: &Push) {
    #[derive(Serialize)]
    struct Wrapped<'a> {
        push: &'a Push,
    }
    match envelope {
        Envelope::Reply => serialize(buf, &Wrapped { push }),
        Envelope::Bare => serialize(buf, push),
    }
}

/// Appends a reply to a command (or a push wrapped in a reply) through serde.
/// Use this rather than `serde_json` directly: it keeps the frame on one line
/// even when an embedded payload was pretty-printed.
pub fn reply(buf: &mut BytesMut, reply: &Reply) {
    serialize(buf, reply);
}

fn serialize<T: Serialize>(buf: &mut BytesMut, value: &T) {
    let start = buf.len();
    // Cannot fail for this crate's types: map keys are strings, raw values
    // were validated when parsed, and writing into BytesMut never errors.
    let written = serde_json::to_writer(buf.writer(), value);
    debug_assert!(written.is_ok(), "serializing a wire type failed: {written:?}");
    flatten_newlines(buf, start);
}

/// Turns raw CR/LF bytes written since `start` into spaces. serde_json and
/// [`json_string`] never emit raw newlines, so any found here come from
/// whitespace inside embedded payloads.
fn flatten_newlines(buf: &mut BytesMut, start: usize) {
    for b in &mut buf[start..] {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
}

fn presence_push(
    buf: &mut BytesMut,
    envelope: Envelope,
    channel: &str,
    kind: &str,
    info: &ClientInfoRef<'_>,
) {
    let start = buf.len();
    let mut push = open_push(buf, envelope);
    push.channel(channel);
    push.key(kind);
    let mut body = Object::open(push.buf);
    body.key("info");
    write_client_info(body.buf, info);
    body.close();
    push.close_push(envelope);
    flatten_newlines(buf, start);
}

fn write_publication(buf: &mut BytesMut, publication: &PublicationRef<'_>) {
    let mut obj = Object::open(buf);
    obj.raw("data", publication.data);
    if let Some(info) = &publication.info {
        obj.key("info");
        write_client_info(obj.buf, info);
    }
    if publication.offset != 0 {
        obj.number("offset", publication.offset);
    }
    if !publication.tags.is_empty() {
        obj.key("tags");
        let mut map = Object::open(obj.buf);
        for (key, value) in publication.tags {
            map.dynamic_key(key);
            json_string(map.buf, value);
        }
        map.close();
    }
    obj.close();
}

fn write_client_info(buf: &mut BytesMut, info: &ClientInfoRef<'_>) {
    let mut obj = Object::open(buf);
    // user and client are always sent, even empty: Centrifugo keeps them for
    // compatibility with older SDKs.
    obj.key("user");
    json_string(obj.buf, info.user);
    obj.key("client");
    json_string(obj.buf, info.client);
    obj.raw("conn_info", info.conn_info);
    obj.raw("chan_info", info.chan_info);
    obj.close();
}

fn open_push(buf: &mut BytesMut, envelope: Envelope) -> Object<'_> {
    if envelope == Envelope::Reply {
        buf.extend_from_slice(b"{\"push\":");
    }
    Object::open(buf)
}

/// Writes the members of one JSON object, inserting commas. Keys passed to
/// `key` are this module's static ASCII names and need no escaping.
struct Object<'a> {
    buf: &'a mut BytesMut,
    empty: bool,
}

impl<'a> Object<'a> {
    fn open(buf: &'a mut BytesMut) -> Object<'a> {
        buf.put_u8(b'{');
        Object { buf, empty: true }
    }

    fn separator(&mut self) {
        if !self.empty {
            self.buf.put_u8(b',');
        }
        self.empty = false;
    }

    fn key(&mut self, key: &str) {
        self.separator();
        self.buf.put_u8(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    fn dynamic_key(&mut self, key: &str) {
        self.separator();
        json_string(self.buf, key);
        self.buf.put_u8(b':');
    }

    /// A non-empty string member; empty strings are omitted.
    fn string(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.key(key);
            json_string(self.buf, value);
        }
    }

    /// A number member, always written.
    fn number(&mut self, key: &str, value: u64) {
        self.key(key);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A non-empty embedded JSON member, copied verbatim; `null` for
    /// bytes that are not JSON (see [`is_json`]).
    fn raw(&mut self, key: &str, json: &[u8]) {
        if !json.is_empty() {
            self.key(key);
            if is_json(json) {
                self.buf.extend_from_slice(json);
            } else {
                self.buf.extend_from_slice(b"null");
            }
        }
    }

    fn channel(&mut self, channel: &str) {
        self.string("channel", channel);
    }

    fn close(self) {
        self.buf.put_u8(b'}');
    }

    /// Closes a push object and, for [`Envelope::Reply`], the reply around it.
    fn close_push(self, envelope: Envelope) {
        self.buf.put_u8(b'}');
        if envelope == Envelope::Reply {
            self.buf.put_u8(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientInfo, Join, Leave, Message, Payload, Publication};
    use serde_json::Value;

    const AWKWARD: &[&str] = &[
        "",
        "plain",
        "news:europe#42",
        "with \"quotes\"",
        "back\\slash\\",
        "line\nbreak\r\ttab",
        "\u{0}\u{1}\u{8}\u{b}\u{c}\u{1f}\u{7f}",
        "ünïcødé ☃ 🎉",
        "</script><!--",
        "\u{2028}\u{2029}",
        "ends with backslash \\",
        "\\u0041 not an escape",
    ];

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|e| panic!("invalid JSON {:?}: {e}", String::from_utf8_lossy(bytes)))
    }

    fn raw(json: &[u8]) -> Option<Payload> {
        if json.is_empty() {
            return None;
        }
        Some(Payload::new(bytes::Bytes::copy_from_slice(json)))
    }

    fn serde_frame(envelope: Envelope, push: Push) -> Value {
        let value = serde_json::to_value(&push).expect("serializable");
        match envelope {
            Envelope::Reply => serde_json::json!({ "push": value }),
            Envelope::Bare => value,
        }
    }

    fn owned_info(info: &ClientInfoRef<'_>) -> ClientInfo {
        ClientInfo {
            user: info.user.to_owned(),
            client: info.client.to_owned(),
            conn_info: raw(info.conn_info),
            chan_info: raw(info.chan_info),
        }
    }

    fn assert_one_line(bytes: &[u8]) {
        assert!(
            !bytes.contains(&b'\n') && !bytes.contains(&b'\r'),
            "frame spans lines: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }

    #[test]
    fn json_string_matches_serde_for_awkward_strings() {
        for s in AWKWARD {
            let mut buf = BytesMut::new();
            json_string(&mut buf, s);
            let decoded: String = serde_json::from_slice(&buf).expect("valid JSON string");
            assert_eq!(&decoded, s);
            assert_one_line(&buf);
        }
        let mut buf = BytesMut::new();
        json_string(&mut buf, "a\"b\\c\u{1}d\ne");
        assert_eq!(&buf[..], br#""a\"b\\c\u0001d\ne""#);
    }

    #[test]
    fn publication_push_matches_serde_for_a_spread_of_inputs() {
        let tags: Vec<(Box<str>, Box<str>)> = vec![
            ("kind".into(), "alert".into()),
            ("we\"ird\n".into(), "va\\lue\u{1}".into()),
        ];
        let datas: [&[u8]; 5] = [
            br#"{"text":"hello"}"#,
            b"42",
            br#""a string with \" and \\n""#,
            r#"[1,{"nested":[true,false,null]},"ü"]"#.as_bytes(),
            b"",
        ];
        let infos = [
            None,
            Some(ClientInfoRef {
                user: "42",
                client: "c54313b2-0442",
                ..ClientInfoRef::default()
            }),
            Some(ClientInfoRef {
                user: "",
                client: "with \"quote\"",
                conn_info: br#"{"name":"Alice"}"#,
                chan_info: b"[1,2]",
            }),
        ];
        for envelope in [Envelope::Reply, Envelope::Bare] {
            for channel in AWKWARD {
                for data in datas {
                    for info in &infos {
                        for offset in [0, 1, u64::MAX] {
                            for tags in [&tags[..], &[]] {
                                let publication = PublicationRef {
                                    data,
                                    offset,
                                    info: *info,
                                    tags,
                                };
                                let mut buf = BytesMut::new();
                                publication_push(&mut buf, envelope, channel, &publication);
                                assert_one_line(&buf);
                                let expected = serde_frame(
                                    envelope,
                                    Push {
                                        channel: (*channel).to_owned(),
                                        publication: Some(Publication {
                                            data: raw(data),
                                            info: info.as_ref().map(owned_info),
                                            offset,
                                            tags: tags
                                                .iter()
                                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                                .collect(),
                                        }),
                                        ..Push::default()
                                    },
                                );
                                assert_eq!(parse(&buf), expected, "channel {channel:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn publication_push_has_the_documented_shape() {
        let mut buf = BytesMut::new();
        let publication = PublicationRef {
            data: br#"{"input":1}"#,
            offset: 7,
            ..PublicationRef::default()
        };
        publication_push(&mut buf, Envelope::Reply, "test", &publication);
        assert_eq!(
            &buf[..],
            br#"{"push":{"channel":"test","pub":{"data":{"input":1},"offset":7}}}"#
        );
        buf.clear();
        publication_push(&mut buf, Envelope::Bare, "test", &publication);
        assert_eq!(
            &buf[..],
            br#"{"channel":"test","pub":{"data":{"input":1},"offset":7}}"#
        );
    }

    #[test]
    fn offsets_are_json_numbers_even_beyond_2_pow_53() {
        let mut buf = BytesMut::new();
        let publication = PublicationRef {
            data: b"1",
            offset: u64::MAX,
            ..PublicationRef::default()
        };
        publication_push(&mut buf, Envelope::Reply, "c", &publication);
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(text.contains("\"offset\":18446744073709551615}"), "{text}");
    }

    #[test]
    fn join_and_leave_pushes_match_serde() {
        for envelope in [Envelope::Reply, Envelope::Bare] {
            for user in AWKWARD {
                let info = ClientInfoRef {
                    user,
                    client: "99288691-e378",
                    conn_info: br#"{"device":"phone"}"#,
                    chan_info: b"",
                };
                let mut buf = BytesMut::new();
                join_push(&mut buf, envelope, "#2694", &info);
                let expected = serde_frame(
                    envelope,
                    Push {
                        channel: "#2694".into(),
                        join: Some(Join {
                            info: owned_info(&info),
                        }),
                        ..Push::default()
                    },
                );
                assert_eq!(parse(&buf), expected);
                assert_one_line(&buf);

                buf.clear();
                leave_push(&mut buf, envelope, "#2694", &info);
                let expected = serde_frame(
                    envelope,
                    Push {
                        channel: "#2694".into(),
                        leave: Some(Leave {
                            info: owned_info(&info),
                        }),
                        ..Push::default()
                    },
                );
                assert_eq!(parse(&buf), expected);
            }
        }
    }

    #[test]
    fn message_push_matches_serde() {
        for envelope in [Envelope::Reply, Envelope::Bare] {
            for data in [&br#"{"private":"hi"}"#[..], b"null", b"\"x\"", b""] {
                let mut buf = BytesMut::new();
                message_push(&mut buf, envelope, data);
                let expected = serde_frame(
                    envelope,
                    Push {
                        message: Some(Message { data: raw(data) }),
                        ..Push::default()
                    },
                );
                assert_eq!(parse(&buf), expected);
            }
        }
        let mut buf = BytesMut::new();
        message_push(&mut buf, Envelope::Reply, br#"{"a":1}"#);
        assert_eq!(&buf[..], br#"{"push":{"message":{"data":{"a":1}}}}"#);
    }

    #[test]
    fn unsubscribe_and_disconnect_pushes_match_serde() {
        let unsubscribes = [
            Unsubscribe::SERVER,
            Unsubscribe::INSUFFICIENT_STATE,
            Unsubscribe::EXPIRED,
            Unsubscribe::new(2100, "custom \"reason\"\n"),
            Unsubscribe::new(2200, ""),
        ];
        let disconnects = [
            Disconnect::SHUTDOWN,
            Disconnect::BAD_REQUEST,
            Disconnect::new(4000, "app \\ reason"),
            Disconnect::new(4501, ""),
        ];
        for envelope in [Envelope::Reply, Envelope::Bare] {
            for (channel, unsubscribe) in AWKWARD.iter().zip(unsubscribes.iter().cycle()) {
                let mut buf = BytesMut::new();
                unsubscribe_push(&mut buf, envelope, channel, unsubscribe);
                let expected = serde_frame(
                    envelope,
                    Push {
                        channel: (*channel).to_owned(),
                        unsubscribe: Some(unsubscribe.clone()),
                        ..Push::default()
                    },
                );
                assert_eq!(parse(&buf), expected);
                assert_one_line(&buf);
            }
            for disconnect in &disconnects {
                let mut buf = BytesMut::new();
                disconnect_push(&mut buf, envelope, disconnect);
                let expected = serde_frame(
                    envelope,
                    Push {
                        disconnect: Some(disconnect.clone()),
                        ..Push::default()
                    },
                );
                assert_eq!(parse(&buf), expected);
            }
        }
        let mut buf = BytesMut::new();
        disconnect_push(&mut buf, Envelope::Bare, &Disconnect::SERVER_ERROR);
        assert_eq!(
            &buf[..],
            br#"{"disconnect":{"code":3004,"reason":"internal server error"}}"#
        );
    }

    #[test]
    fn pretty_printed_payloads_stay_on_one_line_and_keep_their_value() {
        let pretty = b"{\n  \"text\": \"a\\nb\",\r\n  \"n\": [1,\n 2]\n}";
        let mut buf = BytesMut::new();
        publication_push(
            &mut buf,
            Envelope::Reply,
            "c",
            &PublicationRef {
                data: pretty,
                ..PublicationRef::default()
            },
        );
        assert_one_line(&buf);
        let value = parse(&buf);
        assert_eq!(value["push"]["pub"]["data"], parse(pretty));
        assert_eq!(value["push"]["pub"]["data"]["text"], "a\nb");

        // The serde path keeps the same invariant.
        let reply = Reply::push(Push {
            message: Some(Message { data: raw(pretty) }),
            ..Push::default()
        });
        buf.clear();
        super::reply(&mut buf, &reply);
        assert_one_line(&buf);
        assert_eq!(parse(&buf)["push"]["message"]["data"], parse(pretty));
    }

    #[test]
    fn serde_push_and_reply_append_to_the_buffer() {
        let mut buf = BytesMut::from(&b"{}\n"[..]);
        let connect = Push {
            connect: Some(crate::client::ConnectResult {
                client: "bb56837".into(),
                version: "0.0.0 OSS".into(),
                ping: 25,
                session: "3159c4f8".into(),
                ..Default::default()
            }),
            ..Push::default()
        };
        push(&mut buf, Envelope::Bare, &connect);
        assert_eq!(
            &buf[..],
            &b"{}\n{\"connect\":{\"client\":\"bb56837\",\"version\":\"0.0.0 OSS\",\"ping\":25,\"session\":\"3159c4f8\"}}"[..]
        );
        buf.clear();
        push(&mut buf, Envelope::Reply, &Push::default());
        assert_eq!(&buf[..], br#"{"push":{}}"#);
        buf.clear();
        reply(&mut buf, &Reply::default());
        assert_eq!(&buf[..], PING);
    }

    #[test]
    fn frames_can_be_batched_with_newlines() {
        let mut buf = BytesMut::new();
        message_push(&mut buf, Envelope::Reply, b"1");
        buf.put_u8(b'\n');
        disconnect_push(&mut buf, Envelope::Reply, &Disconnect::SHUTDOWN);
        let lines: Vec<Value> = buf[..].split(|&b| b == b'\n').map(parse).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["push"]["disconnect"]["code"], 3001);
    }

    #[test]
    fn is_json_tells_one_json_value_from_anything_else() {
        for yes in [&b"{}"[..], b"[1,2]", b"\"text\"", b"12.5", b"null", b" true "] {
            assert!(is_json(yes), "{yes:?}");
        }
        for no in [&b""[..], b"\x00\x01binary", b"\xff", b"{", b"1 2", b"hello"] {
            assert!(!is_json(no), "{no:?}");
        }
    }

    #[test]
    fn json_string_uses_the_short_escapes_where_json_has_them() {
        let mut buf = BytesMut::new();
        json_string(&mut buf, "a\rb\tc\nd\"e\\f\u{1}g\u{1f}é");
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            r#""a\rb\tc\nd\"e\\f\u0001g\u001fé""#
        );
        let back: String = serde_json::from_slice(&buf).unwrap();
        assert_eq!(back, "a\rb\tc\nd\"e\\f\u{1}g\u{1f}é");
    }
}
