//! The HTTP handlers that are not client transports: the server API and
//! the metrics scrape.

pub(crate) mod api;
pub(crate) mod metrics;
