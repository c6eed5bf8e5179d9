//! One client protocol v2 connection for `crier bench`: TCP from a chosen
//! loopback source address, the WebSocket handshake with small buffers, and
//! the commands that set a connection up (connect, subscribe), in either
//! wire format (`--format`).
//!
//! With `--protocol raw` a connection is the handshake alone.
//!
//! Setup replies are decoded into typed replies, as `crier subscribe` does:
//! there are two per connection. What arrives after setup is the caller's
//! business, and must not be decoded this way.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};
use crier_proto::client::{Command, ConnectRequest, SubscribeRequest};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{Node, Plan};
use crate::subscribe::{self, Format};

pub type Ws = WebSocketStream<TcpStream>;

/// The connect command's id; the next command uses the next id.
pub const CONNECT_ID: u32 = 1;
/// The subscribe command's id.
pub const SUBSCRIBE_ID: u32 = 2;

/// tungstenite's defaults read in 128 KiB chunks, zero-filled on every
/// read; deliveries are a few hundred bytes per frame. Writes go out at
/// once (the only writes are commands and pongs).
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Opens a TCP connection from `source` (or wherever the OS picks) to
/// `addr`.
pub async fn tcp(addr: SocketAddr, source: Option<Ipv4Addr>) -> anyhow::Result<TcpStream> {
    tcp_with(addr, source, None).await
}

/// As [`tcp`], with the socket's receive buffer set to `recv_buffer` bytes
/// before the connect (so the advertised window starts small too).
pub async fn tcp_with(
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    recv_buffer: Option<u32>,
) -> anyhow::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("cannot create a socket")?;
    if let Some(bytes) = recv_buffer {
        socket
            .set_recv_buffer_size(bytes)
            .context("cannot set SO_RCVBUF")?;
    }
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::from((ip, 0)))
            .with_context(|| format!("cannot bind a socket to {ip}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
    Ok(stream)
}

/// Opens a WebSocket connection to `node` and sends nothing: a
/// `--protocol raw` subscriber (publishers pass a `write_buffer`, see
/// [`websocket_config`]: theirs hold a batch of messages until flushed).
pub async fn open_raw(
    node: &Node,
    source: Option<Ipv4Addr>,
    recv_buffer: Option<u32>,
    write_buffer: usize,
) -> anyhow::Result<Ws> {
    let stream = tcp_with(node.ws_addr, source, recv_buffer).await?;
    let config = websocket_config().write_buffer_size(write_buffer);
    let (ws, _) = tokio_tungstenite::client_async_with_config(node.ws_url.as_str(), stream, Some(config))
        .await
        .with_context(|| format!("WebSocket handshake with {} failed", node.ws_url))?;
    Ok(ws)
}

/// Opens a WebSocket connection to `node` in the plan's format and sends
/// the connect command; returns once the server accepted it.
pub async fn connect(plan: &Plan, node: &Node, source: Option<Ipv4Addr>) -> anyhow::Result<Ws> {
    connect_with(plan, node, source, None, plan.format).await
}

/// As [`connect`], with a receive buffer of `recv_buffer` bytes, in
/// `format`.
pub async fn connect_with(
    plan: &Plan,
    node: &Node,
    source: Option<Ipv4Addr>,
    recv_buffer: Option<u32>,
    format: Format,
) -> anyhow::Result<Ws> {
    let stream = tcp_with(node.ws_addr, source, recv_buffer).await?;
    let url = format.url(&node.ws_url);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(websocket_config()))
            .await
            .with_context(|| format!("WebSocket handshake with {url} failed"))?;
    command(&mut ws, format, &connect_command(plan))
        .await
        .context("connect refused")?;
    Ok(ws)
}

/// The connect command of every bench client.
pub(super) fn connect_command(plan: &Plan) -> Command {
    Command {
        id: CONNECT_ID,
        connect: Some(ConnectRequest {
            token: plan.token.clone().unwrap_or_default(),
            name: "crier-bench".into(),
            ..ConnectRequest::default()
        }),
        ..Command::default()
    }
}

/// The subscribe command to `channel` (the plain name).
pub(super) fn subscribe_command(channel: &str) -> Command {
    Command {
        id: SUBSCRIBE_ID,
        subscribe: Some(SubscribeRequest {
            channel: channel.to_string(),
            ..SubscribeRequest::default()
        }),
        ..Command::default()
    }
}

/// Subscribes a client connected in `format` to `channel` (the plain
/// name).
pub async fn subscribe(ws: &mut Ws, format: Format, channel: &str) -> anyhow::Result<()> {
    command(ws, format, &subscribe_command(channel))
        .await
        .with_context(|| format!("subscribe to {channel:?} refused"))
}

/// What one message from the server says of command `id`: how many pings
/// came before its reply (each to be answered with a pong), and whether
/// the reply came; an error reply is an `Err`.
pub(super) fn answered(format: Format, message: &Message, id: u32) -> anyhow::Result<(usize, bool)> {
    let mut pings = 0;
    for reply in format.replies(message)? {
        if subscribe::is_ping(&reply) {
            pings += 1;
            continue;
        }
        if reply.id != id {
            continue;
        }
        if let Some(error) = reply.error {
            bail!("{} {}", error.code, error.message);
        }
        return Ok((pings, true));
    }
    Ok((pings, false))
}

/// Sends one command and waits for its reply, answering pings meanwhile.
async fn command(ws: &mut Ws, format: Format, command: &Command) -> anyhow::Result<()> {
    ws.send(format.command(command))
        .await
        .context("cannot send a command")?;
    loop {
        let message = match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                bail!("disconnected: {} {}", u16::from(frame.code), frame.reason)
            }
            Some(Ok(Message::Close(None))) | None => bail!("the server closed the connection"),
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(anyhow::Error::new(e).context("connection lost")),
        };
        let (pings, done) = answered(format, &message, command.id)?;
        for _ in 0..pings {
            ws.send(format.command(&subscribe::pong()))
                .await
                .context("cannot answer a ping")?;
        }
        if done {
            return Ok(());
        }
    }
}
