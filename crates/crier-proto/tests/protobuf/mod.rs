//! The protobuf client protocol end to end, both sides of the crate
//! against each other: what a client encodes (`command_frame`) the server
//! decodes (`parse_frame`) to the same command, and what the server encodes
//! (`reply` and the shared pushes) a client decodes (`parse_replies`) to the
//! same reply; plus the emulation request, and bytes that are not a valid
//! frame. Values are compared through their `Debug` text, which shows every
//! field (the wire types do not implement `PartialEq`).

use std::collections::BTreeMap;
use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use crier_proto::client::{
    ClientInfo, Command, ConnectRequest, ConnectResult, HistoryRequest, HistoryResult, Join, Leave, Message,
    Payload, PingRequest, PingResult, PresenceRequest, PresenceResult, PresenceStatsRequest,
    PresenceStatsResult, Publication, PublishRequest, PublishResult, Push, Refresh, RefreshRequest,
    RefreshResult, Reply, ReplyError, RpcRequest, RpcResult, SendRequest, StreamPosition, SubRefreshRequest,
    SubRefreshResult, Subscribe, SubscribeRequest, SubscribeResult, UnsubscribeRequest, UnsubscribeResult,
};
use crier_proto::codes::{Disconnect, ErrorCode, Unsubscribe};
use crier_proto::encode::{ClientInfoRef, PublicationRef};
use crier_proto::protobuf::{
    command_frame, emulation_request, join_push, leave_push, message_push, parse_frame, parse_replies,
    publication_push, reply, unsubscribe_push, PING,
};
use crier_proto::Error;

fn payload(bytes: &[u8]) -> Option<Payload> {
    Some(Payload::new(Bytes::copy_from_slice(bytes)))
}

fn same<T: Debug>(got: &[T], want: &[T]) {
    assert_eq!(format!("{got:#?}"), format!("{want:#?}"));
}

fn commands_of(frame: &[u8]) -> Vec<Command> {
    parse_frame(frame)
        .collect::<Result<_, _>>()
        .expect("the frame decodes")
}

fn replies_of(frame: &[u8]) -> Vec<Reply> {
    parse_replies(frame)
        .collect::<Result<_, _>>()
        .expect("the frame decodes")
}

fn frame_of_commands(commands: &[Command]) -> BytesMut {
    let mut buf = BytesMut::new();
    for c in commands {
        command_frame(&mut buf, c);
    }
    buf
}

fn frame_of_replies(replies: &[Reply]) -> BytesMut {
    let mut buf = BytesMut::new();
    for r in replies {
        reply(&mut buf, r);
    }
    buf
}

