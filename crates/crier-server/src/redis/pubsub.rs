//! Pub/sub: one connection per shard, owned by a task that serialises
//! subscribe/unsubscribe requests with the messages it forwards, so a
//! channel's publications come out in the order Redis sent them and none
//! of an unsubscribed channel comes out after `unsubscribe` returned.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};

use super::conn::{map_error, Shard};
use super::{codec, hash, key, BrokerError, BrokerEvent, BrokerEvents, Inner};

/// Channels per SUBSCRIBE when resubscribing after a reconnect.
const SUBSCRIBE_BATCH: usize = 512;
/// Events buffered for the consumer before shard tasks wait for it.
const EVENT_BUFFER: usize = 16 * 1024;

enum Command {
    Subscribe(Arc<str>, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(Arc<str>, oneshot::Sender<Result<(), BrokerError>>),
}

struct Control {
    shards: Vec<mpsc::Sender<Command>>,
}

/// The subscribe/unsubscribe half of a [`Subscriber`]; cheap to clone. The
/// shard connections close when every clone (and the subscriber) is gone.
#[derive(Clone)]
pub struct Subscriptions {
    control: Arc<Control>,
}

/// A node's pub/sub presence in Redis: subscribe to channels, receive their
/// publications and the connection's losses and restorations.
pub struct Subscriber {
    subscriptions: Subscriptions,
    events: BrokerEvents,
}

impl Subscriber {
    /// See [`Subscriptions::subscribe`].
    pub async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        self.subscriptions.subscribe(channel).await
    }

    /// See [`Subscriptions::unsubscribe`].
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError> {
        self.subscriptions.unsubscribe(channel).await
    }

    /// See [`BrokerEvents::recv`].
    pub async fn recv(&mut self) -> Option<BrokerEvent> {
        self.events.recv().await
    }

    /// Splits into a cloneable control handle and the event stream, for
    /// one task reading events while others subscribe.
    pub fn split(self) -> (Subscriptions, BrokerEvents) {
        (self.subscriptions, self.events)
    }
}

impl Subscriptions {
    async fn request(
        &self,
        channel: &str,
        make: fn(Arc<str>, oneshot::Sender<Result<(), BrokerError>>) -> Command,
    ) -> Result<(), BrokerError> {
        let shard = hash::shard_of(channel, self.control.shards.len());
        let (tx, rx) = oneshot::channel();
        let stopped = || BrokerError::Unavailable("redis subscriber stopped".into());
        self.control.shards[shard]
            .send(make(channel.into(), tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Subscribes to `channel`. Resolves once Redis confirmed: every
    /// publication made after that arrives (until a [`BrokerEvent::Lost`]).
    /// While the channel's shard is down this is `Unavailable`.
    /// Subscribing twice is the same as once.
    pub async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        self.request(channel, Command::Subscribe).await
    }

    /// Unsubscribes from `channel`: no publication of it is delivered after
    /// this returns, and it is not subscribed again after a reconnect.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError> {
        self.request(channel, Command::Unsubscribe).await
    }

    /// The Redis pub/sub channel of `channel`.
    fn redis_channel(prefix: &str, channel: &str) -> String {
        key(prefix, channel, "c")
    }
}

pub(crate) fn start(inner: Arc<Inner>) -> Subscriber {
    let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
    let mut senders = Vec::with_capacity(inner.shards.len());
    for shard in &inner.shards {
        let (tx, rx) = mpsc::channel(1024);
        senders.push(tx);
        let task = ShardTask {
            shard: shard.clone(),
            prefix: inner.config.prefix.clone(),
            ping_interval: inner.config.pubsub_ping_interval,
            reconnect_min: inner.config.reconnect_min,
            reconnect_max: inner.config.reconnect_max.max(inner.config.reconnect_min),
            commands: rx,
            events: events_tx.clone(),
            channels: HashMap::new(),
        };
        tokio::spawn(task.run());
    }
    Subscriber {
        subscriptions: Subscriptions {
            control: Arc::new(Control { shards: senders }),
        },
        events: BrokerEvents::new(events_rx),
    }
}

struct ShardTask {
    shard: Arc<Shard>,
    prefix: String,
    ping_interval: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<BrokerEvent>,
    /// Redis channel name -> crier channel, for every subscribed channel.
    channels: HashMap<String, Arc<str>>,
}

/// Why a connected phase ended.
enum End {
    /// The connection failed: reconnect.
    Lost,
    /// Nobody listens or controls any more: stop.
    Stop,
}

impl ShardTask {
    async fn run(mut self) {
        let mut backoff = self.reconnect_min;
        let mut lost = false;
        loop {
            if let Some((sink, stream)) = self.connect().await {
                backoff = self.reconnect_min;
                if lost {
                    lost = false;
                    if !self
                        .emit(BrokerEvent::Restored {
                            shard: self.shard.index,
                        })
                        .await
                    {
                        return;
                    }
                }
                match self.serve(sink, stream).await {
                    End::Stop => return,
                    End::Lost => {}
                }
            }
            if !lost {
                lost = true;
                // The command connection most likely died too: make the next
                // command connect afresh instead of failing on it first.
                self.shard.invalidate_all().await;
                tracing::warn!(shard = self.shard.index, address = %self.shard.address, "redis pub/sub connection lost");
                if !self
                    .emit(BrokerEvent::Lost {
                        shard: self.shard.index,
                    })
                    .await
                {
                    return;
                }
            }
            if !self.wait(backoff).await {
                return;
            }
            backoff = (backoff * 2).min(self.reconnect_max);
        }
    }

