mod admin;
mod admission;
mod api;
mod architecture;
mod catalogue;
mod compression;
mod emulation;
#[cfg(feature = "redis")]
mod faults;
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