/// A protobuf field as a client library would write it: key, then a varint
/// or a length and the bytes (wire types 0 and 2).
fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn len_field(buf: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    varint(buf, number << 3 | 2);
    varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn int_field(buf: &mut Vec<u8>, number: u64, v: u64) {
    varint(buf, number << 3);
    varint(buf, v);
}

/// One length-delimited message of `body`.
fn delimited(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out
}

fn subscribe_request(channel: &str) -> SubscribeRequest {
    SubscribeRequest {
        channel: channel.into(),
        token: "sub-token".into(),
        recover: true,
        epoch: "epoch-1".into(),
        offset: 16_384,
        data: payload(br#"{"x":1}"#),
        positioned: true,
        recoverable: true,
        join_leave: true,
    }
}

/// One command per request type, every field the protobuf schema has set to
/// a value that is not the default, plus the edge values of each integer.
fn every_command() -> Vec<Command> {
    let mut subs = BTreeMap::new();
    subs.insert("news".to_owned(), subscribe_request("news"));
    subs.insert("чат".to_owned(), SubscribeRequest::default());
    let mut headers = BTreeMap::new();
    headers.insert("Authorization".to_owned(), "Bearer x".to_owned());
    headers.insert("X-Empty".to_owned(), String::new());
    vec![
        Command {
            id: 1,
            connect: Some(ConnectRequest {
                token: "conn-token".into(),
                data: payload(b"\x00\x01\xffbinary"),
                subs,
                name: "swift".into(),
                version: "1.2.3".into(),
                headers,
            }),
            ..Default::default()
        },
        Command {
            id: 127,
            subscribe: Some(subscribe_request("chat:index")),
            ..Default::default()
        },
        Command {
            id: 128,
            unsubscribe: Some(UnsubscribeRequest {
                channel: "chat:index".into(),
            }),
            ..Default::default()
        },
        Command {
            id: 16_383,
            publish: Some(PublishRequest {
                channel: "chat".into(),
                data: payload(&[b'p'; 300]),
                exclude_self: false,
            }),
            ..Default::default()
        },
        Command {
            id: 16_384,
            presence: Some(PresenceRequest {
                channel: "room".into(),
            }),
            ..Default::default()
        },
        Command {
            id: u32::MAX,
            presence_stats: Some(PresenceStatsRequest {
                channel: "room".into(),
            }),
            ..Default::default()
        },
        Command {
            id: 7,
            history: Some(HistoryRequest {
                channel: "chat".into(),
                limit: i32::MIN,
                since: Some(StreamPosition {
                    offset: u64::MAX,
                    epoch: "e".into(),
                }),
                reverse: true,
            }),
            ..Default::default()
        },
        Command {
            id: 8,
            history: Some(HistoryRequest {
                channel: "chat".into(),
                limit: 100,
                since: None,
                reverse: false,
            }),
            ..Default::default()
        },
        Command {
            id: 9,
            ping: Some(PingRequest {}),
            ..Default::default()
        },
        Command {
            send: Some(SendRequest {
                data: payload(b"fire and forget"),
            }),
            ..Default::default()
        },
        Command {
            id: 10,
            rpc: Some(RpcRequest {
                data: payload(br#"{"q":"?"}"#),
                method: "lookup".into(),
            }),
            ..Default::default()
        },
        Command {
            id: 11,
            refresh: Some(RefreshRequest {
                token: "new-token".into(),
            }),
            ..Default::default()
        },
        Command {
            id: 12,
            sub_refresh: Some(SubRefreshRequest {
                channel: "chat".into(),
                token: "new-sub-token".into(),
            }),
            ..Default::default()
        },
        // The pong: nothing at all.
        Command::default(),
    ]
}

#[test]
fn every_command_the_client_encodes_decodes_to_itself_on_the_server() {
    let commands = every_command();
    // One frame holding them all, as a batching client sends them.
    let frame = frame_of_commands(&commands);
    same(&commands_of(&frame), &commands);
    // And each alone, checked against the request the server acts on.
    for c in &commands {
        let frame = frame_of_commands(std::slice::from_ref(c));
        let decoded = commands_of(&frame);
        same(&decoded, std::slice::from_ref(c));
        assert_eq!(decoded[0].method(), c.method());
    }
}

#[test]
fn a_command_carrying_every_request_at_once_keeps_them_all() {
    let mut all = Command {
        id: 42,
        ..Default::default()
    };
    for c in every_command() {
        all.connect = all.connect.or(c.connect);
        all.subscribe = all.subscribe.or(c.subscribe);
        all.unsubscribe = all.unsubscribe.or(c.unsubscribe);
        all.publish = all.publish.or(c.publish);
        all.presence = all.presence.or(c.presence);
        all.presence_stats = all.presence_stats.or(c.presence_stats);
        all.history = all.history.or(c.history);
        all.ping = all.ping.or(c.ping);
        all.send = all.send.or(c.send);
        all.rpc = all.rpc.or(c.rpc);
        all.refresh = all.refresh.or(c.refresh);
        all.sub_refresh = all.sub_refresh.or(c.sub_refresh);
    }
    let frame = frame_of_commands(std::slice::from_ref(&all));
    same(&commands_of(&frame), &[all]);
}

#[test]
fn message_lengths_across_every_varint_boundary_round_trip() {
    // A publish whose data makes the command's length (and the publish
    // message's length inside it) cross 1-, 2- and 3-byte length prefixes.
    for n in [
        0, 1, 100, 112, 113, 114, 115, 116, 117, 125, 126, 127, 128, 129, 16_370, 16_383, 16_384, 70_000,
    ] {
        let c = Command {
            id: 3,
            publish: Some(PublishRequest {
                channel: "c".into(),
                data: if n == 0 { None } else { payload(&vec![b'd'; n]) },
                exclude_self: false,
            }),
            ..Default::default()
        };
        let frame = frame_of_commands(&[c.clone(), c.clone()]);
        same(&commands_of(&frame), &[c.clone(), c]);

        let r = Reply {
            id: 3,
            rpc: Some(RpcResult {
                data: if n == 0 { None } else { payload(&vec![b'r'; n]) },
            }),
            ..Default::default()
        };
        let frame = frame_of_replies(&[r.clone(), r.clone()]);
        same(&replies_of(&frame), &[r.clone(), r]);
    }
}

fn client_info(user: &str, client: &str) -> ClientInfo {
    ClientInfo {
        user: user.into(),
        client: client.into(),
        conn_info: payload(br#"{"name":"Ann"}"#),
        chan_info: payload(b"\x01\x02"),
    }
}

fn publication(offset: u64) -> Publication {
    let mut tags = BTreeMap::new();
    tags.insert("k1".to_owned(), "v1".to_owned());
    tags.insert("k2".to_owned(), String::new());
    Publication {
        data: payload(br#"{"text":"hi"}"#),
        info: Some(client_info("u1", "c1")),
        offset,
        tags,
    }
}

fn subscribe_result() -> SubscribeResult {
    SubscribeResult {
        expires: true,
        ttl: 300,
        recoverable: true,
        epoch: "ep".into(),
        publications: vec![publication(1), publication(128)],
        recovered: true,
        offset: u64::MAX,
        positioned: true,
        data: payload(b"sub data"),
        was_recovering: true,
    }
}

fn connect_result() -> ConnectResult {
    let mut subs = BTreeMap::new();
    subs.insert("news".to_owned(), subscribe_result());
    subs.insert("empty".to_owned(), SubscribeResult::default());
    ConnectResult {
        client: "client-1".into(),
        version: "crier 0.1".into(),
        expires: true,
        ttl: 3600,
        data: payload(b"welcome"),
        subs,
        ping: 25,
        pong: true,
        session: "session-1".into(),
        node: "node-1".into(),
    }
}

fn push(channel: &str) -> Push {
    Push {
        channel: channel.into(),
        ..Default::default()
    }
}

/// One reply per result type and one per push type, every field set.
fn every_reply() -> Vec<Reply> {
    let mut presence = BTreeMap::new();
    presence.insert("c1".to_owned(), client_info("u1", "c1"));
    presence.insert("c2".to_owned(), ClientInfo::default());
    vec![
        Reply {
            id: 1,
            connect: Some(connect_result()),
            ..Default::default()
        },
        Reply::error(2, ErrorCode::PermissionDenied),
        Reply {
            id: 3,
            error: Some(ReplyError {
                code: 4000,
                message: "application error".into(),
                temporary: true,
            }),
            ..Default::default()
        },
        Reply {
            id: 4,
            subscribe: Some(subscribe_result()),
            ..Default::default()
        },
        Reply {
            id: 5,
            unsubscribe: Some(UnsubscribeResult {}),
            ..Default::default()
        },
        Reply {
            id: 6,
            publish: Some(PublishResult {}),
            ..Default::default()
        },
        Reply {
            id: 7,
            presence: Some(PresenceResult { presence }),
            ..Default::default()
        },
        Reply {
            id: 8,
            presence_stats: Some(PresenceStatsResult {
                num_clients: 70_000,
                num_users: 2,
            }),
            ..Default::default()
        },
        Reply {
            id: 9,
            history: Some(HistoryResult {
                publications: vec![publication(5), publication(6)],
                epoch: "hist-epoch".into(),
                offset: 6,
            }),
            ..Default::default()
        },
        Reply {
            id: 10,
            ping: Some(PingResult {}),
            ..Default::default()
        },
        Reply {
            id: 11,
            rpc: Some(RpcResult {
                data: payload(b"answer"),
            }),
            ..Default::default()
        },
        Reply {
            id: 12,
            refresh: Some(RefreshResult {
                client: "client-1".into(),
                version: "crier 0.1".into(),
                expires: true,
                ttl: 60,
            }),
            ..Default::default()
        },
        Reply {
            id: u32::MAX,
            sub_refresh: Some(SubRefreshResult {
                expires: true,
                ttl: 61,
            }),
            ..Default::default()
        },
        Reply::push(Push {
            publication: Some(publication(128)),
            ..push("chat")
        }),
        Reply::push(Push {
            join: Some(Join {
                info: client_info("u2", "c2"),
            }),
            ..push("chat")
        }),
        Reply::push(Push {
            leave: Some(Leave {
                info: client_info("u3", "c3"),
            }),
            ..push("chat")
        }),
        Reply::push(Push {
            unsubscribe: Some(Unsubscribe::new(2500, "insufficient state")),
            ..push("chat")
        }),
        Reply::push(Push {
            message: Some(Message {
                data: payload(b"direct"),
            }),
            ..push("")
        }),
        Reply::push(Push {
            subscribe: Some(Subscribe {
                recoverable: true,
                epoch: "e2".into(),
                offset: 9,
                positioned: true,
                data: payload(b"server-side sub"),
            }),
            ..push("personal:u1")
        }),
        Reply::push(Push {
            connect: Some(connect_result()),
            ..push("")
        }),
        Reply::push(Push {
            disconnect: Some(Disconnect::new(3501, "bad request")),
            ..push("")
        }),
        Reply::push(Push {
            disconnect: Some(Disconnect::new(4001, "custom, reconnect")),
            ..push("")
        }),
        Reply::push(Push {
            refresh: Some(Refresh {
                expires: true,
                ttl: 120,
            }),
            ..push("")
        }),
        // The server's ping.
        Reply::default(),
    ]
}

#[test]
fn every_reply_the_server_encodes_decodes_to_itself_on_the_client() {
    let replies = every_reply();
    let frame = frame_of_replies(&replies);
    same(&replies_of(&frame), &replies);
    for r in &replies {
        let frame = frame_of_replies(std::slice::from_ref(r));
        same(&replies_of(&frame), std::slice::from_ref(r));
    }
}

#[test]
fn the_shared_push_encoders_write_the_bytes_of_the_equivalent_reply() {
    let tags: Vec<(Box<str>, Box<str>)> = vec![("k1".into(), "v1".into()), ("k2".into(), "".into())];
    let info = ClientInfoRef {
        user: "u1",
        client: "c1",
        conn_info: br#"{"name":"Ann"}"#,
        chan_info: b"\x01\x02",
    };
    let cases: Vec<(BytesMut, Reply)> = vec![
        (
            {
                let mut b = BytesMut::new();
                publication_push(
                    &mut b,
                    "chat",
                    &PublicationRef {
                        data: br#"{"text":"hi"}"#,
                        offset: 128,
                        info: Some(info),
                        tags: &tags,
                    },
                );
                b
            },
            Reply::push(Push {
                publication: Some(publication(128)),
                ..push("chat")
            }),
        ),
        (
            {
                let mut b = BytesMut::new();
                publication_push(
                    &mut b,
                    "chat",
                    &PublicationRef {
                        data: b"",
                        offset: 0,
                        info: None,
                        tags: &[],
                    },
                );
                b
            },
            Reply::push(Push {
                publication: Some(Publication::default()),
                ..push("chat")
            }),
        ),
        (
            {
                let mut b = BytesMut::new();
                join_push(&mut b, "chat", &info);
                b
            },
            Reply::push(Push {
                join: Some(Join {
                    info: client_info("u1", "c1"),
                }),
                ..push("chat")
            }),
        ),
        (
            {
                let mut b = BytesMut::new();
                leave_push(
                    &mut b,
                    "chat",
                    &ClientInfoRef {
                        user: "",
                        client: "c9",
                        ..Default::default()
                    },
                );
                b
            },
            Reply::push(Push {
                leave: Some(Leave {
                    info: ClientInfo {
                        client: "c9".into(),
                        ..Default::default()
                    },
                }),
                ..push("chat")
            }),
        ),
        (
            {
                let mut b = BytesMut::new();
                message_push(&mut b, b"direct");
                b
            },
            Reply::push(Push {
                message: Some(Message {
                    data: payload(b"direct"),
                }),
                ..push("")
            }),
        ),
        (
            {
                let mut b = BytesMut::new();
                unsubscribe_push(&mut b, "chat", &Unsubscribe::SERVER);
                b
            },
            Reply::push(Push {
                unsubscribe: Some(Unsubscribe::SERVER),
                ..push("chat")
            }),
        ),
    ];
    for (shared, want) in cases {
        let mut general = BytesMut::new();
        reply(&mut general, &want);
        assert_eq!(&shared[..], &general[..], "{want:?}");
        same(&replies_of(&shared), &[want]);
    }
    // A long publication: the shared encoder moves its body along for a
    // multi-byte length too.
    let data = vec![b'x'; 20_000];
    let mut shared = BytesMut::new();
    publication_push(
        &mut shared,
        "chat",
        &PublicationRef {
            data: &data,
            ..Default::default()
        },
    );
    let want = Reply::push(Push {
        publication: Some(Publication {
            data: payload(&data),
            ..Default::default()
        }),
        ..push("chat")
    });
    same(&replies_of(&shared), &[want]);
}

#[test]
fn the_ping_is_one_empty_reply_and_the_pong_one_empty_command() {
    same(&replies_of(PING), &[Reply::default()]);
    same(&commands_of(PING), &[Command::default()]);
    assert_eq!(&frame_of_commands(&[Command::default()])[..], PING);
    // An empty frame holds nothing.
    assert_eq!(parse_frame(&[]).count(), 0);
    assert_eq!(parse_replies(&[]).count(), 0);
}

/// For every cut of a valid frame: the whole messages before the cut decode
/// as they were sent, then one error if the cut falls inside a message, and
/// nothing after it.
#[test]
fn every_truncation_of_a_frame_yields_the_whole_messages_then_one_error() {
    let commands = every_command();
    let mut ends = Vec::new();
    let mut frame = BytesMut::new();
    for c in &commands {
        command_frame(&mut frame, c);
        ends.push(frame.len());
    }
    for cut in 0..frame.len() {
        let got: Vec<_> = parse_frame(&frame[..cut]).collect();
        let whole = ends.iter().take_while(|&&e| e <= cut).count();
        let at_boundary = cut == 0 || ends.contains(&cut);
        assert_eq!(got.len(), whole + usize::from(!at_boundary), "cut at {cut}");
        let ok: Vec<Command> = got[..whole]
            .iter()
            .map(|r| r.as_ref().expect("whole").clone())
            .collect();
        same(&ok, &commands[..whole]);
        if !at_boundary {
            let err = got[whole].as_ref().expect_err("cut inside a command");
            assert!(
                matches!(err, Error::MalformedProtobuf(_)),
                "cut at {cut}: {err:?}"
            );
        }
    }

    let replies = every_reply();
    let mut ends = Vec::new();
    let mut frame = BytesMut::new();
    for r in &replies {
        reply(&mut frame, r);
        ends.push(frame.len());
    }
    for cut in 0..frame.len() {
        let got: Vec<_> = parse_replies(&frame[..cut]).collect();
        let whole = ends.iter().take_while(|&&e| e <= cut).count();
        let at_boundary = cut == 0 || ends.contains(&cut);
        assert_eq!(got.len(), whole + usize::from(!at_boundary), "cut at {cut}");
        let ok: Vec<Reply> = got[..whole]
            .iter()
            .map(|r| r.as_ref().expect("whole").clone())
            .collect();
        same(&ok, &replies[..whole]);
        if !at_boundary {
            assert!(
                matches!(got[whole], Err(Error::MalformedProtobuf(_))),
                "cut at {cut}"
            );
        }
    }
}

fn malformed(why: &str) -> impl Fn(&Result<Reply, Error>) -> bool + '_ {
    move |r| matches!(r, Err(Error::MalformedProtobuf(w)) if *w == why)
}

#[test]
fn malformed_replies_are_errors_and_end_the_frame() {
    let good = frame_of_replies(&[Reply {
        id: 1,
        ping: Some(PingResult {}),
        ..Default::default()
    }]);
    // Each case: the body of one reply (its length is added here), and the
    // error it must give.
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        // id (field 1) sent as a length-delimited field.
        (vec![0x0a, 0x01, 0x41], "expected a varint field"),
        // push (field 4) sent as a varint.
        (vec![0x20, 0x01], "expected a length-delimited field"),
        // a group start tag (wire type 3) and end tag (wire type 4).
        (vec![0x0b], "unsupported wire type"),
        (vec![0x0c], "unsupported wire type"),
        // field number 0.
        (vec![0x00, 0x01], "field number 0"),
        // a varint of 11 bytes.
        (
            vec![
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            "varint longer than 10 bytes",
        ),
        // a truncated varint value.
        (vec![0x08, 0xff], "truncated varint"),
        // unknown fixed64 and fixed32 fields cut short.
        (
            vec![0xa9, 0x01, 1, 2, 3, 4, 5, 6, 7],
            "truncated fixed-width field",
        ),
        (vec![0xbd, 0x01, 1, 2, 3], "truncated fixed-width field"),
        // a nested length past its message.
        (vec![0x22, 0x05, 0x12, 0x01], "length beyond the frame"),
    ];
    // A push whose channel is not UTF-8.
    let mut body = Vec::new();
    len_field(&mut body, 4, &[0x12, 0x02, 0xff, 0xfe]);
    cases.push((body, "string field is not UTF-8"));
    // Errors three levels down: a publication's client info inside a
    // subscribe result, and a tag inside a history publication.
    let mut info = Vec::new();
    len_field(&mut info, 1, &[0xc3, 0x28]);
    let mut publ = Vec::new();
    len_field(&mut publ, 5, &info);
    let mut sub = Vec::new();
    len_field(&mut sub, 7, &publ);
    let mut body = Vec::new();
    len_field(&mut body, 6, &sub);
    cases.push((body, "string field is not UTF-8"));
    let mut tag = Vec::new();
    int_field(&mut tag, 1, 5);
    let mut publ = Vec::new();
    len_field(&mut publ, 7, &tag);
    let mut hist = Vec::new();
    len_field(&mut hist, 1, &publ);
    let mut body = Vec::new();
    len_field(&mut body, 11, &hist);
    cases.push((body, "expected a length-delimited field"));

    for (body, why) in cases {
        // Alone, and after a good reply: the good one still arrives, then
        // the error, then nothing (a good reply after it is not read).
        let mut frame = good.to_vec();
        frame.extend_from_slice(&delimited(&body));
        frame.extend_from_slice(&good);
        let got: Vec<_> = parse_replies(&frame).collect();
        assert_eq!(got.len(), 2, "{body:x?}");
        assert!(
            matches!(&got[0], Ok(r) if r.id == 1 && r.ping.is_some()),
            "{body:x?}"
        );
        assert!(malformed(why)(&got[1]), "{body:x?}: {:?}", got[1]);
        assert_eq!(
            got[1].as_ref().unwrap_err().disconnect().map(|d| d.code),
            Some(3501)
        );
    }
    // A frame whose first length is itself cut short.
    assert!(malformed("truncated varint")(
        &parse_replies(&[0x80]).next().expect("one")
    ));
    assert!(malformed("length beyond the frame")(
        &parse_replies(&[0x80, 0xad, 0xe2, 0x04, 0x08])
            .next()
            .expect("one")
    ));
}

#[test]
fn malformed_commands_are_errors_and_end_the_frame() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x00, 0x01], "field number 0"),
        (
            vec![
                0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ],
            "varint longer than 10 bytes",
        ),
        (vec![0x09, 1, 2, 3], "truncated fixed-width field"),
        (vec![0x0d, 1, 2, 3], "truncated fixed-width field"),
        (vec![0x0c], "unsupported wire type"),
        // a header (connect field 6) whose value is not UTF-8.
        (
            vec![0x22, 0x06, 0x32, 0x04, 0x12, 0x02, 0xff, 0xff],
            "string field is not UTF-8",
        ),
        // a subscription (connect field 3) whose request is a varint.
        (
            vec![0x22, 0x04, 0x1a, 0x02, 0x10, 0x01],
            "expected a length-delimited field",
        ),
    ];
    for (body, why) in cases {
        let frame = delimited(&body);
        let got: Vec<_> = parse_frame(&frame).collect();
        assert_eq!(got.len(), 1, "{body:x?}");
        assert!(
            matches!(&got[0], Err(Error::MalformedProtobuf(w)) if *w == why),
            "{body:x?}: {:?}",
            got[0]
        );
    }
}