    async fn emit(&self, event: BrokerEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    /// Connects and subscribes every known channel again.
    async fn connect(&mut self) -> Option<(PubSubSink, PubSubStream)> {
        let pubsub = match timeout(self.shard.connect_timeout, self.shard.client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(shard = self.shard.index, error = %e, "redis pub/sub connect failed");
                return None;
            }
            Err(_) => return None,
        };
        let (mut sink, stream) = pubsub.split();
        let names: Vec<&String> = self.channels.keys().collect();
        for batch in names.chunks(SUBSCRIBE_BATCH) {
            let batch: Vec<&str> = batch.iter().map(|s| s.as_str()).collect();
            match timeout(self.shard.command_timeout, sink.subscribe(batch)).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
        Some((sink, stream))
    }

    /// Waits `delay`, answering requests meanwhile: subscribing is
    /// unavailable, unsubscribing just forgets the channel. False: stop.
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                cmd = self.commands.recv() => match cmd {
                    None => return false,
                    Some(Command::Subscribe(_, reply)) => {
                        let _ = reply.send(Err(BrokerError::Unavailable(format!(
                            "redis {}: pub/sub connection down, reconnecting",
                            self.shard.address
                        ))));
                    }
                    Some(Command::Unsubscribe(channel, reply)) => {
                        self.channels.remove(&Subscriptions::redis_channel(&self.prefix, &channel));
                        let _ = reply.send(Ok(()));
                    }
                },
            }
        }
    }

    async fn serve(&mut self, mut sink: PubSubSink, mut stream: PubSubStream) -> End {
        let mut ping = tokio::time::interval_at(Instant::now() + self.ping_interval, self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return End::Lost };
                    let Some(channel) = self.channels.get(msg.get_channel_name()) else {
                        continue; // unsubscribed meanwhile
                    };
                    match codec::decode_message(msg.get_payload_bytes()) {
                        Ok((offset, epoch, publication)) => {
                            let event = BrokerEvent::Publication { channel: channel.clone(), offset, epoch, publication };
                            if !self.emit(event).await {
                                return End::Stop;
                            }
                        }
                        Err(e) => tracing::warn!(channel = %channel, error = %e, "dropping a malformed redis pub/sub message"),
                    }
                }
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { return End::Stop };
                    let timeout_after = self.shard.command_timeout;
                    match cmd {
                        Command::Subscribe(channel, reply) => {
                            let name = Subscriptions::redis_channel(&self.prefix, &channel);
                            if self.channels.contains_key(&name) {
                                // Confirmed on this connection already.
                                let _ = reply.send(Ok(()));
                                continue;
                            }
                            match timeout(timeout_after, sink.subscribe(name.as_str())).await {
                                Ok(Ok(())) => {
                                    self.channels.insert(name, channel);
                                    let _ = reply.send(Ok(()));
                                }
                                Ok(Err(e)) => {
                                    let _ = reply.send(Err(map_error(&self.shard.address, e)));
                                    return End::Lost;
                                }
                                Err(_) => {
                                    let _ = reply.send(Err(BrokerError::Unavailable(format!(
                                        "redis {}: SUBSCRIBE not confirmed within {timeout_after:?}",
                                        self.shard.address
                                    ))));
                                    return End::Lost;
                                }
                            }
                        }
                        Command::Unsubscribe(channel, reply) => {
                            let name = Subscriptions::redis_channel(&self.prefix, &channel);
                            // Forgotten first: nothing of it is delivered from now on.
                            self.channels.remove(&name);
                            let result = timeout(timeout_after, sink.unsubscribe(name.as_str())).await;
                            let _ = reply.send(Ok(()));
                            if !matches!(result, Ok(Ok(()))) {
                                return End::Lost;
                            }
                        }
                    }
                }
                _ = ping.tick() => {
                    let alive = timeout(self.shard.command_timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return End::Lost;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_channel_names_carry_the_hash_tag() {
        assert_eq!(Subscriptions::redis_channel("crier", "news"), "crier:{news}:c");
    }
}
