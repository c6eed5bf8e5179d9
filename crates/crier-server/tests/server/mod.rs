mod api;
mod interop;
mod metrics;
mod support;
mod tcp;
mod uni;
mod watch;
mod ws;