#[test]
fn unknown_fields_and_fixed_width_fields_at_a_message_end_are_skipped() {
    // Fields the schema does not have, of every wire type, in a reply, a
    // push and a publication; the unknown fixed64/fixed32 ends its message.
    let mut publ = Vec::new();
    int_field(&mut publ, 6, 3);
    int_field(&mut publ, 30, 1);
    publ.extend_from_slice(&[0xf5, 0x01, 1, 2, 3, 4]); // field 30, fixed32
    let mut body = Vec::new();
    len_field(&mut body, 2, b"chat"); // push.channel
    len_field(&mut body, 4, &publ);
    body.extend_from_slice(&[0xf1, 0x01, 1, 2, 3, 4, 5, 6, 7, 8]); // field 30, fixed64
    let mut reply_body = Vec::new();
    int_field(&mut reply_body, 1, 0);
    len_field(&mut reply_body, 4, &body);
    len_field(&mut reply_body, 99, b"future field");
    reply_body.extend_from_slice(&[0x99, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]); // field 99, fixed64
    let got = replies_of(&delimited(&reply_body));
    let want = Reply::push(Push {
        publication: Some(Publication {
            offset: 3,
            ..Default::default()
        }),
        ..push("chat")
    });
    same(&got, &[want]);

    // A command ending in an unknown fixed32 field.
    let mut body = Vec::new();
    int_field(&mut body, 1, 5);
    len_field(&mut body, 11, b"");
    body.extend_from_slice(&[0xbd, 0x01, 1, 2, 3, 4]);
    let want = Command {
        id: 5,
        ping: Some(PingRequest {}),
        ..Default::default()
    };
    same(&commands_of(&delimited(&body)), &[want]);
}

