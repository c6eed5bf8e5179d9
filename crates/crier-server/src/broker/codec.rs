//! The bytes crier keeps in the broker for a publication (a Redis stream
//! entry, a NATS message's payload) and for a client's info, and Redis's
//! pub/sub message that carries a publication. See the module
//! documentation of `crate::redis_broker` for the layout.

use bytes::Bytes;

use super::{BrokerError, RemotePublication};

const VERSION: u8 = 1;
const HAS_INFO: u8 = 1;
const HAS_TAGS: u8 = 2;
const HAS_EXCLUSION: u8 = 4;

/// What the encoder takes: borrowed, so publishing copies the payload once.
pub(crate) struct PublicationRef<'a> {
    pub data: &'a [u8],
    pub info: Option<&'a [u8]>,
    pub tags: &'a [(String, String)],
    pub exclude_clients: &'a [String],
    pub exclude_users: &'a [String],
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encodes a publication (without its offset, which Redis assigns).
pub(crate) fn encode(p: &PublicationRef<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.data.len() + 16 + p.info.map_or(0, <[u8]>::len));
    out.push(VERSION);
    let mut flags = 0;
    if p.info.is_some() {
        flags |= HAS_INFO;
    }
    if !p.tags.is_empty() {
        flags |= HAS_TAGS;
    }
    if !p.exclude_clients.is_empty() || !p.exclude_users.is_empty() {
        flags |= HAS_EXCLUSION;
    }
    out.push(flags);
    put_bytes(&mut out, p.data);
    if let Some(info) = p.info {
        put_bytes(&mut out, info);
    }
    if flags & HAS_TAGS != 0 {
        put_varint(&mut out, p.tags.len() as u64);
        for (k, v) in p.tags {
            put_bytes(&mut out, k.as_bytes());
            put_bytes(&mut out, v.as_bytes());
        }
    }
    if flags & HAS_EXCLUSION != 0 {
        for list in [p.exclude_clients, p.exclude_users] {
            put_varint(&mut out, list.len() as u64);
            for s in list {
                put_bytes(&mut out, s.as_bytes());
            }
        }
    }
    out
}

fn malformed(what: &str) -> BrokerError {
    BrokerError::Protocol(format!("malformed publication in Redis: {what}"))
}

struct Reader<'a> {
    src: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, BrokerError> {
        let b = *self.src.get(self.pos).ok_or_else(|| malformed("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, BrokerError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed("varint too long"))
    }

    fn len(&mut self) -> Result<usize, BrokerError> {
        let n = self.varint()?;
        let left = self.src.len() - self.pos;
        if n > left as u64 {
            return Err(malformed("length beyond the end"));
        }
        Ok(n as usize)
    }

    /// A slice of the source, shared (no copy).
    fn bytes(&mut self) -> Result<Bytes, BrokerError> {
        let n = self.len()?;
        let b = self.src.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    fn string(&mut self) -> Result<String, BrokerError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| malformed("string not UTF-8"))
    }

    fn strings(&mut self) -> Result<Vec<String>, BrokerError> {
        let n = self.len()?; // each string takes at least one byte
        (0..n).map(|_| self.string()).collect()
    }
}

/// Decodes what [`encode`] wrote; `offset` comes from the stream id or the
/// pub/sub header.
pub(crate) fn decode(src: Bytes, offset: u64) -> Result<RemotePublication, BrokerError> {
    let mut r = Reader { src: &src, pos: 0 };
    let version = r.byte()?;
    if version != VERSION {
        return Err(malformed(&format!("unknown version {version}")));
    }
    let flags = r.byte()?;
    if flags & !(HAS_INFO | HAS_TAGS | HAS_EXCLUSION) != 0 {
        return Err(malformed("unknown flags"));
    }
    let data = r.bytes()?;
    let info = if flags & HAS_INFO != 0 {
        Some(r.bytes()?)
    } else {
        None
    };
    let mut tags = Vec::new();
    if flags & HAS_TAGS != 0 {
        let n = r.len()?;
        for _ in 0..n {
            tags.push((r.string()?, r.string()?));
        }
    }
    let (mut exclude_clients, mut exclude_users) = (Vec::new(), Vec::new());
    if flags & HAS_EXCLUSION != 0 {
        exclude_clients = r.strings()?;
        exclude_users = r.strings()?;
    }
    if r.pos != src.len() {
        return Err(malformed("trailing bytes"));
    }
    Ok(RemotePublication {
        offset,
        data,
        info,
        tags,
        exclude_clients,
        exclude_users,
    })
}

