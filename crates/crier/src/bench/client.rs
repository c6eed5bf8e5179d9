//! One client protocol v2 connection for `crier bench`: TCP from a chosen
//! loopback source address, the WebSocket handshake with small buffers, and
//! the commands that set a connection up (connect, subscribe).
//!
//! Setup replies are parsed into JSON values: there are two per connection.
//! What arrives after setup is the caller's business, and must not be
//! parsed this way.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{Node, Plan};

pub type Ws = WebSocketStream<TcpStream>;

/// The connect command's id; the next command uses the next id.
pub const CONNECT_ID: u64 = 1;
/// The subscribe command's id.
pub const SUBSCRIBE_ID: u64 = 2;

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

/// Opens a WebSocket connection to `node` and sends the connect command;
/// returns once the server accepted it.
pub async fn connect(plan: &Plan, node: &Node, source: Option<Ipv4Addr>) -> anyhow::Result<Ws> {
    connect_with(plan, node, source, None).await
}

/// As [`connect`], with a receive buffer of `recv_buffer` bytes.
pub async fn connect_with(
    plan: &Plan,
    node: &Node,
    source: Option<Ipv4Addr>,
    recv_buffer: Option<u32>,
) -> anyhow::Result<Ws> {
    let stream = tcp_with(node.ws_addr, source, recv_buffer).await?;
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(node.ws_url.as_str(), stream, Some(websocket_config()))
            .await
            .with_context(|| format!("WebSocket handshake with {} failed", node.ws_url))?;
    let connect = match &plan.token {
        Some(token) => json!({ "id": CONNECT_ID, "connect": { "token": token, "name": "crier-bench" } }),
        None => json!({ "id": CONNECT_ID, "connect": { "name": "crier-bench" } }),
    };
    command(&mut ws, CONNECT_ID, connect.to_string())
        .await
        .context("connect refused")?;
    Ok(ws)
}

/// Subscribes a connected client to `channel` (a JSON-quoted name).
pub async fn subscribe(ws: &mut Ws, channel: &str) -> anyhow::Result<()> {
    let command_text = format!("{{\"id\":{SUBSCRIBE_ID},\"subscribe\":{{\"channel\":{channel}}}}}");
    command(ws, SUBSCRIBE_ID, command_text)
        .await
        .with_context(|| format!("subscribe to {channel} refused"))
}

/// Sends one command and waits for its reply, answering pings meanwhile.
async fn command(ws: &mut Ws, id: u64, text: String) -> anyhow::Result<()> {
    ws.send(Message::text(text))
        .await
        .context("cannot send a command")?;
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(Some(frame)))) => {
                bail!("disconnected: {} {}", u16::from(frame.code), frame.reason)
            }
            Some(Ok(Message::Close(None))) | None => bail!("the server closed the connection"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(anyhow::Error::new(e).context("connection lost")),
        };
        for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
            if line == "{}" {
                ws.send(Message::text("{}"))
                    .await
                    .context("cannot answer a ping")?;
                continue;
            }
            let reply: Value = serde_json::from_str(line)
                .with_context(|| format!("invalid JSON from the server: {line}"))?;
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                let code = error.get("code").and_then(Value::as_u64).unwrap_or(0);
                let message = error.get("message").and_then(Value::as_str).unwrap_or("");
                bail!("{code} {message}");
            }
            return Ok(());
        }
    }
}
