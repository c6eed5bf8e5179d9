//! The outgoing HTTP/1.1 client of the backend calls (proxies, webhooks):
//! pooled keep-alive connections, Nagle off.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Keep-alive connections kept open per backend host while idle.
const IDLE_PER_HOST: usize = 64;

/// A client for requests with a whole body.
pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new pooled client.
pub(crate) fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .build(connector)
}
