//! Probe publications for subscribers that get no subscribe reply (plain
//! TCP listeners subscribe a connection on accept, silently): until every
//! one of them has read a line, publish `"crier-bench-probe"` to the
//! channel every few milliseconds, the way the run will publish (HTTP API
//! or a WebSocket client). Probes carry no send time, so the delivery scan
//! never counts them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::publisher::{parse_response, write_request};
use super::{client, Plan, Via};
use crate::subscribe::Format;

/// Time between probes.
const EVERY: Duration = Duration::from_millis(20);

/// Publishes probes to every channel until `stop` fires; fails on the
/// first refusal.
pub async fn run(plan: Arc<Plan>, mut stop: oneshot::Receiver<()>) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(EVERY);
    match plan.via {
        Via::Api => {
            let mut stream = client::tcp(plan.api_addr, None)
                .await
                .context("cannot reach the HTTP API for probe publications")?;
            let mut buf = Vec::with_capacity(4 * 1024);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stop => return Ok(()),
                    _ = tick.tick() => {}
                }
                let mut requests = String::new();
                for channel in &plan.channels {
                    let body = format!("{{\"channel\":{channel},\"data\":\"crier-bench-probe\"}}");
                    write_request(&mut requests, &plan, &body);
                }
                stream
                    .write_all(requests.as_bytes())
                    .await
                    .context("cannot write a probe")?;
                let mut answered = 0;
                while answered < plan.channels.len() {
                    match parse_response(&buf).map_err(anyhow::Error::msg)? {
                        Some(response) => {
                            response
                                .verdict()
                                .map_err(|e| anyhow::anyhow!("a probe publication was refused: {e}"))?;
                            let len = response.len;
                            buf.drain(..len);
                            answered += 1;
                        }
                        None => {
                            buf.reserve(4 * 1024);
                            if stream.read_buf(&mut buf).await? == 0 {
                                bail!("the server closed the HTTP API connection");
                            }
                        }
                    }
                }
            }
        }
        Via::Ws => {
            // Probes are setup, not load: JSON whatever --format says.
            let mut ws = client::connect_with(&plan, plan.first_node(), None, None, Format::Json)
                .await
                .context("probe publisher connection failed")?;
            let mut id = u64::from(client::CONNECT_ID);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stop => return Ok(()),
                    _ = tick.tick() => {}
                }
                let mut commands = Vec::new();
                for channel in &plan.channels {
                    id += 1;
                    commands.push(format!(
                        "{{\"id\":{id},\"publish\":{{\"channel\":{channel},\"data\":\"crier-bench-probe\"}}}}"
                    ));
                }
                ws.send(Message::text(commands.join("\n")))
                    .await
                    .context("cannot send a probe")?;
                // Wait for the last command's reply; a refusal names its error.
                let last = format!("\"id\":{id},");
                loop {
                    let text = match ws.next().await {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(frame))) => {
                            bail!("the probe publisher was disconnected: {frame:?}")
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Err(anyhow::Error::new(e).context("probe connection lost")),
                        None => bail!("the probe publisher's connection closed"),
                    };
                    if let Some(error) = text.split('\n').find(|l| l.contains("\"error\"")) {
                        bail!("a probe publication was refused: {error}");
                    }
                    if text.split('\n').any(|l| l == "{}") {
                        ws.send(Message::text("{}"))
                            .await
                            .context("cannot answer a ping")?;
                    }
                    if text.contains(&last) {
                        break;
                    }
                }
            }
        }
    }
}
