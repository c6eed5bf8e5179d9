mod admin;
mod admission;
mod api;
mod architecture;
mod catalogue;
mod compression;
mod emulation;
mod health;
mod hostile;
mod interop;
mod metrics;
mod namespaces;
#[cfg(feature = "nats")]
mod nats;
mod protobuf;
mod proxy;
#[cfg(feature = "redis")]
mod redis;
mod support;
mod tcp;
mod tls;
mod uni;
mod watch;
mod webhooks;
mod ws;
