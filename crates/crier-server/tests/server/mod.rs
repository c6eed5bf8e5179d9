mod api;
mod interop;
mod support;
mod ws;
