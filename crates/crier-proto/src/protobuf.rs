//! The protobuf variant of client protocol v2, as centrifuge-js's protobuf
//! build, centrifuge-swift, -java, -dart and centrifuge-python
//! (`use_protobuf`) speak it: binary WebSocket frames holding
//! varint-length-delimited `Command`s (client → server) and `Reply`s
//! (server → client), field numbers from `client.proto` of
//! `centrifugal/protocol`. `bytes` fields (`data`, `info`, ...) carry the
//! application's bytes as they are, JSON or not.
//!
//! Decoding yields the same [`Command`] values as the JSON parser, so the
//! server handles both formats with one session. Encoding is written by
//! hand (no schema compiler, no generated code): the few messages the server
//! sends are short, and the pushes that fan out to many clients are encoded
//! once per event and shared, as in [`crate::encode`].
//!
//! Decoding is strict where a wrong byte could be misread (a truncated
//! varint, a length past its message, a field of the wrong wire type, a
//! string that is not UTF-8, a deprecated group) and lenient where protobuf
//! is (unknown fields are skipped). It never recurses deeper than the
//! schema's three levels of nesting.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::client::{
    ClientInfo, Command, ConnectRequest, ConnectResult, HistoryRequest, Payload, PresenceRequest,
    PresenceStatsRequest, Publication, PublishRequest, Push, RefreshRequest, Reply, ReplyError, RpcRequest,
    SendRequest, StreamPosition, SubRefreshRequest, SubscribeRequest, SubscribeResult, UnsubscribeRequest,
};
use crate::codes::{Disconnect, Unsubscribe};
use crate::encode::{ClientInfoRef, PublicationRef};
use crate::Error;

/// The frame the server sends as a ping: one empty `Reply` (length 0). A
/// client answers with one empty `Command`, the same byte.
pub const PING: &[u8] = &[0];

// ---------------------------------------------------------------------------
// Decoding: client → server
// ---------------------------------------------------------------------------

/// A protobuf `EmulationRequest` (a command batch POSTed to `/emulation`
/// by an emulated client): node, session and the commands' bytes.
pub fn emulation_request(bytes: &[u8]) -> Result<(String, String, Bytes), Error> {
    let mut out = (String::new(), String::new(), Bytes::new());
    for field in Fields(bytes) {
        match field? {
            (1, v) => out.0 = string(v)?,
            (2, v) => out.1 = string(v)?,
            (3, v) => out.2 = Bytes::copy_from_slice(len(v)?),
            _ => {}
        }
    }
    Ok(out)
}

/// Splits a binary frame into commands, in order. After the first error
/// the iterator ends: once a length is wrong, nothing after it can be
/// trusted. An empty frame holds no command.
pub fn parse_frame(frame: &[u8]) -> impl Iterator<Item = Result<Command, Error>> + '_ {
    let mut rest = frame;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.is_empty() {
            return None;
        }
        let command = delimited(&mut rest).and_then(command);
        failed = command.is_err();
        Some(command)
    })
}

/// Takes one varint-length-delimited message off the front of `rest`.
fn delimited<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], Error> {
    let len = varint(rest)?;
    let len = usize::try_from(len).map_err(|_| bad("length beyond the frame"))?;
    if len > rest.len() {
        return Err(bad("length beyond the frame"));
    }
    let (message, tail) = rest.split_at(len);
    *rest = tail;
    Ok(message)
}

fn bad(why: &'static str) -> Error {
    Error::MalformedProtobuf(why)
}

fn varint(b: &mut &[u8]) -> Result<u64, Error> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&byte) = b.get(i) else {
            return Err(bad("truncated varint"));
        };
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *b = &b[i + 1..];
            return Ok(value);
        }
    }
    Err(bad("varint longer than 10 bytes"))
}

/// A field's value, by wire type.
enum Value<'a> {
    Int(u64),
    Len(&'a [u8]),
    Fixed,
}

/// The fields of one message, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        Some(self.field())
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u64, Value<'a>), Error> {
        let key = varint(&mut self.0)?;
        let number = key >> 3;
        if number == 0 {
            return Err(bad("field number 0"));
        }
        let value = match key & 7 {
            0 => Value::Int(varint(&mut self.0)?),
            1 => self.skip(8)?,
            2 => Value::Len(delimited(&mut self.0)?),
            5 => self.skip(4)?,
            _ => return Err(bad("unsupported wire type")),
        };
        Ok((number, value))
    }

    fn skip(&mut self, n: usize) -> Result<Value<'a>, Error> {
        if self.0.len() < n {
            return Err(bad("truncated fixed-width field"));
        }
        self.0 = &self.0[n..];
        Ok(Value::Fixed)
    }
}

fn int(v: Value<'_>) -> Result<u64, Error> {
    match v {
        Value::Int(n) => Ok(n),
        _ => Err(bad("expected a varint field")),
    }
}

// Protobuf's own conversions: a wider varint is truncated, as every
// protobuf runtime does for uint32/int32 fields.
fn uint32(v: Value<'_>) -> Result<u32, Error> {
    int(v).map(|n| n as u32)
}

fn int32(v: Value<'_>) -> Result<i32, Error> {
    int(v).map(|n| n as i32)
}

fn boolean(v: Value<'_>) -> Result<bool, Error> {
    int(v).map(|n| n != 0)
}