/// Splits a pub/sub message `<offset>:<epoch length>:<epoch><publication>`
/// (written by the publish script) into its parts.
#[cfg(feature = "redis")]
pub(crate) fn decode_message(msg: &[u8]) -> Result<(u64, String, RemotePublication), BrokerError> {
    let bad = |what: &str| BrokerError::Protocol(format!("malformed pub/sub message: {what}"));
    let number = |s: &[u8]| -> Option<u64> {
        if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let c1 = msg
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| bad("no offset"))?;
    let offset = number(&msg[..c1]).ok_or_else(|| bad("offset"))?;
    let rest = &msg[c1 + 1..];
    let c2 = rest
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| bad("no epoch length"))?;
    let epoch_len = number(&rest[..c2]).ok_or_else(|| bad("epoch length"))? as usize;
    let rest = &rest[c2 + 1..];
    if epoch_len > rest.len() {
        return Err(bad("epoch beyond the end"));
    }
    let epoch = std::str::from_utf8(&rest[..epoch_len])
        .map_err(|_| bad("epoch not UTF-8"))?
        .to_owned();
    let publication = decode(Bytes::copy_from_slice(&rest[epoch_len..]), offset)?;
    Ok((offset, epoch, publication))
}

/// A client's identity as kept in a publication's info and in presence:
/// its id, user, connection info and subscription info.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoParts {
    pub client: u64,
    pub user: String,
    pub conn_info: Option<Bytes>,
    pub chan_info: Option<Bytes>,
}

/// `0x01`, client id, user, flags (`1` conn info, `2` chan info), [conn
/// info], [chan info].
pub fn encode_info(i: &InfoParts) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + i.user.len());
    out.push(VERSION);
    put_varint(&mut out, i.client);
    put_bytes(&mut out, i.user.as_bytes());
    out.push(u8::from(i.conn_info.is_some()) | (u8::from(i.chan_info.is_some()) << 1));
    for b in [&i.conn_info, &i.chan_info].into_iter().flatten() {
        put_bytes(&mut out, b);
    }
    out
}

