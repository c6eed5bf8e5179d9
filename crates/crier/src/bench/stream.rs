//! Subscriber connections that are byte streams rather than WebSocket
//! messages: `uni_sse` (an HTTP/1.1 `GET /connection/uni_sse?cf_connect=…`
//! answered with `data: {...}` events, usually chunked) and a plain TCP
//! `[[tcp]]` listener with line framing (each publication is its data's
//! JSON text and `\n`).
//!
//! Both are read the same way: at most 4 KiB per read into one small
//! buffer, chunked framing stripped on the fly, and only complete lines
//! handed to the scan; a partial last line waits for the next read. No
//! JSON is parsed after setup.

use std::net::Ipv4Addr;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client;
use super::Plan;

/// Bytes asked of the socket per read.
const READ: usize = 4 * 1024;

/// A line longer than this (beyond the payload size) means the peer does
/// not frame by lines.
const MAX_LINE_SLACK: usize = 64 * 1024;

/// A connected, subscribed byte-stream subscriber.
pub struct StreamConn {
    stream: TcpStream,
    /// Bytes read but not yet de-chunked (chunked responses only).
    raw: Vec<u8>,
    /// De-chunked bytes not yet scanned: at most a partial line between
    /// reads.
    lines: Vec<u8>,
    chunked: Option<Dechunk>,
    /// Longest line accepted.
    max_line: usize,
}

impl StreamConn {
    fn new(stream: TcpStream, max_line: usize) -> StreamConn {
        StreamConn {
            stream,
            raw: Vec::new(),
            lines: Vec::with_capacity(READ),
            chunked: None,
            max_line,
        }
    }

    /// Reads once (up to about 4 KiB). Ok(0) when the peer closed the
    /// stream, or a chunked body ended.
    pub async fn read(&mut self) -> anyhow::Result<usize> {
        match &mut self.chunked {
            None => {
                self.lines.reserve(READ);
                Ok((&mut self.stream)
                    .take(READ as u64)
                    .read_buf(&mut self.lines)
                    .await?)
            }
            Some(dechunk) => {
                if dechunk.ended() {
                    return Ok(0);
                }
                self.raw.clear();
                self.raw.reserve(READ);
                let n = (&mut self.stream)
                    .take(READ as u64)
                    .read_buf(&mut self.raw)
                    .await?;
                dechunk
                    .feed(&self.raw, &mut self.lines)
                    .map_err(anyhow::Error::msg)?;
                Ok(n)
            }
        }
    }

    /// Hands every complete line read so far (as one text, lines separated
    /// by `\n`) to `f` and drops them; None when there is none yet.
    pub fn take_lines<R>(&mut self, f: impl FnOnce(&str) -> R) -> Option<R> {
        let end = self.lines.iter().rposition(|&b| b == b'\n')?;
        let result = match std::str::from_utf8(&self.lines[..end]) {
            Ok(text) => f(text),
            Err(_) => f(&String::from_utf8_lossy(&self.lines[..end])),
        };
        self.lines.drain(..=end);
        Some(result)
    }

    /// Whether the unscanned rest has grown past any line we expect.
    pub fn overlong(&self) -> bool {
        self.lines.len() > self.max_line
    }

    /// Writes `bytes` (a TCP listener's token frame).
    async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await.context("cannot write")
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Opens `GET /connection/uni_sse?cf_connect=…` on subscriber `i`'s node,
/// subscribed to `channel` (a JSON-quoted name), and returns once the
/// `connect` push arrived (the server subscribes before it sends it).
pub async fn sse(
    plan: &Plan,
    i: usize,
    source: Option<Ipv4Addr>,
    recv_buffer: Option<u32>,
    channel: &str,
) -> anyhow::Result<StreamConn> {
    let node = plan.node_of_subscriber(i);
    let stream = client::tcp_with(node.ws_addr, source, recv_buffer).await?;
    let mut conn = StreamConn::new(stream, plan.size + MAX_LINE_SLACK);
    let token = plan
        .token
        .as_ref()
        .map(|t| format!(",\"token\":{}", serde_json::Value::from(t.as_str())))
        .unwrap_or_default();
    let connect = format!("{{\"name\":\"crier-bench\",\"subs\":{{{channel}:{{}}}}{token}}}");
    let request = format!(
        "GET {}?cf_connect={} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        node.sse_path,
        url_encode(&connect),
        node.ws_host
    );
    conn.write(request.as_bytes()).await?;
    // The response head.
    let head_len = loop {
        if let Some(at) = conn.lines.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if conn.lines.len() > 16 * 1024 {
            bail!("an HTTP answer head longer than 16 KiB");
        }
        if conn.read().await? == 0 {
            bail!("the server closed the connection before answering the uni_sse request");
        }
    };
    let head = String::from_utf8_lossy(&conn.lines[..head_len]).into_owned();
    let status_line = head.lines().next().unwrap_or("");
    let status = status_line.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        let hint = if status == "404" {
            " (is uni_sse.enabled on? `crier serve --dev` enables it)"
        } else {
            ""
        };
        let body = String::from_utf8_lossy(&conn.lines[head_len + 4..]);
        bail!(
            "{} answered {status_line:?}{hint}: {}",
            node.sse_path,
            body.trim()
        );
    }
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    let rest = conn.lines.split_off(head_len + 4);
    conn.lines.clear();
    if chunked {
        let mut dechunk = Dechunk::default();
        dechunk.feed(&rest, &mut conn.lines).map_err(anyhow::Error::msg)?;
        conn.chunked = Some(dechunk);
    } else {
        conn.lines = rest;
    }
    // The connect push (or the disconnect that refuses it).
    loop {
        let outcome = conn.take_lines(|text| {
            for line in text.split('\n') {
                if line.contains("{\"connect\"") {
                    return Some(Ok(()));
                }
                if line.contains("{\"disconnect\"") {
                    return Some(Err(line.trim().to_string()));
                }
            }
            None
        });
        match outcome.flatten() {
            Some(Ok(())) => return Ok(conn),
            Some(Err(line)) => bail!("uni_sse connect refused: {line}"),
            None => {}
        }
        if conn.read().await? == 0 {
            bail!("the uni_sse stream ended before the connect push");
        }
    }
}