fn len(v: Value<'_>) -> Result<&[u8], Error> {
    match v {
        Value::Len(b) => Ok(b),
        _ => Err(bad("expected a length-delimited field")),
    }
}

fn string(v: Value<'_>) -> Result<String, Error> {
    let b = len(v)?;
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| bad("string field is not UTF-8"))
}

/// A `bytes` field; empty is absent, as in proto3.
fn payload(v: Value<'_>) -> Result<Option<Payload>, Error> {
    let b = len(v)?;
    Ok((!b.is_empty()).then(|| Payload::new(Bytes::copy_from_slice(b))))
}

/// Decodes `bytes` as message `T` with `f` (each field once, in order).
fn message<T: Default>(
    bytes: &[u8],
    mut f: impl FnMut(&mut T, u64, Value<'_>) -> Result<(), Error>,
) -> Result<T, Error> {
    let mut out = T::default();
    for field in Fields(bytes) {
        let (number, value) = field?;
        f(&mut out, number, value)?;
    }
    Ok(out)
}

/// A `map<string, V>` entry: key 1, value 2.
fn map_entry<V: Default>(
    v: Value<'_>,
    value: impl Fn(Value<'_>) -> Result<V, Error>,
) -> Result<(String, V), Error> {
    let mut entry = (String::new(), V::default());
    for field in Fields(len(v)?) {
        match field? {
            (1, k) => entry.0 = string(k)?,
            (2, v) => entry.1 = value(v)?,
            _ => {}
        }
    }
    Ok(entry)
}

fn command(bytes: &[u8]) -> Result<Command, Error> {
    message(bytes, |c: &mut Command, n, v| {
        match n {
            1 => c.id = uint32(v)?,
            4 => c.connect = Some(connect_request(len(v)?)?),
            5 => c.subscribe = Some(subscribe_request(len(v)?)?),
            6 => {
                c.unsubscribe = Some(channel_only::<UnsubscribeRequest>(len(v)?, |r, ch| {
                    r.channel = ch
                })?)
            }
            7 => c.publish = Some(publish_request(len(v)?)?),
            8 => c.presence = Some(channel_only::<PresenceRequest>(len(v)?, |r, ch| r.channel = ch)?),
            9 => {
                c.presence_stats = Some(channel_only::<PresenceStatsRequest>(len(v)?, |r, ch| {
                    r.channel = ch
                })?)
            }
            10 => c.history = Some(history_request(len(v)?)?),
            11 => {
                len(v)?;
                c.ping = Some(Default::default());
            }
            12 => {
                c.send = Some(message(len(v)?, |r: &mut SendRequest, n, v| {
                    if n == 1 {
                        r.data = payload(v)?;
                    }
                    Ok(())
                })?)
            }
            13 => {
                c.rpc = Some(message(len(v)?, |r: &mut RpcRequest, n, v| {
                    match n {
                        1 => r.data = payload(v)?,
                        2 => r.method = string(v)?,
                        _ => {}
                    }
                    Ok(())
                })?)
            }
            14 => {
                c.refresh = Some(message(len(v)?, |r: &mut RefreshRequest, n, v| {
                    if n == 1 {
                        r.token = string(v)?;
                    }
                    Ok(())
                })?)
            }
            15 => {
                c.sub_refresh = Some(message(len(v)?, |r: &mut SubRefreshRequest, n, v| {
                    match n {
                        1 => r.channel = string(v)?,
                        2 => r.token = string(v)?,
                        _ => {}
                    }
                    Ok(())
                })?)
            }
            _ => {}
        }
        Ok(())
    })
}

/// A request whose only field is `channel = 1`.
fn channel_only<T: Default>(bytes: &[u8], set: impl Fn(&mut T, String)) -> Result<T, Error> {
    message(bytes, |r: &mut T, n, v| {
        if n == 1 {
            set(r, string(v)?);
        }
        Ok(())
    })
}

fn connect_request(bytes: &[u8]) -> Result<ConnectRequest, Error> {
    message(bytes, |r: &mut ConnectRequest, n, v| {
        match n {
            1 => r.token = string(v)?,
            2 => r.data = payload(v)?,
            3 => {
                let (channel, sub) = map_entry(v, |v| subscribe_request(len(v)?))?;
                r.subs.insert(channel, sub);
            }
            4 => r.name = string(v)?,
            5 => r.version = string(v)?,
            6 => {
                let (name, value) = map_entry(v, string)?;
                r.headers.insert(name, value);
            }
            _ => {}
        }
        Ok(())
    })
}

fn subscribe_request(bytes: &[u8]) -> Result<SubscribeRequest, Error> {
    message(bytes, |r: &mut SubscribeRequest, n, v| {
        match n {
            1 => r.channel = string(v)?,
            2 => r.token = string(v)?,
            3 => r.recover = boolean(v)?,
            6 => r.epoch = string(v)?,
            7 => r.offset = int(v)?,
            8 => r.data = payload(v)?,
            9 => r.positioned = boolean(v)?,
            10 => r.recoverable = boolean(v)?,
            11 => r.join_leave = boolean(v)?,
            _ => {}
        }
        Ok(())
    })
}

fn publish_request(bytes: &[u8]) -> Result<PublishRequest, Error> {
    message(bytes, |r: &mut PublishRequest, n, v| {
        match n {
            1 => r.channel = string(v)?,
            2 => r.data = payload(v)?,
            _ => {}
        }
        Ok(())
    })
}

fn history_request(bytes: &[u8]) -> Result<HistoryRequest, Error> {
    message(bytes, |r: &mut HistoryRequest, n, v| {
        match n {
            1 => r.channel = string(v)?,
            7 => r.limit = int32(v)?,
            8 => {
                r.since = Some(message(len(v)?, |p: &mut StreamPosition, n, v| {
                    match n {
                        1 => p.offset = int(v)?,
                        2 => p.epoch = string(v)?,
                        _ => {}
                    }
                    Ok(())
                })?)
            }
            9 => r.reverse = boolean(v)?,
            _ => {}
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Encoding: server → client
// ---------------------------------------------------------------------------

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn key(buf: &mut BytesMut, field: u32, wire_type: u32) {
    put_varint(buf, u64::from(field << 3 | wire_type));
}

fn put_uint(buf: &mut BytesMut, field: u32, v: u64) {
    if v != 0 {
        key(buf, field, 0);
        put_varint(buf, v);
    }
}

fn put_bool(buf: &mut BytesMut, field: u32, v: bool) {
    if v {
        key(buf, field, 0);
        buf.put_u8(1);
    }
}

fn put_bytes(buf: &mut BytesMut, field: u32, v: &[u8]) {
    if !v.is_empty() {
        key(buf, field, 2);
        put_varint(buf, v.len() as u64);
        buf.extend_from_slice(v);
    }
}

fn put_payload(buf: &mut BytesMut, field: u32, v: &Option<Payload>) {
    if let Some(p) = v {
        put_bytes(buf, field, p.as_bytes());
    }
}

/// Writes what `f` writes as one length-delimited value. The length is
/// written after the body: one byte is set aside for it, and the body is
/// moved along when it needs more.
fn put_delimited(buf: &mut BytesMut, f: impl FnOnce(&mut BytesMut)) {
    let at = buf.len();
    buf.put_u8(0);
    f(buf);
    let len = buf.len() - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
        return;
    }
    let mut prefix = BytesMut::with_capacity(10);
    put_varint(&mut prefix, len as u64);
    let extra = prefix.len() - 1;
    buf.put_bytes(0, extra);
    buf.copy_within(at + 1..at + 1 + len, at + 1 + extra);
    buf[at..at + prefix.len()].copy_from_slice(&prefix);
}

/// An embedded message field, written even when empty (its presence is
/// what counts, as for `unsubscribe: {}`).
fn put_message(buf: &mut BytesMut, field: u32, f: impl FnOnce(&mut BytesMut)) {
    key(buf, field, 2);
    put_delimited(buf, f);
}

/// Appends one reply, length-delimited.
pub fn reply(buf: &mut BytesMut, r: &Reply) {
    put_delimited(buf, |b| {
        put_uint(b, 1, u64::from(r.id));
        if let Some(e) = &r.error {
            put_message(b, 2, |b| error(b, e));
        }
        if let Some(p) = &r.push {
            put_message(b, 4, |b| push_body(b, p));
        }
        if let Some(c) = &r.connect {
            put_message(b, 5, |b| connect_result(b, c));
        }
        if let Some(s) = &r.subscribe {
            put_message(b, 6, |b| subscribe_result(b, s));
        }
        if r.unsubscribe.is_some() {
            put_message(b, 7, |_| {});
        }
        if r.publish.is_some() {
            put_message(b, 8, |_| {});
        }
        if let Some(p) = &r.presence {
            put_message(b, 9, |b| {
                for (client, info) in &p.presence {
                    put_message(b, 1, |b| {
                        put_bytes(b, 1, client.as_bytes());
                        put_message(b, 2, |b| client_info(b, info));
                    });
                }
            });
        }
        if let Some(s) = &r.presence_stats {
            put_message(b, 10, |b| {
                put_uint(b, 1, u64::from(s.num_clients));
                put_uint(b, 2, u64::from(s.num_users));
            });
        }
        if let Some(h) = &r.history {
            put_message(b, 11, |b| {
                for p in &h.publications {
                    put_message(b, 1, |b| publication(b, p));
                }
                put_bytes(b, 2, h.epoch.as_bytes());
                put_uint(b, 3, h.offset);
            });
        }
        if r.ping.is_some() {
            put_message(b, 12, |_| {});
        }
        if let Some(rpc) = &r.rpc {
            put_message(b, 13, |b| put_payload(b, 1, &rpc.data));
        }
        if let Some(x) = &r.refresh {
            put_message(b, 14, |b| {
                put_bytes(b, 1, x.client.as_bytes());
                put_bytes(b, 2, x.version.as_bytes());
                put_bool(b, 3, x.expires);
                put_uint(b, 4, u64::from(x.ttl));
            });
        }
        if let Some(x) = &r.sub_refresh {
            put_message(b, 15, |b| {
                put_bool(b, 1, x.expires);
                put_uint(b, 2, u64::from(x.ttl));
            });
        }
    });
}

fn error(b: &mut BytesMut, e: &ReplyError) {
    put_uint(b, 1, u64::from(e.code));
    put_bytes(b, 2, e.message.as_bytes());
    put_bool(b, 3, e.temporary);
}

fn client_info(b: &mut BytesMut, i: &ClientInfo) {
    put_bytes(b, 1, i.user.as_bytes());
    put_bytes(b, 2, i.client.as_bytes());
    put_payload(b, 3, &i.conn_info);
    put_payload(b, 4, &i.chan_info);
}

fn publication(b: &mut BytesMut, p: &Publication) {
    put_payload(b, 4, &p.data);
    if let Some(info) = &p.info {
        put_message(b, 5, |b| client_info(b, info));
    }
    put_uint(b, 6, p.offset);
    for (k, v) in &p.tags {
        put_tag(b, k, v);
    }
}

fn put_tag(b: &mut BytesMut, k: &str, v: &str) {
    put_message(b, 7, |b| {
        put_bytes(b, 1, k.as_bytes());
        put_bytes(b, 2, v.as_bytes());
    });
}

fn subscribe_result(b: &mut BytesMut, s: &SubscribeResult) {
    put_bool(b, 1, s.expires);
    put_uint(b, 2, u64::from(s.ttl));
    put_bool(b, 3, s.recoverable);
    put_bytes(b, 6, s.epoch.as_bytes());
    for p in &s.publications {
        put_message(b, 7, |b| publication(b, p));
    }
    put_bool(b, 8, s.recovered);
    put_uint(b, 9, s.offset);
    put_bool(b, 10, s.positioned);
    put_payload(b, 11, &s.data);
    put_bool(b, 12, s.was_recovering);
}

fn subs(b: &mut BytesMut, field: u32, subs: &BTreeMap<String, SubscribeResult>) {
    for (channel, s) in subs {
        put_message(b, field, |b| {
            put_bytes(b, 1, channel.as_bytes());
            put_message(b, 2, |b| subscribe_result(b, s));
        });
    }
}

fn connect_result(b: &mut BytesMut, c: &ConnectResult) {
    put_bytes(b, 1, c.client.as_bytes());
    put_bytes(b, 2, c.version.as_bytes());
    put_bool(b, 3, c.expires);
    put_uint(b, 4, u64::from(c.ttl));
    put_payload(b, 5, &c.data);
    subs(b, 6, &c.subs);
    put_uint(b, 7, u64::from(c.ping));
    put_bool(b, 8, c.pong);
    put_bytes(b, 9, c.session.as_bytes());
    put_bytes(b, 10, c.node.as_bytes());
}

/// The `connect` push (message `Connect`: the result's fields, numbered
/// differently).
fn connect_push(b: &mut BytesMut, c: &ConnectResult) {
    put_bytes(b, 1, c.client.as_bytes());
    put_bytes(b, 2, c.version.as_bytes());
    put_payload(b, 3, &c.data);
    subs(b, 4, &c.subs);
    put_bool(b, 5, c.expires);
    put_uint(b, 6, u64::from(c.ttl));
    put_uint(b, 7, u64::from(c.ping));
    put_bool(b, 8, c.pong);
    put_bytes(b, 9, c.session.as_bytes());
    put_bytes(b, 10, c.node.as_bytes());
}

fn push_body(b: &mut BytesMut, p: &Push) {
    put_bytes(b, 2, p.channel.as_bytes());
    if let Some(x) = &p.publication {
        put_message(b, 4, |b| publication(b, x));
    }
    if let Some(x) = &p.join {
        put_message(b, 5, |b| put_message(b, 1, |b| client_info(b, &x.info)));
    }
    if let Some(x) = &p.leave {
        put_message(b, 6, |b| put_message(b, 1, |b| client_info(b, &x.info)));
    }
    if let Some(x) = &p.unsubscribe {
        put_message(b, 7, |b| unsubscribe(b, x));
    }
    if let Some(x) = &p.message {
        put_message(b, 8, |b| put_payload(b, 1, &x.data));
    }
    if let Some(x) = &p.subscribe {
        put_message(b, 9, |b| {
            put_bool(b, 1, x.recoverable);
            put_bytes(b, 4, x.epoch.as_bytes());
            put_uint(b, 5, x.offset);
            put_bool(b, 6, x.positioned);
            put_payload(b, 7, &x.data);
        });
    }
    if let Some(x) = &p.connect {
        put_message(b, 10, |b| connect_push(b, x));
    }
    if let Some(x) = &p.disconnect {
        put_message(b, 11, |b| disconnect(b, x));
    }
    if let Some(x) = &p.refresh {
        put_message(b, 12, |b| {
            put_bool(b, 1, x.expires);
            put_uint(b, 2, u64::from(x.ttl));
        });
    }
}

fn unsubscribe(b: &mut BytesMut, u: &Unsubscribe) {
    put_uint(b, 2, u64::from(u.code));
    put_bytes(b, 3, u.reason.as_bytes());
}

fn disconnect(b: &mut BytesMut, d: &Disconnect) {
    put_uint(b, 1, u64::from(d.code));
    put_bytes(b, 2, d.reason.as_bytes());
    put_bool(b, 3, d.reconnect());
}

// The pushes that fan out, from borrowed parts (one encoding per event,
// shared by every protobuf subscriber).

/// Appends `Reply{push: {channel, <field>: body}}`, length-delimited.
fn push_reply(buf: &mut BytesMut, channel: &str, field: u32, body: impl FnOnce(&mut BytesMut)) {
    put_delimited(buf, |b| {
        put_message(b, 4, |b| {
            put_bytes(b, 2, channel.as_bytes());
            put_message(b, field, body);
        })
    });
}

fn client_info_ref(b: &mut BytesMut, i: &ClientInfoRef<'_>) {
    put_bytes(b, 1, i.user.as_bytes());
    put_bytes(b, 2, i.client.as_bytes());
    put_bytes(b, 3, i.conn_info);
    put_bytes(b, 4, i.chan_info);
}

/// Appends a publication push.
pub fn publication_push(buf: &mut BytesMut, channel: &str, p: &PublicationRef<'_>) {
    buf.reserve(32 + channel.len() + p.data.len());
    push_reply(buf, channel, 4, |b| {
        put_bytes(b, 4, p.data);
        if let Some(info) = &p.info {
            put_message(b, 5, |b| client_info_ref(b, info));
        }
        put_uint(b, 6, p.offset);
        for (k, v) in p.tags {
            put_tag(b, k, v);
        }
    });
}

/// Appends a join push.
pub fn join_push(buf: &mut BytesMut, channel: &str, info: &ClientInfoRef<'_>) {
    push_reply(buf, channel, 5, |b| {
        put_message(b, 1, |b| client_info_ref(b, info))
    });
}

/// Appends a leave push.
pub fn leave_push(buf: &mut BytesMut, channel: &str, info: &ClientInfoRef<'_>) {
    push_reply(buf, channel, 6, |b| {
        put_message(b, 1, |b| client_info_ref(b, info))
    });
}

/// Appends a message push (no channel).
pub fn message_push(buf: &mut BytesMut, data: &[u8]) {
    push_reply(buf, "", 8, |b| put_bytes(b, 1, data));
}

/// Appends an unsubscribe push for `channel`.
pub fn unsubscribe_push(buf: &mut BytesMut, channel: &str, u: &Unsubscribe) {
    push_reply(buf, channel, 7, |b| unsubscribe(b, u));
}

// ---------------------------------------------------------------------------
// Encoding commands and decoding replies: what a client does (the `crier`
// CLI and load generator, and tests)
// ---------------------------------------------------------------------------

/// Appends one command, length-delimited: the client side of the format,
/// for tests and tools. Covers the fields the server reads.
pub fn command_frame(buf: &mut BytesMut, c: &Command) {
    put_delimited(buf, |b| {
        put_uint(b, 1, u64::from(c.id));
        if let Some(r) = &c.connect {
            put_message(b, 4, |b| {
                put_bytes(b, 1, r.token.as_bytes());
                put_payload(b, 2, &r.data);
                for (channel, s) in &r.subs {
                    put_message(b, 3, |b| {
                        put_bytes(b, 1, channel.as_bytes());
                        put_message(b, 2, |b| subscribe_request_body(b, s));
                    });
                }
                put_bytes(b, 4, r.name.as_bytes());
                put_bytes(b, 5, r.version.as_bytes());
                for (name, value) in &r.headers {
                    put_message(b, 6, |b| {
                        put_bytes(b, 1, name.as_bytes());
                        put_bytes(b, 2, value.as_bytes());
                    });
                }
            });
        }
        if let Some(r) = &c.subscribe {
            put_message(b, 5, |b| subscribe_request_body(b, r));
        }
        if let Some(r) = &c.unsubscribe {
            put_message(b, 6, |b| put_bytes(b, 1, r.channel.as_bytes()));
        }
        if let Some(r) = &c.publish {
            put_message(b, 7, |b| {
                put_bytes(b, 1, r.channel.as_bytes());
                put_payload(b, 2, &r.data);
            });
        }
        if let Some(r) = &c.presence {
            put_message(b, 8, |b| put_bytes(b, 1, r.channel.as_bytes()));
        }
        if let Some(r) = &c.presence_stats {
            put_message(b, 9, |b| put_bytes(b, 1, r.channel.as_bytes()));
        }
        if let Some(r) = &c.history {
            put_message(b, 10, |b| {
                put_bytes(b, 1, r.channel.as_bytes());
                if r.limit != 0 {
                    key(b, 7, 0);
                    put_varint(b, r.limit as i64 as u64);
                }
                if let Some(s) = &r.since {
                    put_message(b, 8, |b| {
                        put_uint(b, 1, s.offset);
                        put_bytes(b, 2, s.epoch.as_bytes());
                    });
                }
                put_bool(b, 9, r.reverse);
            });
        }
        if c.ping.is_some() {
            put_message(b, 11, |_| {});
        }
        if let Some(r) = &c.send {
            put_message(b, 12, |b| put_payload(b, 1, &r.data));
        }
        if let Some(r) = &c.rpc {
            put_message(b, 13, |b| {
                put_payload(b, 1, &r.data);
                put_bytes(b, 2, r.method.as_bytes());
            });
        }
        if let Some(r) = &c.refresh {
            put_message(b, 14, |b| put_bytes(b, 1, r.token.as_bytes()));
        }
        if let Some(r) = &c.sub_refresh {
            put_message(b, 15, |b| {
                put_bytes(b, 1, r.channel.as_bytes());
                put_bytes(b, 2, r.token.as_bytes());
            });
        }
    });
}

fn subscribe_request_body(b: &mut BytesMut, r: &SubscribeRequest) {
    put_bytes(b, 1, r.channel.as_bytes());
    put_bytes(b, 2, r.token.as_bytes());
    put_bool(b, 3, r.recover);
    put_bytes(b, 6, r.epoch.as_bytes());
    put_uint(b, 7, r.offset);
    put_payload(b, 8, &r.data);
    put_bool(b, 9, r.positioned);
    put_bool(b, 10, r.recoverable);
    put_bool(b, 11, r.join_leave);
}

/// Splits a binary frame from the server into replies (the client side of
/// the format). Decodes every field the server's [`reply`] and pushes
/// write: ids, errors, every result and every push.
pub fn parse_replies(frame: &[u8]) -> impl Iterator<Item = Result<Reply, Error>> + '_ {
    let mut rest = frame;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.is_empty() {
            return None;
        }
        let r = delimited(&mut rest).and_then(decode_reply);
        failed = r.is_err();
        Some(r)
    })
}

fn decode_reply(bytes: &[u8]) -> Result<Reply, Error> {
    message(bytes, |r: &mut Reply, n, v| {
        match n {
            1 => r.id = uint32(v)?,
            2 => {
                let mut e = ReplyError {
                    code: 0,
                    message: "".into(),
                    temporary: false,
                };
                for f in Fields(len(v)?) {
                    match f? {
                        (1, v) => e.code = uint32(v)?,
                        (2, v) => e.message = string(v)?.into(),
                        (3, v) => e.temporary = boolean(v)?,
                        _ => {}
                    }
                }
                r.error = Some(e);
            }
            4 => r.push = Some(decode_push(len(v)?)?),
            5 => r.connect = Some(decode_connect(len(v)?, false)?),
            6 => r.subscribe = Some(decode_subscribe_result(len(v)?)?),
            7 => r.unsubscribe = Some(Default::default()),
            8 => r.publish = Some(Default::default()),
            9 => {
                let mut presence = crate::client::PresenceResult::default();
                for f in Fields(len(v)?) {
                    if let (1, v) = f? {
                        let (client, info) = map_entry(v, |v| decode_client_info(len(v)?))?;
                        presence.presence.insert(client, info);
                    }
                }
                r.presence = Some(presence);
            }
            10 => {
                r.presence_stats = Some(message(
                    len(v)?,
                    |s: &mut crate::client::PresenceStatsResult, n, v| {
                        match n {
                            1 => s.num_clients = uint32(v)?,
                            2 => s.num_users = uint32(v)?,
                            _ => {}
                        }
                        Ok(())
                    },
                )?)
            }
            11 => {
                r.history = Some(message(len(v)?, |h: &mut crate::client::HistoryResult, n, v| {
                    match n {
                        1 => h.publications.push(decode_publication(len(v)?)?),
                        2 => h.epoch = string(v)?,
                        3 => h.offset = int(v)?,
                        _ => {}
                    }
                    Ok(())
                })?)
            }
            12 => r.ping = Some(Default::default()),
            13 => {
                r.rpc = Some(message(len(v)?, |x: &mut crate::client::RpcResult, n, v| {
                    if n == 1 {
                        x.data = payload(v)?;
                    }
                    Ok(())
                })?)
            }
            14 => {
                r.refresh = Some(message(len(v)?, |x: &mut crate::client::RefreshResult, n, v| {
                    match n {
                        1 => x.client = string(v)?,
                        2 => x.version = string(v)?,
                        3 => x.expires = boolean(v)?,
                        4 => x.ttl = uint32(v)?,
                        _ => {}
                    }
                    Ok(())
                })?)
            }
            15 => {
                r.sub_refresh = Some(message(
                    len(v)?,
                    |x: &mut crate::client::SubRefreshResult, n, v| {
                        match n {
                            1 => x.expires = boolean(v)?,
                            2 => x.ttl = uint32(v)?,
                            _ => {}
                        }
                        Ok(())
                    },
                )?)
            }
            _ => {}
        }
        Ok(())
    })
}

fn decode_client_info(bytes: &[u8]) -> Result<ClientInfo, Error> {
    message(bytes, |i: &mut ClientInfo, n, v| {
        match n {
            1 => i.user = string(v)?,
            2 => i.client = string(v)?,
            3 => i.conn_info = payload(v)?,
            4 => i.chan_info = payload(v)?,
            _ => {}
        }
        Ok(())
    })
}

fn decode_publication(bytes: &[u8]) -> Result<Publication, Error> {
    message(bytes, |p: &mut Publication, n, v| {
        match n {
            4 => p.data = payload(v)?,
            5 => p.info = Some(decode_client_info(len(v)?)?),
            6 => p.offset = int(v)?,
            7 => {
                let (k, val) = map_entry(v, string)?;
                p.tags.insert(k, val);
            }
            _ => {}
        }
        Ok(())
    })
}

fn decode_subscribe_result(bytes: &[u8]) -> Result<SubscribeResult, Error> {
    message(bytes, |s: &mut SubscribeResult, n, v| {
        match n {
            1 => s.expires = boolean(v)?,
            2 => s.ttl = uint32(v)?,
            3 => s.recoverable = boolean(v)?,
            6 => s.epoch = string(v)?,
            7 => s.publications.push(decode_publication(len(v)?)?),
            8 => s.recovered = boolean(v)?,
            9 => s.offset = int(v)?,
            10 => s.positioned = boolean(v)?,
            11 => s.data = payload(v)?,
            12 => s.was_recovering = boolean(v)?,
            _ => {}
        }
        Ok(())
    })
}

/// A connect reply's result, or with `push` the `Connect` push: the same
/// fields, numbered as `connect_push` writes them (data, subs, expires and
/// ttl are 3–6 there, 5, 6, 3, 4 in the result).
fn decode_connect(bytes: &[u8], push: bool) -> Result<ConnectResult, Error> {
    message(bytes, |c: &mut ConnectResult, n, v| {
        let n = match (push, n) {
            (true, 3) => 5,
            (true, 4) => 6,
            (true, 5) => 3,
            (true, 6) => 4,
            (_, n) => n,
        };
        match n {
            1 => c.client = string(v)?,
            2 => c.version = string(v)?,
            3 => c.expires = boolean(v)?,
            4 => c.ttl = uint32(v)?,
            5 => c.data = payload(v)?,
            6 => {
                let (ch, s) = map_entry(v, |v| decode_subscribe_result(len(v)?))?;
                c.subs.insert(ch, s);
            }
            7 => c.ping = uint32(v)?,
            8 => c.pong = boolean(v)?,
            9 => c.session = string(v)?,
            10 => c.node = string(v)?,
            _ => {}
        }
        Ok(())
    })
}

fn decode_push(bytes: &[u8]) -> Result<Push, Error> {
    message(bytes, |p: &mut Push, n, v| {
        match n {
            2 => p.channel = string(v)?,
            4 => p.publication = Some(decode_publication(len(v)?)?),
            5 | 6 => {
                let mut info = ClientInfo::default();
                for f in Fields(len(v)?) {
                    if let (1, v) = f? {
                        info = decode_client_info(len(v)?)?;
                    }
                }
                if n == 5 {
                    p.join = Some(crate::client::Join { info });
                } else {
                    p.leave = Some(crate::client::Leave { info });
                }
            }
            7 => {
                let mut u = Unsubscribe::new(0, "");
                for f in Fields(len(v)?) {
                    match f? {
                        (2, v) => u.code = uint32(v)?,
                        (3, v) => u.reason = string(v)?.into(),
                        _ => {}
                    }
                }
                p.unsubscribe = Some(u);
            }
            8 => {
                p.message = Some(message(len(v)?, |m: &mut crate::client::Message, n, v| {
                    if n == 1 {
                        m.data = payload(v)?;
                    }
                    Ok(())
                })?)
            }
            9 => {
                p.subscribe = Some(message(len(v)?, |s: &mut crate::client::Subscribe, n, v| {
                    match n {
                        1 => s.recoverable = boolean(v)?,
                        4 => s.epoch = string(v)?,
                        5 => s.offset = int(v)?,
                        6 => s.positioned = boolean(v)?,
                        7 => s.data = payload(v)?,
                        _ => {}
                    }
                    Ok(())
                })?)
            }
            11 => {
                let mut d = Disconnect::new(0, "");
                for f in Fields(len(v)?) {
                    match f? {
                        (1, v) => d.code = uint32(v)?,
                        (2, v) => d.reason = string(v)?.into(),
                        _ => {}
                    }
                }
                p.disconnect = Some(d);
            }
            10 => p.connect = Some(decode_connect(len(v)?, true)?),
            12 => {
                p.refresh = Some(message(len(v)?, |r: &mut crate::client::Refresh, n, v| {
                    match n {
                        1 => r.expires = boolean(v)?,
                        2 => r.ttl = uint32(v)?,
                        _ => {}
                    }
                    Ok(())
                })?)
            }
            _ => {}
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Method, Request};

    fn frame_of(commands: &[Command]) -> BytesMut {
        let mut buf = BytesMut::new();
        for c in commands {
            command_frame(&mut buf, c);
        }
        buf
    }

    fn payload_of(s: &str) -> Option<Payload> {
        Some(Payload::new(Bytes::copy_from_slice(s.as_bytes())))
    }

    #[test]
    fn commands_round_trip_through_the_client_encoder() {
        let mut subs = BTreeMap::new();
        subs.insert(
            "news".to_owned(),
            SubscribeRequest {
                recover: true,
                offset: 7,
                epoch: "e".into(),
                ..Default::default()
            },
        );
        let commands = vec![
            Command {
                id: 1,
                connect: Some(ConnectRequest {
                    token: "t".into(),
                    data: payload_of("\x00\x01binary"),
                    subs,
                    name: "swift".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Command {
                id: 2,
                publish: Some(PublishRequest {
                    channel: "chat".into(),
                    data: payload_of(r#"{"text":"hi"}"#),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Command {
                id: 3,
                history: Some(HistoryRequest {
                    channel: "chat".into(),
                    limit: -1,
                    since: Some(StreamPosition {
                        offset: u64::MAX,
                        epoch: "x".into(),
                    }),
                    reverse: true,
                }),
                ..Default::default()
            },
            Command::default(),
        ];
        let frame = frame_of(&commands);
        let decoded: Vec<Command> = parse_frame(&frame).collect::<Result<_, _>>().expect("decodes");
        assert_eq!(decoded.len(), 4);
        let Ok(Request::Connect(c)) = decoded[0].clone().into_request() else {
            panic!("connect")
        };
        assert_eq!(c.token, "t");
        assert_eq!(
            c.data.as_ref().map(Payload::as_bytes),
            Some(&b"\x00\x01binary"[..])
        );
        assert_eq!(c.subs["news"].offset, 7);
        assert!(c.subs["news"].recover);
        assert_eq!(c.name, "swift");
        assert_eq!(decoded[1].method(), Some(Method::Publish));
        let h = decoded[2].history.as_ref().expect("history");
        assert_eq!((h.limit, h.reverse), (-1, true));
        assert_eq!(h.since.as_ref().map(|s| s.offset), Some(u64::MAX));
        assert!(matches!(decoded[3].clone().into_request(), Ok(Request::Pong)));
    }

    #[test]
    fn the_ping_is_an_empty_reply_and_the_pong_an_empty_command() {
        let mut buf = BytesMut::new();
        reply(&mut buf, &Reply::default());
        assert_eq!(&buf[..], PING);
        let pong: Vec<_> = parse_frame(PING).collect();
        assert!(matches!(&pong[..], [Ok(c)] if c.method().is_none() && c.id == 0));
    }

    #[test]
    fn malformed_frames_are_errors_and_end_the_frame() {
        let cases: [(&[u8], &str); 6] = [
            (&[0x80], "truncated varint"),
            (&[0x05, 0x08], "length beyond the frame"),
            // 10 MB announced, 3 bytes present.
            (
                &[0x80, 0xad, 0xe2, 0x04, 0x08, 0x01, 0x02],
                "length beyond the frame",
            ),
            // id (field 1) sent as a length-delimited field.
            (&[0x03, 0x0a, 0x01, 0x41], "expected a varint field"),
            // subscribe (field 5) sent as a varint.
            (&[0x02, 0x28, 0x01], "expected a length-delimited field"),
            // a group start tag (wire type 3).
            (&[0x01, 0x0b], "unsupported wire type"),
        ];
        for (frame, why) in cases {
            let all: Vec<_> = parse_frame(frame).collect();
            assert_eq!(all.len(), 1, "{frame:?}");
            match &all[0] {
                Err(Error::MalformedProtobuf(w)) => assert_eq!(*w, why, "{frame:?}"),
                other => panic!("{frame:?}: {other:?}"),
            }
            assert_eq!(
                all[0].as_ref().unwrap_err().disconnect().map(|d| d.code),
                Some(3501)
            );
        }
        // A channel that is not UTF-8.
        let bad_utf8 = [0x06, 0x2a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
        assert!(matches!(
            parse_frame(&bad_utf8).next(),
            Some(Err(Error::MalformedProtobuf("string field is not UTF-8")))
        ));
        // Commands before a bad one are still delivered.
        let mut frame = frame_of(&[Command {
            id: 9,
            ping: Some(Default::default()),
            ..Default::default()
        }]);
        frame.extend_from_slice(&[0x80]);
        let all: Vec<_> = parse_frame(&frame).collect();
        assert!(matches!(&all[..], [Ok(c), Err(_)] if c.id == 9));
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        // id 5, then fields 20 (varint), 21 (fixed64), 22 (len), 23 (fixed32).
        let body = [
            0x08, 0x05, 0xa0, 0x01, 0x01, 0xa9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0xb2, 0x01, 0x01, 0x41, 0xbd,
            0x01, 1, 2, 3, 4, 0x5a, 0x00,
        ];
        let mut frame = vec![body.len() as u8];
        frame.extend_from_slice(&body);
        let c = parse_frame(&frame).next().expect("one").expect("decodes");
        assert_eq!(c.id, 5);
        assert_eq!(c.method(), Some(Method::Ping));
    }

    #[test]
    fn long_messages_get_multi_byte_length_prefixes() {
        let data = vec![b'x'; 300];
        let mut buf = BytesMut::new();
        let info = ClientInfoRef {
            user: "u",
            client: "c",
            ..Default::default()
        };
        let tags = [("k".into(), "v".into())];
        publication_push(
            &mut buf,
            "news",
            &PublicationRef {
                data: &data,
                offset: 42,
                info: Some(info),
                tags: &tags,
            },
        );
        let replies: Vec<Reply> = parse_replies(&buf).collect::<Result<_, _>>().expect("decodes");
        assert_eq!(replies.len(), 1);
        let push = replies[0].push.as_ref().expect("push");
        assert_eq!(push.channel, "news");
        let p = push.publication.as_ref().expect("pub");
        assert_eq!(p.data.as_ref().map(|d| d.as_bytes().len()), Some(300));
        assert_eq!(p.offset, 42);
        assert_eq!(p.info.as_ref().map(|i| i.user.as_str()), Some("u"));
        assert_eq!(p.tags.get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn replies_round_trip() {
        let mut subs = BTreeMap::new();
        subs.insert(
            "s".to_owned(),
            SubscribeResult {
                recoverable: true,
                epoch: "ep".into(),
                offset: 3,
                ..Default::default()
            },
        );
        let r = Reply {
            id: 1,
            connect: Some(ConnectResult {
                client: "c1".into(),
                version: "v".into(),
                subs,
                ping: 25,
                pong: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut buf = BytesMut::new();
        reply(&mut buf, &r);
        reply(
            &mut buf,
            &Reply::error(2, crate::codes::ErrorCode::PermissionDenied),
        );
        unsubscribe_push(&mut buf, "news", &Unsubscribe::new(2000, "server unsubscribe"));
        let all: Vec<Reply> = parse_replies(&buf).collect::<Result<_, _>>().expect("decodes");
        let c = all[0].connect.as_ref().expect("connect");
        assert_eq!((c.client.as_str(), c.ping, c.pong), ("c1", 25, true));
        assert_eq!(c.subs["s"].offset, 3);
        assert_eq!(all[1].error.as_ref().map(|e| e.code), Some(103));
        let u = all[2]
            .push
            .as_ref()
            .and_then(|p| p.unsubscribe.as_ref())
            .expect("unsub");
        assert_eq!(u.code, 2000);
    }
}