#[test]
fn wide_varints_are_truncated_to_the_field_width_as_protobuf_does() {
    // id (uint32) sent as 2^32 + 5; history limit (int32) sent as the
    // 10-byte two's complement of -2.
    let mut hist = Vec::new();
    len_field(&mut hist, 1, b"c");
    int_field(&mut hist, 7, (-2i64) as u64);
    let mut body = Vec::new();
    int_field(&mut body, 1, (1 << 32) + 5);
    len_field(&mut body, 10, &hist);
    let c = commands_of(&delimited(&body));
    assert_eq!(c[0].id, 5);
    assert_eq!(c[0].history.as_ref().map(|h| h.limit), Some(-2));
    // A bool is any non-zero varint.
    let mut sub = Vec::new();
    len_field(&mut sub, 1, b"c");
    int_field(&mut sub, 3, 2);
    let mut body = Vec::new();
    int_field(&mut body, 1, 1);
    len_field(&mut body, 5, &sub);
    let c = commands_of(&delimited(&body));
    assert_eq!(c[0].subscribe.as_ref().map(|s| s.recover), Some(true));
    // An explicit 0 is false, and the last value of a field wins.
    int_field(&mut sub, 3, 0);
    let mut body = Vec::new();
    int_field(&mut body, 1, 1);
    len_field(&mut body, 5, &sub);
    let c = commands_of(&delimited(&body));
    assert_eq!(c[0].subscribe.as_ref().map(|s| s.recover), Some(false));
}