/// Opens a TCP connection to the `[[tcp]]` listener, sending the token as
/// the first line when there is one. The listener subscribes it on
/// accept, with no reply: the caller waits for the first line.
pub async fn tcp(
    plan: &Plan,
    source: Option<Ipv4Addr>,
    recv_buffer: Option<u32>,
) -> anyhow::Result<StreamConn> {
    let Some(addr) = plan.tcp_addr else {
        bail!("--transport tcp needs --tcp-addr");
    };
    let stream = client::tcp_with(addr, source, recv_buffer).await?;
    let mut conn = StreamConn::new(stream, plan.size + MAX_LINE_SLACK);
    if let Some(token) = &plan.token {
        conn.write(format!("{token}\n").as_bytes()).await?;
    }
    Ok(conn)
}

/// Waits for the first complete line on a fresh TCP subscriber (a probe
/// publication, or an `error: ...` frame from the listener).
pub async fn first_line(conn: &mut StreamConn) -> anyhow::Result<()> {
    loop {
        if let Some(line) = conn.take_lines(|text| text.split('\n').next().unwrap_or("").to_string()) {
            if let Some(error) = line.strip_prefix("error: ") {
                bail!("the TCP listener refused the connection: {error}");
            }
            return Ok(());
        }
        if conn.overlong() {
            bail!("no line ending from the TCP listener: is its framing = \"line\"?");
        }
        if conn.read().await? == 0 {
            bail!("the TCP listener closed the connection");
        }
    }
}

/// Strips HTTP/1.1 chunked framing from a byte stream, incrementally.
#[derive(Debug, Default)]
struct Dechunk {
    state: ChunkState,
    /// The chunk size being read, then what is left of the chunk.
    size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    End,
}

impl Dechunk {
    fn ended(&self) -> bool {
        self.state == ChunkState::End
    }

    /// Appends the payload bytes of `input` to `out`.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        use ChunkState::*;
        while let Some(&b) = input.first() {
            if self.state == Data {
                let n = (self.size as usize).min(input.len());
                out.extend_from_slice(&input[..n]);
                input = &input[n..];
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            input = &input[1..];
            self.state = match (self.state, b) {
                (Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.size = self
                        .size
                        .checked_mul(16)
                        .map(|s| s + digit)
                        .filter(|s| *s < 1 << 40)
                        .ok_or("an absurd chunk size")?;
                    Size
                }
                (Size, b';' | b' ' | b'\t') | (Extension, b';' | b' ' | b'\t') => Extension,
                (Size | Extension, b'\r') => SizeLf,
                (Size | Extension | SizeLf, b'\n') => {
                    if self.size == 0 {
                        End
                    } else {
                        Data
                    }
                }
                (Extension, _) => Extension,
                (DataCr, b'\r') => DataLf,
                (DataCr | DataLf, b'\n') => {
                    self.size = 0;
                    Size
                }
                (End, _) => return Ok(()),
                (state, b) => return Err(format!("bad chunked framing ({state:?}, byte {b:#04x})")),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_framing_is_stripped_across_any_split() {
        let first = "data: {\"t\":1}\n\ndata: {}\n\n";
        let wire = format!("{:x}\r\n{first}\r\n5;ext=1\r\nhello\r\n0\r\n\r\n", first.len());
        let wire = wire.as_bytes();
        let want = format!("{first}hello").into_bytes();
        for split in 0..wire.len() {
            let mut d = Dechunk::default();
            let mut out = Vec::new();
            d.feed(&wire[..split], &mut out).unwrap();
            d.feed(&wire[split..], &mut out).unwrap();
            assert_eq!(out, want, "split at {split}");
            assert!(d.ended());
        }
        assert!(Dechunk::default().feed(b"zz\r\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn connect_requests_are_url_encoded() {
        assert_eq!(
            url_encode(r#"{"subs":{"a-b":{}}}"#),
            "%7B%22subs%22%3A%7B%22a-b%22%3A%7B%7D%7D%7D"
        );
    }
}
