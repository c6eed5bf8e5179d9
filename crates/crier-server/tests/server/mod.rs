mod api;
mod support;
mod ws;