/// Decodes what [`encode_info`] wrote.
pub fn decode_info(src: Bytes) -> Result<InfoParts, BrokerError> {
    let mut r = Reader { src: &src, pos: 0 };
    if r.byte()? != VERSION {
        return Err(malformed("unknown client info version"));
    }
    let client = r.varint()?;
    let user = r.string()?;
    let flags = r.byte()?;
    if flags & !3 != 0 {
        return Err(malformed("unknown client info flags"));
    }
    let conn_info = if flags & 1 != 0 { Some(r.bytes()?) } else { None };
    let chan_info = if flags & 2 != 0 { Some(r.bytes()?) } else { None };
    if r.pos != src.len() {
        return Err(malformed("trailing bytes after client info"));
    }
    Ok(InfoParts {
        client,
        user,
        conn_info,
        chan_info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data, tags, excluded clients, excluded users.
    type Sample = (Vec<u8>, Vec<(String, String)>, Vec<String>, Vec<String>);

    fn sample() -> Sample {
        (
            br#"{"text":"h\u00e9llo \"x\"","n":[1,2.50,-0e3]}"#.to_vec(),
            vec![("k".into(), "v".into()), ("".into(), "é".into())],
            vec!["client-1".into()],
            vec!["alice".into(), "".into()],
        )
    }

    #[test]
    fn round_trips_byte_exact() {
        let (data, tags, clients, users) = sample();
        let info = br#"{"user":"u"}"#;
        let enc = encode(&PublicationRef {
            data: &data,
            info: Some(info),
            tags: &tags,
            exclude_clients: &clients,
            exclude_users: &users,
        });
        let p = decode(Bytes::from(enc), 7).unwrap();
        assert_eq!(p.offset, 7);
        assert_eq!(&p.data[..], &data[..]);
        assert_eq!(p.info.as_deref(), Some(&info[..]));
        assert_eq!(p.tags, tags);
        assert_eq!(p.exclude_clients, clients);
        assert_eq!(p.exclude_users, users);
    }

    #[test]
    fn minimal_publication_is_small() {
        let enc = encode(&PublicationRef {
            data: b"{}",
            info: None,
            tags: &[],
            exclude_clients: &[],
            exclude_users: &[],
        });
        assert_eq!(enc, [1, 0, 2, b'{', b'}']);
        let p = decode(Bytes::from(enc), 1).unwrap();
        assert_eq!(&p.data[..], b"{}");
        assert!(p.info.is_none() && p.tags.is_empty() && p.exclude_users.is_empty());
    }

    #[test]
    fn long_payload_uses_multibyte_lengths() {
        let data = vec![b'x'; 70_000];
        let enc = encode(&PublicationRef {
            data: &data,
            info: None,
            tags: &[],
            exclude_clients: &[],
            exclude_users: &[],
        });
        assert_eq!(decode(Bytes::from(enc), 1).unwrap().data.len(), 70_000);
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let (data, tags, clients, users) = sample();
        let enc = encode(&PublicationRef {
            data: &data,
            info: Some(b"i"),
            tags: &tags,
            exclude_clients: &clients,
            exclude_users: &users,
        });
        for cut in 0..enc.len() {
            assert!(
                decode(Bytes::copy_from_slice(&enc[..cut]), 1).is_err(),
                "cut at {cut}"
            );
        }
        let mut extra = enc.clone();
        extra.push(0);
        assert!(decode(Bytes::from(extra), 1).is_err());
        assert!(decode(Bytes::from_static(&[9, 0, 0]), 1).is_err());
        assert!(decode(Bytes::from_static(&[1, 0x80, 0]), 1).is_err());
        assert!(decode(
            Bytes::from_static(&[1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            1
        )
        .is_err());
        #[cfg(feature = "redis")]
        for bad in [
            &b""[..],
            b"x",
            b"1",
            b"1:",
            b"1:5:ab",
            b"a:1:e\x01\x00\x00",
            b"1:x:e",
            b":1:e",
        ] {
            assert!(decode_message(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_info_round_trips_and_rejects_garbage() {
        let full = InfoParts {
            client: (7 << 40) | 12345,
            user: "alice".into(),
            conn_info: Some(Bytes::from_static(b"{\"name\":\"A\"}")),
            chan_info: Some(Bytes::from_static(b"")),
        };
        let bare = InfoParts {
            client: 1,
            user: String::new(),
            conn_info: None,
            chan_info: None,
        };
        for i in [full, bare] {
            let bytes = Bytes::from(encode_info(&i));
            assert_eq!(decode_info(bytes.clone()).unwrap(), i);
            for cut in 0..bytes.len() {
                assert!(decode_info(bytes.slice(..cut)).is_err(), "cut at {cut}");
            }
        }
        assert!(decode_info(Bytes::from_static(b"\x01\x01\x00\x04")).is_err());
    }

    #[cfg(feature = "redis")]
    #[test]
    fn pubsub_message_carries_offset_and_epoch() {
        let body = encode(&PublicationRef {
            data: b"[1]",
            info: None,
            tags: &[],
            exclude_clients: &[],
            exclude_users: &[],
        });
        let mut msg = b"42:5:ab:cd".to_vec();
        msg.extend_from_slice(&body);
        let (offset, epoch, p) = decode_message(&msg).unwrap();
        assert_eq!(
            (offset, epoch.as_str(), p.offset, &p.data[..]),
            (42, "ab:cd", 42, &b"[1]"[..])
        );
    }
}
