mod api;
mod interop;
mod support;
mod uni;
mod ws;