#[test]
fn an_emulation_request_yields_its_node_session_and_commands() {
    let commands = every_command();
    let inner = frame_of_commands(&commands);
    let mut body = Vec::new();
    len_field(&mut body, 1, "node-α".as_bytes());
    len_field(&mut body, 2, b"0123456789abcdef0123456789abcdef");
    len_field(&mut body, 3, &inner);
    // Unknown fields are skipped.
    int_field(&mut body, 4, 1);
    len_field(&mut body, 5, b"x");
    let (node, session, data) = emulation_request(&body).expect("decodes");
    assert_eq!(node, "node-α");
    assert_eq!(session, "0123456789abcdef0123456789abcdef");
    assert_eq!(&data[..], &inner[..]);
    same(&commands_of(&data), &commands);

    // A later field of the same number wins, as in protobuf.
    let mut body = Vec::new();
    len_field(&mut body, 2, b"old");
    len_field(&mut body, 2, b"new");
    assert_eq!(emulation_request(&body).expect("decodes").1, "new");

    // Nothing at all: all three empty.
    let (node, session, data) = emulation_request(&[]).expect("decodes");
    assert_eq!((node.as_str(), session.as_str(), data.len()), ("", "", 0));
}

#[test]
fn malformed_emulation_requests_are_errors() {
    let mut not_utf8 = Vec::new();
    len_field(&mut not_utf8, 1, &[0xff]);
    let mut session_not_utf8 = Vec::new();
    len_field(&mut session_not_utf8, 2, &[0xc3]);
    let mut data_as_varint = Vec::new();
    int_field(&mut data_as_varint, 3, 7);
    let mut node_as_varint = Vec::new();
    int_field(&mut node_as_varint, 1, 7);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (not_utf8, "string field is not UTF-8"),
        (session_not_utf8, "string field is not UTF-8"),
        (data_as_varint, "expected a length-delimited field"),
        (node_as_varint, "expected a length-delimited field"),
        (vec![0x1a, 0x05, 1, 2], "length beyond the frame"),
        (vec![0x1a], "truncated varint"),
        (vec![0x0b], "unsupported wire type"),
    ];
    for (body, why) in cases {
        match emulation_request(&body) {
            Err(Error::MalformedProtobuf(w)) => assert_eq!(w, why, "{body:x?}"),
            other => panic!("{body:x?}: {other:?}"),
        }
    }
}
